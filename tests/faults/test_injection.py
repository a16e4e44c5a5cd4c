"""shared/faults.py on its own: off unless asked, each service's own throttling error (which botocore retries as it
would AWS's), a repeatable sequence per seed, and a configuration that says nothing sensible refused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiobotocore.awsrequest import AioAWSResponse
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from shared import faults

NOWHERE = "http://127.0.0.1:9"  # nothing listens there: every call that gets past the injection is answered by
# `_answered`, an empty 200, registered after the faults
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "dynamodb": ("get_item", {"TableName": "t", "Key": {"k": {"S": "v"}}}),
    "sqs": ("get_queue_url", {"QueueName": "q"}),
    "sagemaker": ("describe_training_job", {"TrainingJobName": "j"}),
}


def _with_client(service: str, environ: dict[str, str], use: Callable[[Any], Awaitable[Any]],
                 retries: int = 0) -> Any:
    """`retries`: botocore's `max_attempts`, the attempts after the first."""

    async def run() -> Any:
        config = AioConfig(retries={"mode": "standard", "max_attempts": retries}, connect_timeout=1)
        async with get_session().create_client(service, region_name="us-east-1", endpoint_url=NOWHERE,
                                               aws_access_key_id="k", aws_secret_access_key="s",
                                               config=config) as client:
            faults.install(client, environ)
            client.meta.events.register("before-send", _answered)
            return await use(client)

    return asyncio.run(run())


def _answered(request: Any, **_: Any) -> AioAWSResponse:
    return AioAWSResponse(request.url, 200, {}, _Empty())


class _Empty:
    async def read(self) -> bytes:
        return b"{}"


@pytest.mark.parametrize(("service", "codes"), [("dynamodb", {"ProvisionedThroughputExceededException",
                                                              "ThrottlingException"}),
                                                 ("sqs", {"RequestThrottled"}),
                                                 ("sagemaker", {"ThrottlingException"})])
def test_a_throttled_call_gets_its_services_error_after_botocores_retries(service: str, codes: set[str]) -> None:
    operation, params = CALLS[service]

    async def call(client: Any) -> ClientError:
        with pytest.raises(ClientError) as caught:
            await getattr(client, operation)(**params)
        return caught.value

    error = _with_client(service, {faults.FAULTS_ENV: f"{service}:1"}, call, retries=1)
    assert error.response["Error"]["Code"] in codes
    assert error.response["ResponseMetadata"]["RetryAttempts"] == 1  # retried, as a real throttle is


def test_nothing_is_injected_unless_asked() -> None:
    operation, params = CALLS["sagemaker"]

    async def call(client: Any) -> Any:
        return await getattr(client, operation)(**params)

    answered = _with_client("sagemaker", {faults.FAULTS_ENV: "dynamodb:1"}, call)
    assert answered["ResponseMetadata"]["HTTPStatusCode"] == 200  # sent, and answered


def test_the_same_seed_refuses_the_same_calls() -> None:
    operation, params = CALLS["dynamodb"]

    def pattern(seed: str) -> list[bool]:
        async def calls(client: Any) -> list[bool]:
            outcomes = []
            for _ in range(24):
                try:
                    await getattr(client, operation)(**params)
                except ClientError:
                    outcomes.append(True)  # throttled
                else:
                    outcomes.append(False)  # answered
            return outcomes

        environ = {faults.FAULTS_ENV: "dynamodb:0.7", faults.SEED_ENV: seed}
        return list(_with_client("dynamodb", environ, calls))

    assert pattern("7") == pattern("7")
    assert pattern("7") != pattern("8")


@pytest.mark.parametrize("spec", ["s3:0.1", "dynamodb", "dynamodb:2", "dynamodb:x"])
def test_a_configuration_that_says_nothing_sensible_is_refused(spec: str) -> None:
    with pytest.raises(faults.FaultConfigError):
        faults.parse_rates(spec)


def test_faults_are_refused_outside_development() -> None:
    async def never(client: Any) -> None:
        raise AssertionError("the client was made")

    with pytest.raises(faults.FaultConfigError):
        _with_client("sqs", {faults.FAULTS_ENV: "sqs:0.1", "ENVIRONMENT": "production"}, never)


def test_a_hold_names_its_call_and_the_text_its_body_must_hold() -> None:
    hold = faults.Hold.parse("dynamodb.UpdateItem~#s = :uploaded:/tmp/held")
    assert (hold.service, hold.operation, str(hold.directory)) == ("dynamodb", "UpdateItem", "/tmp/held")
    assert hold.applies_to(b'{"ConditionExpression": "#s = :uploaded"}') and not hold.applies_to(b"{}")
    assert faults.Hold.parse("sqs.DeleteMessage:/tmp/held").applies_to(None)
