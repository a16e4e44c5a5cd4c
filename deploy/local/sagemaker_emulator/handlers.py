"""One function per SageMaker operation: `(params, deps) -> response`, the wire shapes of service-2.json.
The hosting operations (models, endpoints, inference components) live in endpoint_handlers.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .container import ScriptMode
from .endpoint_handlers import HOSTING_OPERATIONS, HostingHandler
from .errors import JobNotFound, ValidationError
from .hosting import Hosting
from .job_store import JobStore
from .models import IN_PROGRESS, STARTING, TrainingJob, now
from .paging import decode_token, encode_token
from .runner import JobRunner
from .settings import Settings
from .validation import (
    NAME_PATTERN,
    require,
    validate_create_training_job,
    validate_list_request,
    validate_tags,
)


@dataclass
class Deps:
    settings: Settings
    store: JobStore
    runner: JobRunner
    hosting: Hosting

    def arn(self, name: str) -> str:
        region, account = self.settings.aws_default_region, self.settings.account_id
        return f"arn:aws:sagemaker:{region}:{account}:training-job/{name}"


Handler = Callable[[dict[str, Any], Deps], dict[str, Any]]


def create_training_job(params: dict[str, Any], deps: Deps) -> dict[str, Any]:
    request = validate_create_training_job(params)
    image = request["AlgorithmSpecification"]["TrainingImage"]
    if deps.settings.entrypoint_for(image) is None and ScriptMode.of(request["HyperParameters"]) is None:
        raise ValidationError(f"No entry point is configured for TrainingImage {image!r}; map it in "
                              "SAGEMAKER_EMULATOR_ENTRYPOINT, or run a script: "
                              "hyperparameters sagemaker_submit_directory and sagemaker_program")
    name = params["TrainingJobName"]
    created = now()
    job = TrainingJob(name=name, arn=deps.arn(name), request=request, creation_time=created,
                      tags=validate_tags(params.get("Tags") or []))
    job.move_to(IN_PROGRESS, STARTING, "Preparing the instances for training", created)
    deps.store.add(job)
    deps.runner.submit(name)
    return {"TrainingJobArn": job.arn}


def describe_training_job(params: dict[str, Any], deps: Deps) -> dict[str, Any]:
    with deps.store.reading(require(params, "TrainingJobName")) as job:
        return job.describe()


def stop_training_job(params: dict[str, Any], deps: Deps) -> dict[str, Any]:
    deps.runner.stop(require(params, "TrainingJobName"))
    return {}


def list_training_jobs(params: dict[str, Any], deps: Deps) -> dict[str, Any]:
    query = validate_list_request(params)
    jobs = [job for job in deps.store.snapshot() if _matches(job, query)]
    sort_key: Callable[[TrainingJob], Any] = {
        "Name": lambda j: j.name, "Status": lambda j: (j.status, j.creation_time),
        "CreationTime": lambda j: j.creation_time}[query["SortBy"]]
    jobs.sort(key=sort_key, reverse=query["SortOrder"] == "Descending")
    start = decode_token(query["NextToken"])
    page = jobs[start:start + query["MaxResults"]]
    response: dict[str, Any] = {"TrainingJobSummaries": [job.summary() for job in page]}
    if start + len(page) < len(jobs):
        response["NextToken"] = encode_token(start + len(page))
    return response


def add_tags(params: dict[str, Any], deps: Deps) -> dict[str, Any]:
    name = _job_name_of(require(params, "ResourceArn"), deps)
    tags = validate_tags(require(params, "Tags"))
    with deps.store.reading(name) as job:
        merged = {tag["Key"]: tag for tag in job.tags} | {tag["Key"]: tag for tag in tags}
    deps.store.update(name, tags=list(merged.values()))
    return {"Tags": tags}


def delete_tags(params: dict[str, Any], deps: Deps) -> dict[str, Any]:
    name = _job_name_of(require(params, "ResourceArn"), deps)
    keys = set(require(params, "TagKeys"))
    with deps.store.reading(name) as job:
        remaining = [tag for tag in job.tags if tag["Key"] not in keys]
    deps.store.update(name, tags=remaining)
    return {}


def list_tags(params: dict[str, Any], deps: Deps) -> dict[str, Any]:
    name = _job_name_of(require(params, "ResourceArn"), deps)
    with deps.store.reading(name) as job:
        tags = list(job.tags)
    start, size = decode_token(params.get("NextToken")), int(params.get("MaxResults") or 50)
    response: dict[str, Any] = {"Tags": tags[start:start + size]}
    if start + size < len(tags):
        response["NextToken"] = encode_token(start + size)
    return response


def _on_hosting(handler: HostingHandler) -> Handler:
    return lambda params, deps: handler(params, deps.hosting)


OPERATIONS: dict[str, Handler] = {
    "CreateTrainingJob": create_training_job,
    "DescribeTrainingJob": describe_training_job,
    "ListTrainingJobs": list_training_jobs,
    "StopTrainingJob": stop_training_job,
    "AddTags": add_tags,
    "DeleteTags": delete_tags,
    "ListTags": list_tags,
    **{operation: _on_hosting(handler) for operation, handler in HOSTING_OPERATIONS.items()},
}


def _matches(job: TrainingJob, query: dict[str, Any]) -> bool:
    bounds = (("CreationTimeAfter", job.creation_time, 1), ("CreationTimeBefore", job.creation_time, -1),
              ("LastModifiedTimeAfter", job.last_modified_time, 1),
              ("LastModifiedTimeBefore", job.last_modified_time, -1))
    for key, value, direction in bounds:
        if key in query and (value - query[key]) * direction <= 0:
            return False
    if query["NameContains"] and query["NameContains"].lower() not in job.name.lower():
        return False
    return not query["StatusEquals"] or job.status == query["StatusEquals"]


def _job_name_of(arn: str, deps: Deps) -> str:
    """Tags are kept for training jobs only; any other ARN is not a resource this emulator has."""
    prefix = deps.arn("")
    name = arn[len(prefix):] if arn.startswith(prefix) else ""
    if not re.fullmatch(NAME_PATTERN, name):
        raise JobNotFound(arn)
    return name
