"""The container health check of every service image (Docker HEALTHCHECK and the ECS task's health check).

An API is healthy when its `/healthz` answers 200 on the port it serves (PORT). A worker or the reconciler has
no HTTP port: it is healthy while its process (`python -m services...`: PID 1, or PID 1's child where ECS runs
an init process) runs and is not stopped or a zombie. A worker that hangs without dying would need a heartbeat from the
consumer loop, which does not write one yet; SQS then redelivers its messages to the other workers.
Standard library only, so the check costs no dependency and starts fast.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def _process_args(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


def _process_state(pid: int) -> str:
    # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, so read after the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _service_process() -> int:
    """The lowest pid running `python -m services...`; PID 1 when there is none (its arguments then say why)."""
    pids = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    for pid in pids:
        try:
            args = _process_args(pid)
        except OSError:  # ended while we looked
            continue
        if "-m" in args and any(a.startswith("services.") for a in args):
            return pid
    return 1


def api_healthy(port: int, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def worker_healthy(args: list[str], state: str) -> bool:
    return any(a.startswith("services.") for a in args) and state not in ("Z", "T", "X")


def main() -> int:
    pid = _service_process()
    args = _process_args(pid)
    module = next((a for a in args if a.startswith("services.")), "")
    if module.endswith(".app"):
        healthy = api_healthy(int(os.environ.get("PORT", "0")))
    else:
        healthy = worker_healthy(args, _process_state(pid))
    print(("healthy: " if healthy else "unhealthy: ") + (module or " ".join(args)))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
