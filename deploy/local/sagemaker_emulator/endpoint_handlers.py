"""One function per hosting operation, `(params, hosting) -> response`, in the wire shapes of service-2.json.
Creates and deletes answer at once; the work goes on in the background (hosting.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from .endpoint_records import (
    COMPONENT_STATUSES,
    DELETING,
    ENDPOINT_STATUSES,
    FAILED,
    EndpointConfigRecord,
    EndpointRecord,
    InferenceComponentRecord,
    ModelRecord,
)
from .endpoint_validation import (
    ENDPOINT_NAME_PATTERN,
    MODEL_NAME_PATTERN,
    check_name,
    validate_create_endpoint,
    validate_create_endpoint_config,
    validate_create_inference_component,
    validate_create_model,
)
from .errors import ValidationError
from .hosting import Hosting
from .models import now
from .paging import decode_token, encode_token
from .validation import parse_time, require, validate_tags

HostingHandler = Callable[[dict[str, Any], Hosting], dict[str, Any]]
R = TypeVar("R", EndpointRecord, InferenceComponentRecord)
SORT_KEYS, SORT_ORDERS = ("Name", "CreationTime", "Status"), ("Ascending", "Descending")
TIME_FILTERS = ("CreationTimeAfter", "CreationTimeBefore", "LastModifiedTimeAfter", "LastModifiedTimeBefore")


# --- models and endpoint configurations ------------------------------------------------------------------

def create_model(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    request = validate_create_model(params)
    name = params["ModelName"]
    record = ModelRecord(name, hosting.store.arn(ModelRecord, name), request, now(),
                         validate_tags(params.get("Tags") or []))
    hosting.store.add(record)
    return {"ModelArn": record.arn}


def describe_model(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    name = check_name(require(params, "ModelName"), "modelName", MODEL_NAME_PATTERN)
    return hosting.store.get(ModelRecord, name).describe()


def delete_model(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    name = check_name(require(params, "ModelName"), "modelName", MODEL_NAME_PATTERN)
    hosting.store.get(ModelRecord, name)
    hosting.store.remove(ModelRecord, name)
    return {}


def create_endpoint_config(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    request = validate_create_endpoint_config(params)
    for variant in request["ProductionVariants"]:
        if variant.get("ModelName"):
            hosting.store.get(ModelRecord, variant["ModelName"])  # "Could not find model ..."
    name = params["EndpointConfigName"]
    record = EndpointConfigRecord(name, hosting.store.arn(EndpointConfigRecord, name), request, now(),
                                  validate_tags(params.get("Tags") or []))
    hosting.store.add(record)
    return {"EndpointConfigArn": record.arn}


def describe_endpoint_config(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    name = check_name(require(params, "EndpointConfigName"), "endpointConfigName", ENDPOINT_NAME_PATTERN)
    return hosting.store.get(EndpointConfigRecord, name).describe()


def delete_endpoint_config(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    """As on SageMaker, an endpoint created from the configuration keeps running."""
    name = check_name(require(params, "EndpointConfigName"), "endpointConfigName", ENDPOINT_NAME_PATTERN)
    hosting.store.get(EndpointConfigRecord, name)
    hosting.store.remove(EndpointConfigRecord, name)
    return {}


# --- endpoints -------------------------------------------------------------------------------------------

def create_endpoint(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    name, config_name = validate_create_endpoint(params)
    config = hosting.store.get(EndpointConfigRecord, config_name)
    created = now()
    record = EndpointRecord(name, hosting.store.arn(EndpointRecord, name), config_name,
                            copy.deepcopy(config.request["ProductionVariants"]), created, created,
                            tags=validate_tags(params.get("Tags") or []))
    hosting.store.add(record)
    hosting.bring_up_endpoint(name)
    return {"EndpointArn": record.arn}


def describe_endpoint(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    name = check_name(require(params, "EndpointName"), "endpointName", ENDPOINT_NAME_PATTERN)
    return hosting.store.get(EndpointRecord, name).describe()


def delete_endpoint(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    """Deleting: its inference components go first (their servers stop), then the endpoint is gone."""
    name = check_name(require(params, "EndpointName"), "endpointName", ENDPOINT_NAME_PATTERN)
    if hosting.store.get(EndpointRecord, name).status != DELETING:
        hosting.delete_endpoint(name)
    return {}


def list_endpoints(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    records, page = _page(hosting.store.all(EndpointRecord), params, ENDPOINT_STATUSES)
    return {"Endpoints": [r.summary() for r in records], **page}


# --- inference components --------------------------------------------------------------------------------

def create_inference_component(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    spec = validate_create_inference_component(params)
    store, name = hosting.store, params["InferenceComponentName"]
    endpoint = store.get(EndpointRecord, params["EndpointName"])
    if endpoint.status in (FAILED, DELETING):
        raise ValidationError(f'Cannot create an inference component on endpoint "{endpoint.arn}" in status '
                              f"{endpoint.status}.")
    variant_name = params.get("VariantName")
    base_name = spec.get("BaseInferenceComponentName")
    if base_name is not None:
        base = store.get(InferenceComponentRecord, base_name)
        if base.base_name is not None or base.endpoint_name != endpoint.name:
            raise ValidationError(f"BaseInferenceComponentName {base_name} must be a base inference component "
                                  f"(one with a ModelName) on endpoint {endpoint.name}.")
        variant_name = variant_name or base.variant_name
    else:
        store.get(ModelRecord, spec["ModelName"])  # "Could not find model ..."
    variant = endpoint.variant(variant_name)
    if variant is None:
        raise ValidationError(f"Variant {variant_name} is not a production variant of endpoint {endpoint.name}."
                              if variant_name else f"Endpoint {endpoint.name} has several production variants: "
                              "give VariantName.")
    if variant.get("ModelName"):
        raise ValidationError(f"Variant {variant['VariantName']} of endpoint {endpoint.name} hosts the model "
                              f"{variant['ModelName']}; inference components need a variant without ModelName.")
    created = now()
    record = InferenceComponentRecord(
        name, store.arn(InferenceComponentRecord, name), endpoint.name, endpoint.arn, variant["VariantName"], spec,
        copy.deepcopy(params.get("RuntimeConfig") or {}), created, created,
        tags=validate_tags(params.get("Tags") or []))
    store.add(record)
    hosting.bring_up_component(name)
    return {"InferenceComponentArn": record.arn}


def describe_inference_component(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    name = check_name(require(params, "InferenceComponentName"), "inferenceComponentName", MODEL_NAME_PATTERN)
    return hosting.store.get(InferenceComponentRecord, name).describe()


def delete_inference_component(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    """Deleting: an adapter is unloaded; a base's server stops (its adapters are deleted with it)."""
    name = check_name(require(params, "InferenceComponentName"), "inferenceComponentName", MODEL_NAME_PATTERN)
    if hosting.store.get(InferenceComponentRecord, name).status != DELETING:
        hosting.delete_component(name)
    return {}


def list_inference_components(params: dict[str, Any], hosting: Hosting) -> dict[str, Any]:
    records = hosting.store.all(InferenceComponentRecord)
    for key, attribute in (("EndpointNameEquals", "endpoint_name"), ("VariantNameEquals", "variant_name")):
        if params.get(key) is not None:
            records = [r for r in records if getattr(r, attribute) == params[key]]
    page_records, page = _page(records, params, COMPONENT_STATUSES)
    return {"InferenceComponents": [r.summary() for r in page_records], **page}


HOSTING_OPERATIONS: dict[str, HostingHandler] = {
    "CreateModel": create_model,
    "DescribeModel": describe_model,
    "DeleteModel": delete_model,
    "CreateEndpointConfig": create_endpoint_config,
    "DescribeEndpointConfig": describe_endpoint_config,
    "DeleteEndpointConfig": delete_endpoint_config,
    "CreateEndpoint": create_endpoint,
    "DescribeEndpoint": describe_endpoint,
    "DeleteEndpoint": delete_endpoint,
    "ListEndpoints": list_endpoints,
    "CreateInferenceComponent": create_inference_component,
    "DescribeInferenceComponent": describe_inference_component,
    "DeleteInferenceComponent": delete_inference_component,
    "ListInferenceComponents": list_inference_components,
}


def _page(records: list[R], params: dict[str, Any], statuses: tuple[str, ...]) -> tuple[list[R], dict[str, str]]:
    """ListEndpoints/ListInferenceComponents: filters, sort (default CreationTime, Descending), one page."""
    max_results = params.get("MaxResults", 10)
    if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= 100:
        raise ValidationError(f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to "
                              "satisfy constraint: Member must have value between 1 and 100")
    sort_by, order = params.get("SortBy", "CreationTime"), params.get("SortOrder", "Descending")
    status = params.get("StatusEquals")
    for value, at, allowed in ((sort_by, "sortBy", SORT_KEYS), (order, "sortOrder", SORT_ORDERS),
                               (status, "statusEquals", statuses)):
        if value is not None and value not in allowed:
            raise ValidationError(f"1 validation error detected: Value '{value}' at '{at}' failed to satisfy "
                                  f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]")
    bounds = {key: parse_time(params[key], key[0].lower() + key[1:]) for key in TIME_FILTERS
              if params.get(key) is not None}
    contains = (params.get("NameContains") or "").lower()
    kept = [r for r in records if (status is None or r.status == status) and contains in r.name.lower()
            and _within(r, bounds)]
    sort_key: Callable[[Any], Any] = {"Name": lambda r: r.name, "Status": lambda r: (r.status, r.creation_time),
                                      "CreationTime": lambda r: r.creation_time}[sort_by]
    kept.sort(key=sort_key, reverse=order == "Descending")
    start = decode_token(params.get("NextToken"))
    page = kept[start:start + max_results]
    more = {"NextToken": encode_token(start + len(page))} if start + len(page) < len(kept) else {}
    return page, more


def _within(record: EndpointRecord | InferenceComponentRecord, bounds: dict[str, float]) -> bool:
    times = {"CreationTime": record.creation_time, "LastModifiedTime": record.last_modified_time}
    for key, bound in bounds.items():
        value = times[key.removesuffix("After").removesuffix("Before")]
        if (key.endswith("After") and value <= bound) or (key.endswith("Before") and value >= bound):
            return False
    return True
