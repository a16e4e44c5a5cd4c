"""Fixtures shared by every layer: the embedded AWS (moto's server, over real HTTP) on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.aws import BACKEND, AwsEndpoint, localstack_endpoint, moto_endpoint


@pytest.fixture(scope="session")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEndpoint]:
    """The embedded AWS; the process environment points every AWS client at it."""
    if BACKEND == "localstack":
        with localstack_endpoint() as endpoint:
            yield endpoint
        return
    with moto_endpoint(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint
