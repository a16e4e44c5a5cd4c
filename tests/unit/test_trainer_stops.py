"""A stop signal in every phase of a job ends it as a stop (exit 143, "stopped" in the failure file), never as a
failure of that phase, and never leaves anything of the run in the model dir; a completed run publishes all at once.

Each case runs the real job in this process (main.run: data, tokenizer, demo model, training, saving) with the
trainer's own SIGTERM handler installed, and delivers a real SIGTERM from inside the phase under test, at a known
point, through the library code that runs there: a file being opened (an audit hook), a request being sent
(botocore's before-send event, huggingface_hub's HTTP transport), a forward pass, a LoRA merge. No timing is
involved: signal.raise_signal runs the handler before it returns, so the stop lands exactly there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx2
import pytest
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import _http as hub_http
from moto import mock_aws
from peft.tuners.lora import layer as lora_layer

from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl
from trainer_image.llmt_trainer import job, main
from trainer_image.llmt_trainer.contract import EXIT_FAILED, EXIT_STOPPED, MODEL_STAGING_DIR, Paths
from trainer_image.llmt_trainer.outputs import SUMMARY_FILE
from trainer_image.llmt_trainer.stops import StopRequested, StopSignal

# 8 examples in batches of 4: two steps, one epoch; a few seconds on a CPU.
HYPERPARAMETERS = {"n_epochs": "1", "batch_size": "4", "seed": "3"}
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 SUMMARY_FILE)


# ------------------------------------------------------------------------------------- delivering the stop


def deliver_sigterm() -> None:
    """A real SIGTERM to this process; the trainer's handler runs before this returns (and raises, unless deferred)."""
    signal.raise_signal(signal.SIGTERM)


_armed: list[Callable[[str], bool]] = []


def _on_audit_event(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _armed and isinstance(args[0], (str, os.PathLike)) and _armed[0](os.fspath(args[0])):
        _armed.clear()
        deliver_sigterm()  # the handler's StopRequested leaves through open(), inside the library that called it


sys.addaudithook(_on_audit_event)  # for the whole process (hooks cannot be removed): inert unless a test arms it


@pytest.fixture
def stop() -> Iterator[StopSignal]:
    """The trainer's handler on SIGTERM and SIGINT of this process; the previous handlers back afterwards."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    handler = StopSignal()
    handler.install()
    yield handler
    _armed.clear()
    for signum, action in previous.items():
        signal.signal(signum, action)


def stop_on_open(predicate: Callable[[str], bool]) -> None:
    """Deliver the stop when this process next opens a file whose path matches."""
    _armed[:] = [predicate]


def stop_when_called(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
                     then: Callable[[], None] = deliver_sigterm) -> None:
    """`then` (the stop, by default) once, on the first call of owner.name, before the call itself runs."""
    original = getattr(owner, name)
    fired: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            then()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


# ---------------------------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


def job_paths(root: Path, base_model: Path | str, **hyperparameters: str) -> Paths:
    """A job's folders under `root` as SageMaker lays them out; the base model named by `model_id`."""
    (root / "config").mkdir(parents=True)
    (root / "config" / "hyperparameters.json").write_text(
        json.dumps({**HYPERPARAMETERS, "model_id": str(base_model), **hyperparameters}))
    write_jsonl(make_demo_dataset(8, seed=0), root / "train" / "part-0.jsonl")
    return Paths.from_env({
        "SM_INPUT_CONFIG_DIR": str(root / "config"), "SM_CHANNEL_TRAIN": str(root / "train"),
        "SM_MODEL_DIR": str(root / "model"), "SM_OUTPUT_DIR": str(root / "output"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"), "SM_CHECKPOINT_DIR": str(root / "checkpoints"),
    })


def run_job(paths: Paths, stop: StopSignal) -> int:
    try:
        return main.run(paths, [], stop)
    except KeyboardInterrupt as exc:  # a stop escaping the trainer would end the whole pytest session
        pytest.fail(f"the stop escaped the trainer: {exc!r}")


def model_dir_contents(paths: Paths) -> list[str]:
    """Everything under the model dir (hidden entries too); [] when it is empty or was never created."""
    root = paths.model_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def assert_stopped(paths: Paths, status: int) -> str:
    reason = paths.failure_file.read_text()
    assert status == EXIT_STOPPED, reason
    assert reason.startswith("Training stopped by SIGTERM") and "no model was published" in reason, reason
    assert "cannot load" not in reason and "unexpected error" not in reason, reason
    assert model_dir_contents(paths) == []
    assert not (paths.output_data_dir / SUMMARY_FILE).exists()
    return reason


# ---------------------------------------------------------------------------------------------- the phases


def test_a_stop_while_reading_the_data(demo_model: Path, tmp_path: Path, stop: StopSignal) -> None:
    paths = job_paths(tmp_path, demo_model)
    stop_on_open(lambda path: path.startswith(str(paths.train_channel)))

    assert_stopped(paths, run_job(paths, stop))


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Secrets Manager (moto, in this process), holding a Hugging Face token secret."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "eu-west-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)  # use_hf_token sets it for the process: undone after the test
    # A session of this test's own, so that the event handler below never outlives it.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", boto3.session.Session())
    with mock_aws():
        client = boto3.client("secretsmanager")
        client.create_secret(Name="llm-tuner/hf-token", SecretString="hf_secret123")
        yield boto3.DEFAULT_SESSION


def test_a_stop_while_reading_the_hugging_face_token(
        demo_model: Path, tmp_path: Path, stop: StopSignal, secrets: Any) -> None:
    """Inside botocore's request (its retry loop catches Exception) and fetch_hf_token's `except Exception`."""
    paths = job_paths(tmp_path, demo_model, hf_token_secret="llm-tuner/hf-token")
    secrets.events.register("before-send.secrets-manager.GetSecretValue", lambda **_: deliver_sigterm())

    reason = assert_stopped(paths, run_job(paths, stop))
    assert "Hugging Face token" not in reason


class FakeHub:
    """The Hugging Face Hub answered in this process from a local model folder (its `resolve` URLs: what
    hf_hub_download asks for; 404 for anything else), except that the download of `stop_at` gets a stop signal."""

    def __init__(self, folder: Path, stop_at: str) -> None:
        self.folder, self.stop_at = folder, stop_at
        self.requests: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        parts = request.url.path.strip("/").split("/")  # org/name/resolve/revision/file
        name = "/".join(parts[4:]) if len(parts) >= 5 and parts[2] == "resolve" else None
        if name is None or not (self.folder / name).is_file():
            return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"})
        if request.method == "GET" and name == self.stop_at:
            deliver_sigterm()
        content = (self.folder / name).read_bytes()
        headers = {"X-Repo-Commit": "0" * 40, "ETag": f'"{uuid.uuid5(uuid.NAMESPACE_URL, name)}"',
                   "Content-Length": str(len(content))}
        return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else content)


def test_a_stop_while_downloading_the_model_is_a_stop_not_a_load_failure(
        demo_model: Path, tmp_path: Path, stop: StopSignal, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a Hub model id (not cached), WHEN the stop arrives while its weights are downloading (the tokenizer is
    already loaded), THEN the job ends stopped: not "cannot load the base model" from the `except Exception`
    clauses of huggingface_hub's retries, transformers' cached_files and our load_model around the download."""
    hub = FakeHub(demo_model, stop_at="model.safetensors")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    hub_http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub), follow_redirects=True))
    try:
        paths = job_paths(tmp_path / "job", f"llm-tuner/stop-test-{uuid.uuid4().hex[:8]}")
        status = run_job(paths, stop)
    finally:
        hub_http.set_client_factory(hub_http.default_client_factory)

    assert_stopped(paths, status)
    assert "GET" in hub.requests[-1] and hub.requests[-1].endswith("/model.safetensors"), hub.requests
    assert any(r.endswith("/tokenizer.json") for r in hub.requests)  # the tokenizer came first, from the hub


def test_a_stop_while_loading_the_tokenizer(demo_model: Path, tmp_path: Path, stop: StopSignal,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    paths = job_paths(tmp_path, demo_model)
    stop_when_called(monkeypatch, job, "load_tokenizer", then=lambda: stop_on_open(lambda p: p.startswith(
        str(demo_model))))

    reason = assert_stopped(paths, run_job(paths, stop))
    assert "tokenizer" not in reason


def test_a_stop_while_loading_the_model(demo_model: Path, tmp_path: Path, stop: StopSignal,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    paths = job_paths(tmp_path, demo_model)
    stop_when_called(monkeypatch, job, "load_model", then=lambda: stop_on_open(lambda p: p.startswith(
        str(demo_model))))

    assert_stopped(paths, run_job(paths, stop))


def test_a_stop_during_training_stops_at_the_step_with_a_checkpoint(
        demo_model: Path, tmp_path: Path, stop: StopSignal, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the middle of the first forward pass: the loop defers the stop to its next safe point."""
    paths = job_paths(tmp_path, demo_model)
    original = job.load_model
    fired: list[bool] = []

    def load_model(*args: Any, **kwargs: Any) -> Any:
        model = original(*args, **kwargs)

        def in_forward(module: Any, inputs: Any) -> None:
            if not fired:
                fired.append(True)
                deliver_sigterm()

        # The embeddings: every forward passes them, however the loss calls the model.
        model.get_input_embeddings().register_forward_pre_hook(in_forward)
        return model

    monkeypatch.setattr(job, "load_model", load_model)

    status = run_job(paths, stop)

    assert fired
    assert_stopped(paths, status)
    assert [p.name for p in paths.checkpoint_dir.iterdir()], "no checkpoint at the stop"


def test_a_stop_while_saving_leaves_an_empty_model_dir(demo_model: Path, tmp_path: Path, stop: StopSignal) -> None:
    """The adapter is already written (into the staging folder) when the stop arrives during the tokenizer's save."""
    paths = job_paths(tmp_path, demo_model)
    staged_at_stop: list[str] = []

    def tokenizer_being_saved(path: str) -> bool:
        if not path.startswith(str(paths.model_staging_dir)) or not path.endswith("tokenizer_config.json"):
            return False
        staged_at_stop.extend(sorted(os.listdir(paths.model_staging_dir)))
        return True

    stop_on_open(tokenizer_being_saved)

    assert_stopped(paths, run_job(paths, stop))
    assert "adapter_model.safetensors" in staged_at_stop, staged_at_stop  # half-written, then discarded
    assert paths.model_dir.is_dir()


def test_a_stop_while_merging(demo_model: Path, tmp_path: Path, stop: StopSignal,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    paths = job_paths(tmp_path, demo_model, merge_adapter="true")
    stop_when_called(monkeypatch, lora_layer.Linear, "merge")

    assert_stopped(paths, run_job(paths, stop))


def test_a_stop_while_uploading_the_merged_model(
        demo_model: Path, tmp_path: Path, stop: StopSignal, secrets: Any) -> None:
    """s3transfer sends the parts from its worker threads: the signal goes to the main thread, which is waiting for
    the upload inside boto3's upload_file (publish_merged_model's `except Exception` around it)."""
    paths = job_paths(tmp_path, demo_model, merge_adapter="true", merged_model_uri="s3://merged/jobs/j/merged.tar.gz")
    boto3.client("s3").create_bucket(Bucket="merged", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def while_uploading(**_: Any) -> None:
        signal.pthread_kill(main_thread, signal.SIGTERM)

    for operation in ("PutObject", "CreateMultipartUpload"):
        secrets.events.register(f"before-send.s3.{operation}", while_uploading)

    assert_stopped(paths, run_job(paths, stop))


# ------------------------------------------------------------------------------------------ publishing


def test_a_completed_run_publishes_the_whole_model_and_nothing_else(
        demo_model: Path, tmp_path: Path, stop: StopSignal) -> None:
    paths = job_paths(tmp_path, demo_model)
    paths.model_staging_dir.mkdir(parents=True)
    (paths.model_staging_dir / "adapter_model.safetensors").write_bytes(b"left by an earlier, killed attempt")

    assert run_job(paths, stop) == 0

    published = model_dir_contents(paths)
    assert all(name in published for name in ADAPTER_FILES), published
    assert not any(MODEL_STAGING_DIR in name for name in published), published
    summary = json.loads((paths.model_dir / SUMMARY_FILE).read_text())
    assert summary["status"] == "completed"
    assert (paths.output_data_dir / SUMMARY_FILE).read_text() == (paths.model_dir / SUMMARY_FILE).read_text()
    assert not paths.failure_file.exists()


def test_a_stop_while_the_model_moves_into_place_waits_and_the_run_completes(
        demo_model: Path, tmp_path: Path, stop: StopSignal, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    paths = job_paths(tmp_path, demo_model)
    original = Path.replace
    moved: list[str] = []

    def replace(self: Path, target: Any) -> Any:
        if self.parent == paths.model_staging_dir:
            if not moved:
                deliver_sigterm()  # deferred: the move goes on
            moved.append(self.name)
        return original(self, target)

    monkeypatch.setattr(Path, "replace", replace)

    assert run_job(paths, stop) == 0

    assert stop.received == "SIGTERM" and len(moved) > 1
    published = model_dir_contents(paths)
    assert all(name in published for name in ADAPTER_FILES), published
    assert not paths.failure_file.exists()
    assert "SIGTERM arrived while the finished model was being published" in caplog.text


def test_a_failed_run_leaves_nothing_in_the_model_dir(demo_model: Path, tmp_path: Path, stop: StopSignal,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the adapter was staged (writing the summary) publishes none of it."""
    paths = job_paths(tmp_path, demo_model)

    def full_disk(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(job, "write_summary", full_disk)

    assert run_job(paths, stop) == EXIT_FAILED
    assert "No space left on device" in paths.failure_file.read_text()
    assert model_dir_contents(paths) == []


# ------------------------------------------------------------------------------------------ the handler


def test_only_the_first_signal_acts_and_a_deferred_one_is_only_noted(stop: StopSignal) -> None:
    stop.deferred = True
    deliver_sigterm()
    assert stop.received == "SIGTERM"
    stop.deferred = False
    deliver_sigterm()  # a second signal while the stop is under way: ignored, so it cannot cut the clean-up short

    fresh = StopSignal()
    fresh.install()
    with pytest.raises(StopRequested, match="Training stopped by SIGINT; no model was published"):
        signal.raise_signal(signal.SIGINT)
    assert fresh.received == "SIGINT"


def test_a_stop_that_a_library_turned_into_its_own_error_is_still_a_stop(
        demo_model: Path, tmp_path: Path, stop: StopSignal, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = job_paths(tmp_path, demo_model)

    def swallows_the_stop(*_: Any) -> None:
        try:
            deliver_sigterm()
        except BaseException as exc:  # as a library with a bare `except:` might
            raise RuntimeError("interrupted") from exc

    monkeypatch.setattr(job, "load_conversations", swallows_the_stop)

    reason = assert_stopped(paths, run_job(paths, stop))
    assert "while stopping: RuntimeError: interrupted" in reason
