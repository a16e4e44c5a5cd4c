"""A first job with every setting on "auto" learns (issue 12, point 7): a small set of repeated question/answer
pairs, the demo model, and exactly the hyperparameters the training service resolves and sends for it (the
catalog's recommended learning rate, "auto" epochs for a tiny file, steps by tokens, the memory plan of its
default instance type): the last logged training loss is at most half the first step's. The same through the
API, on the README's demo data, is tests/e2e/test_fine_tuning_flow.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from services.training import hyperparameters as hparams
from services.training.catalog import Catalog
from services.training.models import Hyperparameters
from tests.support.trainer_job import sagemaker_env
from trainer_image.demo_model import build_demo_model, write_jsonl
from trainer_image.llmt_trainer import job
from trainer_image.llmt_trainer.contract import Paths
from trainer_image.llmt_trainer.stops import StopSignal

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

CATALOG = Catalog.load(Path(__file__).resolve().parents[2] / "services" / "training" / "catalog.json")
DEMO = "llm-tuner/tiny-chat"
PAIRS = (
    ("Where does the mossel live?", "The mossel lives by the river."),
    ("What does the zorv eat?", "The zorv eats berries."),
    ("What color is the plink?", "The plink is blue."),
    ("How big is a vorn?", "A vorn is as big as a hill."),
    ("Who guards the reef?", "The koro guards the reef."),
)
REPEATS = 4


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_repeated_question_answer_pairs_learn_with_every_setting_auto(tmp_path: Path) -> None:
    base_dir = build_demo_model(tmp_path / "base")
    examples = [_chat(q, a) for _ in range(REPEATS) for q, a in PAIRS]
    write_jsonl(examples, tmp_path / "train" / "part-0.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    file_tokens = sum(len(tokenizer.apply_chat_template(e["messages"], tokenize=True)) for e in examples)
    demo = CATALOG.model(DEMO)
    assert demo is not None
    instance = CATALOG.instance(demo.min_instance_type)
    resolved = hparams.resolve(Hyperparameters(), len(examples), demo, seed=0, instance=instance,
                               file_tokens=file_tokens)
    sent = hparams.sagemaker_hyperparameters(resolved, demo, seed=0)
    assert sent["batch_size"] == "auto" and sent["learning_rate"] == str(demo.learning_rate)
    summary = job.train(Paths.from_env(sagemaker_env(tmp_path, base_dir)), sent, StopSignal())

    lines = (tmp_path / "output" / "data" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["train_loss"] for line in lines]
    assert json.loads(lines[0])["step"] == 1
    assert len(losses) >= 8, losses  # enough steps for the chart to show a curve
    assert losses[-1] <= 0.5 * losses[0], losses
    assert summary["final_train_loss"] == losses[-1]
