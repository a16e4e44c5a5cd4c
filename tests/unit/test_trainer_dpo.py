"""DPO (hyperparameter method=dpo): the loss against a hand computation, preference pairs tokenized with only the
replies labelled, and a real CPU run of the demo model on pairs whose chosen reply is learnable, whose reward
accuracy rises above chance."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from tests.support.trainer_job import sagemaker_env
from trainer_image.demo_model import build_demo_model, demo_facts, write_jsonl
from trainer_image.llmt_trainer import job
from trainer_image.llmt_trainer.contract import Paths
from trainer_image.llmt_trainer.data import load_conversations
from trainer_image.llmt_trainer.dpo import dpo_loss, pack_pairs, tokenize_pairs
from trainer_image.llmt_trainer.errors import HyperparameterError
from trainer_image.llmt_trainer.hyperparameters import parse_hyperparameters
from trainer_image.llmt_trainer.masking import IGNORE_INDEX
from trainer_image.llmt_trainer.memory import method_compute_factor, min_row_tokens, sequences_per_example
from trainer_image.llmt_trainer.stops import StopSignal

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5
DPO_KEYS = ["step", "epoch", "train_loss", "reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps",
            "learning_rate", "total_steps", "trained_tokens"]
# 24 pairs in steps of 4: 6 steps an epoch, 3 epochs; a high learning rate so the preference is learnt fast.
HYPERPARAMETERS = {"method": "dpo", "beta": "auto", "n_epochs": "3", "batch_size": "4", "learning_rate": "0.01",
                   "seed": "5", "lora_dropout": "0"}


@pytest.fixture(scope="module")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


def preference_pairs(n: int) -> list[dict[str, Any]]:
    """The chosen reply is always the same short pattern; the rejected one is a fact answer, varying."""
    facts = demo_facts()
    return [{"type": "preference", "messages": [{"role": "user", "content": question}],
             "chosen": {"role": "assistant", "content": "I do not know."},
             "rejected": {"role": "assistant", "content": facts[(7 * i + 3) % len(facts)][1]}}
            for i, (question, _) in enumerate(facts[:n])]


def test_the_dpo_loss_is_minus_logsigmoid_of_beta_times_the_difference_of_log_ratios() -> None:
    policy_chosen, policy_rejected = torch.tensor([-2.0, -4.0]), torch.tensor([-3.0, -1.0])
    reference_chosen, reference_rejected = torch.tensor([-2.5, -3.0]), torch.tensor([-2.5, -2.0])

    losses, chosen, rejected = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, 0.5)

    # Pair 1: 0.5 x ((-2 + 2.5) - (-3 + 2.5)) = 0.5; pair 2: 0.5 x ((-4 + 3) - (-1 + 2)) = -1.
    expected = [math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(1.0))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.25, -0.5]) and rejected.tolist() == pytest.approx([-0.25, 0.5])


def test_beta_and_method_are_validated() -> None:
    assert parse_hyperparameters({})[0].method == "supervised"
    assert parse_hyperparameters({"method": "dpo", "beta": "auto"})[0].beta == 0.1
    assert parse_hyperparameters({"beta": "2"})[0].beta == 2.0
    for bad in ("0", "-0.1", "2.5", "nan", "x"):
        with pytest.raises(HyperparameterError, match="beta"):
            parse_hyperparameters({"method": "dpo", "beta": bad})
    with pytest.raises(HyperparameterError, match="method must be one of supervised, dpo"):
        parse_hyperparameters({"method": "ppo"})


def test_the_memory_model_counts_a_pair_as_two_sequences_in_one_row() -> None:
    assert sequences_per_example("dpo") == 2 and sequences_per_example("supervised") == 1
    assert min_row_tokens(512, "dpo") == 1024 and min_row_tokens(512) == 512
    assert method_compute_factor("dpo") == pytest.approx(4 / 3) and method_compute_factor("supervised") == 1.0
    with pytest.raises(ValueError, match="unknown training method"):
        method_compute_factor("ppo")


def test_pairs_label_only_their_replies_and_pack_both_sides_in_one_row(demo_model_dir: Path, tmp_path: Path) -> None:
    tokenizer: Any = AutoTokenizer.from_pretrained(demo_model_dir)
    pair = preference_pairs(1)[0]
    pair["messages"] = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": pair["messages"][0]["content"]}]
    write_jsonl([pair], tmp_path / "train" / "part-0.jsonl")
    examples = load_conversations(tmp_path / "train", "train", "dpo")

    tokenized, [tokenized_pair] = tokenize_pairs(tokenizer, examples, 512, use_generation_tags=True)

    def labelled(labels: list[int]) -> str:
        return str(tokenizer.decode([t for t in labels if t != IGNORE_INDEX]))

    assert labelled(tokenized_pair.chosen.labels) == "I do not know.<|end|>"  # not the prompt's "Hello!"
    assert labelled(tokenized_pair.rejected.labels) == pair["rejected"]["content"] + "<|end|>"
    assert tokenized.examples == [tokenized_pair.chosen, tokenized_pair.rejected]
    batch = pack_pairs([tokenized_pair], torch.device("cpu"))
    assert batch.tokens == tokenized_pair.tokens and batch.pairs == 1
    chosen_targets = tokenized_pair.chosen.loss_tokens
    assert batch.target_sequences.tolist() == [0] * chosen_targets + [1] * tokenized_pair.rejected.loss_tokens
    assert batch.position_ids[0, len(tokenized_pair.chosen.input_ids)].item() == 0  # positions restart


def test_a_dpo_run_learns_to_prefer_the_chosen_replies(demo_model_dir: Path, tmp_path: Path) -> None:
    write_jsonl(preference_pairs(24), tmp_path / "train" / "part-0.jsonl")
    write_jsonl(preference_pairs(40)[32:], tmp_path / "validation" / "part-0.jsonl")
    env = {**sagemaker_env(tmp_path, demo_model_dir), "SM_CHANNEL_VALIDATION": str(tmp_path / "validation")}

    summary = job.train(Paths.from_env(env), HYPERPARAMETERS, StopSignal())

    lines = (tmp_path / "output" / "data" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == list(range(1, 19))
    for record in metrics:
        valid = ["valid_loss", "valid_reward_accuracy"] if "valid_loss" in record else []
        assert list(record) == DPO_KEYS + valid
    first, last = metrics[0], metrics[-1]
    assert first["reward_accuracy"] == 0.0 and first["train_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert last["reward_accuracy"] > first["reward_accuracy"] and last["reward_accuracy"] > 0.5
    assert last["reward_margin"] > 0 and last["train_loss"] < first["train_loss"]
    evaluated = [m for m in metrics if "valid_loss" in m]
    assert len(evaluated) == 3 and evaluated[-1]["valid_reward_accuracy"] > 0.5
    assert summary["method"] == "dpo" and summary["final_reward_accuracy"] == last["reward_accuracy"]
    assert summary["examples"] == 48 and summary["pairs"] == 24
    assert summary["trained_tokens"] == 3 * summary["tokens_per_epoch"]
    with (tmp_path / "output" / "data" / "results.csv").open(newline="") as rows:
        results = list(csv.DictReader(rows))
    assert float(results[-1]["reward_accuracy"]) == last["reward_accuracy"] and results[-1]["train_accuracy"] == ""
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()


def test_a_dpo_run_from_an_adapter_takes_the_starting_model_as_its_reference(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    """The starting adapter's own log-probs are the reference: at the first step policy and reference agree, so
    every reward is 0 (up to float noise: the reference was computed in other packed rows) and the loss log 2,
    although the adapter differs from the bare base model."""
    write_jsonl(preference_pairs(24), tmp_path / "first" / "train" / "part-0.jsonl")
    job.train(Paths.from_env(sagemaker_env(tmp_path / "first", demo_model_dir)), HYPERPARAMETERS, StopSignal())
    write_jsonl(preference_pairs(24), tmp_path / "second" / "train" / "part-0.jsonl")
    env = {**sagemaker_env(tmp_path / "second", demo_model_dir),
           "SM_CHANNEL_ADAPTER": str(tmp_path / "first" / "model")}

    job.train(Paths.from_env(env), {**HYPERPARAMETERS, "n_epochs": "1"}, StopSignal())

    lines = (tmp_path / "second" / "output" / "data" / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert first["train_loss"] == pytest.approx(math.log(2), abs=1e-3)
    before = json.loads((tmp_path / "first" / "output" / "data" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["chosen_logps"] > before["chosen_logps"]  # the policy starts from the trained adapter
