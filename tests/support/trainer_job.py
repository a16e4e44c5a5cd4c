"""The SageMaker container layout a trainer run reads (contract.Paths.from_env), rooted in a test's folder; and the
demo data tokenized as the trainer tokenizes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def sagemaker_env(root: Path, model_dir: Path | None = None) -> dict[str, str]:
    """SM_* variables for a job under `root` (train channel root/train, outputs beside it); `model_dir`, when
    given, is the model channel."""
    env = {
        "SM_INPUT_CONFIG_DIR": str(root / "config"),
        "SM_CHANNEL_TRAIN": str(root / "train"),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_CHECKPOINT_DIR": str(root / "checkpoints"),
    }
    if model_dir is not None:
        env["SM_CHANNEL_MODEL"] = str(model_dir)
    return env


def demo_examples(demo_dir: Path, n: int, max_seq_length: int = 256) -> list[Any]:
    """`n` demo conversations tokenized with the demo model's tokenizer (masking.TokenizedExample each)."""
    from transformers import AutoTokenizer

    from trainer_image.demo_model import make_demo_dataset
    from trainer_image.llmt_trainer.data import Conversation
    from trainer_image.llmt_trainer.masking import tokenize_conversations

    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    conversations = [Conversation(e["messages"], f"x:{i}") for i, e in enumerate(make_demo_dataset(n, seed=0))]
    return tokenize_conversations(tokenizer, conversations, max_seq_length, use_generation_tags=True).examples
