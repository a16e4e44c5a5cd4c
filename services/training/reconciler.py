"""training's reconciler: `python -m services.training.reconciler` (the local cluster runs it as
"training-reconciler"). Every `reconcile_interval_s` it looks at the platform's unfinished jobs so nothing
depends on one message arriving:

- a job SageMaker knows (validating_files, queued or running here): DescribeTrainingJob, and the answer, as a
  TrainingJobStateChanged, goes through the same handler as SageMaker's state-change events
  (`sagemaker_state.on_sagemaker_state`), so a lost or late event never strands a job; its new `METRICS` log
  lines become metrics events (metrics_from_logs.py);
- a job in validating_files or queued that SageMaker does not know, older than `reconcile_stuck_launch_s` (and
  not re-sent within that time): its launch command is sent again, for a lost or dead-lettered command.

The unfinished jobs come from the jobs table's sparse `status-index` GSI (only unfinished jobs carry its key),
one Query per active status, never a Scan. Safe to run in several replicas at once, and to repeat: every state
change is a conditional write allowed by transitions.py, the launch's training job name is the job id (a second
CreateTrainingJob is refused as ResourceInUse), metrics move a cursor forward conditionally.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from services.training import metrics_from_logs
from services.training.bootstrap import build_deps
from services.training.deps import Deps
from services.training.models import Job
from services.training.sagemaker_state import on_sagemaker_state
from services.training.settings import Settings
from services.training.store import ACTIVE_STATUSES
from shared.aws import AwsClients
from shared.contracts.sagemaker_events import TrainingJobStateChanged
from shared.contracts.training_events import LaunchRequested
from shared.envelope import new_event
from shared.logging import bound_request_id, configure_logging

log = logging.getLogger(__name__)


def _json_ready(value: Any) -> Any:
    """Describe's datetimes as EventBridge's epoch milliseconds, so the detail looks like an event's."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def detail_from_describe(described: dict[str, Any]) -> dict[str, Any]:
    """A "SageMaker Training Job State Change" detail built from DescribeTrainingJob's answer."""
    detail: dict[str, Any] = _json_ready(described)
    return detail


def state_from_describe(described: dict[str, Any]) -> TrainingJobStateChanged:
    """DescribeTrainingJob's answer as the state-change event SageMaker would have sent."""
    return TrainingJobStateChanged.model_validate(detail_from_describe(described))


def _seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value) / 1000 if value > 1e11 else float(value)  # epoch ms or s
    return None


@dataclass
class RunReport:
    checked: int = 0
    fed: list[str] = field(default_factory=list)  # jobs whose Describe went through the state handler
    relaunched: list[str] = field(default_factory=list)
    metrics_steps: int = 0


class Reconciler:
    def __init__(self, deps: Deps, settings: Settings) -> None:
        self.deps, self.settings = deps, settings
        self._stopping = asyncio.Event()
        self._training_started: dict[str, float] = {}  # job id -> TrainingStartTime, from the last Describe

    async def run_once(self, now: float | None = None) -> RunReport:
        report = RunReport()
        for status in ACTIVE_STATUSES:
            for job in await self.deps.jobs.active_jobs(status):
                report.checked += 1
                try:
                    with bound_request_id(job.correlation_id):
                        await self._reconcile(job, report, time.time() if now is None else now)
                except Exception:  # one job's trouble is that job's: the others are still looked at
                    log.exception("reconciling a job failed", extra={"job_id": job.job_id})
        if report.fed or report.relaunched or report.metrics_steps:
            log.info("reconciled", extra={"checked": report.checked, "fed": len(report.fed),
                                          "relaunched": report.relaunched, "metrics_steps": report.metrics_steps})
        return report

    async def _reconcile(self, job: Job, report: RunReport, now: float) -> None:
        described = await self._describe(job.training_job_name())
        if described is None:
            if job.status in ("validating_files", "queued"):
                await self._relaunch_if_stuck(job, report, now)
            return
        started = _seconds(described.get("TrainingStartTime"))
        if described.get("TrainingJobStatus") == "InProgress" and started is not None:
            self._training_started[job.job_id] = started
        else:
            self._training_started.pop(job.job_id, None)
        if described.get("TrainingJobStatus") == "InProgress" and job.status == "running":
            # (At the end, on_sagemaker_state reads the last lines itself before it applies the end.)
            report.metrics_steps += await metrics_from_logs.poll(self.deps, job, started, now)
        await on_sagemaker_state(state_from_describe(described), self.deps)
        report.fed.append(job.job_id)

    async def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            described: dict[str, Any] = await self.deps.sagemaker.describe_training_job(TrainingJobName=name)
            return described
        except ClientError as exc:
            error = exc.response["Error"]
            if error["Code"] in ("ValidationException", "ResourceNotFound") and \
                    "not found" in str(error.get("Message", "")).lower():
                return None
            raise

    async def _relaunch_if_stuck(self, job: Job, report: RunReport, now: float) -> None:
        since = max(job.created_at_unix, job.relaunch_requested_at or 0)
        if now - since < self.settings.reconcile_stuck_launch_s:
            return
        await self.deps.jobs.set_fields(job.job_id, relaunch_requested_at=int(now))
        await self.deps.commands.send(new_event(LaunchRequested(job_id=job.job_id), user_id=job.user_id,
                                                correlation_id=job.correlation_id))
        report.relaunched.append(job.job_id)
        log.warning("launch re-sent for a job stuck without a SageMaker job",
                    extra={"job_id": job.job_id, "status": job.status, "waited_s": int(now - since)})

    def stop(self) -> None:
        self._stopping.set()

    async def poll_metrics(self, now: float | None = None) -> int:
        """Between full passes: only the running jobs' new METRICS lines, so live charts move every few
        seconds while Describe calls stay at the reconcile interval."""
        steps = 0
        for job in await self.deps.jobs.active_jobs("running"):
            try:
                with bound_request_id(job.correlation_id):
                    steps += await metrics_from_logs.poll(self.deps, job,
                                                self._training_started.get(job.job_id),
                                                time.time() if now is None else now)
            except Exception:
                log.exception("reading a job's metrics failed", extra={"job_id": job.job_id})
        return steps

    async def run(self) -> None:
        interval, tick = self.settings.reconcile_interval_s, self.settings.metrics_interval_s
        log.info("reconciler started", extra={"interval_s": interval, "metrics_interval_s": tick})
        next_pass = 0.0
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + interval
                    await self.run_once()
                else:
                    await self.poll_metrics()
            except Exception:
                log.exception("reconcile pass failed; trying again next interval")
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=min(tick, interval))
            except TimeoutError:
                pass
        log.info("reconciler stopped")


async def build_reconciler(aws: AwsClients, settings: Settings) -> Reconciler:
    return Reconciler(await build_deps(aws, settings), settings)


def main() -> None:
    settings = Settings()
    configure_logging("training-reconciler", settings.log_level)

    async def run() -> None:
        aws = AwsClients(settings)
        try:
            reconciler = await build_reconciler(aws, settings)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, reconciler.stop)
            await reconciler.run()
        finally:
            await aws.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
