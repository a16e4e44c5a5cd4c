"""Issue #5: hyperparameter bounds, the catalog's fit rule, estimate arithmetic, the budget cap, dry runs."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.gateway.routes import upstream_for
from services.training import estimates, fit, handlers
from services.training import hyperparameters as hparams
from services.training.catalog import Catalog
from services.training.models import CreateJob, EstimateRequest, FileView, Hyperparameters, Job
from services.training.settings import Settings
from shared.consumer import RetryLater
from shared.errors import InvalidRequest, install_error_handlers
from shared.events import Envelope, MemoryCommandQueue, MemoryPublisher
from tests.unit.test_training_handlers import FakeJobsStore, FakeS3, FakeSageMaker

CATALOG = Catalog.load(Settings().catalog_file)
TINY = "llm-tuner/tiny-chat"
QWEN7 = "Qwen/Qwen2.5-7B-Instruct"


class FakeThroughput:
    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], tuple[float, int]] = {}

    async def record(self, model: str, instance_type: str, seconds: float, tokens: int) -> None:
        s, t = self.totals.get((model, instance_type), (0.0, 0))
        self.totals[model, instance_type] = (s + seconds, t + tokens)

    async def seconds_per_token(self, model: str, instance_type: str) -> float | None:
        s, t = self.totals.get((model, instance_type), (0.0, 0))
        return s / t if t else None


@pytest.fixture
def deps() -> handlers.Deps:
    return handlers.Deps(jobs=FakeJobsStore(), catalog=CATALOG,  # type: ignore[arg-type]
                         events=MemoryPublisher(), commands=MemoryCommandQueue(), sagemaker=FakeSageMaker(),
                         s3=FakeS3(), throughput=FakeThroughput(),
                         launch=handlers.LaunchConfig(bucket="b", role_arn="arn:role", image_uri="img",
                                                      instance_type="ml.m5.large", max_runtime_s=86400))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _file(deps: handlers.Deps, examples: int = 20, tokens: int | None = 4000, status: str = "processed") -> None:
    run(deps.jobs.put_file(FileView(file_id="file-1", user_id="u1", status=status,  # type: ignore[arg-type]
                                    purpose="fine-tune", s3_uri="s3://b/files/u1/file-1", examples=examples,
                                    estimated_tokens=tokens)))


# ---- bounds: each violation a 400 naming the field ------------------------------------------------------------

def _app(deps: handlers.Deps) -> TestClient:
    """The request models behind the real error handlers, without the service's auth and AWS wiring."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/jobs")
    async def create(body: CreateJob) -> dict[str, Any]:
        if body.dry_run:
            return await handlers.dry_run_job(body, "u1", deps)
        return (await handlers.create_job(body, "u1", deps)).openai()

    @app.post("/estimates")
    async def estimate(body: EstimateRequest) -> dict[str, Any]:
        return await handlers.estimate_job(body, "u1", deps)

    return TestClient(app)


BAD_HYPERPARAMETERS = [
    ("n_epochs", 0), ("n_epochs", 51), ("batch_size", 0), ("batch_size", 257),
    ("learning_rate_multiplier", 0), ("learning_rate_multiplier", 10.5), ("learning_rate", 0), ("learning_rate", 2),
    ("lora_r", 0), ("lora_r", 257), ("lora_alpha", 0), ("lora_dropout", -0.1), ("lora_dropout", 0.6),
    ("target_modules", "some"), ("target_modules", []), ("target_modules", ["q proj"]),
    ("max_seq_length", 15), ("max_seq_length", 257),  # tiny-chat's context is 256
    ("warmup_ratio", 0.51), ("weight_decay", 1.5), ("gradient_accumulation_steps", 0),
    ("gradient_accumulation_steps", 65), ("lr_scheduler", "sawtooth"), ("seed", -1), ("packing", "maybe"),
    ("validation_split", 0.6), ("surprise", 1),
]


@pytest.mark.parametrize(("field", "value"), BAD_HYPERPARAMETERS)
def test_each_out_of_bounds_hyperparameter_is_a_400_naming_it(deps: handlers.Deps, field: str, value: Any) -> None:
    client = _app(deps)
    for body, prefix in (({"hyperparameters": {field: value}}, "hyperparameters"),
                         ({"method": {"type": "supervised", "supervised": {"hyperparameters": {field: value}}}},
                          "method.supervised.hyperparameters")):
        response = client.post("/jobs", json={"model": TINY, "training_file": "file-1", **body})
        assert response.status_code == 400, response.text
        param = response.json()["error"]["param"]
        assert param in (f"{prefix}.{field}", f"hyperparameters.{field}"), param
        if isinstance(value, (int, float)) and field not in ("surprise", "target_modules"):
            # the bound, not pydantic's "should be 'auto'" for the other branch of `"auto" | number`
            assert "'auto'" not in response.json()["error"]["message"], response.text
    assert not deps.jobs.jobs  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "param"), [
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k"),
    ({"suffix": "s" * 65}, "suffix"),
    ({"validation_file": "f" * 65}, "validation_file"),
    ({"max_cost_usd": 0}, "max_cost_usd"),
    ({"max_cost_usd": 0.001}, "max_cost_usd"),  # buys under a minute of ml.m5.large
    ({"instance_type": "ml.x9.huge"}, "instance_type"),
])
def test_other_create_fields_are_bounded(deps: handlers.Deps, body: dict[str, Any], param: str) -> None:
    response = _app(deps).post("/jobs", json={"model": TINY, "training_file": "file-1", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_in_bounds_values_are_accepted_from_either_place_and_resolved(deps: handlers.Deps) -> None:
    _file(deps)
    hp = {"n_epochs": 2, "lora_r": 32, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"],
          "max_seq_length": 128, "warmup_ratio": 0.1, "weight_decay": 0.01, "gradient_accumulation_steps": 2,
          "lr_scheduler": "cosine", "learning_rate": 1e-4, "packing": True, "validation_split": 0}
    client = _app(deps)
    for body in ({"hyperparameters": hp}, {"method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}):
        created = client.post("/jobs", json={"model": TINY, "training_file": "file-1", "seed": 7, **body})
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        run(handlers.launch_job(Envelope(type="training.job.launch_requested", data={"job_id": job_id}), deps))
        stored = deps.jobs.jobs[job_id]  # type: ignore[attr-defined]
        assert stored.hyperparameters["lora_r"] == 32 and stored.hyperparameters["lora_alpha"] == 64
        assert stored.hyperparameters["learning_rate_multiplier"] == pytest.approx(0.5)
    sent = deps.sagemaker.created[-1]["HyperParameters"]  # type: ignore[attr-defined]
    assert sent == {"n_epochs": "2", "batch_size": "4", "learning_rate": "0.0001", "lora_r": "32",
                    "lora_alpha": "64", "lora_dropout": "0.1", "target_modules": "q_proj,v_proj",
                    "max_seq_length": "128", "seed": "7", "gradient_accumulation_steps": "2",
                    "warmup_ratio": "0.1", "weight_decay": "0.01", "lr_scheduler": "cosine",
                    "validation_split": "0.0", "merge_adapter": "false"}
    assert set(sent) <= set(hparams.TRAINER_NAMES)


def test_options_the_trainer_lacks_are_refused_unless_neutral(deps: handlers.Deps) -> None:
    client = _app(deps)
    for field, value, extra in (("packing", False, {}), ("validation_split", 0.1, {"validation_file": "file-2"})):
        response = client.post("/jobs", json={"model": TINY, "training_file": "file-1",
                                              "hyperparameters": {field: value}, **extra})
        assert response.status_code == 400 and response.json()["error"]["param"] == f"hyperparameters.{field}"
    accepted = client.post("/jobs", json={"model": TINY, "training_file": "file-1",
                                          "hyperparameters": {"validation_split": 0.1}})
    assert accepted.status_code == 200, accepted.text


def test_a_validation_file_becomes_the_validation_channel(deps: handlers.Deps) -> None:
    _file(deps)
    run(deps.jobs.put_file(FileView(file_id="file-2", user_id="u1", status="uploaded", purpose="fine-tune",
                                    s3_uri="s3://b/files/u1/file-2")))
    job = run(handlers.create_job(CreateJob(model=TINY, training_file="file-1", validation_file="file-2"), "u1",
                                  deps))
    envelope = Envelope(type="training.job.launch_requested", data={"job_id": job.job_id})
    with pytest.raises(RetryLater):  # waits for the validation file's validation too
        run(handlers.launch_job(envelope, deps))
    run(deps.jobs.put_file(FileView(file_id="file-2", user_id="u1", status="processed", purpose="fine-tune",
                                    s3_uri="s3://b/files/u1/file-2", normalized_uri="s3://b/norm/file-2")))
    run(handlers.launch_job(envelope, deps))
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in deps.sagemaker.created[-1]["InputDataConfig"]}  # type: ignore[attr-defined]
    assert channels["validation"] == "s3://b/norm/file-2"
    rejected = run(handlers.create_job(CreateJob(model=TINY, training_file="file-1", validation_file="file-3"),
                                       "u1", deps))
    run(deps.jobs.put_file(FileView(file_id="file-3", user_id="u1", status="error", purpose="fine-tune",
                                    s3_uri="s3://b/files/u1/file-3", error="Line 1 is not valid JSON")))
    run(handlers.launch_job(Envelope(type="training.job.launch_requested", data={"job_id": rejected.job_id}), deps))
    failed = deps.jobs.jobs[rejected.job_id]  # type: ignore[attr-defined]
    assert failed.status == "failed" and failed.error["param"] == "validation_file"


def test_auto_keeps_the_e2e_defaults() -> None:
    tiny = CATALOG.model(TINY)
    resolved = hparams.resolve(Hyperparameters(), 20, tiny, seed=1)
    assert resolved["n_epochs"] == 5 and resolved["batch_size"] == 4 and resolved["max_seq_length"] == 256
    assert resolved["learning_rate"] == 2e-4 and resolved["target_modules"] == "all-linear"
    qwen = CATALOG.model(QWEN7)
    assert hparams.resolve(Hyperparameters(), 20, qwen, seed=1)["max_seq_length"] == hparams.AUTO_MAX_SEQ_LENGTH


def test_a_job_resolved_before_the_new_fields_still_launches_with_the_old_values() -> None:
    tiny = CATALOG.model(TINY)
    assert tiny is not None
    sent = hparams.sagemaker_hyperparameters({"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 2.0},
                                             tiny, seed=5)
    assert sent["learning_rate"] == "0.0004" and sent["max_seq_length"] == "256" and sent["seed"] == "5"


# ---- the catalog and its fit rule --------------------------------------------------------------------------

def test_catalog_lists_real_models_and_their_smallest_type_follows_the_fit_rule() -> None:
    ids = {m.id for m in CATALOG.models}
    assert {TINY, QWEN7, "meta-llama/Llama-3.2-1B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3"} <= ids
    for model in CATALOG.models:
        named = CATALOG.instance(model.min_instance_type)
        assert named is not None and fit.fits(model, named), model.id
        assert fit.default_instance(CATALOG, model) == named
        cheaper = [i for i in fit.fitting_instances(CATALOG, model) if i.price_per_hour < named.price_per_hour
                   and i.gpus == named.gpus]
        assert not cheaper or model.id == TINY, model.id  # tiny-chat keeps ml.m5.large, the demo's type
    assert CATALOG.model("meta-llama/Llama-3.2-3B-Instruct").gated  # type: ignore[union-attr]
    public = CATALOG.public()
    assert public["models"][0]["fits_instance_types"][0] == "ml.m5.large"


def test_fit_rule() -> None:
    qwen7, tiny = CATALOG.model(QWEN7), CATALOG.model(TINY)
    assert qwen7 is not None and tiny is not None
    g5, p3, m5 = (CATALOG.instance(i) for i in ("ml.g5.xlarge", "ml.p3.2xlarge", "ml.m5.large"))
    assert g5 and p3 and m5
    assert fit.memory_needed_gib(qwen7) == pytest.approx(7615616512 * 2 / 2**30 * 1.25 + 2.0)
    assert fit.fits(qwen7, g5) and not fit.fits(qwen7, p3)  # 16 GiB V100 without bf16
    assert not fit.fits(qwen7, m5) and fit.fits(tiny, m5)  # CPUs for tiny models only
    small_qwen = CATALOG.model("Qwen/Qwen2.5-0.5B-Instruct")
    assert small_qwen is not None and not fit.fits(small_qwen, m5)


def test_a_model_too_big_for_the_instance_is_refused_naming_one_that_fits(deps: handlers.Deps) -> None:
    with pytest.raises(InvalidRequest) as refused:
        run(handlers.create_job(CreateJob(model=QWEN7, training_file="file-1", instance_type="ml.p3.2xlarge"),
                                "u1", deps))
    assert refused.value.param == "instance_type" and "ml.g5.xlarge" in refused.value.message
    job = run(handlers.create_job(CreateJob(model=QWEN7, training_file="file-1"), "u1", deps))
    assert job.instance_type == "ml.g5.xlarge"
    assert run(handlers.create_job(CreateJob(model=TINY, training_file="file-1"), "u1", deps)).instance_type \
        == "ml.m5.large"


# ---- estimates ------------------------------------------------------------------------------------------

def test_estimate_arithmetic(deps: handlers.Deps) -> None:
    _file(deps, examples=20, tokens=4000)
    body = run(handlers.estimate_job(EstimateRequest(model=QWEN7, training_file="file-1",
                                                     hyperparameters=Hyperparameters(n_epochs=3, batch_size=4)),
                                     "u1", deps))
    price, tps = 1.408, 450  # ml.g5.xlarge; the catalog's Qwen 7B figure
    assert body["instance_type"] == "ml.g5.xlarge" and body["tokens_per_epoch"] == 4000
    assert body["trained_tokens"] == 12000 and body["steps"] == 15  # ceil(20 / 4) x 3
    duration = math.ceil(240 + 12000 / tps)
    assert body["estimated_duration_s"] == duration
    assert body["cost_on_demand_usd"] == round(duration / 3600 * price, 4)
    assert body["cost_spot_usd"] == round(duration / 3600 * price * 0.3, 4)
    assert body["estimated_cost_usd"] == body["cost_on_demand_usd"]
    assert body["inputs"] == {"file_tokens": 4000, "tokens_source": "file validation", "n_epochs": 3,
                              "batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 2048,
                              "validation_split": 0.0, "tokens_per_second": tps, "throughput_source": "catalog",
                              "startup_overhead_s": 240, "price_per_hour": price, "spot_discount": 0.7}


def test_estimate_caps_tokens_at_max_seq_length_and_defaults_unknown_pairs() -> None:
    tiny = CATALOG.model(TINY)
    g5 = CATALOG.instance("ml.g5.4xlarge")
    assert tiny is not None and g5 is not None
    hp = {"n_epochs": 2, "batch_size": 3, "gradient_accumulation_steps": 2, "max_seq_length": 16}
    body = estimates.estimate(catalog=CATALOG, base=tiny, instance=g5, hyperparameters=hp, examples=10,
                              file_tokens=10_000, tokens_per_s=100, overhead_s=0, source="x", spot=True)
    assert body["tokens_per_epoch"] == 160 and body["trained_tokens"] == 320 and body["steps"] == 4
    assert body["estimated_cost_usd"] == body["cost_spot_usd"]
    tps, overhead, source = run(estimates.tokens_per_second(CATALOG, tiny, g5, None))
    assert (tps, overhead, source) == (CATALOG.default_tokens_per_second, 240, "default")


def test_estimate_needs_a_validated_file(deps: handlers.Deps) -> None:
    request = EstimateRequest(model=TINY, training_file="file-1")
    with pytest.raises(InvalidRequest) as missing:
        run(handlers.estimate_job(request, "u1", deps))
    assert missing.value.param == "training_file"
    _file(deps, status="uploaded")
    with pytest.raises(InvalidRequest) as pending:
        run(handlers.estimate_job(request, "u1", deps))
    assert pending.value.code == "file_not_ready"
    _file(deps)
    with pytest.raises(InvalidRequest):  # another user's file does not exist for this caller
        run(handlers.estimate_job(request, "u2", deps))


def test_dry_run_returns_the_estimate_and_creates_nothing(deps: handlers.Deps) -> None:
    _file(deps)
    response = _app(deps).post("/jobs", json={"model": TINY, "training_file": "file-1", "dry_run": True,
                                              "max_cost_usd": 1.0, "spot": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["object"] == "fine_tuning.estimate" and body["within_budget"]
    assert body["stopping_condition"] == {"MaxRuntimeInSeconds": math.floor(1.0 / 0.115 * 3600),
                                          "MaxWaitTimeInSeconds": 2 * math.floor(1.0 / 0.115 * 3600)}
    assert not deps.jobs.jobs and not deps.commands.sent  # type: ignore[attr-defined]


# ---- the budget cap, spot, measured throughput -------------------------------------------------------------

def test_budget_sets_max_runtime_so_the_job_cannot_cost_more() -> None:
    g5 = CATALOG.instance("ml.g5.xlarge")
    assert g5 is not None
    condition = estimates.budget_stopping_condition(5.0, g5, spot=False, max_runtime_s=86400)
    assert condition == {"MaxRuntimeInSeconds": math.floor(5.0 / 1.408 * 3600)}
    assert condition["MaxRuntimeInSeconds"] / 3600 * g5.price_per_hour <= 5.0
    assert estimates.budget_stopping_condition(10_000, g5, spot=False, max_runtime_s=3600) == {
        "MaxRuntimeInSeconds": 3600}
    spot = estimates.budget_stopping_condition(5.0, g5, spot=True, max_runtime_s=86400)
    assert spot["MaxWaitTimeInSeconds"] >= spot["MaxRuntimeInSeconds"]
    with pytest.raises(InvalidRequest) as tiny_budget:
        estimates.budget_stopping_condition(0.01, g5, spot=False, max_runtime_s=86400)
    assert tiny_budget.value.param == "max_cost_usd"


def test_budget_and_spot_reach_the_training_job(deps: handlers.Deps) -> None:
    _file(deps)
    job = run(handlers.create_job(CreateJob(model=QWEN7, training_file="file-1", max_cost_usd=2.0, spot=True),
                                  "u1", deps))
    run(handlers.launch_job(Envelope(type="training.job.launch_requested", data={"job_id": job.job_id}), deps))
    request = deps.sagemaker.created[-1]  # type: ignore[attr-defined]
    runtime = math.floor(2.0 / 1.408 * 3600)
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": runtime, "MaxWaitTimeInSeconds": 2 * runtime}
    assert request["EnableManagedSpotTraining"] is True
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert job.openai()["spot"] is True and job.openai()["max_cost_usd"] == 2.0


def test_merge_adapter_names_where_the_trainer_uploads_the_merged_model(deps: handlers.Deps) -> None:
    _file(deps)
    job = run(handlers.create_job(CreateJob(model=TINY, training_file="file-1",
                                            hyperparameters={"merge_adapter": True}), "u1", deps))
    run(handlers.launch_job(Envelope(type="training.job.launch_requested", data={"job_id": job.job_id}), deps))
    sent = deps.sagemaker.created[-1]["HyperParameters"]  # type: ignore[attr-defined]
    assert sent["merge_adapter"] == "true"
    assert sent["merged_model_uri"] == (f"s3://{deps.launch.bucket}/training-jobs/u1/{job.job_id}"
                                        "/output/merged-model.tar.gz")


def test_completed_jobs_feed_the_next_estimate(deps: handlers.Deps) -> None:
    _file(deps, examples=20, tokens=4000)
    job = run(handlers.create_job(CreateJob(model=TINY, training_file="file-1"), "u1", deps))
    run(handlers.launch_job(Envelope(type="training.job.launch_requested", data={"job_id": job.job_id}), deps))
    run(handlers.on_sagemaker_state(Envelope(type="sagemaker", data={
        "TrainingJobName": job.job_id, "TrainingJobStatus": "Completed", "TrainingTimeInSeconds": 100,
        "FinalMetricDataList": [{"MetricName": "trained_tokens", "Value": 20000}]}), deps))
    assert deps.throughput.totals == {(TINY, "ml.m5.large"): (100.0, 20000)}  # type: ignore[attr-defined]
    body = run(handlers.estimate_job(EstimateRequest(model=TINY, training_file="file-1"), "u1", deps))
    assert body["inputs"]["throughput_source"] == "measured" and body["inputs"]["tokens_per_second"] == 200
    assert body["estimated_duration_s"] == math.ceil(body["trained_tokens"] / 200)


def test_the_gateway_routes_estimates_to_training() -> None:
    assert upstream_for("/api/estimates") == "training"


def test_job_model_round_trips_the_new_fields() -> None:
    job = Job(job_id="ftjob-x", user_id="u", created_at="t", created_at_unix=1, model=TINY, training_file="f",
              hyperparameters={}, seed=1, instance_type="ml.m5.large", spot=True, max_cost_usd=3.5)
    assert Job.model_validate(job.model_dump()) == job
