"""One cluster for the whole fault suite (starting it is most of the suite's time): the real processes on free
ports, moto over HTTP, the SageMaker emulator running a fast fake trainer (tests/support/fault_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fault_cluster import FaultCluster, fault_cluster


@pytest.fixture(scope="package")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    with fault_cluster(tmp_path_factory.mktemp("faults")) as cluster:
        yield cluster
