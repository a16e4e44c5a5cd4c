"""Runs training jobs: a bounded pool of worker threads, one entry-point subprocess per instance of a job (hosts.py).

A job that waits for a free slot stays InProgress/Starting. Each subprocess leads its own process group
(the instance's "container"): stopping signals the whole group, SIGTERM first and SIGKILL after the grace, and
whatever is left of the group when the entry point exits is killed, as the end of a container would.
A managed-spot job can be interrupted (emulator-only, for tests): its container ends as on a stop, then it
starts again on a fresh /opt/ml with its checkpoints downloaded from CheckpointConfig.S3Uri.

Time limits, as SageMaker counts them: MaxRuntimeInSeconds is the training time of all the job's attempts
together (an interruption does not restart the clock), and a managed-spot job's MaxWaitTimeInSeconds is the
wall time from its creation, waits for capacity included; past either the job ends Stopped with
MaxRuntimeExceeded or MaxWaitTimeExceeded.
"""

from __future__ import annotations

import copy
import enum
import logging
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import s3_transfers
from .container import ContainerPaths, ScriptMode, environment, lay_out, user_args
from .errors import ValidationError
from .hosts import HostRun, cluster_environment, container_marker, host_names, host_root
from .job_store import JobStore
from .logstream import JobLog, stream_name
from .metrics import MetricParser
from .model_servers import free_port
from .models import (
    COMPLETED,
    DOWNLOADING,
    FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    MAX_RUNTIME_EXCEEDED,
    MAX_WAIT_TIME_EXCEEDED,
    STARTING,
    STOPPED,
    STOPPING,
    TERMINAL_STATUSES,
    TRAINING,
    UPLOADING,
    now,
)
from .settings import Settings

log = logging.getLogger(__name__)

MAX_FAILURE_REASON = 1024
POLL_S = 0.2
SHUTDOWN_REASON = "InternalServerError: the SageMaker emulator shut down while the job was running"


class StopCause(enum.Enum):
    USER = "StopTrainingJob"
    MAX_RUNTIME = "MaxRuntimeInSeconds"
    MAX_WAIT = "MaxWaitTimeInSeconds"
    SHUTDOWN = "emulator shutdown"


class JobSetupError(Exception):
    """The job could not start (input download, configuration); SageMaker calls these ClientError."""


@dataclass
class Execution:
    """What the runner knows of one job's run. `lock` orders stop requests against the run's own steps."""

    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    finished: bool = False
    stop_cause: StopCause | None = None
    containers: list[HostRun] = field(default_factory=list)  # one per host, once started
    interrupting: bool = False  # a spot interruption asked for: the container ends, then the job starts again
    created: float = field(default_factory=time.monotonic)  # MaxWaitTimeInSeconds counts from here
    runtime_used_s: float = 0.0  # training time of the attempts so far: MaxRuntimeInSeconds spans them all


class JobRunner:
    def __init__(self, settings: Settings, store: JobStore, s3: Any, logs: Any) -> None:
        self._settings, self._store, self._s3, self._logs = settings, store, s3, logs
        self._pool = ThreadPoolExecutor(max_workers=settings.max_jobs, thread_name_prefix="job")
        self._executions: dict[str, Execution] = {}
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()

    # --- what the API calls -------------------------------------------------------------------------

    def submit(self, name: str) -> None:
        execution = Execution(name)
        with self._lock:
            self._executions[name] = execution
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(self._pool.submit(self._run, execution))

    def stop(self, name: str) -> None:
        """StopTrainingJob: Stopping now; the job's thread signals the process and ends it Stopped."""
        with self._store.reading(name) as job:
            status = job.status
        execution = self._executions.get(name)
        if status in TERMINAL_STATUSES or execution is None:
            raise ValidationError(f"The request was rejected because the training job is in status {status}.")
        with execution.lock:
            if execution.finished or execution.stop_cause is not None:
                return
            execution.stop_cause = StopCause.USER
            self._store.move_to(name, STOPPING, STOPPING, "Stopping the training job.")
            if not execution.started:  # still waiting for a slot: nothing runs, nothing to wait for
                execution.finished = True
                self._store.move_to(name, STOPPED, STOPPED, "The training job was stopped before it started.")

    def interrupt(self, name: str) -> None:
        """Emulator-only (no SageMaker operation does this): reclaim a managed-spot job's instance, as a spot
        interruption does. The container gets SIGTERM (SIGKILL after the grace), the job goes Interrupted,
        its checkpoints are synced to CheckpointConfig.S3Uri, and it starts again on a fresh /opt/ml with
        those checkpoints downloaded into SM_CHECKPOINT_DIR."""
        with self._store.reading(name) as job:
            status, secondary = job.status, job.secondary_status
            spot = bool(job.request.get("EnableManagedSpotTraining"))
        execution = self._executions.get(name)
        if not spot:
            raise ValidationError("Only a managed-spot training job (EnableManagedSpotTraining) can be interrupted.")
        with (execution.lock if execution is not None else threading.Lock()):
            if (execution is None or status != IN_PROGRESS or secondary != TRAINING or execution.finished
                    or execution.stop_cause is not None or not execution.containers
                    or any(c.process.poll() is not None for c in execution.containers) or execution.interrupting):
                raise ValidationError(f"The training job is not training (status {status}/{secondary}); "
                                      "only a training container can be interrupted.")
            execution.interrupting = True

    def shutdown(self) -> None:
        """Stop every job (the running ones get SIGTERM, then SIGKILL after the grace) and wait for them.
        Jobs already being stopped keep going to Stopped; the others end Failed."""
        with self._lock:
            executions, futures = list(self._executions.values()), list(self._futures)
        for execution in executions:
            with execution.lock:
                if execution.finished or execution.stop_cause is not None:
                    continue
                execution.stop_cause = StopCause.SHUTDOWN
                if not execution.started:
                    execution.finished = True
                    self._store.move_to(execution.name, FAILED, FAILED, SHUTDOWN_REASON,
                                        failure_reason=SHUTDOWN_REASON)
        self._pool.shutdown(wait=False, cancel_futures=True)
        wait(futures, timeout=max(self._settings.stop_grace_s, self._settings.shutdown_grace_s) + 10)
        for execution in executions:  # a job thread that did not finish in time: nothing of ours outlives us
            if not execution.finished:
                for container in execution.containers:
                    container.signal(signal.SIGKILL)

    # --- one job, on a worker thread ----------------------------------------------------------------

    def _run(self, execution: Execution) -> None:
        with execution.lock:
            if execution.finished:
                return
            execution.started = True
        try:
            self._execute(execution)
        except JobSetupError as exc:
            reason = _clip(f"ClientError: {exc}")
            self._finish(execution, FAILED, FAILED, reason, failure_reason=reason)
        except Exception as exc:
            log.exception("job crashed in the emulator", extra={"job": execution.name})
            reason = _clip(f"InternalServerError: {exc}")
            self._finish(execution, FAILED, FAILED, reason, failure_reason=reason)

    def _execute(self, execution: Execution) -> None:
        name = execution.name
        with self._store.reading(name) as job:
            request = copy.deepcopy(job.request)
        job_dir = self._store.job_dir(name)
        hosts = host_names(request)
        master_port = free_port() if len(hosts) > 1 else None
        layouts = {h: lay_out(job_dir, request, h, hosts, host_root(job_dir, h, hosts)) for h in hosts}
        script = ScriptMode.of(request.get("HyperParameters") or {})
        command = self._settings.entrypoint_for(request["AlgorithmSpecification"]["TrainingImage"])
        if script is None and not command:
            raise JobSetupError("no entry point is configured for this TrainingImage "
                                "(SAGEMAKER_EMULATOR_ENTRYPOINT)")

        first_start = now()
        while True:
            self._advance(execution, DOWNLOADING, "Downloading input data", training_start_time=first_start)
            for paths in layouts.values():  # every instance gets every channel (FullyReplicated)
                self._download_inputs(request, paths)
                if script is not None:
                    self._download_code(script, paths)
            syncs = {h: self._checkpoint_sync(request, paths) for h, paths in layouts.items()}

            self._advance(execution, TRAINING, "Training image download completed. Training in progress.")
            runs: list[HostRun] = []
            try:
                with execution.lock:
                    if execution.stop_cause is None:
                        for host, paths in layouts.items():
                            runs.append(self._start_host(name, request, host, hosts, paths, command, script,
                                                         job_dir, master_port, syncs[host]))
                        execution.containers = list(runs)
                exit_code, last_lines, failed = (None, [], layouts[hosts[0]]) if not runs else self._supervise(
                    execution, runs, request)
            finally:
                for run in runs:
                    run.log.close()
            for sync in syncs.values():
                if sync is not None:
                    self._try(sync.sync, "final checkpoint sync")
            if not self._restart_after_interruption(execution):
                break
            # fresh instances: a new /opt/ml each, the checkpoints come back from S3
            for host, paths in layouts.items():
                shutil.rmtree(paths.root, ignore_errors=True)
                layouts[host] = lay_out(job_dir, request, host, hosts, host_root(job_dir, host, hosts))
        self._conclude(execution, request, layouts[hosts[0]], exit_code, last_lines, failed)

    def _start_host(self, name: str, request: dict[str, Any], host: str, hosts: list[str], paths: ContainerPaths,
                    command: list[str] | None, script: ScriptMode | None, job_dir: Path, master_port: int | None,
                    sync: s3_transfers.DirectorySync | None) -> HostRun:
        """One instance's container: the entry point (script mode: the job's own program) in its own group."""
        cwd = job_dir
        if script is not None:  # script mode: the job's own code, run by this Python, not the image's entry point
            command = [sys.executable, str(paths.code / script.program),
                       *user_args(request.get("HyperParameters") or {})]
            cwd = paths.code
        assert command
        marker = container_marker(name, host)
        env = environment(name, request, paths, host, hosts, cluster_environment(host, hosts, master_port, marker))
        job_log = JobLog(self._logs, stream_name(name, host, time.time()), job_dir / f"{host}.log",
                         self._settings.log_flush_s)
        try:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError:
            job_log.close()
            raise
        return HostRun(host, paths, process, job_log, sync, marker)

    def _restart_after_interruption(self, execution: Execution) -> bool:
        """After a spot interruption ended the container: Interrupted, a wait for capacity (not billed),
        then Starting again; False when there was no interruption or a stop came meanwhile."""
        with execution.lock:
            if not execution.interrupting:
                return False
            execution.interrupting = False
            execution.containers = []
            if execution.stop_cause is not None:
                return False
            job = self._store.move_to(execution.name, IN_PROGRESS, INTERRUPTED,
                                      "Training job interrupted: the spot instance was reclaimed. "
                                      "It restarts from the last checkpoint synced to S3.")
            interrupted_at, unbilled = time.monotonic(), job.unbilled_seconds
        log.info("spot interruption", extra={"job": execution.name})
        restart_at = interrupted_at + self._settings.spot_restart_delay_s
        with self._store.reading(execution.name) as job:
            wait_deadline = _wait_deadline(execution, job.request)
        while time.monotonic() < restart_at and execution.stop_cause is None:  # a stop need not wait
            if wait_deadline is not None and time.monotonic() >= wait_deadline:  # no capacity in time
                self._time_out(execution, StopCause.MAX_WAIT)
                break
            time.sleep(min(POLL_S, max(0.0, restart_at - time.monotonic())))
        with execution.lock:
            if execution.stop_cause is not None:
                return False
            self._store.move_to(execution.name, IN_PROGRESS, STARTING,
                                "Restarting the training job after the spot interruption",
                                unbilled_seconds=unbilled + time.monotonic() - interrupted_at)
        return True

    def _supervise(self, execution: Execution, runs: list[HostRun],
                   request: dict[str, Any]) -> tuple[int, list[str], ContainerPaths]:
        """Pump the output, enforce MaxRuntime and stop requests, sync checkpoints; until every host's entry point
        has exited. A host that fails ends the others (SIGTERM, SIGKILL after the grace), as one failed instance
        fails a SageMaker job. Returns the job's exit status (the first failure's, else 0), that host's last lines
        and its paths (where its failure file is)."""
        metrics = MetricParser(request["AlgorithmSpecification"].get("MetricDefinitions") or [])

        def on_line(line: str) -> None:
            values = metrics.parse(line)
            if values:
                self._store.record_metrics(execution.name, values)

        for run in runs:
            run.start_pump(execution.name, on_line)
        started = time.monotonic()
        deadline = started + request["StoppingCondition"]["MaxRuntimeInSeconds"] - execution.runtime_used_s
        wait_deadline = _wait_deadline(execution, request)
        next_sync = started + self._settings.checkpoint_sync_s
        sigterm_at: float | None = None
        failed: HostRun | None = None
        while True:
            for run in runs:
                if run.poll() not in (None, 0) and failed is None:
                    failed = run
            if all(run.exit_code is not None for run in runs):
                break
            tick = time.monotonic()
            if tick >= deadline:
                self._time_out(execution, StopCause.MAX_RUNTIME)
            elif wait_deadline is not None and tick >= wait_deadline:
                self._time_out(execution, StopCause.MAX_WAIT)
            ending = execution.stop_cause is not None or execution.interrupting or failed is not None
            if ending and sigterm_at is None:
                cause = (execution.stop_cause.value if execution.stop_cause else
                         "spot interruption" if execution.interrupting else f"{failed.host if failed else '?'} failed")
                log.info("stopping job", extra={"job": execution.name, "cause": cause})
                for run in runs:
                    run.signal(signal.SIGTERM)
                sigterm_at = tick
            elif sigterm_at is not None and tick - sigterm_at >= self._grace_s(execution):
                for run in runs:
                    run.signal(signal.SIGKILL)
            if tick >= next_sync:
                for run in runs:
                    if run.sync is not None:
                        self._try(run.sync.sync, "checkpoint sync")
                next_sync = tick + self._settings.checkpoint_sync_s
            try:  # the wait is the loop's pace: it returns at once when the first host exits
                next(r for r in runs if r.exit_code is None).process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
        for run in runs:
            run.signal(signal.SIGKILL)  # each container ends: whatever its entry point left goes too
        execution.runtime_used_s += time.monotonic() - started
        for run in runs:
            if run.pump is not None:
                run.pump.join(timeout=5)
        ended = failed or runs[0]
        return (ended.exit_code if ended.exit_code is not None else 0), list(ended.last_lines), ended.paths

    def _time_out(self, execution: Execution, cause: StopCause) -> None:
        with execution.lock:
            if execution.stop_cause is None:
                execution.stop_cause = cause
                what = "Maximum runtime" if cause is StopCause.MAX_RUNTIME else "Maximum wait time"
                self._store.move_to(execution.name, STOPPING, STOPPING,
                                    f"{what} exceeded; stopping the training job.")

    def _grace_s(self, execution: Execution) -> float:
        if execution.stop_cause is StopCause.SHUTDOWN:
            return self._settings.shutdown_grace_s
        return self._settings.stop_grace_s

    def _conclude(self, execution: Execution, request: dict[str, Any], paths: ContainerPaths,
                  exit_code: int | None, last_lines: list[str], failed: ContainerPaths | None = None) -> None:
        """`paths`: the first host's (algo-1), whose model and output are the job's artifacts: the trainer writes
        them on rank 0 only, which runs there; `failed`: the host whose failure ended the job."""
        cause = execution.stop_cause
        if cause is StopCause.SHUTDOWN:
            self._finish(execution, FAILED, FAILED, SHUTDOWN_REASON, failure_reason=SHUTDOWN_REASON)
        elif cause is not None:  # a stopped job keeps what it saved in its grace period, as on SageMaker
            artifacts = self._try(lambda: self._upload_artifacts(execution.name, request, paths),
                                  "artifact upload")
            secondary = {StopCause.MAX_RUNTIME: MAX_RUNTIME_EXCEEDED,
                         StopCause.MAX_WAIT: MAX_WAIT_TIME_EXCEEDED}.get(cause, STOPPED)
            self._finish(execution, STOPPED, secondary, f"Training job stopped ({cause.value}).",
                         model_artifacts=artifacts)
        elif exit_code == 0:
            self._advance(execution, UPLOADING, "Uploading generated training model")
            try:
                artifacts = self._upload_artifacts(execution.name, request, paths)
            except (BotoCoreError, ClientError, OSError) as exc:
                raise JobSetupError(f"Could not upload the model artifacts: {exc}") from exc
            self._finish(execution, COMPLETED, COMPLETED, "Training job completed", model_artifacts=artifacts)
        else:
            reason = _failure_reason(failed or paths, exit_code, last_lines)
            self._finish(execution, FAILED, FAILED, reason, failure_reason=reason)

    # --- steps ---------------------------------------------------------------------------------------

    def _download_inputs(self, request: dict[str, Any], paths: ContainerPaths) -> None:
        for channel in request.get("InputDataConfig") or []:
            source = channel["DataSource"]["S3DataSource"]
            try:
                count = s3_transfers.download_channel(self._s3, source["S3Uri"],
                                                 source.get("S3DataType", "S3Prefix"),
                                                 paths.channel(channel["ChannelName"]))
            except (BotoCoreError, ClientError, OSError, ValueError) as exc:
                raise JobSetupError(f"Data download failed for channel {channel['ChannelName']} "
                                    f"({source['S3Uri']}): {exc}") from exc
            log.info("channel downloaded", extra={"channel": channel["ChannelName"], "files": count})

    def _download_code(self, script: ScriptMode, paths: ContainerPaths) -> None:
        """sourcedir.tar.gz into /opt/ml/code, as the training toolkit unpacks it (the toolkit would also
        pip-install its requirements.txt; the emulator runs the program with its own Python as it is)."""
        archive = paths.root.parent / "sourcedir.tar.gz"
        try:
            bucket, key = s3_transfers.split_s3_uri(script.submit_directory)
            self._s3.download_file(bucket, key, str(archive))
            paths.code.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(paths.code, filter="data")
        except (BotoCoreError, ClientError, OSError, tarfile.TarError) as exc:
            raise JobSetupError(f"Failed to download or unpack the training code "
                                f"({script.submit_directory}): {exc}") from exc
        if not (paths.code / script.program).is_file():
            raise JobSetupError(f"sagemaker_program {script.program} is not in {script.submit_directory}")

    def _checkpoint_sync(self, request: dict[str, Any],
                         paths: ContainerPaths) -> s3_transfers.DirectorySync | None:
        """Checkpoints an earlier (interrupted) run left come down first, so the algorithm can resume."""
        config = request.get("CheckpointConfig")
        if not config:
            return None
        try:
            s3_transfers.download_prefix_if_any(self._s3, config["S3Uri"], paths.checkpoints)
        except (BotoCoreError, ClientError, OSError, ValueError) as exc:
            raise JobSetupError(f"Checkpoint download failed ({config['S3Uri']}): {exc}") from exc
        kms = request["OutputDataConfig"].get("KmsKeyId")
        sync = s3_transfers.DirectorySync(self._s3, paths.checkpoints, config["S3Uri"], s3_transfers.sse_args(kms))
        sync.sync()  # the emulator's own view: everything present is already uploaded
        return sync

    def _upload_artifacts(self, name: str, request: dict[str, Any], paths: ContainerPaths) -> str:
        output = request["OutputDataConfig"]
        model_uri = s3_transfers.join_s3_uri(output["S3OutputPath"], name, "output", "model.tar.gz")
        uploads = [(paths.model, "model.tar.gz", model_uri)]
        if any(p.is_file() for p in paths.output_data.rglob("*")):
            output_uri = s3_transfers.join_s3_uri(output["S3OutputPath"], name, "output", "output.tar.gz")
            uploads.append((paths.output_data, "output.tar.gz", output_uri))
        for source, archive_name, uri in uploads:
            archive = paths.root.parent / archive_name
            s3_transfers.tar_directory(source, archive)
            s3_transfers.upload_file(self._s3, archive, uri, output.get("KmsKeyId"))
        log.info("artifacts uploaded", extra={"job": name, "uri": model_uri})
        return model_uri

    # --- status --------------------------------------------------------------------------------------

    def _advance(self, execution: Execution, secondary: str, message: str, **changes: Any) -> None:
        """The next InProgress step, unless a stop was asked for meanwhile (Stopping is kept then)."""
        with execution.lock:
            if execution.stop_cause is None:
                self._store.move_to(execution.name, IN_PROGRESS, secondary, message, **changes)
            elif changes:
                self._store.update(execution.name, **changes)

    def _finish(self, execution: Execution, status: str, secondary: str, message: str,
                **changes: Any) -> None:
        with execution.lock:
            execution.finished = True
            self._store.move_to(execution.name, status, secondary, message, **changes)

    @staticmethod
    def _try(step: Any, what: str) -> Any:
        try:
            return step()
        except (BotoCoreError, ClientError, OSError) as exc:
            log.warning(f"{what} failed", extra={"error": str(exc)})
            return None


def _wait_deadline(execution: Execution, request: dict[str, Any]) -> float | None:
    """When a managed-spot job runs out of MaxWaitTimeInSeconds (None: not spot, or no such limit)."""
    wait_s = request["StoppingCondition"].get("MaxWaitTimeInSeconds")
    if not request.get("EnableManagedSpotTraining") or not wait_s:
        return None
    return execution.created + float(wait_s)


def _failure_reason(paths: ContainerPaths, exit_code: int | None, last_lines: list[str]) -> str:
    """SageMaker's rule: the algorithm's own words from /opt/ml/output/failure, else what we saw."""
    try:
        text = paths.failure_file.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    if not text:
        how = (f"was killed by {signal.Signals(-exit_code).name}" if exit_code is not None and exit_code < 0
               else f"exited with code {exit_code}")
        text = f"ExecuteUserScriptError: the entry point {how}"
        if last_lines:
            text += f": {last_lines[-1]}"
    return _clip(f"AlgorithmError: {text}")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FAILURE_REASON else text[: MAX_FAILURE_REASON - 3] + "..."
