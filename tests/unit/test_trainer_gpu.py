"""A GPU instance type without usable CUDA fails at once, naming the instance type, before the model is loaded;
the local emulator's explicit opt-out only warns; CPU instance types are not checked. This machine has no CUDA,
which is the case under test; where torch does have CUDA these tests are skipped (they would need a broken GPU)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from deploy.local.sagemaker_emulator import container
from services.training.catalog import Catalog
from trainer_image.llmt_trainer import main
from trainer_image.llmt_trainer.contract import EXIT_FAILED, Paths
from trainer_image.llmt_trainer.errors import GpuUnavailableError
from trainer_image.llmt_trainer.gpu_check import (
    ALLOW_CPU_ON_GPU_INSTANCE_ENV,
    current_instance_type,
    is_gpu_instance_type,
    require_usable_gpu,
)
from trainer_image.llmt_trainer.stops import StopSignal

CATALOG_FILE = Path(__file__).resolve().parents[2] / "services" / "training" / "catalog.json"
no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's CUDA works")


def resource_config(folder: Path, instance_type: str) -> Path:
    """resourceconfig.json as SageMaker writes it into /opt/ml/input/config."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resourceconfig.json").write_text(json.dumps({
        "current_host": "algo-1", "current_instance_type": instance_type, "hosts": ["algo-1"],
        "network_interface_name": "eth0"}))
    return folder


def test_every_catalog_instance_type_with_gpus_is_recognised_as_a_gpu_type() -> None:
    instance_types = Catalog.load(CATALOG_FILE).instance_types
    assert any(t.gpus > 0 for t in instance_types) and any(t.gpus == 0 for t in instance_types)
    for instance_type in instance_types:
        assert is_gpu_instance_type(instance_type.id) == (instance_type.gpus > 0), instance_type.id
    assert is_gpu_instance_type("ml.p4de.24xlarge") and is_gpu_instance_type("ml.p5en.48xlarge")
    assert not is_gpu_instance_type("ml.c5.xlarge") and not is_gpu_instance_type("ml.trn1.2xlarge")


@no_cuda_here
def test_a_gpu_instance_without_cuda_fails_naming_the_instance_type(tmp_path: Path) -> None:
    config = resource_config(tmp_path, "ml.g5.2xlarge")

    with pytest.raises(GpuUnavailableError) as failure:
        require_usable_gpu(config, {})

    message = str(failure.value)
    assert "ml.g5.2xlarge" in message and "CUDA is not usable" in message and "CUDA build of torch" in message


@no_cuda_here
def test_a_gpu_whose_cuda_fails_to_initialise_fails_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """is_available() can say yes while no kernel runs (a torch build without this GPU's architecture, a driver
    too old): stand-ins for that answer here, then the check's own tiny kernel really fails on this machine."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    with pytest.raises(GpuUnavailableError, match=r"ml\.p4d\.24xlarge .*CUDA initialisation failed"):
        require_usable_gpu(resource_config(tmp_path, "ml.p4d.24xlarge"), {})


@no_cuda_here
def test_the_emulators_opt_out_warns_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = resource_config(tmp_path, "ml.g5.xlarge")
    with caplog.at_level(logging.WARNING):
        require_usable_gpu(config, {ALLOW_CPU_ON_GPU_INSTANCE_ENV: "1"})
    assert "ml.g5.xlarge has GPUs but CUDA is not usable" in caplog.text
    assert ALLOW_CPU_ON_GPU_INSTANCE_ENV in caplog.text
    with pytest.raises(GpuUnavailableError):  # only "1" opts out
        require_usable_gpu(config, {ALLOW_CPU_ON_GPU_INSTANCE_ENV: "true"})


def test_cpu_instance_types_and_unknown_ones_are_not_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_usable_gpu(resource_config(tmp_path / "cpu", "ml.m5.large"), {})
    require_usable_gpu(tmp_path / "no-config-here", {})  # a local run: no resourceconfig.json
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "resourceconfig.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        require_usable_gpu(broken, {})
    assert current_instance_type(broken) is None and "the instance type is unknown" in caplog.text


@no_cuda_here
def test_the_job_fails_before_the_model_is_loaded(tmp_path: Path) -> None:
    """The base model named here does not exist: a check that ran after loading would fail on that instead."""
    resource_config(tmp_path / "config", "ml.g6.xlarge")
    (tmp_path / "config" / "hyperparameters.json").write_text(json.dumps({"model_id": str(tmp_path / "nothing")}))
    paths = Paths.from_env({"SM_INPUT_CONFIG_DIR": str(tmp_path / "config"), "SM_CHANNEL_TRAIN": str(tmp_path),
                            "SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DIR": str(tmp_path / "output")})

    assert main.run(paths, [], StopSignal()) == EXIT_FAILED

    reason = paths.failure_file.read_text()
    assert reason.startswith("instance type ml.g6.xlarge has GPUs, but CUDA is not usable"), reason


def test_the_local_emulator_declares_its_gpu_instance_types_and_opts_out(tmp_path: Path) -> None:
    request = {"ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1}}
    paths = container.lay_out(tmp_path / "job", request)

    env = container.environment("job", request, paths)

    assert current_instance_type(paths.input_config) == "ml.g5.2xlarge"
    assert env[ALLOW_CPU_ON_GPU_INSTANCE_ENV] == "1"
