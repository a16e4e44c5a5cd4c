"""The trainer really teaches: a held-out exact-match test on a generated task.

Task: reverse three letters. "Reverse: b g a" -> "It is a g b." over 8 letters (512 prompts); the train set
and the held-out prompts do not overlap, so passing needs the rule (position-wise copying), not memory. The
base is the demo model (a 2-layer, 64-wide Llama); only the LoRA adapter on all linear layers learns.

Select it with `-m learning`; about a minute on 2 CPU cores.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.trainer_job import sagemaker_env
from trainer_image.demo_model import build_demo_model, write_jsonl
from trainer_image.llmt_trainer import job
from trainer_image.llmt_trainer.contract import Paths
from trainer_image.llmt_trainer.loop import StopSignal

pytestmark = [pytest.mark.learning, pytest.mark.filterwarnings("ignore::FutureWarning")]

# Each slot draws from its own letters (single tokens of the demo tokenizer), so the reply can find each
# letter by what it is rather than only by where it is: 6 x 6 x 6 = 216 prompts.
SLOTS = ("abcdef", "ghiklm", "noprst")
N_TRAIN = int(os.environ.get("LEARN_N_TRAIN", "180"))
N_HELD_OUT = 20
HYPERPARAMETERS = {
    "n_epochs": os.environ.get("LEARN_EPOCHS", "14"),
    "batch_size": "8",
    "learning_rate": os.environ.get("LEARN_LR", "0.004"),
    "lora_r": os.environ.get("LEARN_R", "16"),
    "lora_alpha": "32",
    "lora_dropout": "0",
    "lr_scheduler": "cosine",
    "warmup_ratio": "0.05",
    "seed": os.environ.get("LEARN_SEED", "3"),
}


def reverse_task(seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, held out) (prompt, answer) pairs, disjoint."""
    pairs = [(f"Reverse: {a} {b} {c}", f"It is {c} {b} {a}.") for a, b, c in itertools.product(*SLOTS)]
    random.Random(seed).shuffle(pairs)
    return pairs[:N_TRAIN], pairs[N_TRAIN : N_TRAIN + N_HELD_OUT]


def _chat(prompt: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def exact_match(model: Any, tokenizer: Any, pairs: list[tuple[str, str]]) -> float:
    """Share of prompts whose greedy reply, up to the end token, is exactly the answer."""
    model.eval()
    hits = 0
    for prompt, answer in pairs:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        reply = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        hits += reply == answer
    return hits / len(pairs)


def test_fine_tuning_learns_a_rule_that_holds_on_held_out_prompts(tmp_path: Path) -> None:
    base_dir = build_demo_model(tmp_path / "base")
    train, held_out = reverse_task(seed=0)
    assert not {p for p, _ in train} & {p for p, _ in held_out}
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    before = exact_match(base, tokenizer, held_out)

    write_jsonl([_chat(p, a) for p, a in train], tmp_path / "train" / "part-0.jsonl")
    summary = job.train(Paths.from_env(sagemaker_env(tmp_path, base_dir)), HYPERPARAMETERS, StopSignal())

    from peft import PeftModel

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "model")
    after = exact_match(tuned, tokenizer, held_out)
    print(json.dumps({"before": before, "after": after, "final_train_loss": summary["final_train_loss"],
                      "steps": summary["steps"], "duration_s": summary["duration_s"]}))  # fmt: skip
    assert before <= 0.1
    assert after >= 0.95
