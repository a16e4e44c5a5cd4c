"""Service Quotas before a GPU launch: SageMaker's per-instance-type training quota must allow one instance.

New accounts start with 0 for most GPU types ("ml.g5.xlarge for training job usage"); SageMaker would refuse
the job with ResourceLimitExceeded, so the job fails first with the quota's name, code and how to raise it.
The quota code is found by listing the service's quotas and matching the name (codes differ per type and
are not published as a table). Where Service Quotas cannot answer (moto, the local emulator, a missing
permission, no endpoint) the check is skipped with a logged note: SageMaker still has the last word.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

SERVICE_CODE = "sagemaker"
Outcome = Literal["ok", "insufficient", "skipped"]


@dataclass(frozen=True)
class QuotaCheck:
    outcome: Outcome
    quota_name: str
    value: float | None = None
    quota_code: str | None = None
    note: str = ""
    needed: int = 1  # the job's instance_count: the quota counts instances


    @property
    def message(self) -> str:
        code = f", quota code {self.quota_code}" if self.quota_code else ""
        return (f"The AWS account's SageMaker quota \"{self.quota_name}\" is {self.value:g}; this training job needs "
                f"at least {self.needed} (its instance count). Request an increase in the Service Quotas console "
                f"(service {SERVICE_CODE}{code}), then create the job again.")


class ServiceQuotasClient(Protocol):
    """The Service Quotas operations the check uses (an aiobotocore `service-quotas` client)."""

    async def get_service_quota(self, *, ServiceCode: str, QuotaCode: str) -> Any: ...

    async def list_service_quotas(self, *, ServiceCode: str, MaxResults: int,
                                  NextToken: str | None = None) -> Any: ...

    async def list_aws_default_service_quotas(self, *, ServiceCode: str, MaxResults: int,
                                              NextToken: str | None = None) -> Any: ...


def quota_name(instance_type: str, spot: bool = False) -> str:
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


class QuotaChecker:
    """Quota codes found by name are kept for the process (they never change); values are read each time."""

    def __init__(self, client: ServiceQuotasClient) -> None:
        self._client = client
        self._codes: dict[str, str] = {}

    async def check(self, instance_type: str, spot: bool = False, count: int = 1) -> QuotaCheck:
        name = quota_name(instance_type, spot)
        try:
            code = self._codes.get(name) or await self._find_code(name)
            if code is None:
                return _skipped(name, "no quota of that name is listed for the sagemaker service")
            self._codes[name] = code
            response = await self._client.get_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=code)
            value = float(response["Quota"]["Value"])
        except ClientError as exc:
            error = exc.response.get("Error", {})
            return _skipped(name, f"Service Quotas answered {error.get('Code')}: {error.get('Message', '')}")
        except (BotoCoreError, NotImplementedError, KeyError, TypeError, ValueError) as exc:
            return _skipped(name, f"Service Quotas is not reachable: {exc}")
        if value < count:
            return QuotaCheck("insufficient", name, value, code, needed=count)
        return QuotaCheck("ok", name, value, code, needed=count)

    async def _applied_quotas(self, token: str | None) -> Any:
        return await self._client.list_service_quotas(ServiceCode=SERVICE_CODE, MaxResults=100,
                                                      **({"NextToken": token} if token else {}))

    async def _default_quotas(self, token: str | None) -> Any:
        return await self._client.list_aws_default_service_quotas(ServiceCode=SERVICE_CODE, MaxResults=100,
                                                                  **({"NextToken": token} if token else {}))

    async def _find_code(self, name: str) -> str | None:
        """The applied quotas first; a quota never changed may only be listed among the defaults. (Each listing is
        its own call, written out: the IAM check reads the calls from the code, and grants only those.)"""
        for list_page in (self._applied_quotas, self._default_quotas):
            token: str | None = None
            while True:
                page = await list_page(token)
                for quota in page.get("Quotas") or []:
                    if quota.get("QuotaName") == name:
                        return str(quota["QuotaCode"])
                token = page.get("NextToken")
                if not token:
                    break
        return None


def _skipped(name: str, note: str) -> QuotaCheck:
    log.info("quota check skipped", extra={"quota": name, "note": note})
    return QuotaCheck("skipped", name, note=note)
