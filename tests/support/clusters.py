"""The whole platform as `make up` runs it, for a test: on free ports and a data dir of the test's, the test
process's AWS clients pointed at its embedded AWS meanwhile, and the services' logs printed if it fails."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from deploy.local.cluster import Cluster, Ports

# Tests sign all their users up from 127.0.0.1: well over auth's per-address limits, which have tests of their own
# (tests/integration/test_auth_sessions.py); the accounts' own limits stay as they are.
LIFTED_ADDRESS_LIMITS = {"REGISTER_LIMIT_PER_IP": "[1000,600]", "LOGIN_LIMIT_PER_IP": "[1000,300]"}


@contextlib.contextmanager
def running_cluster(data_dir: Path, extra_env: dict[str, str] | None = None, ports: Ports | None = None,
                    aws_env_drop: tuple[str, ...] = (), point_aws_clients: bool = True) -> Iterator[Cluster]:
    """`point_aws_clients=False`: the test process's AWS clients stay where they were (a second cluster beside the
    session's, whose tests talk to it only through its gateway)."""
    ports = ports or Ports.free()
    # Auth believes only BASE_URL for the origin the dashboard runs at: the gateway's, here.
    env = {**LIFTED_ADDRESS_LIMITS, "BASE_URL": f"http://127.0.0.1:{ports.gateway}", **(extra_env or {})}
    cluster = Cluster(data_dir=data_dir, ports=ports, embedded_aws=True, extra_env=env)
    saved = dict(os.environ)
    try:
        cluster.start()
        if point_aws_clients:
            os.environ.update({k: v for k, v in cluster.env().items() if k.startswith("AWS_")})
            for name in aws_env_drop:
                os.environ.pop(name, None)
        yield cluster
    except BaseException:
        for log in sorted((data_dir / "logs").glob("*.log")):
            print(f"---- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        cluster.stop()
        if point_aws_clients:
            os.environ.clear()
            os.environ.update(saved)
