"""Fault injection for the fault suite (tests/faults/), switched on only by a process's environment.

- `LLMT_FAULTS="dynamodb:0.2,sqs:0.2,sagemaker:0.2"`: each attempt of a call to that service is answered, with
  that probability, by the service's own throttling error (DynamoDB's ProvisionedThroughputExceededException or
  ThrottlingException, SQS's RequestThrottled, SageMaker's ThrottlingException) instead of being sent, as AWS
  refuses a throttled call before it does anything. botocore's retry mode retries it as it would a real one, so
  the code sees the error only when every attempt was throttled (AWS_MAX_ATTEMPTS). `LLMT_FAULTS_SEED` (0 unless
  set) makes each process's sequence of refusals, per service, the same from run to run.
- `LLMT_FAULT_HOLD="sagemaker.CreateTrainingJob:/some/dir"`: a call of that operation first leaves a file in the
  directory (`held-<pid>-<n>`), then waits until a file `release` appears there (HOLD_MAX_S at most): a test knows
  the process is inside the handling of a message, and can kill it there rather than hope it is slow enough.
  `"sns.Publish~training.job.succeeded:/some/dir"` holds only the calls whose request body contains that text.

Read when a client is created (shared/aws.py calls `install`). Unset, as everywhere outside the fault suite,
`install` registers nothing; set outside ENVIRONMENT=development (or test), it is refused.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiobotocore.awsrequest import AioAWSResponse

log = logging.getLogger(__name__)

FAULTS_ENV = "LLMT_FAULTS"
SEED_ENV = "LLMT_FAULTS_SEED"
HOLD_ENV = "LLMT_FAULT_HOLD"
HOLD_MAX_S = 120.0
RELEASE_FILE = "release"

# The error a throttled call gets, per service: (the shape's namespace in `__type`, the codes AWS uses).
THROTTLING: dict[str, tuple[str, tuple[str, ...]]] = {
    "dynamodb": ("com.amazonaws.dynamodb.v20120810", ("ProvisionedThroughputExceededException",
                                                      "ThrottlingException")),
    "sqs": ("com.amazonaws.sqs", ("RequestThrottled",)),
    "sagemaker": ("com.amazonaws.sagemaker", ("ThrottlingException",)),
}


class FaultConfigError(ValueError):
    """LLMT_FAULTS or LLMT_FAULT_HOLD does not say what it should: refused at start rather than ignored."""


def parse_rates(spec: str) -> dict[str, float]:
    """`"dynamodb:0.2,sqs:0.1"` -> {"dynamodb": 0.2, "sqs": 0.1}; only the services THROTTLING knows."""
    rates: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        service, _, rate = item.partition(":")
        if service not in THROTTLING:
            raise FaultConfigError(f"{FAULTS_ENV}: no throttling fault for {service!r} (known: {sorted(THROTTLING)})")
        try:
            value = float(rate)
        except ValueError:
            raise FaultConfigError(f"{FAULTS_ENV}: {item!r} is not service:rate") from None
        if not 0 <= value <= 1:
            raise FaultConfigError(f"{FAULTS_ENV}: the rate in {item!r} is not between 0 and 1")
        rates[service] = value
    return rates


@dataclass(frozen=True)
class Hold:
    service: str
    operation: str
    directory: Path
    body_contains: str = ""

    @classmethod
    def parse(cls, spec: str) -> Hold:
        target, _, directory = spec.rpartition(":")  # the text may hold a colon; the directory does not
        call, _, body_contains = target.partition("~")
        service, _, operation = call.partition(".")
        if not (service and operation and directory):
            raise FaultConfigError(f"{HOLD_ENV}: {spec!r} is not service.Operation[~text]:/directory")
        return cls(service, operation, Path(directory), body_contains)

    def applies_to(self, body: object) -> bool:
        if not self.body_contains:
            return True
        raw = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else b""
        return self.body_contains.encode() in raw


def throttled_response(service: str, rng: random.Random, url: str) -> AioAWSResponse:
    """What AWS answers a throttled call: HTTP 400 with the service's error (and, for SQS, the query-compatible
    code its JSON protocol also carries)."""
    namespace, codes = THROTTLING[service]
    code = rng.choice(codes)
    body = json.dumps({"__type": f"{namespace}#{code}", "message": "Rate exceeded (injected by LLMT_FAULTS)"})
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": f"fault-{rng.getrandbits(64):x}"}
    if service == "sqs":
        headers["x-amzn-query-error"] = f"{code};Sender"
    return AioAWSResponse(url, 400, headers, _Body(body.encode()))


class _Body:
    """The raw stream AioAWSResponse reads its content from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        return self._data


def install(client: Any, environ: dict[str, str] | None = None) -> None:
    """Register the faults the environment asks for on this aiobotocore client (nothing when it asks none)."""
    env = os.environ if environ is None else environ
    service = str(client.meta.service_model.service_name)
    rate = parse_rates(env.get(FAULTS_ENV, "")).get(service, 0.0)
    hold = Hold.parse(env[HOLD_ENV]) if env.get(HOLD_ENV) else None
    environment = env.get("ENVIRONMENT", "development").lower()
    if (rate > 0 or hold is not None) and environment not in ("development", "test"):
        raise FaultConfigError(f"{FAULTS_ENV} and {HOLD_ENV} are for the fault suite: refused with "
                               f"ENVIRONMENT={environment}")
    events = client.meta.events
    if rate > 0:
        rng = random.Random(f"{env.get(SEED_ENV, '0')}:{service}")  # noqa: S311 - when to fail, not a secret

        def throttle(request: Any, **_: Any) -> AioAWSResponse | None:
            if rng.random() >= rate:
                return None
            log.info("injected throttling", extra={"service": service})
            return throttled_response(service, rng, str(request.url))

        events.register(f"before-send.{client.meta.service_model.service_id.hyphenize()}", throttle)
        log.warning("fault injection on", extra={"service": service, "rate": rate})
    if hold is not None and hold.service == service:
        counter = itertools.count()

        async def wait_for_release(request: Any, **_: Any) -> None:
            if not hold.applies_to(request.body):
                return
            hold.directory.mkdir(parents=True, exist_ok=True)
            (hold.directory / f"held-{os.getpid()}-{next(counter)}").write_text(str(request.url))
            log.warning("call held until released", extra={"operation": hold.operation})
            loop = asyncio.get_running_loop()
            deadline = loop.time() + HOLD_MAX_S
            while True:  # the release is a file another process writes: polled, with a deadline
                if (hold.directory / RELEASE_FILE).exists() or loop.time() > deadline:
                    return
                await asyncio.sleep(0.05)

        events.register(f"before-send.{client.meta.service_model.service_id.hyphenize()}.{hold.operation}",
                        wait_for_release)
