"""The whole cluster, as `make up` runs it, on free ports and a temporary data dir."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from deploy.local.cluster import Cluster
from tests.e2e.browser import Screenshots, launch
from tests.support.clusters import running_cluster
from trainer_image.llmt_trainer.contract import HOLD_AT_CHECKPOINT_ENV


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


@dataclass
class HeldCluster:
    """A cluster whose training containers each hold after their first checkpoint until released: the trainer's
    test-only hold (LLMT_TRAINER_HOLD_AT_CHECKPOINT, "{job}" is the SageMaker training job's name), so a test pauses
    or fails a job at a known step instead of racing the machine's speed. A hold nothing releases fails its job after
    120 s: release every job you do not mean to hold (before it reaches its checkpoint is fine)."""

    cluster: Cluster
    holds: Path

    @property
    def base_url(self) -> str:
        return self.cluster.gateway_url

    def release(self, training_job_name: str, content: str = "") -> None:
        """Let the container go on; `content` "fail" makes it fail right there instead (its checkpoint kept)."""
        (self.holds / training_job_name).write_text(content)


@pytest.fixture(scope="session")
def held_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeldCluster]:
    holds = tmp_path_factory.mktemp("holds")
    hold = {HOLD_AT_CHECKPOINT_ENV: str(holds / "{job}")}
    # Its tests talk to it through its gateway only: the AWS clients of this process stay on the session's cluster
    # (the other e2e tests read what their cluster stored).
    with running_cluster(tmp_path_factory.mktemp("held-cluster"), extra_env=hold, point_aws_clients=False) as running:
        yield HeldCluster(running, holds)
