"""`python -m bench.files [--size-mib N] [--validate-mib N] [--rounds N]`: uploads and validation, as ratios
against baselines measured in the same run, each held to its aim.

1. upload_gateway_vs_boto3 (aim >= 0.7): MiB/s of uploading one file (default 256 MiB; `--size-mib 1024` for
   the issue's 1 GiB) with the `openai`-style multipart POST through the gateway (gateway -> files service ->
   S3 multipart upload, streamed all the way) / MiB/s of boto3's `upload_file` straight to the same S3
   endpoint (moto), in rounds of one each (A B, B A), the median of the per-round ratios. The gateway's and the
   files service's peak RSS are printed beside it (memory stays at a few S3 parts, whatever the file's size).
2. validation_vs_json_loads (aim >= 0.25): MB/s of the files worker's validation of a chat JSONL file (default
   64 MiB) / MB/s of a bare `json.loads` per line over the same bytes, both in this process, in CPU seconds
   (process time: on a shared machine wall time measures the neighbours), rounds A B, B A, median ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from bench import load, report
from bench.stats import Aim, Result, format_ratio, median, ratio
from deploy.local.cluster import Cluster, Ports
from shared.contracts import resources

RESULTS = report.RESULTS
MIB = 1024 * 1024
UPLOAD_AIM = Aim(">=", 0.7)  # issue 14: an upload through the platform at 70% of boto3's to the same S3
VALIDATION_AIM = Aim(">=", 0.25)  # issue 14: validation at a quarter of the speed of only parsing each line


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def write_chat_jsonl(path: Path, size: int) -> int:
    """A chat JSONL file of about `size` bytes, varied enough that nothing compresses it away."""
    written, n = 0, 0
    with path.open("wb") as out:
        while written < size:
            line = json.dumps({"messages": [
                {"role": "system", "content": "You answer questions about numbers."},
                {"role": "user", "content": f"What is {n} times {n % 97 + 3}? ({uuid.uuid4().hex})"},
                {"role": "assistant", "content": f"{n} times {n % 97 + 3} is {n * (n % 97 + 3)}."}]}) + "\n"
            data = line.encode()
            out.write(data)
            written += len(data)
            n += 1
    return written


@dataclass
class UploadPathCluster(Cluster):
    """moto, auth, files and the gateway: what an upload crosses."""

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        py, p = sys.executable, self.ports
        self._wait_healthy([self.spawn_moto()])
        self.provision()
        self.extra_env.update(REGISTER_LIMIT_PER_IP="[1000000, 60]", MAX_FILE_BYTES=str(64 * 1024 * MIB),
                              USER_QUOTA_BYTES=str(64 * 1024 * MIB))
        servers = [
            self._spawn("auth", [py, "-m", "services.auth.app"], f"http://127.0.0.1:{p.auth}/healthz", p.auth),
            self._spawn("files", [py, "-m", "services.files.app"], f"http://127.0.0.1:{p.files}/healthz", p.files),
            self._spawn("gateway", [py, "-m", "services.gateway.app"], f"http://127.0.0.1:{p.gateway}/healthz",
                        p.gateway)]
        self._wait_healthy(servers)

    def pid(self, name: str) -> int:
        proc = next(p for p in self.processes if p.name == name)
        assert proc.popen is not None
        return proc.popen.pid


def _multipart(path: Path, boundary: str, chunk: int = MIB) -> Iterator[bytes]:
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
           f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
           "Content-Type: application/jsonl\r\n\r\n").encode()
    with path.open("rb") as source:
        while block := source.read(chunk):
            yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def _upload_through_gateway(cluster: UploadPathCluster, path: Path, size: int, token: str) -> float:
    boundary = uuid.uuid4().hex
    started = time.perf_counter()
    response = httpx.post(f"{cluster.gateway_url}/v1/files", content=_multipart(path, boundary), timeout=3600,
                          headers={"Authorization": f"Bearer {token}",
                                   "content-type": f"multipart/form-data; boundary={boundary}"})
    seconds = time.perf_counter() - started
    load.check(response)
    assert response.json()["bytes"] == size, response.text
    return seconds


def _upload_with_boto3(s3: Any, path: Path) -> float:
    started = time.perf_counter()
    s3.upload_file(str(path), resources.BUCKET, f"bench/{uuid.uuid4().hex}")
    return time.perf_counter() - started


def upload_figures(cluster: UploadPathCluster, path: Path, size: int, rounds: int) -> Result:
    token = load.check(httpx.post(f"{cluster.gateway_url}/auth/register", timeout=30, json={
        "email": f"bench-{uuid.uuid4().hex[:10]}@example.com", "password": uuid.uuid4().hex}), 201).json()
    rss_before = {name: _rss_kib(cluster.pid(name), "VmRSS") for name in ("gateway", "files")}
    with cluster.with_env():
        s3 = boto3.client("s3")
    gateway_s: list[float] = []
    boto3_s: list[float] = []
    for round_no in range(rounds):
        sides = [lambda: gateway_s.append(_upload_through_gateway(cluster, path, size, token["access_token"])),
                 lambda: boto3_s.append(_upload_with_boto3(s3, path))]
        for side in sides if round_no % 2 == 0 else reversed(sides):
            side()
    peak = {name: _rss_kib(cluster.pid(name), "VmHWM") for name in ("gateway", "files")}
    mib = size / MIB
    per_round = [ratio(b, g) for g, b in zip(gateway_s, boto3_s, strict=True)]  # MiB/s over MiB/s
    gateway, direct = median(gateway_s), median(boto3_s)
    return Result(
        "upload_gateway_vs_boto3", median(per_round),
        f"through the gateway {mib / gateway:.0f} MiB/s ({gateway:.1f} s) / boto3 upload_file straight to S3 "
        f"{mib / direct:.0f} MiB/s ({direct:.1f} s), {mib:.0f} MiB, median of {rounds} rounds", UPLOAD_AIM,
        note=(f"peak RSS: gateway {peak['gateway'] / 1024:.0f} MiB (was {rss_before['gateway'] / 1024:.0f} MiB "
              f"before), files {peak['files'] / 1024:.0f} MiB (was {rss_before['files'] / 1024:.0f} MiB) for a "
              f"{mib:.0f} MiB file; per round {', '.join(format_ratio(r) for r in per_round)}"),
        figures={"gateway_s": gateway_s, "boto3_s": boto3_s, "round_ratios": per_round, "bytes": size,
                 "peak_rss_kib": peak, "rss_before_kib": rss_before})


def _json_loads_cpu_s(path: Path) -> float:
    started = time.process_time()
    with path.open("rb") as source:
        for line in source:
            if line.strip():
                json.loads(line)
    return time.process_time() - started


def validation_figures(path: Path, rounds: int) -> Result:
    from bench.validation import validate_local_file

    def validation_cpu_s() -> float:
        started = time.process_time()
        examples.append(validate_local_file(path))
        return time.process_time() - started

    size = path.stat().st_size
    examples: list[int] = []
    baseline_s: list[float] = []
    validation_s: list[float] = []
    for round_no in range(rounds):
        sides = [lambda: baseline_s.append(_json_loads_cpu_s(path)), lambda: validation_s.append(validation_cpu_s())]
        for side in sides if round_no % 2 == 0 else reversed(sides):
            side()
    per_round = [ratio(b, v) for b, v in zip(baseline_s, validation_s, strict=True)]  # MB/s over MB/s
    mb = size / 1e6
    validation, baseline = median(validation_s), median(baseline_s)
    return Result("validation_vs_json_loads", median(per_round),
                  f"validation {mb / validation:.0f} MB/s / json.loads per line {mb / baseline:.0f} MB/s of CPU over "
                  f"the same {mb:.0f} MB ({examples[0]:,} examples), median of {rounds} rounds; validation also "
                  "checks, normalises and reports", VALIDATION_AIM,
                  note=f"per round {', '.join(format_ratio(r) for r in per_round)}",
                  figures={"validation_cpu_s": validation_s, "json_loads_cpu_s": baseline_s,
                           "round_ratios": per_round, "bytes": size})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256,
                        help="the uploaded file's size (default 256; the issue's figure is 1024)")
    parser.add_argument("--validate-mib", type=int, default=64, help="the validated file's size (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each figure (default 3)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-files-"))
    data_dir = RESULTS / "files-cluster"
    shutil.rmtree(data_dir, ignore_errors=True)
    cluster = UploadPathCluster(data_dir=data_dir, ports=Ports.free())
    results: list[Result] = []
    started = time.monotonic()
    try:
        print(f"writing a {args.size_mib} MiB chat JSONL file ...", file=sys.stderr)
        big = work / "big.jsonl"
        size = write_chat_jsonl(big, args.size_mib * MIB)
        print("starting moto, auth, files and the gateway ...", file=sys.stderr)
        cluster.start()
        results.append(upload_figures(cluster, big, size, args.rounds))
        cluster.stop()
        small = work / "validate.jsonl"
        write_chat_jsonl(small, args.validate_mib * MIB)
        results.append(validation_figures(small, args.rounds))
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    report.publish("files", results, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
