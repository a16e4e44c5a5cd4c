"""The CreateTrainingJob request for a queued job, as the job and the deployment's LaunchConfig give it: the
trainer's hyperparameters as strings, the input channels (train, validation, and the base model when the bucket
holds a copy), where output and checkpoints go, the stopping condition (the budget cap), spot, tags.
What a launch adds before sending it (gated models' token, script mode) is launch.py's."""

from __future__ import annotations

from typing import Any

from services.training import estimates
from services.training import hyperparameters as hparams
from services.training.catalog import BaseModelEntry, Catalog
from services.training.deps import LaunchConfig
from services.training.models import Job

METRIC_DEFINITIONS = [
    {"Name": "train_loss", "Regex": r'"train_loss": ([0-9.eE+-]+)'},
    {"Name": "valid_loss", "Regex": r'"valid_loss": ([0-9.eE+-]+)'},
    {"Name": "learning_rate", "Regex": r'"learning_rate": ([0-9.eE+-]+)'},
    {"Name": "trained_tokens", "Regex": r'"trained_tokens": ([0-9]+)'},
]


TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"


def checkpoint_uri(bucket: str, user_id: str, job_id: str) -> str:
    return f"s3://{bucket}/training-jobs/{user_id}/{job_id}/checkpoints/"


def merged_model_key(user_id: str, job_id: str) -> str:
    """Beside SageMaker's `{job}/output/model.tar.gz` (the adapter): the trainer uploads the merged model here."""
    return f"training-jobs/{user_id}/{job_id}/output/merged-model.tar.gz"


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}


def training_job_request(job: Job, base: BaseModelEntry, train_uri: str, cfg: LaunchConfig,
                         catalog: Catalog | None = None, validation_uri: str | None = None) -> dict[str, Any]:
    hyperparameters = hparams.sagemaker_hyperparameters(job.hyperparameters, base, job.seed, job.method)
    if hyperparameters.get("merge_adapter") == "true":  # its own artifact: model.tar.gz stays the small adapter
        hyperparameters["merged_model_uri"] = f"s3://{cfg.bucket}/{merged_model_key(job.user_id, job.job_id)}"
    channels = [_channel("train", train_uri)]
    if validation_uri:  # the trainer evaluates it after every epoch (valid_loss)
        channels.append(_channel("validation", validation_uri))
    if base.artifact_prefix:
        channels.append(_channel("model", f"s3://{cfg.bucket}/{base.artifact_prefix}"))
    if job.start_adapter:  # continued from an `ft:` model's adapter or a checkpoint: training starts from it
        channels.append(_channel("adapter", job.start_adapter))
    elif base.hf_repo:
        hyperparameters["model_id"] = base.hf_repo
    cluster = catalog.cluster(job.instance_type, job.instance_count) if catalog else None
    if (cluster.processes if cluster else job.instance_count) > 1:
        # What the SageMaker SDK sets for distribution={"torch_distributed": {"enabled": True}}: torchrun on every
        # host, one process per GPU. Script mode's training toolkit starts it; our image's entry point does the same
        # (trainer_image/llmt_trainer/launch.py).
        hyperparameters[TORCH_DISTRIBUTED] = "true"
    return {
        "TrainingJobName": job.training_job_name(),  # the current part's (parts.py)
        "AlgorithmSpecification": {"TrainingImage": cfg.image_uri, "TrainingInputMode": "File",
                                   "MetricDefinitions": METRIC_DEFINITIONS},
        "RoleArn": cfg.role_arn,
        "HyperParameters": hyperparameters,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{cfg.bucket}/training-jobs/{job.user_id}/",
                             **({"KmsKeyId": cfg.kms_key_id} if cfg.kms_key_id else {})},
        "ResourceConfig": {"InstanceType": job.instance_type, "InstanceCount": job.instance_count,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": _stopping_condition(job, cfg, catalog),
        **({"EnableManagedSpotTraining": True} if job.spot else {}),
        # The trainer's SM_CHECKPOINT_DIR, synced here: GET .../checkpoints lists it.
        "CheckpointConfig": {"S3Uri": checkpoint_uri(cfg.bucket, job.user_id, job.job_id)},
        "Tags": [{"Key": "llm-tuner:user", "Value": job.user_id}, {"Key": "llm-tuner:job", "Value": job.job_id}],
    }


def _stopping_condition(job: Job, cfg: LaunchConfig, catalog: Catalog | None) -> dict[str, int]:
    instance = catalog.cluster(job.instance_type, job.instance_count) if catalog else None
    if instance is None:  # a type the catalog no longer lists: no budget arithmetic possible, the plain cap
        condition = {"MaxRuntimeInSeconds": cfg.max_runtime_s}
        if job.spot:
            condition["MaxWaitTimeInSeconds"] = cfg.max_runtime_s
        return condition
    return estimates.budget_stopping_condition(remaining_budget_usd(job), instance, job.spot, cfg.max_runtime_s)


def remaining_budget_usd(job: Job) -> float | None:
    """What the job's budget cap leaves for its next part: the cap less what its parts since the cap was set were
    billed (a retry with a new cap starts a fresh budget); None without a cap."""
    if job.max_cost_usd is None:
        return None
    spent = (job.billed_micros or 0) - (job.budget_set_at_micros or 0)
    return max(0.0, job.max_cost_usd - spent / 1e6)
