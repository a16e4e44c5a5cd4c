"""Issue #5: hyperparameter bounds, the catalog's fit rule, estimate arithmetic, the budget cap, dry runs."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.gateway.routing import upstream_for
from services.training import commands, estimates, fit
from services.training import hyperparameters as hparams
from services.training.models import CreateJob, EstimateRequest, Hyperparameters, Job
from shared.contracts.files_events import FileRejected, FileUploaded, FileValidated
from shared.errors import InvalidRequest, install_error_handlers
from tests.support.training import (
    CATALOG,
    TINY,
    Fakes,
    file_event,
    launch_config,
    project,
    put_file,
    relaunch_woken,
    run,
    sagemaker_state,
)
from trainer_image.llmt_trainer.memory import AUTO_MIN_STEPS_PER_EPOCH

QWEN7 = "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture
def fakes() -> Fakes:
    return Fakes(launch=launch_config(max_runtime_s=86400))


def _file(fakes: Fakes, examples: int = 20, tokens: int | None = 4000, status: str = "processed") -> None:
    put_file(fakes, status=status, examples=examples, estimated_tokens=tokens)


# ---- bounds: each violation a 400 naming the field ------------------------------------------------------------

def _app(fakes: Fakes) -> TestClient:
    """The request models behind the real error handlers, without the service's auth and AWS wiring."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/jobs")
    async def create(body: CreateJob) -> dict[str, Any]:
        if body.dry_run:
            return await commands.dry_run_job(body, "u1", fakes.deps)
        return (await commands.create_job(body, "u1", fakes.deps)).openai()

    @app.post("/estimates")
    async def estimate(body: EstimateRequest) -> dict[str, Any]:
        return await commands.estimate_job(body, "u1", fakes.deps)

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
def test_each_out_of_bounds_hyperparameter_is_a_400_naming_it(fakes: Fakes, field: str, value: Any) -> None:
    client = _app(fakes)
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
    assert not fakes.jobs.jobs


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
def test_other_create_fields_are_bounded(fakes: Fakes, body: dict[str, Any], param: str) -> None:
    response = _app(fakes).post("/jobs", json={"model": TINY, "training_file": "file-1", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_in_bounds_values_are_accepted_from_either_place_and_resolved(fakes: Fakes) -> None:
    _file(fakes)
    hp = {"n_epochs": 2, "lora_r": 32, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"],
          "max_seq_length": 128, "warmup_ratio": 0.1, "weight_decay": 0.01, "gradient_accumulation_steps": 2,
          "lr_scheduler": "cosine", "learning_rate": 1e-4, "packing": True, "validation_split": 0}
    client = _app(fakes)
    for body in ({"hyperparameters": hp}, {"method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}):
        created = client.post("/jobs", json={"model": TINY, "training_file": "file-1", "seed": 7, **body})
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        relaunch_woken(fakes)
        stored = fakes.jobs.jobs[job_id]
        assert stored.hyperparameters["lora_r"] == 32 and stored.hyperparameters["lora_alpha"] == 64
        # A multiplier of the tiny model's own recommended rate (the catalog's), not of one global rate.
        tiny = CATALOG.model(TINY)
        assert tiny is not None
        assert stored.hyperparameters["learning_rate_multiplier"] == pytest.approx(1e-4 / tiny.learning_rate)
    sent = fakes.sagemaker.created[-1]["HyperParameters"]
    planned = fakes.jobs.jobs[job_id].hyperparameters
    # batch_size "auto": the trainer cuts steps by tokens; the memory model planned the tiny model's passes.
    assert sent == {"n_epochs": "2", "batch_size": "auto", "learning_rate": "0.0001", "lora_r": "32",
                    "lora_alpha": "64", "lora_dropout": "0.1", "target_modules": "q_proj,v_proj",
                    "max_seq_length": "128", "seed": "7", "gradient_accumulation_steps": "2",
                    "warmup_ratio": "0.1", "weight_decay": "0.01", "lr_scheduler": "cosine",
                    "validation_split": "0.0", "merge_adapter": "false",
                    "tokens_per_step": str(planned["tokens_per_step"]),
                    "micro_batch_tokens": str(planned["micro_batch_tokens"]), "gradient_checkpointing": "false",
                    "load_in_4bit": "false", "checkpoint_interval_s": "900", "torch_compile": "false"}
    assert planned["tokens_per_step"] >= 1 and planned["micro_batch_tokens"] >= 128
    assert set(sent) <= set(hparams.TRAINER_NAMES)


def test_options_the_trainer_lacks_are_refused_unless_neutral(fakes: Fakes) -> None:
    client = _app(fakes)
    for field, value, extra in (("packing", False, {}), ("validation_split", 0.1, {"validation_file": "file-2"})):
        response = client.post("/jobs", json={"model": TINY, "training_file": "file-1",
                                              "hyperparameters": {field: value}, **extra})
        assert response.status_code == 400 and response.json()["error"]["param"] == f"hyperparameters.{field}"
    accepted = client.post("/jobs", json={"model": TINY, "training_file": "file-1",
                                          "hyperparameters": {"validation_split": 0.1}})
    assert accepted.status_code == 200, accepted.text


def test_a_validation_file_becomes_the_validation_channel(fakes: Fakes) -> None:
    _file(fakes)
    project(fakes, file_event(FileUploaded, file_id="file-2"))
    job = run(commands.create_job(CreateJob(model=TINY, training_file="file-1", validation_file="file-2"), "u1",
                                  fakes.deps))
    relaunch_woken(fakes)  # waits for the validation file's validation too
    assert fakes.job(job.job_id).status == "validating_files" and fakes.sagemaker.created == []
    project(fakes, file_event(FileValidated, file_id="file-2", normalized_uri="s3://b/norm/file-2"))
    relaunch_woken(fakes)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in fakes.sagemaker.created[-1]["InputDataConfig"]}
    assert channels["validation"] == "s3://b/norm/file-2"
    rejected = run(commands.create_job(CreateJob(model=TINY, training_file="file-1", validation_file="file-3"),
                                       "u1", fakes.deps))
    project(fakes, file_event(FileRejected, file_id="file-3", error="Line 1 is not valid JSON"))
    relaunch_woken(fakes)
    failed = fakes.job(rejected.job_id)
    assert failed.status == "failed" and failed.error is not None
    assert (failed.error["code"], failed.error["param"]) == ("invalid_validation_file", "validation_file")


def test_auto_keeps_the_e2e_defaults() -> None:
    tiny = CATALOG.model(TINY)
    assert tiny is not None
    resolved = hparams.resolve(Hyperparameters(), 20, tiny, seed=1)
    assert resolved["n_epochs"] == 5 and resolved["max_seq_length"] == 256
    # "auto" batch size: steps of tokens (a file with no token count: 20 examples of at most 256 tokens), at least
    # AUTO_MIN_STEPS_PER_EPOCH of them an epoch; batch_size shows about how many examples a step holds.
    assert resolved["tokens_per_step"] == math.ceil(20 * 256 / AUTO_MIN_STEPS_PER_EPOCH)
    assert resolved["batch_size"] == round(resolved["tokens_per_step"] / 256)
    given = hparams.resolve(Hyperparameters(batch_size=4), 20, tiny, seed=1)
    assert given["batch_size"] == 4 and given["tokens_per_step"] is None
    assert resolved["learning_rate"] == tiny.learning_rate and resolved["target_modules"] == "all-linear"
    qwen = CATALOG.model(QWEN7)
    assert qwen is not None and qwen.learning_rate == 2e-4 and tiny.learning_rate > 10 * qwen.learning_rate
    doubled = hparams.resolve(Hyperparameters(learning_rate_multiplier=2), 20, qwen, seed=1)
    assert doubled["learning_rate"] == pytest.approx(4e-4) and doubled["learning_rate_multiplier"] == 2
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
    public = fit.public_catalog(CATALOG)
    tiny_types = public["models"][0]["fits_instance_types"]
    assert "ml.m5.large" in tiny_types and all(CATALOG.instance(i) for i in tiny_types)
    qwen7 = next(m for m in public["models"] if m["id"] == QWEN7)
    assert qwen7["fit"]["ml.g5.xlarge"]["plan"]["gradient_checkpointing"] is True


def test_fit_rule() -> None:
    qwen7, tiny = CATALOG.model(QWEN7), CATALOG.model(TINY)
    assert qwen7 is not None and tiny is not None
    g5, p3, m5 = (CATALOG.instance(i) for i in ("ml.g5.xlarge", "ml.p3.2xlarge", "ml.m5.large"))
    assert g5 and p3 and m5
    # A 7B model in bf16 fits a 24 GiB A10G at 2,048 tokens only with gradient checkpointing; without it only
    # rows of a few hundred tokens fit (the weights alone take 14 GiB, and each token's activations ~14 MiB).
    assert fit.fits(qwen7, g5, 2048) and not fit.fits(qwen7, g5, 2048, gradient_checkpointing=False)
    assert 256 < fit.longest_sequence(qwen7, g5) < 1024
    assert fit.longest_sequence(qwen7, g5, gradient_checkpointing=True) > 4096
    assert not fit.fits(qwen7, p3) and fit.fits(qwen7, p3, load_in_4bit=True)  # 16 GiB V100 without bf16
    assert not fit.fits(qwen7, m5) and fit.fits(tiny, m5)  # CPUs for tiny models only
    small_qwen = CATALOG.model("Qwen/Qwen2.5-0.5B-Instruct")
    assert small_qwen is not None and not fit.fits(small_qwen, m5)


def test_a_model_too_big_for_the_instance_is_refused_naming_one_that_fits(fakes: Fakes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        run(commands.create_job(CreateJob(model=QWEN7, training_file="file-1", instance_type="ml.p3.2xlarge"),
                                "u1", fakes.deps))
    assert refused.value.param == "instance_type" and "ml.g5.xlarge" in refused.value.message
    # It says by how much, and what would fit: QLoRA on that very type, a shorter max_seq_length, a larger type.
    assert "GiB" in refused.value.message and "load_in_4bit: true" in refused.value.message
    assert "max_seq_length" in refused.value.message
    qlora = run(commands.create_job(CreateJob(model=QWEN7, training_file="file-1", instance_type="ml.p3.2xlarge",
                                              hyperparameters=Hyperparameters(load_in_4bit=True)), "u1", fakes.deps))
    assert qlora.instance_type == "ml.p3.2xlarge"
    with pytest.raises(InvalidRequest) as no_checkpointing:
        run(commands.create_job(CreateJob(model=QWEN7, training_file="file-1", instance_type="ml.g5.xlarge",
                                          hyperparameters=Hyperparameters(gradient_checkpointing=False)),
                                "u1", fakes.deps))
    assert "gradient_checkpointing" in no_checkpointing.value.message
    job = run(commands.create_job(CreateJob(model=QWEN7, training_file="file-1"), "u1", fakes.deps))
    assert job.instance_type == "ml.g5.xlarge"
    assert run(commands.create_job(CreateJob(model=TINY, training_file="file-1"), "u1", fakes.deps)).instance_type \
        == "ml.m5.large"


# ---- estimates ------------------------------------------------------------------------------------------

def test_estimate_arithmetic(fakes: Fakes) -> None:
    _file(fakes, examples=20, tokens=4000)
    body = run(commands.estimate_job(EstimateRequest(model=QWEN7, training_file="file-1",
                                                     hyperparameters=Hyperparameters(n_epochs=3, batch_size=4)),
                                     "u1", fakes.deps))
    # ml.g5.xlarge; the catalog's Qwen 7B figure, less the forward pass that gradient checkpointing runs again
    price, tps = 1.408, 450 * estimates.CHECKPOINTING_SPEED
    assert body["instance_type"] == "ml.g5.xlarge" and body["tokens_per_epoch"] == 4000
    assert body["trained_tokens"] == 12000 and body["steps"] == 15  # ceil(20 / 4) x 3
    duration = math.ceil(240 + 12000 / tps)
    assert body["estimated_duration_s"] == duration
    assert body["cost_on_demand_usd"] == round(duration / 3600 * price, 4)
    assert body["cost_spot_usd"] == round(duration / 3600 * price * 0.3, 4)
    assert body["estimated_cost_usd"] == body["cost_on_demand_usd"]
    assert body["inputs"] == {"file_tokens": 4000, "tokens_source": "file validation", "n_epochs": 3,
                              "batch_size": 4, "tokens_per_step": None, "gradient_accumulation_steps": 1,
                              "max_seq_length": 2048, "validation_split": 0.0, "tokens_per_second": round(tps, 3),
                              "throughput_source": "catalog",
                              "startup_overhead_s": 240, "price_per_hour": price, "price_per_instance_hour": price,
                              "spot_discount": 0.7, "compute_factor": 1.0, "sequences_per_example": 1}
    assert (body["instance_count"], body["processes"], body["memory"]["strategy"]) == (1, 1, "single")


def test_a_dpo_estimate_counts_both_sequences_and_the_reference_pass(fakes: Fakes) -> None:
    """DPO trains on two sequences per pair, and runs the reference (adapter off) over each: the time and the price
    count both (estimates.DPO_SEQUENCES_PER_EXAMPLE, DPO_COMPUTE_FACTOR); a pass must hold a whole pair."""
    _file(fakes, examples=20, tokens=4000)
    fakes.jobs.files["file-1"] = fakes.jobs.files["file-1"].model_copy(update={"example_type": "preference"})
    hyperparameters = {"n_epochs": 3, "batch_size": 4, "max_seq_length": 1024}
    body = run(commands.estimate_job(EstimateRequest.model_validate(
        {"model": QWEN7, "training_file": "file-1",
         "method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}}), "u1", fakes.deps))
    assert body["method"] == "dpo" and body["trained_tokens"] == 2 * 4000 * 3
    tps = body["inputs"]["tokens_per_second"]
    checkpointing = estimates.CHECKPOINTING_SPEED if body["memory"]["gradient_checkpointing"] else 1.0
    assert tps == round(450 * checkpointing / estimates.DPO_COMPUTE_FACTOR, 3)
    assert body["estimated_duration_s"] == math.ceil(240 + 24000 / (450 * checkpointing / estimates.DPO_COMPUTE_FACTOR))
    assert body["memory"]["micro_batch_tokens"] >= 2 * 1024  # a pass holds both sequences of a pair
    with pytest.raises(InvalidRequest):  # and the same file with supervised fine-tuning is refused
        run(commands.estimate_job(EstimateRequest(model=QWEN7, training_file="file-1"), "u1", fakes.deps))


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


def test_estimate_needs_a_validated_file(fakes: Fakes) -> None:
    request = EstimateRequest(model=TINY, training_file="file-1")
    with pytest.raises(InvalidRequest) as missing:
        run(commands.estimate_job(request, "u1", fakes.deps))
    assert missing.value.param == "training_file"
    _file(fakes, status="uploaded")
    with pytest.raises(InvalidRequest) as pending:
        run(commands.estimate_job(request, "u1", fakes.deps))
    assert pending.value.code == "file_not_ready"
    _file(fakes)
    with pytest.raises(InvalidRequest):  # another user's file does not exist for this caller
        run(commands.estimate_job(request, "u2", fakes.deps))


def test_dry_run_returns_the_estimate_and_creates_nothing(fakes: Fakes) -> None:
    _file(fakes)
    response = _app(fakes).post("/jobs", json={"model": TINY, "training_file": "file-1", "dry_run": True,
                                              "max_cost_usd": 1.0, "spot": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["object"] == "fine_tuning.estimate" and body["within_budget"]
    assert body["stopping_condition"] == {"MaxRuntimeInSeconds": math.floor(1.0 / 0.115 * 3600),
                                          "MaxWaitTimeInSeconds": 2 * math.floor(1.0 / 0.115 * 3600)}
    assert not fakes.jobs.jobs and not fakes.commands.sent


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


def test_budget_and_spot_reach_the_training_job(fakes: Fakes) -> None:
    _file(fakes)
    job = run(commands.create_job(CreateJob(model=QWEN7, training_file="file-1", max_cost_usd=2.0, spot=True),
                                  "u1", fakes.deps))
    relaunch_woken(fakes)
    request = fakes.sagemaker.created[-1]
    runtime = math.floor(2.0 / 1.408 * 3600)
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": runtime, "MaxWaitTimeInSeconds": 2 * runtime}
    assert request["EnableManagedSpotTraining"] is True
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert job.openai()["spot"] is True and job.openai()["max_cost_usd"] == 2.0


def test_merge_adapter_names_where_the_trainer_uploads_the_merged_model(fakes: Fakes) -> None:
    _file(fakes)
    job = run(commands.create_job(CreateJob(model=TINY, training_file="file-1",
                                            hyperparameters={"merge_adapter": True}), "u1", fakes.deps))
    relaunch_woken(fakes)
    sent = fakes.sagemaker.created[-1]["HyperParameters"]
    assert sent["merge_adapter"] == "true"
    assert sent["merged_model_uri"] == (f"s3://{fakes.launch.bucket}/training-jobs/u1/{job.job_id}"
                                        "/output/merged-model.tar.gz")


def test_completed_jobs_feed_the_next_estimate(fakes: Fakes) -> None:
    _file(fakes, examples=20, tokens=4000)
    job = run(commands.create_job(CreateJob(model=TINY, training_file="file-1"), "u1", fakes.deps))
    relaunch_woken(fakes)
    sagemaker_state(fakes, job, "Completed", TrainingTimeInSeconds=100,
                    FinalMetricDataList=[{"MetricName": "trained_tokens", "Value": 20000}])
    assert fakes.throughput.totals == {(TINY, "ml.m5.large"): (100.0, 20000)}
    body = run(commands.estimate_job(EstimateRequest(model=TINY, training_file="file-1"), "u1", fakes.deps))
    assert body["inputs"]["throughput_source"] == "measured" and body["inputs"]["tokens_per_second"] == 200
    assert body["estimated_duration_s"] == math.ceil(body["trained_tokens"] / 200)


def test_the_gateway_routes_estimates_to_training() -> None:
    assert upstream_for("/api/estimates") == "training"


def test_job_model_round_trips_the_new_fields() -> None:
    job = Job(job_id="ftjob-x", user_id="u", created_at="t", created_at_unix=1, model=TINY, training_file="f",
              hyperparameters={}, seed=1, instance_type="ml.m5.large", spot=True, max_cost_usd=3.5)
    assert Job.model_validate(job.model_dump()) == job


def test_a_dpo_job_must_fit_a_whole_pair_on_its_instance(fakes: Fakes) -> None:
    """A pass of DPO holds both sequences of a pair: an instance that fits one example of max_seq_length but not two
    is too small for DPO (the trainer would otherwise fail after the launch)."""
    _file(fakes, examples=20, tokens=4000)
    fakes.jobs.files["file-1"] = fakes.jobs.files["file-1"].model_copy(update={"example_type": "preference"})
    qwen = fakes.deps.catalog.model(QWEN7)
    assert qwen is not None
    g5 = fakes.deps.catalog.instance("ml.g5.xlarge")
    assert g5 is not None
    # The longest max_seq_length (in steps of 256) whose rows fit ml.g5.xlarge...
    longest = max(s for s in range(256, qwen.context_length + 1, 256)
                  if fit.fits(qwen, g5, s, **hparams.memory_settings(Hyperparameters())))
    assert not fit.fits(qwen, g5, 2 * longest, **hparams.memory_settings(Hyperparameters()))
    hyperparameters = {"max_seq_length": longest}
    supervised = CreateJob.model_validate({"model": QWEN7, "training_file": "file-1", "instance_type": "ml.g5.xlarge",
                                           "hyperparameters": hyperparameters})
    assert estimates.choose_instance(fakes.deps.catalog, qwen, "ml.g5.xlarge", supervised.requested_hyperparameters())
    dpo = CreateJob.model_validate({"model": QWEN7, "training_file": "file-1", "instance_type": "ml.g5.xlarge",
                                    "method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}})
    with pytest.raises(InvalidRequest) as refused:  # ...holds one sequence, not a pair
        run(commands.create_job(dpo, "u1", fakes.deps))
    assert refused.value.code == "instance_too_small" and "preference pair" in refused.value.message
