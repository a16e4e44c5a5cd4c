"""Runs the registered checks together, each under its own timeout; one failing check never stops another."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from deploy.doctor.context import Context
from deploy.doctor.model import Check, failed

CheckFn = Callable[[Context], Awaitable[Check | list[Check]]]

_REJECTED_CREDENTIALS = {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                         "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "AuthFailure"}


@dataclass(frozen=True)
class Probe:
    """One registered check: `run` answers one `Check`, or one per resource it looks at."""

    name: str
    run: CheckFn


async def run_probe(probe: Probe, ctx: Context, timeout_s: float) -> list[Check]:
    try:
        result = await asyncio.wait_for(probe.run(ctx), timeout_s)
    except TimeoutError:
        return [failed(probe.name, f"no answer within {timeout_s:g} s",
                       "check that the endpoint is reachable (AWS_ENDPOINT_URL, network, region), "
                       "or give slow endpoints more time: --timeout 60")]
    except Exception as exc:  # any failure is this check's result, never the run's
        return [explain(probe.name, exc, ctx)]
    return [result] if isinstance(result, Check) else list(result)


async def run_all(ctx: Context, probes: Sequence[Probe], timeout_s: float = 20.0) -> list[Check]:
    """Every probe at once; results in registration order."""
    results = await asyncio.gather(*(run_probe(p, ctx, timeout_s) for p in probes))
    return [check for result in results for check in result]


async def run_and_close(ctx: Context, probes: Sequence[Probe], timeout_s: float = 20.0) -> list[Check]:
    try:
        return await run_all(ctx, probes, timeout_s)
    finally:
        await ctx.aws.close()


async def guarded(ctx: Context, name: str, check: Awaitable[Check]) -> Check:
    """One resource's check inside a probe that looks at many: its error is its own result."""
    try:
        return await check
    except Exception as exc:
        return explain(name, exc, ctx)


def explain(name: str, exc: BaseException, ctx: Context) -> Check:
    """An error from AWS (or from reaching it) as a failed check that says what to do."""
    local = "; for the local cluster, start it with `make up` and run `python -m deploy.doctor --local`"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return failed(name, "no AWS credentials found",
                      "`aws configure` (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)" + local)
    if isinstance(exc, NoRegionError):
        return failed(name, "no AWS region configured", "set AWS_DEFAULT_REGION (e.g. us-east-1)")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError | ReadTimeoutError):
        endpoint = exc.kwargs.get("endpoint_url", "the AWS endpoint")
        return failed(name, f"cannot reach {endpoint}: {exc}",
                      "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> and AWS_DEFAULT_REGION" + local)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in _REJECTED_CREDENTIALS:
            return failed(name, f"AWS rejected the credentials ({code}: {message})",
                          "`aws configure` with a valid access key, or refresh the session (`aws sso login`)")
        if "AccessDenied" in code or code in ("UnauthorizedOperation", "AuthorizationError", "403"):
            return failed(name, f"{exc.operation_name} was denied ({code}: {message})",
                          f"allow {exc.operation_name} to the identity running the doctor (and to the service "
                          "that needs it); `aws sts get-caller-identity` shows who that is")
        return failed(name, f"{exc.operation_name} failed: {code}: {message}",
                      f"see the error; {ctx.provision_fix}")
    return failed(name, f"{type(exc).__name__}: {exc}",
                  "an unexpected answer; rerun with --json for every check's detail")
