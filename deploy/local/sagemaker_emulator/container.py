"""SageMaker's training-container contract, laid out under `<workdir>/<job>/opt_ml` instead of `/opt/ml`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "algo-1"


@dataclass(frozen=True)
class ContainerPaths:
    root: Path  # stands for /opt/ml

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def input_config(self) -> Path:
        return self.input / "config"

    @property
    def input_data(self) -> Path:
        return self.input / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        return self.output / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def failure_file(self) -> Path:
        return self.output / "failure"

    def channel(self, name: str) -> Path:
        return self.input_data / name


def lay_out(job_dir: Path, request: dict[str, Any]) -> ContainerPaths:
    """Create the directories and the three config files the algorithm reads at start."""
    paths = ContainerPaths(job_dir / "opt_ml")
    channels = request.get("InputDataConfig") or []
    for directory in (paths.input_config, paths.model, paths.output_data, paths.checkpoints,
                      *(paths.channel(c["ChannelName"]) for c in channels)):
        directory.mkdir(parents=True, exist_ok=True)
    resources = request.get("ResourceConfig") or {}
    _write_json(paths.input_config / "hyperparameters.json", request.get("HyperParameters") or {})
    _write_json(paths.input_config / "resourceconfig.json", {
        "current_host": HOST,
        "current_instance_type": resources.get("InstanceType", "local"),
        "current_group_name": "homogeneousCluster",
        "hosts": [HOST],
        "instance_groups": [{"instance_group_name": "homogeneousCluster",
                             "instance_type": resources.get("InstanceType", "local"), "hosts": [HOST]}],
        "network_interface_name": "eth0",
    })
    _write_json(paths.input_config / "inputdataconfig.json", {
        c["ChannelName"]: {
            "TrainingInputMode": c.get("InputMode", "File"),
            "S3DistributionType": c["DataSource"]["S3DataSource"].get("S3DataDistributionType",
                                                                      "FullyReplicated"),
            "RecordWrapperType": c.get("RecordWrapperType", "None"),
            **({"ContentType": c["ContentType"]} if c.get("ContentType") else {}),
        }
        for c in channels
    })
    return paths


def environment(job_name: str, request: dict[str, Any], paths: ContainerPaths) -> dict[str, str]:
    """The process environment: ours (AWS endpoint and credentials included), the `SM_*` variables the
    SageMaker training toolkit sets, then the job's own `Environment` map."""
    hyperparameters = request.get("HyperParameters") or {}
    channels = [c["ChannelName"] for c in request.get("InputDataConfig") or []]
    env = dict(os.environ)
    env.update({
        "TRAINING_JOB_NAME": job_name,
        "SM_MODEL_DIR": str(paths.model),
        "SM_OUTPUT_DIR": str(paths.output),
        "SM_OUTPUT_DATA_DIR": str(paths.output_data),
        "SM_INPUT_DIR": str(paths.input),
        "SM_INPUT_CONFIG_DIR": str(paths.input_config),
        "SM_INPUT_DATA_DIR": str(paths.input_data),
        "SM_CHECKPOINT_DIR": str(paths.checkpoints),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps({key: _decoded(value) for key, value in hyperparameters.items()}),
        "SM_CURRENT_HOST": HOST,
        "SM_HOSTS": json.dumps([HOST]),
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "PYTHONUNBUFFERED": "1",  # lines reach the log stream as they are printed
    })
    env.update({f"SM_CHANNEL_{name.upper()}": str(paths.channel(name)) for name in channels})
    env.update({f"SM_HP_{key.upper()}": value for key, value in hyperparameters.items()})
    env.update(request.get("Environment") or {})
    return env


def _decoded(value: str) -> Any:
    """SM_HPS carries each hyperparameter JSON-decoded where it parses, as the training toolkit does."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=1))
