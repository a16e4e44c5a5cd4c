"""Request checks, worded as SageMaker words them. botocore already checks types and required members
client-side; these are the checks only the service makes (patterns, ranges, what this emulator runs)."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from .container import ScriptMode
from .errors import ValidationError
from .models import ECHOED_FIELDS, JOB_STATUSES

NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$"
S3_URI_PATTERN = r"^(https|s3)://([^/]+)/?(.*)$"
CHANNEL_NAME_PATTERN = r"^[A-Za-z0-9\.\-_]+$"
# S3Prefix and ManifestFile are SageMaker's; "S3Object" (exactly one object) is this emulator's shorthand.
SUPPORTED_S3_DATA_TYPES = ("S3Prefix", "S3Object")
DEFAULT_MAX_RUNTIME_S = 86400
SORT_KEYS = ("Name", "CreationTime", "Status")
SORT_ORDERS = ("Ascending", "Descending")


def _constraint(value: Any, at: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{at}' failed to satisfy constraint: {constraint}")


def require(params: dict[str, Any], path: str) -> Any:
    """A member the operation needs, e.g. `require(p, "OutputDataConfig.S3OutputPath")`."""
    value: Any = params
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
        if value in (None, "", [], {}):
            raise ValidationError(f"1 validation error detected: Value null at '{path}' failed to satisfy "
                                  "constraint: Member must not be null")
    return value


def check_pattern(value: str, at: str, pattern: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise _constraint(value, at, f"Member must satisfy regular expression pattern: {pattern}")


def check_s3_uri(value: str, at: str) -> None:
    check_pattern(value, at, S3_URI_PATTERN)
    if not value.startswith("s3://"):
        raise ValidationError(f"{at}: this emulator reads and writes s3:// URIs only, not {value}")


def validate_create_training_job(params: dict[str, Any]) -> dict[str, Any]:
    """The request fields Describe echoes, checked and with SageMaker's defaults filled in."""
    check_pattern(require(params, "TrainingJobName"), "trainingJobName", NAME_PATTERN)
    check_pattern(require(params, "RoleArn"), "roleArn", ROLE_ARN_PATTERN)
    check_s3_uri(require(params, "OutputDataConfig.S3OutputPath"), "outputDataConfig.s3OutputPath")
    require(params, "AlgorithmSpecification.TrainingImage")
    algorithm = params["AlgorithmSpecification"]
    if algorithm.get("AlgorithmName"):
        raise ValidationError("AlgorithmName (marketplace algorithms) is not supported by this emulator; "
                              "give AlgorithmSpecification.TrainingImage")
    _check_metric_definitions(algorithm.get("MetricDefinitions") or [])
    _check_channels(params.get("InputDataConfig") or [])
    _check_resources(params.get("ResourceConfig") or {})
    if params.get("CheckpointConfig"):
        check_s3_uri(require(params, "CheckpointConfig.S3Uri"), "checkpointConfig.s3Uri")
    for key, value in (params.get("HyperParameters") or {}).items():
        if not isinstance(value, str):
            raise _constraint(value, f"hyperParameters.{key}", "Member must be a string")

    _check_script_mode(params.get("HyperParameters") or {})

    request = {key: copy.deepcopy(params[key]) for key in ECHOED_FIELDS if key in params}
    request["AlgorithmSpecification"].setdefault("TrainingInputMode", "File")
    stopping = request.setdefault("StoppingCondition", {})
    stopping.setdefault("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_S)
    if not isinstance(stopping["MaxRuntimeInSeconds"], int) or stopping["MaxRuntimeInSeconds"] < 1:
        raise _constraint(stopping["MaxRuntimeInSeconds"], "stoppingCondition.maxRuntimeInSeconds",
                          "Member must have value greater than or equal to 1")
    for flag in ("EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                 "EnableManagedSpotTraining"):
        request.setdefault(flag, False)
    wait_s = stopping.get("MaxWaitTimeInSeconds")
    if wait_s is not None:
        if not request["EnableManagedSpotTraining"]:
            raise ValidationError("MaxWaitTimeInSeconds can be set only for managed spot training "
                                  "(EnableManagedSpotTraining).")
        if not isinstance(wait_s, int) or wait_s < stopping["MaxRuntimeInSeconds"]:
            raise ValidationError(f"MaxWaitTimeInSeconds ({wait_s}) must be greater than or equal to "
                                  f"MaxRuntimeInSeconds ({stopping['MaxRuntimeInSeconds']}).")
    request.setdefault("HyperParameters", {})
    return request


def validate_tags(tags: Any) -> list[dict[str, str]]:
    if not isinstance(tags, list):
        raise _constraint(tags, "tags", "Member must be a list")
    for i, tag in enumerate(tags):
        if not isinstance(tag, dict) or not tag.get("Key"):
            raise _constraint(tag, f"tags.{i + 1}.member.key", "Member must not be null")
    return [{"Key": tag["Key"], "Value": tag.get("Value", "")} for tag in tags]


def _check_metric_definitions(definitions: list[dict[str, Any]]) -> None:
    for i, definition in enumerate(definitions):
        require(definition, "Name")
        try:
            re.compile(require(definition, "Regex"))
        except re.error as exc:
            at = f"algorithmSpecification.metricDefinitions.{i + 1}.member.regex"
            raise _constraint(definition["Regex"], at,
                              f"Member must be a valid regular expression ({exc})") from exc


def _check_channels(channels: list[dict[str, Any]]) -> None:
    names = [require(channel, "ChannelName") for channel in channels]
    if len(set(names)) != len(names):
        raise ValidationError(f"Channel names must be unique: {names}")
    for i, channel in enumerate(channels):
        at = f"inputDataConfig.{i + 1}.member"
        check_pattern(channel["ChannelName"], f"{at}.channelName", CHANNEL_NAME_PATTERN)
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if not source:
            raise ValidationError(f"{at}.dataSource: this emulator reads S3DataSource channels only")
        check_s3_uri(require(source, "S3Uri"), f"{at}.dataSource.s3DataSource.s3Uri")
        if source.get("S3DataType", "S3Prefix") not in SUPPORTED_S3_DATA_TYPES:
            raise ValidationError(
                f"{at}.dataSource.s3DataSource.s3DataType: {source.get('S3DataType')} is not supported by "
                f"this emulator (supported: {', '.join(SUPPORTED_S3_DATA_TYPES)})")
        if channel.get("InputMode", "File") != "File" or channel.get("CompressionType", "None") != "None":
            raise ValidationError(f"{at}: this emulator supports File input mode without compression only")


def _check_script_mode(hyperparameters: dict[str, Any]) -> None:
    """Script mode's two hyperparameters: an s3:// tarball and a Python script inside it."""
    script = ScriptMode.of(hyperparameters)
    if script is None:
        return
    check_s3_uri(script.submit_directory, "hyperParameters.sagemaker_submit_directory")
    program = PurePosixPath(script.program)
    if not script.program or program.is_absolute() or ".." in program.parts or program.suffix != ".py":
        raise ValidationError("hyperParameters.sagemaker_program: this emulator runs a Python script (*.py) "
                              f"inside sagemaker_submit_directory, not {script.program!r}")


# Each instance is a process group on this machine (hosts.py): a few are plenty for a test or a demo.
MAX_EMULATED_INSTANCES = 4


def _check_resources(resources: dict[str, Any]) -> None:
    count = resources.get("InstanceCount", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise _constraint(count, "resourceConfig.instanceCount", "Member must have value greater than or equal to 1")
    if count > MAX_EMULATED_INSTANCES:
        raise _constraint(count, "resourceConfig.instanceCount",
                          f"this emulator runs at most {MAX_EMULATED_INSTANCES} instances (algo-1 ... "
                          f"algo-{MAX_EMULATED_INSTANCES}), each a process group on this machine")


def _check_enum(value: Any, at: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise _constraint(value, at, f"Member must satisfy enum value set: [{', '.join(allowed)}]")


def parse_time(value: Any, at: str) -> float:
    """A request timestamp: botocore sends epoch seconds; ISO 8601 is accepted too."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise _constraint(value, at, "Member must be a timestamp") from exc


def validate_list_request(params: dict[str, Any]) -> dict[str, Any]:
    max_results = params.get("MaxResults", 10)
    if not isinstance(max_results, int) or not 1 <= max_results <= 100:
        raise _constraint(max_results, "maxResults", "Member must have value between 1 and 100")
    sort_by, sort_order = params.get("SortBy", "CreationTime"), params.get("SortOrder", "Ascending")
    _check_enum(sort_by, "sortBy", SORT_KEYS)
    _check_enum(sort_order, "sortOrder", SORT_ORDERS)
    status = params.get("StatusEquals")
    if status is not None:
        _check_enum(status, "statusEquals", sorted(JOB_STATUSES))
    times = {key: parse_time(params[key], key[0].lower() + key[1:]) for key in (
        "CreationTimeAfter", "CreationTimeBefore", "LastModifiedTimeAfter", "LastModifiedTimeBefore")
        if params.get(key) is not None}
    return {"MaxResults": max_results, "SortBy": sort_by, "SortOrder": sort_order, "StatusEquals": status,
            "NameContains": params.get("NameContains"), "NextToken": params.get("NextToken"), **times}
