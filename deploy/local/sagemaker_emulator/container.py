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
    def code(self) -> Path:  # /opt/ml/code: script mode's sourcedir.tar.gz, unpacked
        return self.root / "code"

    @property
    def failure_file(self) -> Path:
        return self.output / "failure"

    def channel(self, name: str) -> Path:
        return self.input_data / name


def lay_out(job_dir: Path, request: dict[str, Any], host: str = HOST, hosts: list[str] | None = None,
            root: Path | None = None) -> ContainerPaths:
    """Create the directories and the three config files the algorithm reads at start, for `host` of `hosts`
    (one instance, algo-1, unless said) under `root` (`<job>/opt_ml` unless said: hosts.host_root)."""
    hosts = hosts or [HOST]
    paths = ContainerPaths(root or job_dir / "opt_ml")
    channels = request.get("InputDataConfig") or []
    for directory in (paths.input_config, paths.model, paths.output_data, paths.checkpoints,
                      *(paths.channel(c["ChannelName"]) for c in channels)):
        directory.mkdir(parents=True, exist_ok=True)
    resources = request.get("ResourceConfig") or {}
    _write_json(paths.input_config / "hyperparameters.json", request.get("HyperParameters") or {})
    _write_json(paths.input_config / "resourceconfig.json", {
        "current_host": host,
        "current_instance_type": resources.get("InstanceType", "local"),
        "current_group_name": "homogeneousCluster",
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": "homogeneousCluster",
                             "instance_type": resources.get("InstanceType", "local"), "hosts": hosts}],
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


def environment(job_name: str, request: dict[str, Any], paths: ContainerPaths, host: str = HOST,
                hosts: list[str] | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment: ours (AWS endpoint and credentials included), the `SM_*` variables the
    SageMaker training toolkit sets (for `host` of `hosts`), `extra` (hosts.cluster_environment), then the job's
    own `Environment` map."""
    hosts = hosts or [HOST]
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
        "SM_CURRENT_HOST": host,
        "SM_HOSTS": json.dumps(hosts),
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        # This machine runs GPU instance types (ml.g5.*) on its CPU on purpose: the trainer, which otherwise fails a
        # GPU instance without CUDA at once, only warns (trainer_image/llmt_trainer/gpu_check.py). Never set on AWS.
        "LLMT_ALLOW_CPU_ON_GPU_INSTANCE": "1",
        "PYTHONUNBUFFERED": "1",  # lines reach the log stream as they are printed
    })
    env.update({f"SM_CHANNEL_{name.upper()}": str(paths.channel(name)) for name in channels})
    env.update({f"SM_HP_{key.upper()}": value for key, value in hyperparameters.items()})
    script = ScriptMode.of(hyperparameters)
    if script is not None:
        env.update({"SM_MODULE_DIR": script.submit_directory, "SM_USER_ENTRY_POINT": script.program,
                    "SM_MODULE_NAME": script.module_name, "SM_USER_ARGS": json.dumps(user_args(hyperparameters)),
                    "SM_LOG_LEVEL": str(_decoded(hyperparameters.get("sagemaker_container_log_level", "20")))})
    env.update(extra or {})
    env.update(request.get("Environment") or {})
    return env


@dataclass(frozen=True)
class ScriptMode:
    """SageMaker script mode (what the framework images' training toolkit does): the hyperparameters
    `sagemaker_submit_directory` (an S3 tarball) and `sagemaker_program` (a script in it) replace the image's
    own entry point. The sagemaker SDK JSON-quotes both values; bare strings work too."""

    submit_directory: str
    program: str

    @classmethod
    def of(cls, hyperparameters: dict[str, str]) -> ScriptMode | None:
        if "sagemaker_submit_directory" not in hyperparameters:
            return None
        return cls(str(_decoded(hyperparameters["sagemaker_submit_directory"])),
                   str(_decoded(hyperparameters.get("sagemaker_program", ""))))

    @property
    def module_name(self) -> str:
        return self.program.removesuffix(".py")


def user_args(hyperparameters: dict[str, str]) -> list[str]:
    """`--name value` for every hyperparameter but the toolkit's own `sagemaker_*`, in name order, each value
    decoded as SM_HPS has it (the toolkit's rule: strings as they are, lists and maps as JSON)."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        if key.startswith("sagemaker_"):
            continue
        value = _decoded(hyperparameters[key])
        args += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return args


def _decoded(value: str) -> Any:
    """SM_HPS carries each hyperparameter JSON-decoded where it parses, as the training toolkit does."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=1))
