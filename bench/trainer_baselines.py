"""bench.trainer's two baselines, each a function of (base model folder, data, scratch folder) -> Run:

- `run_padded_trainer`: a plain transformers Trainer; its collator pads each batch of 8 examples to the longest
  one (the way most fine-tuning scripts batch), loss on the assistant tokens (our own tokenization and masks).
- `run_trl_sft`: TRL's SFTTrainer, configured as TRL's documentation recommends for speed on the hardware at
  hand (see TRL_DOCS):
  - `packing=True` with `packing_strategy="bfd"` (best-fit decreasing; TRL's default strategy) into rows of
    `max_length` tokens, which also turns on padding-free batching (the SFTConfig docstring: "When packing is
    enabled with strategy "bfd", padding-free is enabled"): "Reducing Memory Usage", sections Packing and
    Padding-free. Rows of TRL_ROW_TOKENS (1,024) at one row a step: the same tokens per optimizer step, give or
    take a row's slack, as our 8 examples (about 800 tokens).
  - `assistant_only_loss=True`: TRL supports it for conversational data whose chat template marks the assistant
    turns with {% generation %}, as the demo tokenizer's does, so both sides train on the same tokens.
  - `gradient_checkpointing=False` (SFTConfig's default is True, to save memory): memory is not short here, and
    recomputing the forward only costs time; the Liger page says as much ("turn off gradient checkpointing to
    further boost the performance"). Ours does not checkpoint either unless its memory model asks.
  - On CPU: `bf16=False` (fp32, as ours; this CPU has no bf16 matmul units, and "Mixed precision" is advised for
    GPUs), SDPA attention (the recommended FlashAttention kernels are CUDA-only; transformers builds the packed
    rows' block mask from their position ids), no Liger (Triton kernels, GPU-only). On CUDA: bf16, and Liger
    when `liger_kernel` is installed (TRL 1.16 deprecates the flag for Hub kernels, which need a download).
  TRL 1.16's own loss ("fused LM head") computes the log-probabilities in chunks without materialising the
  logits; on CPU it scores every position (only Triton devices skip the unlabelled ones) and recomputes each chunk's
  logits in the backward pass: counted in its MFU and HFU (bench/trainer_flops.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.trainer_flops import Work
from trainer_image.llmt_trainer.data import Conversation
from trainer_image.llmt_trainer.masking import IGNORE_INDEX, tokenize_conversations
from trainer_image.llmt_trainer.model_loading import pick_device

BATCH_SIZE = 8
MAX_SEQ_LENGTH = 512
LEARNING_RATE = 2e-4
TRL_ROW_TOKENS = 1024
TRL_DOCS = (
    "https://huggingface.co/docs/trl/v1.6.0/reducing_memory_usage (Packing, Padding-free), "
    "https://huggingface.co/docs/trl/speeding_up_training (attention kernels, Liger, mixed precision), "
    "https://huggingface.co/docs/trl/v1.14.0/liger_kernel_integration, trl 1.16.0's SFTConfig docstring"
)
TRL_MISSING = ("bench.trainer needs trl for its second baseline (TRL's SFTTrainer): run `make bench`, which installs "
               "requirements/bench.txt, or `.venv/bin/pip install -r requirements/bench.txt`")  # fmt: skip


@dataclass(frozen=True)
class Run:
    seconds: float  # in the training loop only
    tokens: int  # real (non-pad) tokens trained on
    work: Work
    padded_tokens: int = 0  # positions computed, padding included (the padded Trainer's only)


def require_trl() -> Any:
    """The trl module, or SystemExit with how to install it (the test suite does not need trl; the bench does)."""
    try:
        return importlib.import_module("trl")
    except ImportError:
        raise SystemExit(TRL_MISSING) from None


def tokenized_examples(base: Path, data: list[dict[str, Any]]) -> list[Any]:
    """The examples as our trainer tokenizes them (input ids and assistant-only labels)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    conversations = [Conversation(e["messages"], str(i)) for i, e in enumerate(data)]
    return tokenize_conversations(tokenizer, conversations, MAX_SEQ_LENGTH, use_generation_tags=True).examples


def lora_config() -> Any:
    """The adapter every side trains (ours gets the same through its hyperparameters)."""
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", bias="none",
                      task_type="CAUSAL_LM")  # fmt: skip


def _lora_model(base: Path, dtype: torch.dtype) -> Any:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    model.config.use_cache = False
    return get_peft_model(model, lora_config())


def run_padded_trainer(base: Path, data: list[dict[str, Any]], work_dir: Path) -> Run:
    from transformers import Trainer, TrainingArguments

    examples = tokenized_examples(base, data)
    rows: Any = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    device, dtype = pick_device()
    model = _lora_model(base, dtype)
    pad = model.config.pad_token_id
    positions = [0]

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in batch)
        positions[0] += width * len(batch)
        ids = [r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch]
        labels = [r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in batch]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    args = TrainingArguments(output_dir=str(work_dir / "trainer"), per_device_train_batch_size=BATCH_SIZE,
                             num_train_epochs=1, learning_rate=LEARNING_RATE, lr_scheduler_type="linear",
                             max_grad_norm=1.0, logging_steps=1000, save_strategy="no", report_to=[], seed=0,
                             bf16=dtype == torch.bfloat16, remove_unused_columns=False, disable_tqdm=True,
                             use_cpu=device.type == "cpu")  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    lengths = tuple(len(e.input_ids) for e in examples)
    # The model computes logits at every position, padding included; only the real ones are counted.
    return Run(seconds, sum(lengths), Work(lengths, head_rows=sum(lengths)), padded_tokens=positions[0])


def run_trl_sft(base: Path, data: list[dict[str, Any]], work_dir: Path) -> Run:
    trl = require_trl()
    datasets = importlib.import_module("datasets")
    from transformers import AutoTokenizer

    device, dtype = pick_device()
    cuda = device.type == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = _base_model(base, dtype, cuda)
    liger = cuda and importlib.util.find_spec("liger_kernel") is not None
    config = trl.SFTConfig(output_dir=str(work_dir / "trl"), packing=True, packing_strategy="bfd",
                           max_length=TRL_ROW_TOKENS, per_device_train_batch_size=1, assistant_only_loss=True,
                           gradient_checkpointing=False, bf16=dtype == torch.bfloat16, use_liger_kernel=liger,
                           num_train_epochs=1, learning_rate=LEARNING_RATE, lr_scheduler_type="linear",
                           max_grad_norm=1.0, logging_steps=1000, save_strategy="no", report_to=[], seed=0,
                           disable_tqdm=True, use_cpu=not cuda)  # fmt: skip
    dataset = datasets.Dataset.from_list([{"messages": e["messages"]} for e in data])
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora_config())  # fmt: skip
    rows = trainer.train_dataset["seq_lengths"]  # each packed row's examples, in tokens
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    lengths = tuple(n for row in rows for n in row)
    # Every position but each row's last goes through the output layer, and again in the backward pass (on CUDA
    # with Triton only the labelled ones would; the bench counts what runs here).
    scored = sum(lengths) - len(rows) if not cuda else _labelled(trainer.train_dataset)
    return Run(seconds, sum(lengths), Work(lengths, head_rows=scored, head_rows_recomputed=scored))


def _base_model(base: Path, dtype: torch.dtype, cuda: bool) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if cuda:
        kwargs["attn_implementation"] = "sdpa"
    model: Any = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model.config.use_cache = False
    return model


def _labelled(dataset: Any) -> int:
    """Positions whose next token carries the loss (what TRL's Triton path scores)."""
    return sum(sum(1 for label in labels[1:] if label != IGNORE_INDEX) for labels in dataset["labels"])
