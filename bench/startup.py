"""Start-up time does not grow with the data kept (issue 14): the whole platform (`make up`'s Cluster) started on
a data dir that holds 1 GiB of files, against the same platform started on the same data dir while it held none.

Both figures are restarts (the demo model and the AWS resources already exist; only the data differs), measured
in the same run, alternating, `--rounds` times each; the ratio of the medians is the figure. Aim: <= 2.0.
The 1 GiB is put in the bucket as 64 MiB objects under `bench-startup/` straight through S3 (what a user's
uploads leave there; the files service's own records are a few small items each and not the point here).

    python -m bench.startup [--gib 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import boto3

from deploy.local.cluster import Cluster, Ports
from shared.contracts import resources

AIM = 2.0
OBJECT_BYTES = 64 << 20


def _timed_start(data_dir: Path, ports: Ports) -> tuple[float, Cluster]:
    cluster = Cluster(data_dir=data_dir, ports=ports, embedded_aws=True)
    started = time.monotonic()
    cluster.start()
    return time.monotonic() - started, cluster


def _fill(cluster: Cluster, total: int) -> None:
    with cluster.with_env():
        s3 = boto3.client("s3")
        chunk = bytes(range(256)) * (OBJECT_BYTES // 256)
        for i in range(total // OBJECT_BYTES):
            s3.put_object(Bucket=resources.BUCKET, Key=f"bench-startup/object-{i:04d}.bin", Body=chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        empty_dir, full_dir = Path(tmp) / "empty", Path(tmp) / "full"
        ports = Ports.free()
        for data_dir in (empty_dir, full_dir):  # first starts: resources, demo model
            _, cluster = _timed_start(data_dir, ports)
            if data_dir == full_dir:
                _fill(cluster, int(args.gib * (1 << 30)))
            cluster.stop()
        kept = sum(p.stat().st_size for p in (full_dir / "aws" / "s3").iterdir())
        times: dict[str, list[float]] = {"empty": [], "full": []}
        for _ in range(args.rounds):
            for name, data_dir in (("empty", empty_dir), ("full", full_dir)):
                seconds, cluster = _timed_start(data_dir, ports)
                cluster.stop()
                times[name].append(seconds)
    empty, full = statistics.median(times["empty"]), statistics.median(times["full"])
    print(f"object bodies kept: {kept / (1 << 30):.2f} GiB")
    print(f"start-up, empty data dir:   median {empty:.1f} s  {[round(t, 1) for t in times['empty']]}")
    print(f"start-up, holding the data: median {full:.1f} s  {[round(t, 1) for t in times['full']]}")
    ratio = full / empty
    print(f"ratio holding / empty: {ratio:.2f}  (aim <= {AIM}: {'met' if ratio <= AIM else 'NOT met'})")


if __name__ == "__main__":
    main()
