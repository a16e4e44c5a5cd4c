"""`make up`: the whole platform on this machine, on the embedded AWS. A process that exits is restarted with
backoff while the rest keep serving (deploy/local/supervisor.py). Ctrl-C stops all of it; what it holds is kept in
.data/ for the next `make up` (`make clean` starts empty)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from deploy.local.cluster import Cluster, Ports


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("botocore", "httpx", "urllib3"):  # request-level chatter; the services log to .data/logs/
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ports = Ports(gateway=int(os.environ.get("PORT", 5000)))
    cluster = Cluster(ports=ports, embedded_aws=not os.environ.get("AWS_ENDPOINT_URL"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print("Starting LLM Tuner: embedded AWS, SageMaker emulator, auth, files, training, gateway ...",
              flush=True)
        cluster.start()
        print(f"\nLLM Tuner is running at http://localhost:{ports.gateway}", flush=True)
        print(f"Logs: {cluster.data_dir / 'logs'}/   Data: {cluster.data_dir}/ (kept; `make clean` removes it)"
              "   Stop: Ctrl-C\n", flush=True)
        cluster.supervisor().run(stop)
        return 0
    except Exception as exc:
        print(f"Could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("Stopping ...", flush=True)
        cluster.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
