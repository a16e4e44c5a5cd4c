"""The local SageMaker emulator, driven by boto3's real sagemaker client against moto's server.

The emulator runs as its own process (`python -m deploy.local.sagemaker_emulator`), so these tests also
cover its command line and how it ends its jobs on SIGTERM. The training image is a tiny fake entry point
whose behaviour the `mode` hyperparameter picks.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.aws import AwsEndpoint, start_emulator_process
from tests.support.emulator import ROLE_ARN, Emulator, state_change_queue, unique, wait_status
from tests.support.polling import wait_for

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-tuner-trainer:latest"
LOSS_METRIC = {"Name": "train:loss", "Regex": r'"train_loss": ([0-9.]+)'}

FAKE_ENTRY_POINT = r'''
import json, os, signal, subprocess, sys, time
from pathlib import Path

hyperparameters = json.loads(Path(os.environ["SM_INPUT_CONFIG_DIR"], "hyperparameters.json").read_text())
mode = hyperparameters.get("mode", "succeed")
host = os.environ["SM_CURRENT_HOST"]
if mode == "fail_on_algo_2":  # one instance of a multi-instance job fails once the other is up and training
    mode = "fail" if host == "algo-2" else "sleep"
    sibling = Path(os.environ["SM_OUTPUT_DIR"]).parents[2] / "algo-1" / "opt_ml" / "output" / "pids"
    deadline = time.monotonic() + 30
    while mode == "fail" and not sibling.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
model, output = Path(os.environ["SM_MODEL_DIR"]), Path(os.environ["SM_OUTPUT_DIR"])
checkpoints = Path(os.environ["SM_CHECKPOINT_DIR"])
at_start = sorted(p.relative_to(checkpoints).as_posix() for p in checkpoints.rglob("*") if p.is_file())
print("fake trainer starting in mode", mode)
if mode == "succeed":
    train = Path(os.environ["SM_CHANNEL_TRAIN"])
    (model / "adapter.json").write_text(json.dumps({
        "hyperparameters": hyperparameters,
        "sm_hps": json.loads(os.environ["SM_HPS"]),
        "channels": json.loads(os.environ["SM_CHANNELS"]),
        "train_files": sorted(p.relative_to(train).as_posix() for p in train.rglob("*") if p.is_file()),
        "job": os.environ["TRAINING_JOB_NAME"],
        "custom": os.environ.get("CUSTOM_FLAG"),
        "checkpoints_at_start": at_start,
        "host": host, "hosts": json.loads(os.environ["SM_HOSTS"]),
        "resourceconfig": json.loads(Path(os.environ["SM_INPUT_CONFIG_DIR"], "resourceconfig.json").read_text()),
        "master": [os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")],
        "gloo_interface": os.environ.get("GLOO_SOCKET_IFNAME"),
    }))
    (checkpoints / "checkpoint-2").mkdir(exist_ok=True)
    (checkpoints / "checkpoint-2" / "state.txt").write_text("step 2")
    for step, loss in ((1, 1.5), (2, 1.25)):
        print("METRICS " + json.dumps({"step": step, "train_loss": loss}))
    print("a line on stderr", file=sys.stderr)
elif mode == "fail":
    (output / "failure").write_text("RuntimeError: CUDA out of memory (pretend)")
    sys.exit(1)
else:  # "sleep" leaves on SIGTERM, "stubborn" ignores it (and so does its child): only SIGKILL ends them
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (checkpoints / "checkpoint-1").mkdir(exist_ok=True)  # a restarted spot job gets it back from S3
    (checkpoints / "checkpoint-1" / "state.txt").write_text("step 1")
    # in a session of its own, as torchrun starts its workers: a signal to the entry point's group misses it
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    (output / "pids.tmp").write_text(json.dumps([os.getpid(), child.pid]))
    os.replace(output / "pids.tmp", output / "pids")
    print("sleeping", flush=True)
    time.sleep(120)
'''


# --- helpers ---------------------------------------------------------------------------------------------

def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int]) -> None:
    wait_for(lambda: [pid for pid in pids if running(pid)], lambda alive: not alive, "the processes to end",
             timeout_s=5)


def start_emulator(workdir: Path, entry_point: Path, max_jobs: int, spot_restart_delay_s: float = 1.0) -> Emulator:
    image_to_command = {"*llm-tuner-trainer*": [sys.executable, str(entry_point)]}
    env = {**os.environ,
           "SAGEMAKER_EMULATOR_ENTRYPOINT": json.dumps(image_to_command),
           "SAGEMAKER_EMULATOR_MAX_JOBS": str(max_jobs),
           "SAGEMAKER_EMULATOR_STOP_GRACE_SECONDS": "1",
           "SAGEMAKER_EMULATOR_SPOT_RESTART_DELAY_SECONDS": str(spot_restart_delay_s),
           "SAGEMAKER_EMULATOR_LOG_FLUSH_SECONDS": "0.2",
           "SAGEMAKER_EMULATOR_CHECKPOINT_SYNC_SECONDS": "0.5"}
    process, url = start_emulator_process(workdir, env, workdir.parent / "emulator.log")
    return Emulator(url, workdir, process)


def job_request(name: str, bucket: str, mode: str = "succeed", **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": ROLE_ARN,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                   "MetricDefinitions": [LOSS_METRIC]},
        "HyperParameters": {"mode": mode, "epochs": "2", "learning_rate": "0.0002"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train/",
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    request.update(overrides)
    return request


# --- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def entry_point(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "fake_train.py"
    path.write_text(FAKE_ENTRY_POINT)
    return path


@pytest.fixture(scope="module")
def bucket(aws: AwsEndpoint) -> str:
    name = unique("sm-emulator")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="data/train/a.jsonl", Body=b'{"prompt": "hi", "completion": "there"}\n')
    s3.put_object(Bucket=name, Key="data/train/nested/b.jsonl", Body=b'{"prompt": "a", "completion": "b"}\n')
    return name


@pytest.fixture(scope="module")
def state_changes(aws: AwsEndpoint) -> str:
    return state_change_queue("sm-training")


@pytest.fixture(scope="module")
def emulator(aws: AwsEndpoint, state_changes: str, entry_point: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_emulator(tmp_path_factory.mktemp("sagemaker") / "work", entry_point, max_jobs=2)
    yield emulator
    emulator.terminate()


@pytest.fixture(scope="module")
def sm(emulator: Emulator) -> Any:
    return emulator.client()


@pytest.fixture(scope="module")
def completed_job(sm: Any, bucket: str) -> dict[str, Any]:
    name = unique("ok")
    sm.create_training_job(**job_request(
        name, bucket, CheckpointConfig={"S3Uri": f"s3://{bucket}/checkpoints/{name}"},
        Environment={"CUSTOM_FLAG": "on"}, Tags=[{"Key": "job_id", "Value": "j-1"}]))
    return wait_status(sm, name)


# --- a job that succeeds -----------------------------------------------------------------------------------

def test_completed_job_describes_like_sagemaker(completed_job: dict[str, Any], bucket: str) -> None:
    job, name = completed_job, completed_job["TrainingJobName"]
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Completed", "Completed")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t for t in job["SecondaryStatusTransitions"])
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/output/{name}/output/model.tar.gz"
    assert job["CreationTime"] <= job["TrainingStartTime"] <= job["TrainingEndTime"]
    assert job["TrainingEndTime"] <= job["LastModifiedTime"]
    assert job["TrainingTimeInSeconds"] >= 1 and job["BillableTimeInSeconds"] >= 1
    assert job["HyperParameters"] == {"mode": "succeed", "epochs": "2", "learning_rate": "0.0002"}
    assert job["Environment"] == {"CUSTOM_FLAG": "on"}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 600}
    assert job["EnableManagedSpotTraining"] is False
    assert job["TrainingJobArn"] == f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}"
    assert [(m["MetricName"], m["Value"]) for m in job["FinalMetricDataList"]] == [("train:loss", 1.25)]


def model_files(job: dict[str, Any]) -> dict[str, bytes]:
    bucket, _, key = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").partition("/")
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
                for member in tar.getmembers()}


def test_completed_job_uploads_the_model_dir_as_model_tar(completed_job: dict[str, Any]) -> None:
    files = model_files(completed_job)
    assert list(files) == ["adapter.json"]
    seen = json.loads(files["adapter.json"])
    assert seen["train_files"] == ["a.jsonl", "nested/b.jsonl"]  # the S3 prefix, relative paths kept
    assert seen["hyperparameters"]["epochs"] == "2"  # the contract: strings in hyperparameters.json
    assert seen["sm_hps"]["epochs"] == 2 and seen["sm_hps"]["mode"] == "succeed"
    assert seen["channels"] == ["train"]
    assert (seen["job"], seen["custom"]) == (completed_job["TrainingJobName"], "on")


def test_completed_job_syncs_checkpoints_to_s3(completed_job: dict[str, Any], bucket: str) -> None:
    prefix = f"checkpoints/{completed_job['TrainingJobName']}/"
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert [o["Key"] for o in listed.get("Contents", [])] == [prefix + "checkpoint-2/state.txt"]


def test_a_new_job_starts_with_the_checkpoints_an_earlier_run_left(
        sm: Any, bucket: str, completed_job: dict[str, Any]) -> None:
    name = unique("resume")
    checkpoints = f"s3://{bucket}/checkpoints/{completed_job['TrainingJobName']}"
    sm.create_training_job(**job_request(name, bucket, CheckpointConfig={"S3Uri": checkpoints}))
    job = wait_status(sm, name)
    assert json.loads(model_files(job)["adapter.json"])["checkpoints_at_start"] == ["checkpoint-2/state.txt"]


def test_completed_job_output_reaches_cloudwatch_logs(completed_job: dict[str, Any]) -> None:
    logs, name = boto3.client("logs"), completed_job["TrainingJobName"]
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=f"{name}/")["logStreams"]
    assert len(streams) == 1 and streams[0]["logStreamName"].startswith(f"{name}/algo-1-")
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                 logStreamName=streams[0]["logStreamName"], startFromHead=True)["events"]
    messages = [e["message"] for e in events]
    assert 'METRICS {"step": 2, "train_loss": 1.25}' in messages
    assert "a line on stderr" in messages


def test_state_changes_reach_sqs_through_an_eventbridge_rule(completed_job: dict[str, Any],
                                                              state_changes: str) -> None:
    sqs, name = boto3.client("sqs"), completed_job["TrainingJobName"]
    seen: list[dict[str, Any]] = []

    def receive() -> list[dict[str, Any]]:
        for message in sqs.receive_message(QueueUrl=state_changes, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail"]["TrainingJobName"] == name:
                seen.append(event)
        return seen

    wait_for(receive, lambda events: any(e["detail"]["TrainingJobStatus"] == "Completed" for e in events),
             "the Completed event", timeout_s=15)
    assert [e["detail"]["SecondaryStatus"] for e in seen] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    event = seen[-1]
    assert (event["source"], event["detail-type"]) == ("aws.sagemaker", "SageMaker Training Job State Change")
    assert event["resources"] == [completed_job["TrainingJobArn"]]
    detail = event["detail"]
    assert detail["Tags"] == {"job_id": "j-1"}
    assert isinstance(detail["CreationTime"], int)
    assert detail["CreationTime"] == round(completed_job["CreationTime"].timestamp() * 1000)
    assert detail["ModelArtifacts"] == completed_job["ModelArtifacts"]
    assert detail["FinalMetricDataList"][0]["MetricName"] == "train:loss"


# --- script mode ------------------------------------------------------------------------------------------

FRAMEWORK_IMAGE = ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:"
                   "2.3.0-transformers4.48.0-gpu-py311-cu121-ubuntu20.04")
FRAMEWORK_ALGORITHM = {"TrainingImage": FRAMEWORK_IMAGE, "TrainingInputMode": "File"}
FAKE_SCRIPT = r'''
import json, os, sys
from pathlib import Path
import helper  # a module of the same bundle: the code dir is the working directory and on sys.path
Path(os.environ["SM_MODEL_DIR"], "script.json").write_text(json.dumps({
    "argv": sys.argv[1:], "cwd": os.getcwd(), "helper": helper.VALUE,
    "entry_point": os.environ["SM_USER_ENTRY_POINT"], "module_dir": os.environ["SM_MODULE_DIR"],
    "user_args": json.loads(os.environ["SM_USER_ARGS"]),
    "hyperparameters": json.loads(Path(os.environ["SM_INPUT_CONFIG_DIR"], "hyperparameters.json").read_text()),
}))
print("METRICS " + json.dumps({"step": 1, "train_loss": 0.5}))
'''


def upload_bundle(bucket: str, files: dict[str, str]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    key = f"code/{uuid.uuid4().hex}/sourcedir.tar.gz"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=raw.getvalue())
    return f"s3://{bucket}/{key}"


def test_script_mode_runs_the_program_from_the_submitted_tarball(sm: Any, bucket: str) -> None:
    # GIVEN a framework image the emulator has no entry point for, and the code in an S3 tarball
    submit = upload_bundle(bucket, {"finetune.py": FAKE_SCRIPT, "helper.py": "VALUE = 'from the bundle'\n"})
    name = unique("script")
    hyperparameters = {"sagemaker_program": '"finetune.py"', "sagemaker_submit_directory": json.dumps(submit),
                       "sagemaker_region": '"us-east-1"', "n_epochs": "2", "model_id": "org/model"}
    sm.create_training_job(**job_request(name, bucket, HyperParameters=hyperparameters, AlgorithmSpecification={
        **FRAMEWORK_ALGORITHM, "MetricDefinitions": [LOSS_METRIC]}))
    # THEN the program runs in /opt/ml/code with the toolkit's arguments, under the same contract
    job = wait_status(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    seen = json.loads(model_files(job)["script.json"])
    assert seen["argv"] == seen["user_args"] == ["--model_id", "org/model", "--n_epochs", "2"]
    assert seen["cwd"].endswith(f"/{name}/opt_ml/code") and seen["helper"] == "from the bundle"
    assert (seen["entry_point"], seen["module_dir"]) == ("finetune.py", submit)
    assert seen["hyperparameters"] == hyperparameters  # hyperparameters.json as sent, sagemaker_* included
    assert [(m["MetricName"], m["Value"]) for m in job["FinalMetricDataList"]] == [("train:loss", 0.5)]


def test_script_mode_with_a_missing_tarball_or_program_fails_the_job(sm: Any, bucket: str) -> None:
    missing, wrong = unique("nocode"), unique("noprogram")
    submit = upload_bundle(bucket, {"other.py": "print('hi')\n"})
    for name, directory in ((missing, f"s3://{bucket}/code/none/sourcedir.tar.gz"), (wrong, submit)):
        sm.create_training_job(**job_request(name, bucket, HyperParameters={
            "sagemaker_program": '"finetune.py"', "sagemaker_submit_directory": json.dumps(directory)},
            AlgorithmSpecification=FRAMEWORK_ALGORITHM))
    assert "download or unpack the training code" in wait_status(sm, missing)["FailureReason"]
    assert "finetune.py is not in" in wait_status(sm, wrong)["FailureReason"]


def test_a_framework_image_without_script_hyperparameters_is_refused(sm: Any, bucket: str) -> None:
    error = error_of(lambda: sm.create_training_job(**job_request(
        unique("noscript"), bucket, AlgorithmSpecification=FRAMEWORK_ALGORITHM)))
    assert error["Code"] == "ValidationException" and "sagemaker_submit_directory" in error["Message"]
    error = error_of(lambda: sm.create_training_job(**job_request(
        unique("badprogram"), bucket, AlgorithmSpecification=FRAMEWORK_ALGORITHM,
        HyperParameters={"sagemaker_program": "../x.py", "sagemaker_submit_directory": f"s3://{bucket}/c.tgz"})))
    assert error["Code"] == "ValidationException" and "sagemaker_program" in error["Message"]


# --- jobs that do not succeed ----------------------------------------------------------------------------

def test_failing_entry_point_fails_with_the_reason_it_wrote(sm: Any, bucket: str) -> None:
    name = unique("fail")
    sm.create_training_job(**job_request(name, bucket, mode="fail"))
    job = wait_status(sm, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert job["FailureReason"] == "AlgorithmError: RuntimeError: CUDA out of memory (pretend)"
    assert "ModelArtifacts" not in job


# --- jobs on several instances ------------------------------------------------------------------------------

def test_a_two_instance_job_runs_a_container_per_host_and_uploads_algo_1s_model(sm: Any, bucket: str,
                                                                               emulator: Emulator) -> None:
    name = unique("hosts")
    sm.create_training_job(**job_request(name, bucket, ResourceConfig={
        "InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 30}))
    job = wait_status(sm, name)
    assert job["TrainingJobStatus"] == "Completed" and job["ResourceConfig"]["InstanceCount"] == 2
    uploaded = json.loads(model_files(job)["adapter.json"])
    assert (uploaded["host"], uploaded["hosts"]) == ("algo-1", ["algo-1", "algo-2"])
    assert uploaded["resourceconfig"]["current_host"] == "algo-1"
    assert uploaded["resourceconfig"]["hosts"] == ["algo-1", "algo-2"]
    second = json.loads((emulator.workdir / name / "algo-2" / "opt_ml" / "model" / "adapter.json").read_text())
    assert (second["host"], second["resourceconfig"]["current_host"]) == ("algo-2", "algo-2")
    assert second["train_files"] == uploaded["train_files"]  # every instance gets every channel
    # Both find the same rendezvous on this machine (algo-N names resolve to nothing here).
    assert uploaded["master"] == second["master"] and uploaded["master"][0] == "127.0.0.1"
    assert int(uploaded["master"][1]) > 0 and uploaded["gloo_interface"] == second["gloo_interface"]
    streams = boto3.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                        logStreamNamePrefix=f"{name}/")["logStreams"]
    assert sorted(s["logStreamName"].split("/")[1].rsplit("-", 1)[0] for s in streams) == ["algo-1", "algo-2"]


def test_one_failed_instance_fails_the_job_and_ends_the_others(sm: Any, bucket: str, emulator: Emulator) -> None:
    name = unique("hostfail")
    sm.create_training_job(**job_request(name, bucket, mode="fail_on_algo_2", ResourceConfig={
        "InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 30}))
    job = wait_status(sm, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"] == "AlgorithmError: RuntimeError: CUDA out of memory (pretend)"  # algo-2's words
    wait_gone(emulator.pids(name, "algo-1"))  # algo-1 slept on: it was ended with the job


@pytest.mark.parametrize("count", [0, 5])
def test_an_instance_count_it_cannot_run_is_refused(sm: Any, bucket: str, count: int) -> None:
    with pytest.raises(ClientError) as error:
        sm.create_training_job(**job_request(unique("count"), bucket, ResourceConfig={
            "InstanceType": "ml.m5.large", "InstanceCount": count, "VolumeSizeInGB": 30}))
    assert error.value.response["Error"]["Code"] == "ValidationException"


def test_stop_ends_the_whole_process_group_and_the_job_stopped(sm: Any, bucket: str,
                                                               emulator: Emulator) -> None:
    name = unique("stop")
    sm.create_training_job(**job_request(name, bucket, mode="sleep",
                                         CheckpointConfig={"S3Uri": f"s3://{bucket}/checkpoints/{name}"}))
    pids = emulator.pids(name)
    assert all(running(pid) for pid in pids)
    s3 = boto3.client("s3")
    wait_for(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"checkpoints/{name}/")["KeyCount"], bool,
             "the periodic checkpoint sync")
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"

    sm.stop_training_job(TrainingJobName=name)

    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in ("Stopping", "Stopped")
    job = wait_status(sm, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    wait_gone(pids)
    with pytest.raises(ClientError) as error:
        sm.stop_training_job(TrainingJobName=name)
    assert error.value.response["Error"]["Code"] == "ValidationException"


def test_max_runtime_stops_the_job_even_when_it_ignores_sigterm(sm: Any, bucket: str,
                                                                emulator: Emulator) -> None:
    name = unique("slow")
    sm.create_training_job(**job_request(name, bucket, mode="stubborn",
                                         StoppingCondition={"MaxRuntimeInSeconds": 2}))
    pids = emulator.pids(name)
    job = wait_status(sm, name, timeout_s=20)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert "Stopping" in [t["Status"] for t in job["SecondaryStatusTransitions"]]
    wait_gone(pids)  # SIGKILL after the grace


# --- managed spot: the time limits span interruptions -----------------------------------------------------

def spot_request(name: str, bucket: str, runtime_s: int, wait_s: int) -> dict[str, Any]:
    return job_request(name, bucket, mode="sleep", EnableManagedSpotTraining=True,
                       StoppingCondition={"MaxRuntimeInSeconds": runtime_s, "MaxWaitTimeInSeconds": wait_s},
                       CheckpointConfig={"S3Uri": f"s3://{bucket}/checkpoints/{name}"})


def interrupt_when_training(emulator: Emulator, sm: Any, name: str, after_s: float = 0.0) -> None:
    wait_for(lambda: sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"], lambda s: s == "Training",
             f"{name} to be training")
    emulator.pids(name)  # the container is up
    time.sleep(after_s)  # let the first attempt use up some of its MaxRuntime (a duration, not a poll)
    response = emulator.interrupt(name)
    assert response.status_code == 202, response.text


def spans(job: dict[str, Any], status: str) -> list[float]:
    """How long each visit to `status` lasted, from SecondaryStatusTransitions."""
    return [(t["EndTime"] - t["StartTime"]).total_seconds()
            for t in job["SecondaryStatusTransitions"] if t["Status"] == status and "EndTime" in t]


def test_max_runtime_counts_every_attempt_of_an_interrupted_spot_job(sm: Any, bucket: str,
                                                                     emulator: Emulator) -> None:
    name = unique("spot-runtime")
    sm.create_training_job(**spot_request(name, bucket, runtime_s=6, wait_s=600))
    interrupt_when_training(emulator, sm, name, after_s=2.5)
    job = wait_status(sm, name, timeout_s=40)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded"), job
    first, second = spans(job, "Training")
    assert first >= 2.5
    # The restarted attempt gets what the first one left of the 6 s, not a fresh 6 s.
    assert second <= 6 - first + 1.5 and first + second >= 5.5, (first, second)


def test_max_wait_time_stops_a_spot_job_still_waiting_for_capacity(
        entry_point: Path, bucket: str, tmp_path: Path) -> None:
    slow_capacity = start_emulator(tmp_path / "work", entry_point, max_jobs=1, spot_restart_delay_s=120)
    try:
        sm = slow_capacity.client()
        name = unique("spot-wait")
        sm.create_training_job(**spot_request(name, bucket, runtime_s=30, wait_s=30))
        interrupt_when_training(slow_capacity, sm, name)
        job = wait_status(sm, name, timeout_s=60)  # long before the 120 s wait for capacity is over
        assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxWaitTimeExceeded"), job
        statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
        assert statuses[-3:] == ["Interrupted", "Stopping", "MaxWaitTimeExceeded"], statuses
    finally:
        slow_capacity.terminate()


def test_max_wait_time_is_for_spot_jobs_and_at_least_the_runtime(sm: Any, bucket: str) -> None:
    on_demand = job_request(unique("wait"), bucket, StoppingCondition={"MaxRuntimeInSeconds": 60,
                                                                       "MaxWaitTimeInSeconds": 120})
    assert "managed spot" in error_of(lambda: sm.create_training_job(**on_demand))["Message"]
    short = spot_request(unique("wait"), bucket, runtime_s=60, wait_s=30)
    assert "greater than or equal to" in error_of(lambda: sm.create_training_job(**short))["Message"]


# --- requests the API refuses ----------------------------------------------------------------------------

def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as error:
        call()
    return dict(error.value.response["Error"])


def test_duplicate_name_is_resource_in_use(sm: Any, bucket: str, completed_job: dict[str, Any]) -> None:
    error = error_of(lambda: sm.create_training_job(**job_request(completed_job["TrainingJobName"], bucket)))
    assert error["Code"] == "ResourceInUse"


def test_describe_unknown_job_is_sagemakers_validation_error(sm: Any) -> None:
    error = error_of(lambda: sm.describe_training_job(TrainingJobName="no-such-job"))
    assert error == {"Code": "ValidationException", "Message": "Requested resource not found."}


@pytest.mark.parametrize("name", ["under_score", "-leading-dash", "x" * 64])
def test_names_outside_sagemakers_pattern_are_refused(sm: Any, bucket: str, name: str) -> None:
    error = error_of(lambda: sm.create_training_job(**job_request(name, bucket)))
    assert error["Code"] == "ValidationException" and "trainingJobName" in error["Message"]


def test_operations_it_does_not_emulate_are_refused_by_name(sm: Any) -> None:
    error = error_of(lambda: sm.list_transform_jobs())
    assert error["Code"] == "UnknownOperationException" and "SageMaker.ListTransformJobs" in error["Message"]


# --- listing and tags ------------------------------------------------------------------------------------

def test_list_filters_sorts_and_pages(sm: Any, bucket: str) -> None:
    batch = unique("list")
    names = [f"{batch}-{suffix}" for suffix in ("a", "b", "c")]
    for name in names:
        sm.create_training_job(**job_request(name, bucket))
    for name in names:
        wait_status(sm, name)
    sm.create_training_job(**job_request(f"{batch}-failed", bucket, mode="fail"))
    wait_status(sm, f"{batch}-failed")

    def listed(**params: Any) -> list[str]:
        page = sm.list_training_jobs(NameContains=batch, **params)
        return [summary["TrainingJobName"] for summary in page["TrainingJobSummaries"]]

    assert listed(StatusEquals="Completed", SortBy="Name", SortOrder="Descending") == names[::-1]
    assert listed(StatusEquals="Failed") == [f"{batch}-failed"]
    assert listed(SortBy="CreationTime") == [*names, f"{batch}-failed"]
    assert listed(CreationTimeAfter=time.time() + 3600) == []
    assert len(listed(CreationTimeBefore=time.time() + 3600, CreationTimeAfter=time.time() - 3600)) == 4

    first = sm.list_training_jobs(NameContains=batch, SortBy="Name", MaxResults=3)
    second = sm.list_training_jobs(NameContains=batch, SortBy="Name", MaxResults=3,
                                   NextToken=first["NextToken"])
    summaries = first["TrainingJobSummaries"] + second["TrainingJobSummaries"]
    assert [s["TrainingJobName"] for s in summaries] == sorted([*names, f"{batch}-failed"])
    assert "NextToken" not in second
    assert {"TrainingJobArn", "CreationTime", "LastModifiedTime", "TrainingEndTime",
            "SecondaryStatus"} <= set(summaries[0])


def test_tags_can_be_added_listed_and_deleted(sm: Any, completed_job: dict[str, Any]) -> None:
    arn = completed_job["TrainingJobArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "ml"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "job_id", "Value": "j-1"},
                                                     {"Key": "team", "Value": "ml"}]
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "job_id", "Value": "j-1"}]


# --- the emulator process itself ---------------------------------------------------------------------------

def test_jobs_wait_for_a_slot_die_with_the_emulator_and_survive_its_restart(
        aws: AwsEndpoint, bucket: str, entry_point: Path, tmp_path: Path) -> None:
    # GIVEN an emulator that runs one job at a time, busy with a long job
    workdir = tmp_path / "work"
    first = start_emulator(workdir, entry_point, max_jobs=1)
    sm = first.client()
    try:
        sm.create_training_job(**job_request("busy", bucket, mode="sleep"))
        sm.create_training_job(**job_request("queued", bucket))
        first.pids("busy")
        # THEN the next job waits, InProgress/Starting, until the slot frees
        queued = sm.describe_training_job(TrainingJobName="queued")
        assert (queued["TrainingJobStatus"], queued["SecondaryStatus"]) == ("InProgress", "Starting")
        sm.stop_training_job(TrainingJobName="busy")
        assert wait_status(sm, "queued")["TrainingJobStatus"] == "Completed"

        # WHEN the emulator is told to stop while a job runs
        sm.create_training_job(**job_request("orphan", bucket, mode="sleep"))
        pids = first.pids("orphan")
    finally:
        first.terminate()
    # THEN it ends that job's processes before it exits
    wait_gone(pids)

    # AND a new emulator on the same work dir still describes every job
    second = start_emulator(workdir, entry_point, max_jobs=1)
    try:
        sm = second.client()
        assert sm.describe_training_job(TrainingJobName="busy")["TrainingJobStatus"] == "Stopped"
        queued = sm.describe_training_job(TrainingJobName="queued")
        assert queued["ModelArtifacts"]["S3ModelArtifacts"].endswith("/queued/output/model.tar.gz")
        orphan = sm.describe_training_job(TrainingJobName="orphan")
        assert orphan["TrainingJobStatus"] == "Failed" and "shut down" in orphan["FailureReason"]
    finally:
        second.terminate()
