"""The whole cluster, as `make up` runs it, on free ports and a temporary data dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from deploy.local.cluster import Cluster, Ports
from tests.e2e.browser import Screenshots, launch


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir: Path = tmp_path_factory.mktemp("cluster")
    # Every e2e test signs its users up from 127.0.0.1: well over auth's per-address limits, which have tests of
    # their own (tests/integration/test_auth_sessions.py); the accounts' own limits stay as they are.
    limits = {"REGISTER_LIMIT_PER_IP": "[1000,600]", "LOGIN_LIMIT_PER_IP": "[1000,300]"}
    ports = Ports.free()  # auth believes only BASE_URL for the origin our page runs at: the gateway's, here
    cluster = Cluster(data_dir=data_dir, ports=ports, embedded_aws=True,
                      extra_env={**limits, "BASE_URL": f"http://127.0.0.1:{ports.gateway}"})
    saved = dict(os.environ)
    try:
        cluster.start()
        # The test process talks to the same embedded AWS to check what the services stored.
        os.environ.update({k: v for k, v in cluster.env().items() if k.startswith("AWS_")})
        yield cluster
    except Exception:
        for log in sorted((data_dir / "logs").glob("*.log")):
            print(f"---- {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        cluster.stop()
        os.environ.clear()
        os.environ.update(saved)


# The browser tests' Chromium (one per module) and each test's screenshots.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(request.node.name)
