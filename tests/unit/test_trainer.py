"""The fine-tune container's entry point and the offline demo model, on a real tiny model (no mocks of torch).

The subprocess runs follow the SageMaker training contract: environment variables pointing at temp
folders, hyperparameters.json with string values, the base model given as the `model` channel.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.trainer_job import sagemaker_env
from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl
from trainer_image.llmt_trainer import job
from trainer_image.llmt_trainer.contract import EXIT_STOPPED, HOLD_AT_CHECKPOINT_ENV, Paths
from trainer_image.llmt_trainer.data import (
    Conversation,
    PreferencePair,
    TextDocument,
    load_conversations,
    split_validation,
)
from trainer_image.llmt_trainer.errors import DataError, HyperparameterError, TrainingError
from trainer_image.llmt_trainer.hyperparameters import Hyperparameters, parse_hyperparameters
from trainer_image.llmt_trainer.loop import StopSignal, hold_after_checkpoint, loss_sum
from trainer_image.llmt_trainer.masking import (
    IGNORE_INDEX,
    TokenizedExample,
    assistant_token_mask,
    has_generation_tags,
    tokenize_conversations,
)
from trainer_image.llmt_trainer.model_loading import (
    fallback_chat_template,
    load_model,
    load_tokenizer,
    resolve_model_source,
)
from trainer_image.llmt_trainer.outputs import publish_merged_model
from trainer_image.llmt_trainer.packing import pack

FINETUNE_SCRIPT = Path(__file__).resolve().parents[2] / "trainer_image" / "finetune.py"
RUN_TIMEOUT_S = 120
GENERATION_TAGS = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")
METRICS_KEYS = ["step", "epoch", "train_loss", "train_accuracy", "learning_rate", "total_steps", "trained_tokens"]
VALID_KEYS = ["valid_loss", "valid_mean_token_accuracy"]
# 20 examples in batches of 4: 5 steps an epoch. A high learning rate so that the loss visibly falls.
HYPERPARAMETERS = {"n_epochs": "10", "batch_size": "4", "learning_rate": "0.003", "seed": "7"}
TOTAL_STEPS = 50


@pytest.fixture(scope="module")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


@pytest.fixture
def tokenizer(demo_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(demo_model_dir)


# ------------------------------------------------------------------------------------------ demo model


def test_demo_model_reloads_with_auto_classes_and_rebuilds_identically(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)

    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    assert has_generation_tags(tokenizer)
    assert tokenizer.eos_token == "<|end|>" and tokenizer.pad_token == "<|pad|>"

    marker_mtime = (demo_model_dir / "demo_model.json").stat().st_mtime_ns
    assert build_demo_model(demo_model_dir) == demo_model_dir  # complete: left as is
    assert (demo_model_dir / "demo_model.json").stat().st_mtime_ns == marker_mtime

    again = build_demo_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (demo_model_dir / name).read_bytes(), name


def test_demo_dataset_is_deterministic_chat_data() -> None:
    examples = make_demo_dataset(20, seed=0)

    assert examples == make_demo_dataset(20, seed=0)
    assert examples != make_demo_dataset(20, seed=1)
    assert len(examples) == 20
    assert len({e["messages"][1]["content"] for e in examples}) == 20  # no repeats before the domain runs out
    assert all([m["role"] for m in e["messages"]] == ["system", "user", "assistant"] for e in examples)


# ---------------------------------------------------------------------------------------- loss mask


def _masked_runs(tokenizer: Any, input_ids: list[int], mask: list[int]) -> list[str]:
    """The decoded text of each contiguous run of masked tokens."""
    runs: list[list[int]] = []
    previous = 0
    for token, keep in zip(input_ids, mask, strict=True):
        if keep and not previous:
            runs.append([])
        if keep:
            runs[-1].append(token)
        previous = keep
    return [tokenizer.decode(run) for run in runs]


def _without_generation_tags(tokenizer: Any) -> Any:
    tokenizer.chat_template = GENERATION_TAGS.sub("", tokenizer.chat_template)
    assert not has_generation_tags(tokenizer)
    return tokenizer


CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a guide to the animals of Zorbia."},
    {"role": "user", "content": "What color is the glimp?"},
    {"role": "assistant", "content": "The glimp is red."},
    {"role": "user", "content": "Where does the zorv live?"},
    {"role": "assistant", "content": "The zorv lives in the cave.", "weight": 0},
    {"role": "tool", "content": "lookup: koro eats nuts"},
    {"role": "assistant", "content": "The koro eats nuts."},
]


@pytest.mark.parametrize("use_generation_tags", [True, False], ids=["generation-tags", "prefix-fallback"])
def test_assistant_mask_covers_exactly_the_weighted_assistant_replies(
    tokenizer: Any, use_generation_tags: bool
) -> None:
    if not use_generation_tags:
        tokenizer = _without_generation_tags(tokenizer)

    input_ids, mask = assistant_token_mask(
        tokenizer, CONVERSATION, use_generation_tags=use_generation_tags
    )

    # The reply and its end-of-turn token, nothing of the prompt; the weight-0 reply is left out.
    assert _masked_runs(tokenizer, input_ids, mask) == [
        "The glimp is red.<|end|>",
        "The koro eats nuts.<|end|>",
    ]


def test_both_mask_methods_agree_on_every_demo_example(demo_model_dir: Path) -> None:
    tagged = AutoTokenizer.from_pretrained(demo_model_dir)
    untagged = _without_generation_tags(AutoTokenizer.from_pretrained(demo_model_dir))
    unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in CONVERSATION]

    for messages in [e["messages"] for e in make_demo_dataset(20, seed=3)] + [unweighted]:
        assert assistant_token_mask(tagged, messages, use_generation_tags=True) == (
            assistant_token_mask(untagged, messages, use_generation_tags=False)
        )


def test_long_examples_are_truncated_and_those_left_without_a_reply_dropped(tokenizer: Any) -> None:
    conversations = [
        Conversation(e["messages"], f"t.jsonl:{i}") for i, e in enumerate(make_demo_dataset(4, 0))
    ]
    full = tokenize_conversations(tokenizer, conversations, 512, use_generation_tags=True)
    prompt_length = min(
        e.labels.index(next(t for t in e.labels if t != IGNORE_INDEX)) for e in full.examples
    )

    cut = tokenize_conversations(
        tokenizer, conversations, prompt_length + 2, use_generation_tags=True
    )
    assert cut.truncated == 4
    assert all(len(e.input_ids) <= prompt_length + 2 and e.loss_tokens > 0 for e in cut.examples)
    assert cut.dropped + len(cut.examples) == 4

    none_left = tokenize_conversations(tokenizer, conversations, 8, use_generation_tags=True)
    assert none_left.dropped == 4 and not none_left.examples


def test_the_channel_reads_the_internal_example_form_and_openai_chat_lines(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "What color is the glimp?"}, {"role": "assistant", "content": "Red."}]
    text = "The glimp.\u2028A line separator, raw in JSON."  # a line break to splitlines(), not to JSON Lines
    write_jsonl([{"type": "chat", "messages": chat}, {"messages": chat}, {"type": "text", "text": text}],
                tmp_path / "train" / "part-0.jsonl")

    examples = load_conversations(tmp_path / "train", "train")

    assert examples == [Conversation(chat, "part-0.jsonl:1"), Conversation(chat, "part-0.jsonl:2"),
                        TextDocument(text, "part-0.jsonl:3")]


def test_preference_examples_need_method_dpo_and_dpo_needs_them(tmp_path: Path) -> None:
    pair = {"type": "preference", "messages": [{"role": "user", "content": "Hi"}],
            "chosen": {"role": "assistant", "content": "Hello!"}, "rejected": {"role": "assistant", "content": "No."}}
    write_jsonl([pair], tmp_path / "train" / "part-0.jsonl")

    with pytest.raises(DataError, match=r"part-0\.jsonl:1: preference data needs method dpo"):
        load_conversations(tmp_path / "train", "train")
    [loaded] = load_conversations(tmp_path / "train", "train", method="dpo")
    assert isinstance(loaded, PreferencePair)
    assert loaded.chosen["content"] == "Hello!" and loaded.rejected["content"] == "No."

    write_jsonl([pair, make_demo_dataset(1, seed=0)[0]], tmp_path / "mixed" / "part-0.jsonl")
    with pytest.raises(DataError, match=r"part-0\.jsonl:2: DPO needs preference pairs"):
        load_conversations(tmp_path / "mixed", "train", method="dpo")


def test_text_examples_take_loss_on_every_token_and_end_with_eos(tokenizer: Any) -> None:
    text = TextDocument("The glimp is red. The zorv lives in the cave.", "t.jsonl:1")
    chat = Conversation(CONVERSATION[:3], "t.jsonl:2")

    tokenized = tokenize_conversations(tokenizer, [text, chat], 512, use_generation_tags=True)

    [as_text, as_chat] = tokenized.examples
    assert as_text.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(as_text.input_ids[:-1]) == text.text
    # Every token is a target except the first (nothing predicts it).
    assert as_text.labels == [IGNORE_INDEX, *as_text.input_ids[1:]]
    assert as_chat.loss_tokens < len(as_chat.input_ids)  # chat keeps its assistant-only loss

    # Longer than max_seq_length: split into chunks, not cut short (continued pre-training). Consecutive chunks share
    # one token, so every token after the first is a target exactly once.
    split = tokenize_conversations(tokenizer, [text], 5, use_generation_tags=True)
    assert split.truncated == 0 and split.split == 1 and len(split.examples) > 1
    assert all(len(e.input_ids) <= 5 for e in split.examples)
    targets = [t for e in split.examples for t in e.labels if t != IGNORE_INDEX]
    assert targets == as_text.input_ids[1:]
    rejoined = split.examples[0].input_ids + [t for e in split.examples[1:] for t in e.input_ids[1:]]
    assert rejoined == as_text.input_ids


def test_a_model_channel_holding_a_model_tarball_is_unpacked(demo_model_dir: Path, tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as archive:
        archive.add(demo_model_dir, arcname=".")
    paths = dataclasses.replace(Paths.from_env({}), model_channel=channel)

    source = resolve_model_source(paths, Hyperparameters(), tmp_path / "scratch")

    assert (Path(source) / "config.json").read_bytes() == (demo_model_dir / "config.json").read_bytes()


# ----------------------------------------------------------------------------------- hyperparameters


def test_hyperparameters_parse_sagemaker_strings_and_keep_defaults() -> None:
    raw = {
        "n_epochs": "5",
        "learning_rate": '"1e-4"',
        "target_modules": "q_proj, v_proj",
        "sagemaker_region": '"x"',
    }

    hp, ignored = parse_hyperparameters(raw)

    assert (hp.n_epochs, hp.learning_rate, hp.target_modules) == (5, 1e-4, ("q_proj", "v_proj"))
    assert (hp.batch_size, hp.lora_r, hp.lora_alpha, hp.max_seq_length, hp.lr_scheduler) == (
        0,  # "auto": optimizer steps by tokens (memory.auto_tokens_per_step)
        8,
        16,
        512,
        "linear",
    )
    assert ignored == ["sagemaker_region"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_epochs", "three"),
        ("n_epochs", "0"),
        ("batch_size", "2.5"),
        ("learning_rate", "-1"),
        ("learning_rate", "nan"),
        ("lora_dropout", "1.5"),
        ("warmup_ratio", "2"),
        ("target_modules", "q_proj;v_proj"),
        ("lr_scheduler", "sometimes"),
        ("validation_split", "0.6"),
    ],
)
def test_bad_hyperparameter_values_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(HyperparameterError, match=name):
        parse_hyperparameters({name: value})


def test_validation_split_holds_out_a_seeded_share_in_order() -> None:
    examples: list[Any] = [f"e{i}" for i in range(10)]
    train, held = split_validation(examples, 0.25, seed=3)
    assert len(held) == 2 and len(train) == 8 and sorted(map(str, train + held)) == sorted(examples)
    assert train == [e for e in examples if e in train] and held == [e for e in examples if e in held]
    assert split_validation(examples, 0.25, seed=3) == (train, held)
    assert split_validation(examples, 0.05, seed=3) == (examples, [])  # floor(0.5) holds none
    assert parse_hyperparameters({"validation_split": "0.2"})[0].validation_split == 0.2


# ------------------------------------------------------------------------ the SageMaker-contract runs


def _sagemaker_job(
    root: Path,
    model_dir: Path,
    train: list[dict[str, Any]],
    validation: list[dict[str, Any]],
    *,
    model_channel: bool = True,
) -> dict[str, str]:
    """Lay out a job's folders under `root` and return the environment the container would see. The base
    model comes as the `model` channel, or else through the `model_id` hyperparameter (a local path here)."""
    hyperparameters = HYPERPARAMETERS if model_channel else {**HYPERPARAMETERS, "model_id": str(model_dir)}
    (root / "config").mkdir(parents=True)
    (root / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    write_jsonl(train, root / "train" / "part-0.jsonl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env |= {"HF_HUB_OFFLINE": "1", **sagemaker_env(root, model_dir if model_channel else None)}
    if validation:
        write_jsonl(validation, root / "validation" / "part-0.jsonl")
        env["SM_CHANNEL_VALIDATION"] = str(root / "validation")
    return env


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FINETUNE_SCRIPT), "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def _metrics(stdout: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("METRICS "))
        for line in stdout.splitlines()
        if line.startswith("METRICS ")
    ]


@pytest.fixture(scope="module")
def full_run(
    demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("job")
    env = _sagemaker_job(root, demo_model_dir, make_demo_dataset(20, seed=0), make_demo_dataset(8, seed=1))
    config = root / "config" / "hyperparameters.json"
    config.write_text(json.dumps({**HYPERPARAMETERS, "merge_adapter": "true"}))
    return root, _run(env)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5
def test_full_run_trains_reports_metrics_and_publishes_the_adapter(
    full_run: tuple[Path, subprocess.CompletedProcess[str]], demo_model_dir: Path
) -> None:
    root, result = full_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (root / "output" / "failure").exists()

    metrics = _metrics(result.stdout)
    assert [m["step"] for m in metrics] == list(range(1, TOTAL_STEPS + 1))
    for record in metrics:
        expected = [*METRICS_KEYS, *VALID_KEYS] if record["step"] % 5 == 0 else METRICS_KEYS
        assert list(record) == expected and record["total_steps"] == TOTAL_STEPS
    # What SageMaker's MetricDefinitions regexes rely on: the exact spacing of json.dumps.
    assert re.search(r'"train_loss": ([0-9.eE+-]+)', result.stdout)
    losses = [m["train_loss"] for m in metrics]
    assert losses[-1] < losses[0] / 2
    valid = [m["valid_loss"] for m in metrics if "valid_loss" in m]
    assert len(valid) == 10 and valid[-1] < valid[0]
    accuracy = [m["valid_mean_token_accuracy"] for m in metrics if "valid_loss" in m]
    assert all(0 <= a <= 1 for a in accuracy) and accuracy[-1] > accuracy[0]
    assert metrics[-1]["train_accuracy"] > metrics[0]["train_accuracy"]

    with (root / "output" / "data" / "results.csv").open(newline="") as rows:
        results = list(csv.DictReader(rows))
    assert list(results[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                                "reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps",
                                "valid_reward_accuracy"]  # the DPO columns empty for SFT
    assert all(r["reward_accuracy"] == "" for r in results)
    assert [int(r["step"]) for r in results] == list(range(1, TOTAL_STEPS + 1))
    assert float(results[-1]["valid_mean_token_accuracy"]) == accuracy[-1] and results[0]["valid_loss"] == ""

    model_dir = root / "model"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "training_summary.json",
    ):
        assert (model_dir / name).is_file(), name
    summary = json.loads((model_dir / "training_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == TOTAL_STEPS and summary["examples"] == 20
    assert summary["hyperparameters"]["n_epochs"] == 10 and summary["final_train_loss"] == losses[-1]
    assert summary["trained_tokens"] == 10 * summary["tokens_per_epoch"] > 0
    assert summary["mask_method"] == "generation_tags" and summary["duration_s"] > 0
    assert summary["final_valid_mean_token_accuracy"] == accuracy[-1] and summary["merged_model"] == "merged"
    assert len((root / "output" / "data" / "metrics.jsonl").read_text().splitlines()) == TOTAL_STEPS

    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    tuned = PeftModel.from_pretrained(base, model_dir)
    assert tuned.peft_config["default"].base_model_name_or_path == str(demo_model_dir)

    # merge_adapter: a plain model beside the adapter, computing what base + adapter computes.
    merged = AutoModelForCausalLM.from_pretrained(model_dir / "merged")
    assert (model_dir / "merged" / "tokenizer.json").is_file()
    ids = torch.tensor([AutoTokenizer.from_pretrained(model_dir / "merged")("a glimp is")["input_ids"]])
    tuned.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, tuned(ids).logits, atol=1e-4, rtol=1e-4)


def test_validation_split_without_a_channel_evaluates_the_held_out_share(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    env = _sagemaker_job(tmp_path, demo_model_dir, make_demo_dataset(20, seed=0), [])
    config = tmp_path / "config" / "hyperparameters.json"
    config.write_text(json.dumps({**HYPERPARAMETERS, "n_epochs": "1", "validation_split": "0.25"}))
    result = _run(env)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = _metrics(result.stdout)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # ceil(15 / 4)
    assert "valid_loss" in metrics[-1]
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert (summary["examples"], summary["validation_examples"]) == (15, 5)


def test_sigterm_stops_without_publishing_and_a_restart_resumes_exactly(
    full_run: tuple[Path, subprocess.CompletedProcess[str]], demo_model_dir: Path, tmp_path: Path
) -> None:
    reference = {m["step"]: m for m in _metrics(full_run[1].stdout)}
    # The reference run's job, but the base model named by `model_id` (the Hub path, given a local folder).
    env = _sagemaker_job(
        tmp_path,
        demo_model_dir,
        make_demo_dataset(20, seed=0),
        make_demo_dataset(8, seed=1),
        model_channel=False,
    )

    process = subprocess.Popen(
        [sys.executable, str(FINETUNE_SCRIPT), "train"], env=env, stdout=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(
        RUN_TIMEOUT_S, process.kill
    )  # a hung run fails the test instead of blocking it
    watchdog.start()
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("METRICS "):
                process.send_signal(signal.SIGTERM)
                break
        lines += process.stdout.readlines()
        returncode = process.wait()
    finally:
        watchdog.cancel()

    assert returncode == EXIT_STOPPED
    stopped_at = _metrics("".join(lines))[-1]["step"]
    assert stopped_at < TOTAL_STEPS
    assert "SIGTERM" in (tmp_path / "output" / "failure").read_text()
    assert not (tmp_path / "model" / "adapter_model.safetensors").exists()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [f"checkpoint-{stopped_at:08d}"]

    resumed = _run(env)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not (tmp_path / "output" / "failure").exists()
    metrics = _metrics(resumed.stdout)
    assert [m["step"] for m in metrics] == list(range(stopped_at + 1, TOTAL_STEPS + 1))
    assert metrics == [reference[m["step"]] for m in metrics]  # same losses as the run never interrupted
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["steps"] == TOTAL_STEPS
    assert (summary["base_model"], summary["base_model_source"]) == (str(demo_model_dir), "model_id")


def test_invalid_data_fails_with_the_reason_in_the_failure_file(demo_model_dir: Path, tmp_path: Path) -> None:
    no_reply = {"messages": [{"role": "user", "content": "What color is the glimp?"}]}
    env = _sagemaker_job(tmp_path, demo_model_dir, [*make_demo_dataset(2, seed=0), no_reply], [])

    result = _run(env)

    assert result.returncode == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert "part-0.jsonl:3" in reason and "no assistant message" in reason
    assert not (tmp_path / "model").exists()


# ------------------------------------------------------------------- packing, template, options, seed


def _demo_examples(tokenizer: Any, n: int) -> list[TokenizedExample]:
    conversations = [Conversation(e["messages"], f"demo:{i}") for i, e in enumerate(make_demo_dataset(n, 0))]
    return tokenize_conversations(tokenizer, conversations, 256, use_generation_tags=True).examples


def _only(example: TokenizedExample, keep: bool) -> TokenizedExample:
    labels = example.labels if keep else [IGNORE_INDEX] * len(example.labels)
    return TokenizedExample(example.input_ids, labels)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # sdpa: what finetune.py asks for on a GPU
def test_packed_examples_do_not_attend_to_each_other(demo_model_dir: Path, tokenizer: Any, attention: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, attn_implementation=attention).eval()
    assert model.config._attn_implementation == attention
    examples = _demo_examples(tokenizer, 4)
    cpu = torch.device("cpu")
    with torch.no_grad():
        for i, example in enumerate(examples):
            alone = loss_sum(model, pack([example], cpu)).item()
            packed_rows = [_only(e, keep=j == i) for j, e in enumerate(examples)]
            packed = pack(packed_rows, cpu)
            assert packed.loss_tokens == example.loss_tokens
            in_pack = loss_sum(model, packed).item()
            assert in_pack == pytest.approx(alone, rel=1e-4), i
            if i > 0:  # the control: one sequence of positions lets the example see the others, and it shows
                leaky = dataclasses.replace(packed, position_ids=torch.arange(packed.tokens).unsqueeze(0))
                assert loss_sum(model, leaky).item() != pytest.approx(alone, rel=1e-2)


def test_a_tokenizer_without_a_chat_template_gets_the_fallback(demo_model_dir: Path, tmp_path: Path) -> None:
    plain = AutoTokenizer.from_pretrained(demo_model_dir)
    plain.chat_template = None
    plain.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)

    tokenizer = load_tokenizer(str(tmp_path))
    assert tokenizer.chat_template == fallback_chat_template(tokenizer.eos_token) and has_generation_tags(tokenizer)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    input_ids, mask = assistant_token_mask(tokenizer, messages, use_generation_tags=True)
    # Each turn ends with the tokenizer's own end-of-sequence token: the tuned model learns to stop there.
    assert input_ids[-1] == tokenizer.eos_token_id and input_ids.count(tokenizer.eos_token_id) == 2
    targets = [t for t, m in zip(input_ids, mask, strict=True) if m]
    assert targets[-1] == tokenizer.eos_token_id and tokenizer.decode(targets) == f"hello there{tokenizer.eos_token}"
    assert fallback_chat_template(None).count('"<|im_end|>"') == 2  # no EOS token: ChatML's end marker
    # The prefix-rendering method finds the same tokens with this template.
    assert assistant_token_mask(tokenizer, messages, use_generation_tags=False) == (input_ids, mask)


def test_load_in_4bit_fails_clearly_without_cuda(demo_model_dir: Path) -> None:
    # (bitsandbytes may well be imported by now: it is in the image's requirements, and peft imports it when
    # it is installed; what matters is the clear error before any weight is loaded.)
    hp, _ = parse_hyperparameters({"load_in_4bit": "true", "gradient_checkpointing": "True"})
    assert hp.load_in_4bit and hp.gradient_checkpointing and not hp.merge_adapter
    with pytest.raises(HyperparameterError, match=r"load_in_4bit.*CUDA"):
        load_model(str(demo_model_dir), hp, torch.device("cpu"), torch.float32)
    with pytest.raises(HyperparameterError, match="merge_adapter cannot be combined"):
        parse_hyperparameters({"load_in_4bit": "true", "merge_adapter": "true"})
    with pytest.raises(HyperparameterError, match="merge_adapter must be true or false"):
        parse_hyperparameters({"merge_adapter": "maybe"})
    for bad in ("bucket/key", "s3://bucket", "s3://bucket/dir/", "https://x/y"):
        with pytest.raises(HyperparameterError, match="merged_model_uri must be an s3://bucket/key"):
            parse_hyperparameters({"merged_model_uri": bad})


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(demo_model_dir: Path, tokenizer: Any) -> None:
    batch = pack(_demo_examples(tokenizer, 4), torch.device("cpu"))
    results = []
    for checkpointing in ("false", "true"):
        hp, _ = parse_hyperparameters({"gradient_checkpointing": checkpointing, "lora_dropout": "0"})
        model = load_model(str(demo_model_dir), hp, torch.device("cpu"), torch.float32)
        assert model.base_model.model.is_activation_checkpointing == (checkpointing == "true")
        loss = loss_sum(model, batch)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        assert any(g.abs().sum() > 0 for g in grads)
        results.append((loss.item(), grads))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5
def test_two_runs_with_the_same_seed_report_the_same_losses(demo_model_dir: Path, tmp_path: Path) -> None:
    losses = []
    for name in ("first", "second"):
        env = _sagemaker_job(tmp_path / name, demo_model_dir, make_demo_dataset(12, seed=0), make_demo_dataset(4, 1))
        paths = Paths.from_env(env)
        job.train(paths, {"n_epochs": "2", "lora_dropout": "0.1"}, StopSignal())
        metrics = [json.loads(line) for line in (paths.output_data_dir / "metrics.jsonl").read_text().splitlines()]
        losses.append([(m["train_loss"], m.get("valid_loss")) for m in metrics])
    assert len(losses[0]) == 6 and losses[0] == losses[1]


def test_the_merged_model_is_published_as_its_own_archive(tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    (merged / "sub").mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    (merged / "sub" / "weights.bin").write_bytes(b"w" * 100)
    sent: dict[str, bytes] = {}

    class Uploads:
        def upload_file(self, filename: str, bucket: str, key: str) -> None:
            sent[f"{bucket}/{key}"] = Path(filename).read_bytes()

    publish_merged_model(merged, "s3://b/jobs/j/merged-model.tar.gz", tmp_path, Uploads())
    with tarfile.open(fileobj=io.BytesIO(sent["b/jobs/j/merged-model.tar.gz"])) as tar:
        assert sorted(tar.getnames()) == ["config.json", "sub/weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # the scratch archive is gone

    class Refuses:
        def upload_file(self, filename: str, bucket: str, key: str) -> None:
            raise PermissionError("AccessDenied")

    with pytest.raises(RuntimeError, match="cannot upload the merged model to s3://b/k: AccessDenied"):
        publish_merged_model(merged, "s3://b/k", tmp_path, Refuses())


def test_the_test_only_hold_ends_on_its_file_or_a_stop_signal_and_fails_when_nothing_ends_it(tmp_path: Path) -> None:
    release = tmp_path / "release"
    assert Paths.from_env({}).hold_at_checkpoint is None
    assert Paths.from_env({HOLD_AT_CHECKPOINT_ENV: str(release)}).hold_at_checkpoint == release
    with pytest.raises(TrainingError, match="never released"):
        hold_after_checkpoint(release, StopSignal(), deadline_s=0.2)
    stopped = StopSignal()
    stopped.received = "SIGTERM"
    hold_after_checkpoint(release, stopped, deadline_s=0)  # returns: the run then stops at this checkpoint
    release.touch()
    hold_after_checkpoint(release, StopSignal(), deadline_s=0)  # returns: the run goes on
    release.write_text("go")
    hold_after_checkpoint(release, StopSignal(), deadline_s=0)  # any content but "fail" releases too
    release.write_text(" fail\n")
    with pytest.raises(TrainingError, match=r"^test-only: failed after the checkpoint at step 3 as the release file "
                                            r"asked$"):
        hold_after_checkpoint(release, StopSignal(), deadline_s=0, step=3)


def test_the_hold_file_may_name_the_job_so_one_setting_serves_many_jobs(tmp_path: Path) -> None:
    env = {HOLD_AT_CHECKPOINT_ENV: str(tmp_path / "release-{job}"), "TRAINING_JOB_NAME": "llmt-ft-42"}
    assert Paths.from_env(env).hold_at_checkpoint == tmp_path / "release-llmt-ft-42"


def test_a_checkpoint_within_the_epoch_lets_a_stop_mid_epoch_resume_from_it(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    """GIVEN checkpoint_interval_s far below one step's time (so a checkpoint follows every step) and one 5-step
    epoch, WHEN the trainer is held at its first checkpoint (step 1, mid-epoch: test-only hold) and stopped there,
    THEN the restart resumes from that mid-epoch checkpoint and trains steps 2 to 5 only."""
    env = _sagemaker_job(tmp_path, demo_model_dir, make_demo_dataset(20, seed=0), [])
    (tmp_path / "config" / "hyperparameters.json").write_text(
        json.dumps({**HYPERPARAMETERS, "n_epochs": "1", "checkpoint_interval_s": "1e-9"})
    )
    release = tmp_path / "never-released"
    process = subprocess.Popen(
        [sys.executable, str(FINETUNE_SCRIPT), "train"],
        env={**env, HOLD_AT_CHECKPOINT_ENV: str(release)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = tmp_path / "checkpoints" / "checkpoint-00000001"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not first.exists():  # held there until a stop signal (or the release file) arrives
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "no checkpoint after the first step"
            time.sleep(0.05)  # a poll interval, bounded by the deadline above
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == EXIT_STOPPED, output
    assert [m["step"] for m in _metrics(output)] == [1]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint-00000001"]

    resumed = _run(env)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [m["step"] for m in _metrics(resumed.stdout)] == [2, 3, 4, 5]
