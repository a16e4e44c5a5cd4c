"""The trainer reads a gated model's Hugging Face token from Secrets Manager (moto's), given only the
secret's id as the hyperparameter hf_token_secret; no Hub access."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from trainer_image.llmt_trainer import job
from trainer_image.llmt_trainer.contract import Paths
from trainer_image.llmt_trainer.errors import ModelLoadError
from trainer_image.llmt_trainer.loop import StopSignal
from trainer_image.llmt_trainer.model_loading import fetch_hf_token, use_hf_token


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


def test_a_plain_token_secret_is_read_by_name(secrets: Any) -> None:
    secrets.create_secret(Name="llm-tuner/hf-token", SecretString="hf_plain123\n")
    assert fetch_hf_token("llm-tuner/hf-token") == "hf_plain123"


def test_a_json_secret_is_read_by_arn(secrets: Any) -> None:
    arn = secrets.create_secret(Name="hf-json", SecretString=json.dumps({"HF_TOKEN": "hf_json456"}))["ARN"]
    assert fetch_hf_token(arn) == "hf_json456"


def test_no_secret_id_means_no_token(secrets: Any) -> None:
    assert fetch_hf_token(None) is None and fetch_hf_token("") is None


def test_a_missing_or_empty_secret_is_a_model_load_error(secrets: Any) -> None:
    with pytest.raises(ModelLoadError, match=r"cannot read the Hugging Face token .* nope"):
        fetch_hf_token("nope")
    secrets.create_secret(Name="empty", SecretString=json.dumps({"other": "x"}))
    with pytest.raises(ModelLoadError, match="holds no Hugging Face token"):
        fetch_hf_token("empty")


def test_the_token_reaches_the_hub_client_of_this_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    use_hf_token(None)
    assert "HF_TOKEN" not in os.environ
    use_hf_token("hf_abc")
    from huggingface_hub import get_token

    assert get_token() == "hf_abc"


def test_train_reads_the_secret_named_by_the_hyperparameter_before_anything_else(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps({"hf_token_secret": '"llm-tuner/hf-token"'}))
    asked: list[str | None] = []

    def fake_fetch(secret_id: str | None, client: Any = None) -> str | None:
        asked.append(secret_id)
        raise ModelLoadError("stop here")

    monkeypatch.setattr(job, "fetch_hf_token", fake_fetch)  # where train() looks it up
    paths = Paths.from_env({"SM_INPUT_CONFIG_DIR": str(config), "SM_MODEL_DIR": str(tmp_path / "m"),
                                     "SM_OUTPUT_DIR": str(tmp_path / "o"), "SM_CHANNEL_TRAIN": str(tmp_path)})
    with pytest.raises(ModelLoadError, match="stop here"):
        job.train(paths, {}, StopSignal())
    assert asked == ["llm-tuner/hf-token"]
