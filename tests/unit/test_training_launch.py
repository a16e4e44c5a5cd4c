"""What a launch sends: image or script mode (the trainer's source uploaded once per content hash), the role,
tags and KMS key, the Hugging Face token's secret for gated models, and the GPU quota check first."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from services.training import source_bundle
from services.training.models import Job
from services.training.quotas import QuotaChecker, quota_name
from services.training.settings import Settings
from tests.support.training import Fakes, create, launch_config, put_file, relaunch_woken, run

GATED = "meta-llama/Llama-3.2-1B-Instruct"
OPEN_GPU = "Qwen/Qwen2.5-0.5B-Instruct"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"


class FakeQuotas:
    """Service Quotas: a page of applied quotas (one listed only among the defaults), values per code."""

    def __init__(self, values: dict[str, float] | None = None, error: Exception | None = None) -> None:
        self.values = values if values is not None else {"L-G5X": 0.0, "L-G52X": 2.0}
        self.error = error
        self.listed = 0
        self.asked: list[str] = []

    async def list_service_quotas(self, ServiceCode: str, MaxResults: int, NextToken: str | None = None,
                                  ) -> dict[str, Any]:
        assert ServiceCode == "sagemaker"
        if self.error:
            raise self.error
        self.listed += 1
        if NextToken is None:
            return {"Quotas": [{"QuotaName": "ml.m5.large for training job usage", "QuotaCode": "L-M5"}],
                    "NextToken": "page-2"}
        return {"Quotas": [{"QuotaName": quota_name("ml.g5.xlarge"), "QuotaCode": "L-G5X"}]}

    async def list_aws_default_service_quotas(self, ServiceCode: str, MaxResults: int,
                                              NextToken: str | None = None) -> dict[str, Any]:
        return {"Quotas": [{"QuotaName": quota_name("ml.g5.2xlarge"), "QuotaCode": "L-G52X"}]}

    async def get_service_quota(self, ServiceCode: str, QuotaCode: str) -> dict[str, Any]:
        self.asked.append(QuotaCode)
        return {"Quota": {"QuotaCode": QuotaCode, "Value": self.values[QuotaCode]}}


def make_deps(mode: str = "image", kms: str | None = None, secret: str | None = None,
              quotas: QuotaChecker | None = None) -> Fakes:
    return Fakes(quotas=quotas, launch=launch_config(role_arn=ROLE, image_uri="acct.dkr.ecr/llm-tuner-trainer:1",
                                                     kms_key_id=kms, launch_mode=mode, region="eu-west-1",
                                                     hf_token_secret_id=secret))


def launched(deps: Fakes, model: str = "llm-tuner/tiny-chat", instance_type: str | None = None,
             spot: bool = False) -> Job:
    """Create a job on a validated file and run its launch command; the stored job after it."""
    put_file(deps)
    job = create(deps, model=model, instance_type=instance_type, spot=spot)
    relaunch_woken(deps)
    return deps.job(job.job_id)


def created(deps: Fakes) -> list[dict[str, Any]]:
    return deps.sagemaker.created


# --- image and script mode -----------------------------------------------------------------------------

def test_image_mode_runs_the_trainer_image_with_role_tags_and_no_script_hyperparameters() -> None:
    deps = make_deps()
    job = launched(deps)
    [request] = created(deps)
    assert request["AlgorithmSpecification"]["TrainingImage"] == "acct.dkr.ecr/llm-tuner-trainer:1"
    assert request["RoleArn"] == ROLE
    assert request["Tags"] == [{"Key": "llm-tuner:user", "Value": "u1"}, {"Key": "llm-tuner:job", "Value": job.job_id}]
    assert not [k for k in request["HyperParameters"] if k.startswith("sagemaker_")]
    assert "KmsKeyId" not in request["OutputDataConfig"]
    assert deps.s3.puts == []  # type: ignore[attr-defined]


def test_script_mode_uploads_the_source_once_and_sends_the_sdk_hyperparameters() -> None:
    deps = make_deps("script")
    first, second = launched(deps), launched(deps)
    body, digest = source_bundle.package_source()
    key = f"code/{digest}/sourcedir.tar.gz"
    assert [(p["Bucket"], p["Key"]) for p in deps.s3.puts] == [("b", key)]  # type: ignore[attr-defined]
    assert deps.s3.heads == 1  # type: ignore[attr-defined]  # the second launch knew it was there
    assert len(created(deps)) == 2
    for job, request in zip((first, second), created(deps), strict=True):
        assert request["AlgorithmSpecification"]["TrainingImage"] == (
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311-ubuntu20.04-sagemaker")
        hp = request["HyperParameters"]
        assert hp["sagemaker_program"] == '"finetune.py"'
        assert json.loads(hp["sagemaker_submit_directory"]) == f"s3://b/{key}"
        assert (hp["sagemaker_region"], hp["sagemaker_container_log_level"]) == ('"eu-west-1"', "20")
        assert json.loads(hp["sagemaker_job_name"]) == job.job_id
        assert hp["n_epochs"] == str(job.hyperparameters["n_epochs"])  # the trainer's own, as in image mode
        assert request["RoleArn"] == ROLE
    package = sorted(f"llmt_trainer/{p.name}" for p in (source_bundle.TRAINER_DIR / "llmt_trainer").glob("*.py"))
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert tar.getnames() == ["finetune.py", "requirements.txt", *package]
        assert "llmt_trainer/main.py" in package and "llmt_trainer/__init__.py" in package
        assert b"boto3" in tar.extractfile("requirements.txt").read()  # type: ignore[union-attr]
    assert gzip.decompress(body)  # a plain gzip stream


def test_a_bundle_already_in_s3_is_not_uploaded_again_by_a_new_process() -> None:
    deps = make_deps("script")
    body, digest = source_bundle.package_source()
    deps.s3.objects["b", f"code/{digest}/sourcedir.tar.gz"] = body  # type: ignore[attr-defined]
    launched(deps)
    assert deps.s3.puts == [] and len(created(deps)) == 1  # type: ignore[attr-defined]


def test_the_package_is_the_same_bytes_for_the_same_files(tmp_path: Any) -> None:
    (tmp_path / source_bundle.TRAINER_PACKAGE).mkdir()
    for name in (*source_bundle.SOURCE_FILES, f"{source_bundle.TRAINER_PACKAGE}/loop.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    first = source_bundle.package_source(tmp_path)
    (tmp_path / "finetune.py").touch()  # a new mtime, same content
    os.chmod(tmp_path / source_bundle.TRAINER_PACKAGE / "loop.py", 0o600)  # another mode, same content
    assert source_bundle.package_source(tmp_path) == first
    (tmp_path / source_bundle.TRAINER_PACKAGE / "loop.py").write_text("# changed\n")
    assert source_bundle.package_source(tmp_path)[1] != first[1]


def test_the_unpacked_bundle_runs_on_its_own(tmp_path: Any) -> None:
    # GIVEN the bundle unpacked into a folder outside the repository, as script mode unpacks it
    body, _ = source_bundle.package_source()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the repository on sys.path
    # WHEN it runs there as the training toolkit runs it
    result = subprocess.run([sys.executable, "finetune.py", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    # THEN every module of the trainer imports from the bundle itself
    assert result.returncode == 0, result.stderr
    assert "Contract (SageMaker training container" in result.stdout


def test_script_mode_on_a_gpu_instance_takes_the_hugging_face_gpu_image() -> None:
    deps = make_deps("script")
    launched(deps, OPEN_GPU, "ml.g5.xlarge")
    [request] = created(deps)
    assert request["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-training:"
        "2.3.0-transformers4.48.0-gpu-py311-cu121-ubuntu20.04")


def test_script_mode_in_a_region_without_an_image_fails_the_launch() -> None:
    deps = make_deps("script")
    deps.launch.region = "xx-nowhere-1"
    job = launched(deps)
    assert job.status == "failed" and job.error is not None
    assert job.error["code"] == "framework_image_unavailable" and "xx-nowhere-1" in job.error["message"]
    assert created(deps) == []


# --- KMS ---------------------------------------------------------------------------------------------

def test_kms_key_encrypts_the_output_and_the_uploaded_source() -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/k-1"
    deps = make_deps("script", kms=key)
    launched(deps)
    [request] = created(deps)
    assert request["OutputDataConfig"]["KmsKeyId"] == key
    [put] = deps.s3.puts  # type: ignore[attr-defined]
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", key)


def test_settings_carry_launch_mode_kms_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCH_MODE", "script")
    monkeypatch.setenv("S3_KMS_KEY_ID", "alias/llm-tuner")
    monkeypatch.setenv("HF_TOKEN_SECRET_ID", "llm-tuner/hf-token")
    settings = Settings()
    assert (settings.launch_mode, settings.s3_kms_key_id, settings.hf_token_secret_id) == (
        "script", "alias/llm-tuner", "llm-tuner/hf-token")
    monkeypatch.setenv("LAUNCH_MODE", "docker")
    with pytest.raises(ValueError):
        Settings()


# --- gated models ------------------------------------------------------------------------------------

def test_a_gated_model_without_a_token_secret_fails_at_launch() -> None:
    deps = make_deps()
    job = launched(deps, GATED, "ml.g5.xlarge")
    assert job.status == "failed" and job.error is not None
    assert job.error["code"] == "gated_model_needs_token" and "HF_TOKEN_SECRET_ID" in job.error["message"]
    assert created(deps) == []


def test_a_gated_model_gets_the_secrets_name_only() -> None:
    secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf-AbCd"
    deps = make_deps(secret=secret)
    launched(deps, GATED, "ml.g5.xlarge")
    [request] = created(deps)
    assert request["HyperParameters"]["hf_token_secret"] == secret
    assert request["HyperParameters"]["model_id"] == GATED
    assert "Environment" not in request


def test_an_open_model_is_not_given_the_secret() -> None:
    deps = make_deps(secret="hf-token")
    launched(deps, OPEN_GPU, "ml.g5.xlarge")
    assert "hf_token_secret" not in created(deps)[0]["HyperParameters"]


# --- GPU quota ---------------------------------------------------------------------------------------

def test_a_zero_gpu_quota_fails_the_job_naming_the_quota() -> None:
    quotas = FakeQuotas()
    deps = make_deps(quotas=QuotaChecker(quotas))
    job = launched(deps, OPEN_GPU, "ml.g5.xlarge")
    assert job.status == "failed" and job.error is not None and job.error["code"] == "insufficient_quota"
    assert '"ml.g5.xlarge for training job usage" is 0' in job.error["message"]
    assert "L-G5X" in job.error["message"] and "Service Quotas" in job.error["message"]
    assert created(deps) == []


def test_a_sufficient_quota_found_among_the_defaults_launches_and_codes_are_remembered() -> None:
    quotas = FakeQuotas()
    deps = make_deps(quotas=QuotaChecker(quotas))
    launched(deps, OPEN_GPU, "ml.g5.2xlarge")
    launched(deps, OPEN_GPU, "ml.g5.2xlarge")
    assert len(created(deps)) == 2
    assert quotas.listed == 2 and quotas.asked == ["L-G52X", "L-G52X"]  # listed once, read each time


def test_spot_jobs_check_the_spot_quota() -> None:
    checker = QuotaChecker(FakeQuotas())
    result = run(checker.check("ml.g5.xlarge", spot=True))
    assert (result.outcome, result.quota_name) == ("skipped", "ml.g5.xlarge for spot training job usage")


@pytest.mark.parametrize("error", [
    ClientError({"Error": {"Code": "NoSuchResourceException", "Message": "no"}}, "ListServiceQuotas"),
    ClientError({"Error": {"Code": "NotImplemented", "Message": "not yet"}}, "ListServiceQuotas"),
    ClientError({"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "ListServiceQuotas"),
    EndpointConnectionError(endpoint_url="http://localhost:1"),
])
def test_an_unanswerable_quota_check_is_skipped_and_the_job_launched(error: Exception,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    deps = make_deps(quotas=QuotaChecker(FakeQuotas(error=error)))
    with caplog.at_level("INFO", logger="services.training.quotas"):
        job = launched(deps, OPEN_GPU, "ml.g5.xlarge")
    assert job.status == "queued" and len(created(deps)) == 1
    assert any(r.message == "quota check skipped" for r in caplog.records)


def test_cpu_instances_are_not_quota_checked() -> None:
    quotas = FakeQuotas()
    deps = make_deps(quotas=QuotaChecker(quotas))
    launched(deps)
    assert quotas.listed == 0 and len(created(deps)) == 1
