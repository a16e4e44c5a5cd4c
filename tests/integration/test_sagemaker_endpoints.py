"""The local SageMaker emulator's hosting, driven by boto3's real `sagemaker` and `sagemaker-runtime` clients
against moto over HTTP: a model, an endpoint config and an endpoint built for inference components, a base
component running a real generation server on the tiny demo model (from S3), an adapter component with a
real LoRA adapter (a `model.tar.gz` in S3), invocations plain and streamed (AWS's event stream), the errors
the runtime answers, a restart that keeps the endpoints, and deletions that leave no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from deploy.local.demo_model import DEMO_MODEL_PREFIX
from deploy.local.sagemaker_emulator.hosting import Target
from deploy.local.sagemaker_emulator.model_artifacts import ArtifactError, fetch_adapter, fetch_model, model_source
from deploy.local.sagemaker_emulator.runtime import Invoker, runtime_routes
from tests.support.aws import AwsEndpoint, start_emulator_process
from tests.support.emulator import ROLE_ARN, unique
from tests.support.polling import wait_for
from tests.support.servers import serve
from tests.support.serving import (
    chat_request,
    content,
    json_lines,
    lora_adapter,
    model_tarball,
    server_pids,
    streamed_text,
    upload_directory,
)
from trainer_image.demo_model import build_demo_model

LMI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
ACCOUNT, REGION = "123456789012", "us-east-1"
ENDPOINT, BASE, ADAPTER = "llmt-demo", "llmt-demo-base", "llmt-a-ft1"
STARTUP_S = 120  # a server imports torch and loads the model before /ping answers; generous on a busy machine


@dataclass
class Emulator:
    workdir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> None:
        env = {**os.environ, "SAGEMAKER_EMULATOR_SERVING_TORCH_THREADS": "1",
               "SAGEMAKER_EMULATOR_SERVING_STARTUP_SECONDS": str(STARTUP_S),
               "SAGEMAKER_EMULATOR_STOP_GRACE_SECONDS": "5", "SAGEMAKER_EMULATOR_LOG_FLUSH_SECONDS": "0.2"}
        self.process, self.url = start_emulator_process(self.workdir, env, self.log)

    def stop(self) -> None:
        """SIGTERM, as a process manager stops it; it stops its servers before it exits."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) in (0, -signal.SIGTERM)

    def sagemaker(self) -> Any:
        return boto3.client("sagemaker", endpoint_url=self.url, region_name=REGION)

    def runtime(self) -> Any:
        return boto3.client("sagemaker-runtime", endpoint_url=self.url, region_name=REGION,
                            config=Config(retries={"max_attempts": 1}))


def component_status(sm: Any, name: str, statuses: tuple[str, ...] = ("InService", "Failed")) -> dict[str, Any]:
    return wait_for(lambda: sm.describe_inference_component(InferenceComponentName=name),
                    lambda d: d["InferenceComponentStatus"] in statuses, f"{name} to be {statuses}", STARTUP_S)


def invoke(rt: Any, component: str, **params: Any) -> dict[str, Any]:
    response = rt.invoke_endpoint(EndpointName=ENDPOINT, InferenceComponentName=component,
                                  ContentType="application/json", Body=json.dumps(chat_request(**params)))
    assert (response["ContentType"], response["InvokedProductionVariant"]) == ("application/json", "main")
    return dict(json.loads(response["Body"].read()))


def invoke_streamed(rt: Any, component: str, **params: Any) -> list[dict[str, Any]]:
    response = rt.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, InferenceComponentName=component, ContentType="application/json",
        Body=json.dumps(chat_request(stream=True, **params)))
    assert (response["ContentType"], response["InvokedProductionVariant"]) == ("application/jsonlines", "main")
    events = list(response["Body"])
    assert all(list(event) == ["PayloadPart"] for event in events)
    return json_lines(b"".join(event["PayloadPart"]["Bytes"] for event in events))


def create_base_component(sm: Any, name: str, model: str) -> None:
    sm.create_inference_component(
        InferenceComponentName=name, EndpointName=ENDPOINT, VariantName="main",
        Specification={"ModelName": model, "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 1024,
                                                                          "NumberOfAcceleratorDevicesRequired": 1}},
        RuntimeConfig={"CopyCount": 1})


def create_model(sm: Any, name: str, model_id: str) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE_ARN, PrimaryContainer={
        "Image": LMI_IMAGE, "Environment": {"HF_MODEL_ID": model_id, "OPTION_ROLLING_BATCH": "vllm",
                                            "OPTION_ENABLE_LORA": "true"}})


# --- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


@pytest.fixture(scope="module")
def bucket(aws: AwsEndpoint, demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    name, s3 = unique("sm-hosting"), boto3.client("s3")
    s3.create_bucket(Bucket=name)
    upload_directory(s3, demo_model, name, DEMO_MODEL_PREFIX)
    adapter = lora_adapter(demo_model, tmp_path_factory.mktemp("adapter") / "ft-1")
    s3.put_object(Bucket=name, Key="jobs/ft-1/output/model.tar.gz", Body=model_tarball(adapter))
    s3.put_object(Bucket=name, Key="base-models/broken/config.json", Body=b"{}")
    s3.put_object(Bucket=name, Key="base-models/demo/model.tar.gz", Body=model_tarball(demo_model))
    return name


@pytest.fixture(scope="module")
def emulator(aws: AwsEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    base = tmp_path_factory.mktemp("sagemaker")
    emulator = Emulator(base / "work", base / "emulator.log")
    emulator.start()
    yield emulator
    emulator.stop()
    assert server_pids(emulator.workdir) == [], "the emulator left a model server running"


@pytest.fixture(scope="module")
def endpoint(emulator: Emulator, bucket: str) -> dict[str, Any]:
    """The endpoint and its base component; the status the component had right after its creation."""
    sm = emulator.sagemaker()
    create_model(sm, ENDPOINT, f"s3://{bucket}/{DEMO_MODEL_PREFIX}")
    sm.create_endpoint_config(EndpointConfigName=ENDPOINT, ProductionVariants=[{
        "VariantName": "main", "InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 1,
        "ContainerStartupHealthCheckTimeoutInSeconds": 900}])
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=ENDPOINT)
    wait_for(lambda: sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"], lambda s: s == "InService",
             "the endpoint to be InService")
    create_base_component(sm, BASE, ENDPOINT)
    # It cannot be up yet: its server still has to import torch and load the model before /ping answers.
    first_status = sm.describe_inference_component(InferenceComponentName=BASE)["InferenceComponentStatus"]
    component = component_status(sm, BASE)
    assert component["InferenceComponentStatus"] == "InService", component.get("FailureReason")
    return {"first_status": first_status}


@pytest.fixture(scope="module")
def adapter(emulator: Emulator, endpoint: dict[str, Any], bucket: str) -> dict[str, Any]:
    sm = emulator.sagemaker()
    sm.create_inference_component(InferenceComponentName=ADAPTER, EndpointName=ENDPOINT, Specification={
        "BaseInferenceComponentName": BASE,
        "Container": {"ArtifactUrl": f"s3://{bucket}/jobs/ft-1/output/model.tar.gz"}})
    component = component_status(sm, ADAPTER)
    assert component["InferenceComponentStatus"] == "InService", component.get("FailureReason")
    return component


# --- the control plane -----------------------------------------------------------------------------------

def test_components_are_created_in_the_background_and_described_as_sagemaker_does(
        emulator: Emulator, endpoint: dict[str, Any]) -> None:
    sm = emulator.sagemaker()
    assert endpoint["first_status"] == "Creating"
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointArn"] == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT}"
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", ENDPOINT)
    [variant] = described["ProductionVariants"]
    assert (variant["VariantName"], variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (
        "main", 1, 1)
    config = sm.describe_endpoint_config(EndpointConfigName=ENDPOINT)
    assert "ModelName" not in config["ProductionVariants"][0]
    model = sm.describe_model(ModelName=ENDPOINT)
    assert model["PrimaryContainer"]["Image"] == LMI_IMAGE and model["ExecutionRoleArn"] == ROLE_ARN
    base = sm.describe_inference_component(InferenceComponentName=BASE)
    assert (base["EndpointName"], base["VariantName"], base["InferenceComponentStatus"]) == (
        ENDPOINT, "main", "InService")
    assert base["Specification"]["ModelName"] == ENDPOINT
    assert base["RuntimeConfig"] == {"DesiredCopyCount": 1, "CurrentCopyCount": 1}
    assert [e["EndpointName"] for e in sm.list_endpoints(NameContains="llmt")["Endpoints"]] == [ENDPOINT]
    listed = sm.list_inference_components(EndpointNameEquals=ENDPOINT, StatusEquals="InService")
    assert BASE in [c["InferenceComponentName"] for c in listed["InferenceComponents"]]


@pytest.mark.parametrize(("call", "kwargs", "message"), [
    ("create_model", {"ModelName": "bad_name", "PrimaryContainer": {"Image": LMI_IMAGE}},
     "failed to satisfy constraint: Member must satisfy regular expression pattern"),
    ("create_model", {"ModelName": "m" * 64, "PrimaryContainer": {"Image": LMI_IMAGE}},
     "Member must have length less than or equal to 63"),
    ("create_model", {"ModelName": ENDPOINT, "PrimaryContainer": {"Image": LMI_IMAGE}},
     f'Cannot create already existing model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{ENDPOINT}".'),
    ("create_model", {"ModelName": "no-container"}, "Either PrimaryContainer or Containers must be specified."),
    ("describe_endpoint", {"EndpointName": "nope"},
     f'Could not find endpoint "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/nope".'),
    ("create_endpoint", {"EndpointName": "e2", "EndpointConfigName": "nope"}, "Could not find endpoint configuration"),
    ("create_endpoint_config", {"EndpointConfigName": "c2", "ProductionVariants": [{"VariantName": "main"}]},
     "Value null at 'InstanceType'"),
    ("create_inference_component", {"InferenceComponentName": "ic2", "EndpointName": ENDPOINT, "Specification": {
        "ModelName": "nope", "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 1024}},
        "RuntimeConfig": {"CopyCount": 1}}, "Could not find model"),
    ("create_inference_component", {"InferenceComponentName": "ic2", "EndpointName": ENDPOINT, "Specification": {
        "BaseInferenceComponentName": BASE, "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 1024},
        "Container": {"ArtifactUrl": "s3://b/model.tar.gz"}}}, "omit ComputeResourceRequirements"),
    ("create_inference_component", {"InferenceComponentName": "ic2", "EndpointName": ENDPOINT, "Specification": {
        "ModelName": ENDPOINT, "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 1024}}},
     "Value null at 'RuntimeConfig'"),
    ("describe_inference_component", {"InferenceComponentName": "nope"}, "Could not find inference component"),
])
def test_bad_requests_are_validation_exceptions(emulator: Emulator, endpoint: dict[str, Any], call: str,
                                                kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ClientError) as raised:
        getattr(emulator.sagemaker(), call)(**kwargs)
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException" and message in error["Message"]


def test_a_component_whose_model_cannot_load_fails_with_the_reason(
        emulator: Emulator, endpoint: dict[str, Any], bucket: str) -> None:
    sm = emulator.sagemaker()
    create_model(sm, "broken", f"s3://{bucket}/base-models/broken/")
    create_model(sm, "empty", f"s3://{bucket}/base-models/nothing-here/")
    create_base_component(sm, "broken-base", "broken")
    create_base_component(sm, "empty-base", "empty")
    broken = component_status(sm, "broken-base")
    assert broken["InferenceComponentStatus"] == "Failed"
    assert broken["FailureReason"].startswith("The model server exited with code 1") or (
        "the model server exited with code 1 while starting" in broken["FailureReason"]), broken["FailureReason"]
    assert "Error" in broken["FailureReason"], "the reason ends with the server's own last words"
    empty = component_status(sm, "empty-base")
    assert empty["InferenceComponentStatus"] == "Failed"
    assert f"no objects under s3://{bucket}/base-models/nothing-here/" in empty["FailureReason"]
    with pytest.raises(ClientError) as raised:
        invoke(emulator.runtime(), "broken-base")
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert "is not in service (status Failed)" in raised.value.response["Error"]["Message"]
    for name in ("broken-base", "empty-base"):
        sm.delete_inference_component(InferenceComponentName=name)
    wait_for(lambda: sm.list_inference_components(NameContains="base")["InferenceComponents"],
             lambda listed: [c["InferenceComponentName"] for c in listed] == [BASE], "the failed ones to go")


def test_an_endpoint_whose_variant_names_a_model_fails_saying_why(emulator: Emulator,
                                                                  endpoint: dict[str, Any]) -> None:
    """This emulator hosts inference components only; listing pages through what it has."""
    sm = emulator.sagemaker()
    sm.create_endpoint_config(EndpointConfigName="with-model", ProductionVariants=[{
        "VariantName": "main", "ModelName": ENDPOINT, "InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="with-model", EndpointConfigName="with-model")
    failed = wait_for(lambda: sm.describe_endpoint(EndpointName="with-model"),
                      lambda d: d["EndpointStatus"] != "Creating", "the endpoint to fail")
    assert failed["EndpointStatus"] == "Failed" and "hosts inference components only" in failed["FailureReason"]
    first = sm.list_endpoints(MaxResults=1, SortBy="Name", SortOrder="Ascending")
    second = sm.list_endpoints(MaxResults=1, SortBy="Name", SortOrder="Ascending", NextToken=first["NextToken"])
    assert [e["EndpointName"] for e in first["Endpoints"] + second["Endpoints"]] == [ENDPOINT, "with-model"]
    assert "NextToken" not in second
    assert [e["EndpointName"] for e in sm.list_endpoints(StatusEquals="Failed")["Endpoints"]] == ["with-model"]
    sm.delete_endpoint(EndpointName="with-model")
    wait_for(lambda: [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]], lambda n: n == [ENDPOINT],
             "the failed endpoint to go")


def model_sources(bucket: str, demo_model: Path) -> list[dict[str, Any]]:
    prefix, tarball = f"s3://{bucket}/{DEMO_MODEL_PREFIX}", f"s3://{bucket}/base-models/demo/model.tar.gz"
    return [
        {"Environment": {"HF_MODEL_ID": prefix}},
        {"Environment": {"HF_MODEL_ID": str(demo_model)}},
        {"ModelDataSource": {"S3DataSource": {"S3Uri": prefix, "S3DataType": "S3Prefix", "CompressionType": "None"}}},
        {"ModelDataSource": {"S3DataSource": {"S3Uri": tarball, "S3DataType": "S3Object", "CompressionType": "Gzip"}}},
        {"ModelDataUrl": tarball},
        {"Environment": {"HF_MODEL_ID": "/opt/ml/model"}, "ModelDataUrl": tarball},  # LMI: the model data
    ]


def test_a_base_model_comes_from_hf_model_id_or_the_model_data(bucket: str, demo_model: Path,
                                                                tmp_path: Path) -> None:
    s3, expected = boto3.client("s3"), sorted(p.name for p in demo_model.iterdir())
    for i, container in enumerate(model_sources(bucket, demo_model)):
        location = Path(fetch_model(s3, model_source(container), tmp_path / f"model-{i}"))
        assert sorted(p.name for p in location.iterdir() if not p.name.startswith(".")) == expected, container
    hub = model_source({"Environment": {"HF_MODEL_ID": "meta-llama/Llama-3.2-1B-Instruct"}})
    assert fetch_model(s3, hub, tmp_path / "hub") == "meta-llama/Llama-3.2-1B-Instruct"  # the server downloads it
    assert not (tmp_path / "hub").exists()
    with pytest.raises(ArtifactError, match="The model names no weights"):
        model_source({"Image": LMI_IMAGE})
    with pytest.raises(ArtifactError, match=r"holds no adapter_config\.json"):
        fetch_adapter(s3, f"s3://{bucket}/base-models/demo/model.tar.gz", tmp_path / "not-an-adapter")


# --- the runtime -----------------------------------------------------------------------------------------

def test_the_stream_equals_the_plain_answer_at_temperature_0(emulator: Emulator, endpoint: dict[str, Any]) -> None:
    rt = emulator.runtime()
    plain = invoke(rt, BASE, max_tokens=30)
    assert plain["object"] == "chat.completion" and plain["usage"]["completion_tokens"] == 30
    chunks = invoke_streamed(rt, BASE, max_tokens=30, stream_options={"include_usage": True})
    assert streamed_text(chunks) == content(plain)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_stop_strings_and_max_tokens_reach_the_model(emulator: Emulator, endpoint: dict[str, Any]) -> None:
    rt = emulator.runtime()
    text = content(invoke(rt, BASE, max_tokens=40))
    stop = text[len(text) // 2: len(text) // 2 + 3]
    stopped = invoke(rt, BASE, max_tokens=40, stop=[stop])
    assert content(stopped) == text[:text.index(stop)]
    assert stopped["choices"][0]["finish_reason"] == "stop_sequence"
    short = invoke(rt, BASE, max_tokens=3)
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 3


def test_an_adapter_component_answers_with_the_fine_tune(emulator: Emulator, adapter: dict[str, Any],
                                                         bucket: str) -> None:
    assert adapter["Specification"]["BaseInferenceComponentName"] == BASE
    assert adapter["Specification"]["Container"]["ArtifactUrl"] == f"s3://{bucket}/jobs/ft-1/output/model.tar.gz"
    rt = emulator.runtime()
    base = content(invoke(rt, BASE, max_tokens=20))
    tuned = invoke(rt, ADAPTER, max_tokens=20)
    assert content(tuned) != base
    assert streamed_text(invoke_streamed(rt, ADAPTER, max_tokens=20)) == content(tuned)
    assert content(invoke(rt, BASE, max_tokens=20)) == base


def test_a_prompt_beyond_the_context_is_a_model_error_carrying_the_containers_400(
        emulator: Emulator, endpoint: dict[str, Any]) -> None:
    rt = emulator.runtime()
    for call in (rt.invoke_endpoint, rt.invoke_endpoint_with_response_stream):
        with pytest.raises(ClientError) as raised:
            call(EndpointName=ENDPOINT, InferenceComponentName=BASE, ContentType="application/json",
                 Body=json.dumps(chat_request(max_tokens=600, stream=call == rt.invoke_endpoint_with_response_stream)))
        response = raised.value.response
        assert response["Error"]["Code"] == "ModelError" and response["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert response["OriginalStatusCode"] == 400
        original = json.loads(response["OriginalMessage"])
        assert original["code"] == 400
        assert original["error"].startswith("This model's maximum context length is 512 tokens. However, you "
                                            "requested ")
        assert response["LogStreamArn"].startswith(
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/InferenceComponents/{BASE}:log-stream:")
        assert "Received client error (400) from primary" in response["Error"]["Message"]


@pytest.mark.parametrize(("endpoint_name", "component", "message"), [
    ("nope", BASE, f"Endpoint nope of account {ACCOUNT} not found."),
    (ENDPOINT, None, "Inference Component Name header is required"),
    (ENDPOINT, "nope", "Inference Component nope of account"),
])
def test_an_unknown_endpoint_or_component_is_a_validation_error(
        emulator: Emulator, endpoint: dict[str, Any], endpoint_name: str, component: str | None,
        message: str) -> None:
    extra = {"InferenceComponentName": component} if component else {}
    with pytest.raises(ClientError) as raised:
        emulator.runtime().invoke_endpoint(EndpointName=endpoint_name, Body=json.dumps(chat_request()), **extra)
    response = raised.value.response
    assert response["Error"]["Code"] == "ValidationError" and response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message in response["Error"]["Message"]


def test_a_stream_that_breaks_midway_ends_with_a_model_stream_error() -> None:
    """A container that dies after its first line: the caller gets that line, then ModelStreamError."""
    async def invocations(request: Request) -> Response:
        async def lines() -> AsyncIterator[bytes]:
            yield b'{"partial": true}\n'
            raise RuntimeError("the model crashed mid-answer")
        return StreamingResponse(lines(), media_type="application/jsonlines")

    container = Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])
    runtime = Starlette(routes=runtime_routes())
    with serve(container) as container_url, serve(runtime) as url:
        arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/InferenceComponents/c:log-stream:s"
        runtime.state.invoker = Invoker(lambda endpoint, component: Target(container_url, None, "main", arn),
                                        REGION, ACCOUNT, timeout_s=30)
        rt = boto3.client("sagemaker-runtime", endpoint_url=url, region_name=REGION)
        response = rt.invoke_endpoint_with_response_stream(EndpointName="e", InferenceComponentName="c",
                                                           Body=b"{}")
        events = iter(response["Body"])
        assert next(events) == {"PayloadPart": {"Bytes": b'{"partial": true}\n'}}
        with pytest.raises(EventStreamError) as raised:
            next(events)
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"
    assert "broke" in raised.value.response["Error"]["Message"]


# --- restarts and deletions ------------------------------------------------------------------------------

def test_a_restarted_emulator_serves_its_endpoints_again(emulator: Emulator, adapter: dict[str, Any]) -> None:
    before = {name: content(invoke(emulator.runtime(), name, max_tokens=15)) for name in (BASE, ADAPTER)}
    servers = server_pids(emulator.workdir)
    assert len(servers) == 1, "one server for the base component; the adapter lives in it"
    emulator.stop()
    assert server_pids(emulator.workdir) == [], "no model server outlives the emulator"
    emulator.start()
    sm = emulator.sagemaker()
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService"

    def answers() -> dict[str, str] | None:
        try:
            return {name: content(invoke(emulator.runtime(), name, max_tokens=15)) for name in (BASE, ADAPTER)}
        except ClientError as exc:  # ServiceUnavailable while the server starts again
            assert exc.response["Error"]["Code"] == "ServiceUnavailable", exc.response
            return None

    assert wait_for(answers, lambda a: a is not None, "the components to answer again", STARTUP_S) == before
    assert {c["InferenceComponentStatus"] for c in sm.list_inference_components()["InferenceComponents"]} == {
        "InService"}


def test_deleting_unloads_the_adapter_and_stops_the_server(emulator: Emulator, adapter: dict[str, Any]) -> None:
    sm, rt = emulator.sagemaker(), emulator.runtime()
    sm.delete_inference_component(InferenceComponentName=ADAPTER)
    wait_for(lambda: sm.list_inference_components()["InferenceComponents"],
             lambda listed: [c["InferenceComponentName"] for c in listed] == [BASE], "the adapter to go")
    with pytest.raises(ClientError) as raised:
        invoke(rt, ADAPTER)
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert len(server_pids(emulator.workdir)) == 1
    sm.delete_endpoint(EndpointName=ENDPOINT)
    wait_for(lambda: sm.list_endpoints()["Endpoints"], lambda e: e == [], "the endpoint to go")
    assert sm.list_inference_components()["InferenceComponents"] == []
    wait_for(lambda: server_pids(emulator.workdir), lambda pids: pids == [], "the server to end", 30)
    with pytest.raises(ClientError) as raised:
        sm.describe_endpoint(EndpointName=ENDPOINT)
    assert "Could not find endpoint" in raised.value.response["Error"]["Message"]
    sm.delete_endpoint_config(EndpointConfigName=ENDPOINT)
    sm.delete_model(ModelName=ENDPOINT)
