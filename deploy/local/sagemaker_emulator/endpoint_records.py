"""Hosting records (models, endpoint configs, endpoints, inference components) and their wire shapes, as
service-2.json names them for the Describe and List operations."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from .models import epoch_seconds

# EndpointStatus and InferenceComponentStatus (the ones this emulator passes through)
CREATING, IN_SERVICE, DELETING, FAILED = "Creating", "InService", "Deleting", "Failed"
ENDPOINT_STATUSES = ("OutOfService", "Creating", "Updating", "SystemUpdating", "RollingBack", "InService",
                     "Deleting", "Failed", "UpdateRollbackFailed")
COMPONENT_STATUSES = ("InService", "Creating", "Updating", "Failed", "Deleting")

MODEL_FIELDS = ("PrimaryContainer", "Containers", "InferenceExecutionConfig", "ExecutionRoleArn", "VpcConfig",
                "EnableNetworkIsolation")
ENDPOINT_CONFIG_FIELDS = ("ProductionVariants", "DataCaptureConfig", "KmsKeyId", "AsyncInferenceConfig",
                          "ExplainerConfig", "ShadowProductionVariants", "ExecutionRoleArn", "VpcConfig",
                          "EnableNetworkIsolation", "MetricsConfig")


@dataclass
class ModelRecord:
    KIND: ClassVar[str] = "model"
    name: str
    arn: str
    request: dict[str, Any]  # MODEL_FIELDS as given
    creation_time: float
    tags: list[dict[str, str]] = field(default_factory=list)

    @property
    def container(self) -> dict[str, Any]:
        """The container that serves: PrimaryContainer, else the first of Containers."""
        return self.request.get("PrimaryContainer") or (self.request.get("Containers") or [{}])[0]

    def describe(self) -> dict[str, Any]:
        return {"ModelName": self.name, "ModelArn": self.arn, "CreationTime": epoch_seconds(self.creation_time),
                **copy.deepcopy(self.request)}


@dataclass
class EndpointConfigRecord:
    KIND: ClassVar[str] = "endpoint configuration"
    name: str
    arn: str
    request: dict[str, Any]  # ENDPOINT_CONFIG_FIELDS as given
    creation_time: float
    tags: list[dict[str, str]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"EndpointConfigName": self.name, "EndpointConfigArn": self.arn,
                "CreationTime": epoch_seconds(self.creation_time), **copy.deepcopy(self.request)}


@dataclass
class EndpointRecord:
    KIND: ClassVar[str] = "endpoint"
    name: str
    arn: str
    config_name: str
    variants: list[dict[str, Any]]  # the config's ProductionVariants when the endpoint was created
    creation_time: float
    last_modified_time: float
    status: str = CREATING
    failure_reason: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)

    def variant(self, name: str | None) -> dict[str, Any] | None:
        """The named variant; without a name, the only one (None when absent or ambiguous)."""
        if name is None:
            return self.variants[0] if len(self.variants) == 1 else None
        return next((v for v in self.variants if v["VariantName"] == name), None)

    def describe(self) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "EndpointName": self.name, "EndpointArn": self.arn, "EndpointConfigName": self.config_name,
            "ProductionVariants": [self._variant_summary(v) for v in self.variants],
            "EndpointStatus": self.status, "CreationTime": epoch_seconds(self.creation_time),
            "LastModifiedTime": epoch_seconds(self.last_modified_time)}
        if self.failure_reason:
            shape["FailureReason"] = self.failure_reason
        return shape

    def summary(self) -> dict[str, Any]:
        return {"EndpointName": self.name, "EndpointArn": self.arn,
                "CreationTime": epoch_seconds(self.creation_time),
                "LastModifiedTime": epoch_seconds(self.last_modified_time), "EndpointStatus": self.status}

    def _variant_summary(self, variant: dict[str, Any]) -> dict[str, Any]:
        count = variant.get("InitialInstanceCount", 1)
        weight = variant.get("InitialVariantWeight", 1.0)
        summary: dict[str, Any] = {"VariantName": variant["VariantName"], "DesiredWeight": weight,
                                   "DesiredInstanceCount": count}
        if self.status == IN_SERVICE:
            summary.update(CurrentWeight=weight, CurrentInstanceCount=count)
        for key in ("ManagedInstanceScaling", "RoutingConfig"):
            if key in variant:
                summary[key] = copy.deepcopy(variant[key])
        return summary


@dataclass
class InferenceComponentRecord:
    KIND: ClassVar[str] = "inference component"
    name: str
    arn: str
    endpoint_name: str
    endpoint_arn: str
    variant_name: str
    specification: dict[str, Any]
    runtime_config: dict[str, Any]
    creation_time: float
    last_modified_time: float
    status: str = CREATING
    failure_reason: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)

    @property
    def base_name(self) -> str | None:
        """For an adapter component, the base component it adapts."""
        return self.specification.get("BaseInferenceComponentName")

    @property
    def artifact_url(self) -> str | None:
        return (self.specification.get("Container") or {}).get("ArtifactUrl")

    def describe(self) -> dict[str, Any]:
        spec = {key: copy.deepcopy(value) for key, value in self.specification.items() if key != "Container"}
        container = self.specification.get("Container")
        if container:
            spec["Container"] = {key: copy.deepcopy(container[key]) for key in ("ArtifactUrl", "Environment")
                                 if key in container}
            if container.get("Image"):
                spec["Container"]["DeployedImage"] = {"SpecifiedImage": container["Image"],
                                                      "ResolvedImage": container["Image"]}
        shape: dict[str, Any] = {
            "InferenceComponentName": self.name, "InferenceComponentArn": self.arn,
            "EndpointName": self.endpoint_name, "EndpointArn": self.endpoint_arn, "VariantName": self.variant_name,
            "Specification": spec, "CreationTime": epoch_seconds(self.creation_time),
            "LastModifiedTime": epoch_seconds(self.last_modified_time), "InferenceComponentStatus": self.status}
        if self.runtime_config:
            copies = self.runtime_config.get("CopyCount", 1)
            shape["RuntimeConfig"] = {"DesiredCopyCount": copies,
                                      "CurrentCopyCount": copies if self.status == IN_SERVICE else 0}
        if self.failure_reason:
            shape["FailureReason"] = self.failure_reason
        return shape

    def summary(self) -> dict[str, Any]:
        return {"InferenceComponentName": self.name, "InferenceComponentArn": self.arn,
                "EndpointName": self.endpoint_name, "EndpointArn": self.endpoint_arn,
                "VariantName": self.variant_name, "InferenceComponentStatus": self.status,
                "CreationTime": epoch_seconds(self.creation_time),
                "LastModifiedTime": epoch_seconds(self.last_modified_time)}


Record = ModelRecord | EndpointConfigRecord | EndpointRecord | InferenceComponentRecord
RECORD_TYPES: dict[str, type[Any]] = {cls.KIND: cls for cls in (ModelRecord, EndpointConfigRecord, EndpointRecord,
                                                                 InferenceComponentRecord)}


ARN_RESOURCE_TYPES = {ModelRecord.KIND: "model", EndpointConfigRecord.KIND: "endpoint-config",
                      EndpointRecord.KIND: "endpoint", InferenceComponentRecord.KIND: "inference-component"}


def hosting_arn(region: str, account: str, kind: str, name: str) -> str:
    """SageMaker writes the name lower-cased in these ARNs."""
    return f"arn:aws:sagemaker:{region}:{account}:{ARN_RESOURCE_TYPES[kind]}/{name.lower()}"


def to_json(record: Record) -> dict[str, Any]:
    return asdict(record)
