"""Request checks of the hosting operations, worded as SageMaker words them (service-2.json's patterns and
lengths, and the rules its API reference states), plus what this emulator cannot host."""

from __future__ import annotations

import copy
import re
from typing import Any

from .endpoint_records import ENDPOINT_CONFIG_FIELDS, MODEL_FIELDS
from .errors import ValidationError
from .validation import ROLE_ARN_PATTERN, check_pattern, require

ENDPOINT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # endpoints, endpoint configs, variants
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$"  # models and inference components
MAX_NAME_LENGTH = 63
URL_PATTERN = r"^(https|s3)://([^/]+)/?(.*)$"
ENV_KEY_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
MAX_ENV_ENTRIES, MAX_ENV_LENGTH = 100, 1024
S3_DATA_TYPES, COMPRESSION_TYPES = ("S3Prefix", "S3Object"), ("None", "Gzip")
MAX_VARIANTS = 10


def _constraint(value: Any, at: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{at}' failed to satisfy constraint: {constraint}")


def check_name(value: Any, at: str, pattern: str) -> str:
    if isinstance(value, str) and len(value) > MAX_NAME_LENGTH:
        raise _constraint(value, at, f"Member must have length less than or equal to {MAX_NAME_LENGTH}")
    check_pattern(value, at, pattern)
    return str(value)


def validate_create_model(params: dict[str, Any]) -> dict[str, Any]:
    check_name(require(params, "ModelName"), "modelName", MODEL_NAME_PATTERN)
    containers = ([params["PrimaryContainer"]] if params.get("PrimaryContainer") else []) + list(
        params.get("Containers") or [])
    if not containers:
        raise ValidationError("Either PrimaryContainer or Containers must be specified.")
    if params.get("PrimaryContainer") and params.get("Containers"):
        raise ValidationError("Specify either PrimaryContainer or Containers, not both.")
    for i, container in enumerate(containers):
        _check_container(container, "primaryContainer" if params.get("PrimaryContainer") else f"containers.{i + 1}")
    if params.get("ExecutionRoleArn") is not None:
        check_pattern(params["ExecutionRoleArn"], "executionRoleArn", ROLE_ARN_PATTERN)
    return {key: copy.deepcopy(params[key]) for key in MODEL_FIELDS if key in params}


def _check_container(container: dict[str, Any], at: str) -> None:
    if not container.get("Image") and not container.get("ModelPackageName"):
        raise ValidationError(f"{at}: Image is required (or ModelPackageName).")
    if container.get("ModelDataUrl") is not None:
        check_pattern(container["ModelDataUrl"], f"{at}.modelDataUrl", URL_PATTERN)
    source = (container.get("ModelDataSource") or {}).get("S3DataSource")
    if container.get("ModelDataSource") and not source:
        raise ValidationError(f"{at}.modelDataSource: S3DataSource is required.")
    if source:
        check_pattern(require(source, "S3Uri"), f"{at}.modelDataSource.s3DataSource.s3Uri", URL_PATTERN)
        for key, allowed in (("S3DataType", S3_DATA_TYPES), ("CompressionType", COMPRESSION_TYPES)):
            if require(source, key) not in allowed:
                raise _constraint(source[key], f"{at}.modelDataSource.s3DataSource.{key[0].lower()}{key[1:]}",
                                  f"Member must satisfy enum value set: [{', '.join(allowed)}]")
    if container.get("ModelDataUrl") and source:
        raise ValidationError(f"{at}: specify either ModelDataUrl or ModelDataSource, not both.")
    check_environment(container.get("Environment") or {}, f"{at}.environment")


def check_environment(environment: Any, at: str) -> None:
    if not isinstance(environment, dict) or len(environment) > MAX_ENV_ENTRIES:
        raise _constraint(environment, at, f"Member must be a map of at most {MAX_ENV_ENTRIES} entries")
    for key, value in environment.items():
        if not re.fullmatch(ENV_KEY_PATTERN, key) or len(key) > MAX_ENV_LENGTH:
            raise _constraint(key, f"{at}.key", f"Member must satisfy regular expression pattern: "
                              f"{ENV_KEY_PATTERN}")
        if not isinstance(value, str) or len(value) > MAX_ENV_LENGTH:
            raise _constraint(value, f"{at}.{key}", f"Member must have length less than or equal to "
                              f"{MAX_ENV_LENGTH}")


def validate_create_endpoint_config(params: dict[str, Any]) -> dict[str, Any]:
    check_name(require(params, "EndpointConfigName"), "endpointConfigName", ENDPOINT_NAME_PATTERN)
    variants = require(params, "ProductionVariants")
    if not isinstance(variants, list) or len(variants) > MAX_VARIANTS:
        raise _constraint(variants, "productionVariants",
                          f"Member must have length less than or equal to {MAX_VARIANTS}")
    names = []
    for i, variant in enumerate(variants):
        at = f"productionVariants.{i + 1}.member"
        names.append(check_name(require(variant, "VariantName"), f"{at}.variantName", ENDPOINT_NAME_PATTERN))
        if variant.get("ModelName") is not None:
            check_name(variant["ModelName"], f"{at}.modelName", MODEL_NAME_PATTERN)
        if variant.get("ServerlessConfig"):
            raise ValidationError(f"{at}: serverless variants are not supported by this emulator; give "
                                  "InstanceType and InitialInstanceCount")
        require(variant, "InstanceType")
        count = variant.get("InitialInstanceCount")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise _constraint(count, f"{at}.initialInstanceCount",
                              "Member must have value greater than or equal to 1")
    if len(set(names)) != len(names):
        raise ValidationError(f"Variant names must be unique within an endpoint configuration: {names}")
    return {key: copy.deepcopy(params[key]) for key in ENDPOINT_CONFIG_FIELDS if key in params}


def validate_create_endpoint(params: dict[str, Any]) -> tuple[str, str]:
    name = check_name(require(params, "EndpointName"), "endpointName", ENDPOINT_NAME_PATTERN)
    config = check_name(require(params, "EndpointConfigName"), "endpointConfigName", ENDPOINT_NAME_PATTERN)
    if params.get("DeploymentConfig"):
        raise ValidationError("DeploymentConfig (blue/green, rolling updates) is not supported by this emulator.")
    return name, config


def validate_create_inference_component(params: dict[str, Any]) -> dict[str, Any]:
    """The Specification, checked: a base component names a model (and its compute resources and copy
    count); an adapter component names its base and the adapter's artifact (and nothing about compute)."""
    check_name(require(params, "InferenceComponentName"), "inferenceComponentName", MODEL_NAME_PATTERN)
    check_name(require(params, "EndpointName"), "endpointName", ENDPOINT_NAME_PATTERN)
    if params.get("VariantName") is not None:
        check_name(params["VariantName"], "variantName", ENDPOINT_NAME_PATTERN)
    if params.get("Specifications"):
        raise ValidationError("Specifications (one per instance type) is not supported by this emulator; give "
                              "Specification.")
    spec = require(params, "Specification")
    base, model = spec.get("BaseInferenceComponentName"), spec.get("ModelName")
    container = spec.get("Container") or {}
    if container.get("Environment") is not None:
        check_environment(container["Environment"], "specification.container.environment")
    if base is not None:
        check_name(base, "specification.baseInferenceComponentName", MODEL_NAME_PATTERN)
        if model is not None:
            raise ValidationError("An adapter inference component (BaseInferenceComponentName) cannot also "
                                  "specify ModelName.")
        if spec.get("ComputeResourceRequirements"):
            raise ValidationError("An adapter inference component uses the compute resources of its base "
                                  "inference component: omit ComputeResourceRequirements.")
        check_pattern(require(spec, "Container.ArtifactUrl"), "specification.container.artifactUrl", URL_PATTERN)
        return copy.deepcopy(spec)
    if model is None:
        raise ValidationError("Specification must name a ModelName (a base inference component) or a "
                              "BaseInferenceComponentName (an adapter inference component).")
    check_name(model, "specification.modelName", MODEL_NAME_PATTERN)
    memory = require(spec, "ComputeResourceRequirements.MinMemoryRequiredInMb")
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 128:
        raise _constraint(memory, "specification.computeResourceRequirements.minMemoryRequiredInMb",
                          "Member must have value greater than or equal to 128")
    copies = require(params, "RuntimeConfig").get("CopyCount")
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise _constraint(copies, "runtimeConfig.copyCount", "Member must have value greater than or equal to 0")
    return copy.deepcopy(spec)
