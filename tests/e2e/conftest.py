"""The whole cluster, as `make up` runs it, on free ports and a temporary data dir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from deploy.local.cluster import Cluster
from tests.e2e.browser import Screenshots, launch
from tests.support.clusters import running_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # The test process talks to the same embedded AWS to check what the services stored.
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


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
