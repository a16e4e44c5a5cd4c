"""bench.trainer's two baselines, each a function of (base model folder, data, scratch folder) -> Run:

- `run_padded_trainer`: a plain transformers Trainer; its collator pads each batch of 8 examples to the longest
  one (the way most fine-tuning scripts batch), loss on the assistant tokens (our own tokenization and masks).
- `run_trl_sft`: TRL's SFTTrainer in its fastest documented setting for this job, padding-free with Liger (the
  pages, in TRL_DOCS, as read for trl 1.16.0 and in its installed source):
  - `packing=True` with `packing_strategy="bfd"` (best-fit decreasing, TRL's default strategy) into rows of
    `max_length` tokens, which turns padding-free on: SFTConfig's docstring, "When packing is enabled with
    strategy "bfd", padding-free is enabled, regardless of the value of this parameter" (`padding_free=True` is
    passed as well, to say so); "Reducing Memory Usage", sections Packing and Padding-free. Rows of
    TRL_ROW_TOKENS (1,024) at one row a step: the same tokens per optimizer step, give or take a row's slack, as
    our 8 examples (about 800 tokens).
  - `use_liger_kernel=True` on CUDA when `liger_kernel` is importable ("Liger Kernel Integration": "set
    use_liger_kernel=True ... No other changes are needed"; "Speeding Up Training" lists it). TRL 1.16 keeps its
    own fused LM head and applies Liger's layer kernels only (RMSNorm, RoPE, SwiGLU: sft_trainer.py sets
    `fused_linear_cross_entropy=False`), and deprecates the flag (a FutureWarning) for Hub kernels
    (`model_init_kwargs={"use_kernels": True}`), which download their kernels from the Hub at run time: not used.
    On CPU Liger cannot run (Triton kernels, CUDA only): the baseline runs without it, and its figure's note says
    so; on CUDA without liger_kernel installed the note says that too.
  - Attention: padding-free "is only supported with the FlashAttention 2 or 3" (SFTConfig's docstring), so on
    CUDA `flash_attention_2` where `flash_attn` is importable, else SDPA (transformers then builds the packed
    rows' block-diagonal mask from their position ids: correct, slower); SDPA on CPU. The note names which ran.
  - `assistant_only_loss=True`: TRL supports it for conversational data whose chat template marks the assistant
    turns with {% generation %}, as the demo tokenizer's does, so both sides train on the same tokens.
  - `gradient_checkpointing=False` (SFTConfig's default is True, to save memory): memory is not short here, and
    recomputing the forward only costs time; the Liger page says as much ("turn off gradient checkpointing to
    further boost the performance"). Ours does not checkpoint either unless its memory model asks.
  - bf16 on CUDA ("mixed precision", Speeding Up Training); fp32 on CPU (no bf16 matmul units here, as ours).
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
    "https://huggingface.co/docs/trl/v1.14.0/liger_kernel_integration, "
    "https://huggingface.co/docs/trl/kernels_hub (the Hub kernels that replace use_liger_kernel), "
    "trl 1.16.0's SFTConfig docstring (trl/trainer/sft_config.py) and trl/trainer/sft_trainer.py"
)
TRL_MISSING = ("bench.trainer needs trl for its second baseline (TRL's SFTTrainer): `make test` or `make bench` "
               "installs it (requirements/dev.txt), or `.venv/bin/pip install -r requirements/bench.txt`")  # fmt: skip


@dataclass(frozen=True)
class Run:
    seconds: float  # in the training loop only
    tokens: int  # real (non-pad) tokens trained on
    work: Work
    padded_tokens: int = 0  # positions computed, padding included (the padded Trainer's only)
    setting: str = ""  # how the side ran, where it depends on the machine (TRL: Liger or not, which attention)
    peak_bytes: int | None = None  # bench/trainer_memory.py: None where it cannot be measured


def require_trl() -> Any:
    """The trl module, or SystemExit with how to install it (a venv built before trl joined requirements/dev.txt)."""
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
    attention = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"
    model = _base_model(base, dtype, attention)
    liger = cuda and importlib.util.find_spec("liger_kernel") is not None
    config = trl.SFTConfig(output_dir=str(work_dir / "trl"), packing=True, packing_strategy="bfd", padding_free=True,
                           max_length=TRL_ROW_TOKENS, per_device_train_batch_size=1, assistant_only_loss=True,
                           gradient_checkpointing=False, bf16=dtype == torch.bfloat16, use_liger_kernel=liger,
                           num_train_epochs=1, learning_rate=LEARNING_RATE, lr_scheduler_type="linear",
                           max_grad_norm=1.0, logging_steps=1000, save_strategy="no", report_to=[], seed=0,
                           disable_tqdm=True, use_cpu=not cuda)  # fmt: skip
    setting = f"TRL {trl.__version__}: packing bfd, padding-free, {attention}, " + (
        "Liger on" if liger else "no Liger (liger_kernel not installed)" if cuda
        else "no Liger (CPU: its Triton kernels need CUDA)") + ", assistant-only loss, no checkpointing"  # fmt: skip
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
    return Run(seconds, sum(lengths), Work(lengths, head_rows=scored, head_rows_recomputed=scored), setting=setting)


def _base_model(base: Path, dtype: torch.dtype, attention: str) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attn_implementation=attention)
    model.config.use_cache = False
    return model


def _labelled(dataset: Any) -> int:
    """Positions whose next token carries the loss (what TRL's Triton path scores)."""
    return sum(sum(1 for label in labels[1:] if label != IGNORE_INDEX) for labels in dataset["labels"])
