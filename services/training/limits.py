"""Per-user limits on what jobs may cost the AWS account: active jobs (MAX_ACTIVE_JOBS_PER_USER, 429
`too_many_active_jobs`), spend per calendar month (MONTHLY_SPEND_LIMIT_USD, 402 `spend_limit_reached`) and the GPU
instance types jobs may use (ALLOWED_INSTANCE_TYPES, 400 `instance_type_not_allowed`; empty: all in the catalog).

A month's spend is what its finished jobs were billed (SageMaker's BillableTimeInSeconds at the on-demand price;
spot billable time is already the reduced one) plus the most the active jobs may still cost: each active job
reserves its ceiling (its run-time cap, MaxRuntimeInSeconds, at the on-demand price: `max_cost_usd` lowers it),
and the reservation becomes the billed figure when the job ends. The counters live in one usage item per user
(usage_store.py), moved by conditional writes, so concurrent creations can never together pass a limit.
Amounts are kept in whole micro-dollars: DynamoDB adds them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.training.catalog import Catalog, InstanceType
from shared.errors import APIError, InvalidRequest

MICROS = 1_000_000


class TooManyActiveJobs(APIError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"You have {active} active fine-tuning job(s); the limit is {limit}. Wait for one to "
                         "finish, or cancel one, then create the job again.", code="too_many_active_jobs")


class SpendLimitReached(APIError):
    status_code = 402
    error_type = "insufficient_quota"

    def __init__(self, usage: Usage, job_usd: float, limit_usd: float) -> None:
        super().__init__(
            f"This job could cost up to ${job_usd:.2f}; with ${usage.billed_usd:.2f} billed this month and "
            f"${usage.reserved_usd:.2f} reserved by your active jobs, that would pass your monthly spend limit "
            f"of ${limit_usd:.2f}. Set a lower max_cost_usd, wait for active jobs to finish, or cancel one.",
            param="max_cost_usd", code="spend_limit_reached")


@dataclass(frozen=True)
class Limits:
    max_active_jobs: int | None = None
    monthly_spend_limit_usd: float | None = None
    allowed_instance_types: frozenset[str] = field(default_factory=frozenset)  # empty: every catalog type

    @property
    def spend_limit_micros(self) -> int | None:
        return None if self.monthly_spend_limit_usd is None else usd_to_micros(self.monthly_spend_limit_usd)


@dataclass(frozen=True)
class Usage:
    """A user's counters as read: active jobs, what they reserve, what this month's finished jobs were billed."""

    active_jobs: int = 0
    reserved_micros: int = 0
    billed_micros: int = 0

    @property
    def reserved_usd(self) -> float:
        return self.reserved_micros / MICROS

    @property
    def billed_usd(self) -> float:
        return self.billed_micros / MICROS


def usd_to_micros(usd: float) -> int:
    return math.ceil(round(usd * MICROS, 3))


def month_key(at: datetime | None = None) -> str:
    """The calendar month (UTC) a bill counts in, as the usage item's attribute names it: `billed_2026_12`."""
    return f"billed_{(at or datetime.now(UTC)):%Y_%m}"


def parse_instance_types(value: str, catalog: Catalog) -> frozenset[str]:
    """ALLOWED_INSTANCE_TYPES, comma-separated; a name the catalog does not have is a configuration error."""
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    unknown = sorted(n for n in names if catalog.instance(n) is None)
    if unknown:
        raise ValueError(f"ALLOWED_INSTANCE_TYPES names instance types the catalog does not have: {unknown}")
    return names


def check_instance(limits: Limits, instance: InstanceType) -> None:
    if limits.allowed_instance_types and instance.id not in limits.allowed_instance_types:
        allowed = ", ".join(sorted(limits.allowed_instance_types))
        raise InvalidRequest(f"Instance type {instance.id} is not allowed on this platform; allowed: {allowed}.",
                             param="instance_type", code="instance_type_not_allowed")


def reserved_micros(instance: InstanceType, stopping_condition: dict[str, int]) -> int:
    """The most a job may cost: its run-time cap at the on-demand price (spot is never dearer)."""
    return usd_to_micros(stopping_condition["MaxRuntimeInSeconds"] / 3600 * instance.price_per_hour)


def billed_micros(detail: Any, instance: InstanceType | None) -> int:
    """What SageMaker bills for an ended training job: its billable seconds (training seconds where a
    description has none) at the on-demand price; 0 where it never ran."""
    seconds = getattr(detail, "BillableTimeInSeconds", None)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        seconds = getattr(detail, "TrainingTimeInSeconds", None)
    if instance is None or not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return 0
    return usd_to_micros(max(0.0, float(seconds)) / 3600 * instance.price_per_hour)


def refusal(limits: Limits, usage: Usage, job_micros: int) -> APIError | None:
    """The error a new job reserving `job_micros` meets with these counters, or None when it fits."""
    if limits.max_active_jobs is not None and usage.active_jobs >= limits.max_active_jobs:
        return TooManyActiveJobs(usage.active_jobs, limits.max_active_jobs)
    ceiling = limits.spend_limit_micros
    if ceiling is not None and usage.billed_micros + usage.reserved_micros + job_micros > ceiling:
        return SpendLimitReached(usage, job_micros / MICROS, ceiling / MICROS)
    return None


def public_limits(limits: Limits, usage: Usage) -> dict[str, Any]:
    """What `GET /api/catalog` shows a user under `limits`: each limit (None: none) and where they stand."""
    spend = limits.monthly_spend_limit_usd
    return {"max_active_jobs": limits.max_active_jobs, "active_jobs": usage.active_jobs,
            "monthly_spend_limit_usd": spend, "billed_this_month_usd": round(usage.billed_usd, 4),
            "reserved_by_active_jobs_usd": round(usage.reserved_usd, 4),
            "spend_left_usd": None if spend is None else round(max(0.0, spend - usage.billed_usd
                                                                   - usage.reserved_usd), 4),
            "allowed_instance_types": sorted(limits.allowed_instance_types) or None}
