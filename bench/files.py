"""`python -m bench.files [--size-mib N] [--validate-mib N]`: uploads and validation, as ratios against
baselines measured in the same run.

1. upload_gateway_vs_boto3: seconds to upload one big file (default 1 GiB) with the `openai`-style multipart
   POST through the gateway (gateway -> files service -> S3 multipart upload, streamed all the way) against
   boto3's `upload_file` straight to the same S3 endpoint (moto). The ratio is time over time; the gateway's
   and the files service's peak RSS during the upload are printed beside it (the claim: memory stays at about
   one S3 part, whatever the file's size).
2. validation_vs_json_loads: MB/s of the files worker's validation of a chat JSONL file (default 256 MiB) against
   a bare `json.loads` per line over the same bytes, both reading from the same local file.
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

import boto3
import httpx

from bench import load, report
from bench.stats import Result, ratio
from deploy.local.cluster import Cluster, Ports
from shared.contracts import resources

RESULTS = report.RESULTS
MIB = 1024 * 1024


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


def upload_figures(cluster: UploadPathCluster, path: Path, size: int) -> Result:
    token = load.check(httpx.post(f"{cluster.gateway_url}/auth/register", timeout=30, json={
        "email": f"bench-{uuid.uuid4().hex[:10]}@example.com", "password": uuid.uuid4().hex}), 201).json()
    rss_before = {name: _rss_kib(cluster.pid(name), "VmRSS") for name in ("gateway", "files")}
    boundary = uuid.uuid4().hex
    started = time.perf_counter()
    response = httpx.post(f"{cluster.gateway_url}/v1/files", content=_multipart(path, boundary), timeout=3600,
                          headers={"Authorization": f"Bearer {token['access_token']}",
                                   "content-type": f"multipart/form-data; boundary={boundary}"})
    gateway_s = time.perf_counter() - started
    load.check(response)
    assert response.json()["bytes"] == size, response.text
    peak = {name: _rss_kib(cluster.pid(name), "VmHWM") for name in ("gateway", "files")}

    with cluster.with_env():
        s3 = boto3.client("s3")
        started = time.perf_counter()
        s3.upload_file(str(path), resources.BUCKET, f"bench/{uuid.uuid4().hex}")
        boto3_s = time.perf_counter() - started
    mib = size / MIB
    return Result(
        "upload_gateway_vs_boto3", ratio(gateway_s, boto3_s),
        f"through the gateway {gateway_s:.1f} s ({mib / gateway_s:.0f} MiB/s) / boto3 upload_file straight to S3 "
        f"{boto3_s:.1f} s ({mib / boto3_s:.0f} MiB/s), {mib:.0f} MiB", None,
        note=(f"peak RSS: gateway {peak['gateway'] / 1024:.0f} MiB (was {rss_before['gateway'] / 1024:.0f} MiB "
              f"before), files {peak['files'] / 1024:.0f} MiB (was {rss_before['files'] / 1024:.0f} MiB) for a "
              f"{mib:.0f} MiB file"),
        figures={"gateway_s": gateway_s, "boto3_s": boto3_s, "bytes": size,
                 "peak_rss_kib": peak, "rss_before_kib": rss_before})


def validation_figures(path: Path) -> Result:
    from bench.validation import validate_local_file

    size = path.stat().st_size
    started = time.perf_counter()
    with path.open("rb") as source:
        for line in source:
            if line.strip():
                json.loads(line)
    baseline_s = time.perf_counter() - started
    started = time.perf_counter()
    examples = validate_local_file(path)
    validation_s = time.perf_counter() - started
    mb = size / 1e6
    return Result("validation_vs_json_loads", ratio(mb / validation_s, mb / baseline_s),
                  f"validation {mb / validation_s:.0f} MB/s / json.loads per line {mb / baseline_s:.0f} MB/s over "
                  f"the same {mb:.0f} MB ({examples:,} examples); validation also normalises and reports", None,
                  figures={"validation_s": validation_s, "json_loads_s": baseline_s, "bytes": size})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="the uploaded file's size (default 1024)")
    parser.add_argument("--validate-mib", type=int, default=256, help="the validated file's size (default 256)")
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
        results.append(upload_figures(cluster, big, size))
        cluster.stop()
        small = work / "validate.jsonl"
        write_chat_jsonl(small, args.validate_mib * MIB)
        results.append(validation_figures(small))
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    report.publish("files", results, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
