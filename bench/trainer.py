"""`python -m bench.trainer [--quick] [--gpu]`: trained tokens per second of finetune.py against a plain
transformers Trainer with padded batches, as a ratio measured in the same run.

Both train the same LoRA adapter (all linear layers, r=8) on the same base model, built from a config (a
Llama of hidden 256, 4 layers: big enough that padding costs show; no download), on the same mixed-length
chat data (16 to ~400 tokens an example), tokenized by finetune.py, batch 8, one epoch. finetune.py packs
each batch into one padding-free row; the Trainer pads each batch to its longest example. Tokens counted are
the real (non-pad) tokens on both sides; only the training loop is timed (TrainingRun.run, Trainer.train).
Runs alternate, median of 3. Aim: >= 1.5.

--gpu (only when CUDA is available): the same on a ~1B-parameter Llama from a config in bf16, and MFU
(6 x parameters x tokens/s over --peak-tflops) printed beside the ratio. Not run on CPU-only machines.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from bench import report
from bench.stats import Aim, Result, median, ratio
from trainer_image.demo_model import PROSE, build_tokenizer, write_jsonl
from trainer_image.llmt_trainer import job
from trainer_image.llmt_trainer.checkpoints import Progress
from trainer_image.llmt_trainer.contract import Paths
from trainer_image.llmt_trainer.data import Conversation
from trainer_image.llmt_trainer.loop import StopSignal, TrainingRun
from trainer_image.llmt_trainer.masking import IGNORE_INDEX, tokenize_conversations
from trainer_image.llmt_trainer.model_loading import pick_device

CPU_CONFIG = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4}
# TinyLlama-1.1B's shape: about 0.97B parameters in its layers (the 1k vocabulary adds little).
GPU_CONFIG = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
              "num_key_value_heads": 4}  # fmt: skip
BATCH_SIZE = 8
HYPERPARAMETERS = {"n_epochs": "1", "batch_size": str(BATCH_SIZE), "learning_rate": "0.0002", "lora_r": "8",
                   "lora_alpha": "16", "lora_dropout": "0", "seed": "0", "logging_steps": "1000",
                   "max_seq_length": "512"}  # fmt: skip


def mixed_length_data(n: int, seed: int) -> list[dict[str, Any]]:
    """Chat examples whose lengths spread widely (a few short, some long), as real fine-tuning data does."""
    rng = random.Random(seed)
    words = " ".join(PROSE).split()

    def text(count: int) -> str:
        return " ".join(rng.choice(words) for _ in range(count))

    examples = []
    for _ in range(n):
        long = rng.random() < 0.25
        examples.append({"messages": [
            {"role": "user", "content": text(rng.randint(60, 200) if long else rng.randint(4, 30))},
            {"role": "assistant", "content": text(rng.randint(20, 80) if long else rng.randint(3, 20))},
        ]})  # fmt: skip
    return examples


def build_base(folder: Path, sizes: dict[str, Any], dtype: torch.dtype) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **sizes)  # fmt: skip
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_finetune(base: Path, data: list[dict[str, Any]], work: Path) -> tuple[float, int]:
    """(seconds in the training loop, trained tokens) of one finetune.py run."""
    write_jsonl(data, work / "train" / "part-0.jsonl")
    env = {"SM_INPUT_CONFIG_DIR": str(work / "config"), "SM_CHANNEL_TRAIN": str(work / "train"),
           "SM_CHANNEL_MODEL": str(base), "SM_MODEL_DIR": str(work / "model"), "SM_OUTPUT_DIR": str(work / "out"),
           "SM_OUTPUT_DATA_DIR": str(work / "out" / "data"), "SM_CHECKPOINT_DIR": str(work / "checkpoints")}
    timed: list[float] = []
    original = TrainingRun.run

    def run(self: TrainingRun, metrics_sink: Path) -> Progress:
        started = time.perf_counter()
        try:
            return original(self, metrics_sink)
        finally:
            timed.append(time.perf_counter() - started)

    TrainingRun.run = run  # type: ignore[method-assign,assignment]
    try:
        summary = job.train(Paths.from_env(env), HYPERPARAMETERS, StopSignal())
    finally:
        TrainingRun.run = original  # type: ignore[method-assign]
    return timed[0], int(summary["trained_tokens"])


def run_trainer(base: Path, data: list[dict[str, Any]], work: Path) -> tuple[float, int]:
    """(seconds in Trainer.train, trained tokens) of a plain Trainer run on padded batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(base)
    conversations = [Conversation(e["messages"], str(i)) for i, e in enumerate(data)]
    tokenized = tokenize_conversations(tokenizer, conversations, 512, use_generation_tags=True)
    rows: Any = [{"input_ids": e.input_ids, "labels": e.labels} for e in tokenized.examples]
    device, dtype = pick_device()
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             bias="none", task_type="CAUSAL_LM"))  # fmt: skip
    pad = tokenizer.pad_token_id

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in batch)
        ids = [r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch]
        labels = [r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in batch]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    args = TrainingArguments(output_dir=str(work / "trainer"), per_device_train_batch_size=BATCH_SIZE,
                             num_train_epochs=1, learning_rate=2e-4, lr_scheduler_type="linear", max_grad_norm=1.0,
                             logging_steps=1000, save_strategy="no", report_to=[], seed=0, bf16=dtype == torch.bfloat16,
                             remove_unused_columns=False, disable_tqdm=True, use_cpu=device.type == "cpu")  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started, tokenized.tokens


def measure(sizes: dict[str, Any], n_examples: int, repeats: int, dtype: torch.dtype) -> dict[str, Any]:
    data = mixed_length_data(n_examples, seed=0)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as scratch:
        root = Path(scratch)
        base = build_base(root / "base", sizes, dtype)
        run_finetune(base, data[:BATCH_SIZE * 2], root / "warmup-ours")  # first-call costs out of the figures
        run_trainer(base, data[:BATCH_SIZE * 2], root / "warmup-theirs")
        for i in range(repeats):  # alternate, so a slow patch of the machine hits both
            seconds, tokens = run_finetune(base, data, root / f"ours-{i}")
            ours.append(tokens / seconds)
            seconds, tokens = run_trainer(base, data, root / f"theirs-{i}")
            theirs.append(tokens / seconds)
            print(f"... run {i + 1}/{repeats}: finetune.py {ours[-1]:.0f} tok/s, Trainer {theirs[-1]:.0f} tok/s",
                  file=sys.stderr, flush=True)  # fmt: skip
        lengths = [len(r) for r in _lengths(base, data)]
    n_params = sum(int(v) for v in _param_count(sizes))
    return {"ours": ours, "theirs": theirs, "tokens": sum(lengths), "mean_len": sum(lengths) / len(lengths),
            "max_len": max(lengths), "n_params": n_params}  # fmt: skip


def _lengths(base: Path, data: list[dict[str, Any]]) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    conversations = [Conversation(e["messages"], str(i)) for i, e in enumerate(data)]
    return [e.input_ids for e in tokenize_conversations(tokenizer, conversations, 512,
                                                        use_generation_tags=True).examples]


def _param_count(sizes: dict[str, Any]) -> list[int]:
    h, i, layers = sizes["hidden_size"], sizes["intermediate_size"], sizes["num_hidden_layers"]
    kv = h * sizes.get("num_key_value_heads", sizes["num_attention_heads"]) // sizes["num_attention_heads"]
    return [layers * (2 * h * h + 2 * h * kv + 3 * h * i)]  # attention and MLP weights (embeddings left out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer examples")
    parser.add_argument("--gpu", action="store_true", help="also the ~1B model on CUDA, with MFU (needs CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100: 989)")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # finetune's INFO lines and METRICS would drown the figures
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # peft on transformers 5: noise
    started = time.monotonic()
    sink = open(os.devnull, "w")
    stdout, sys.stdout = sys.stdout, sink
    try:
        figures = measure(CPU_CONFIG, 48 if args.quick else 96, 3, torch.float32)
    finally:
        sys.stdout = stdout
    cpu = Result("finetune_vs_padded_trainer_tokens_per_s", ratio(median(figures["ours"]), median(figures["theirs"])),
                 f"finetune.py {median(figures['ours']):.0f} tok/s / Trainer padded {median(figures['theirs']):.0f} "
                 f"tok/s, median of 3", Aim(">=", 1.5),
                 note=f"Llama hidden 256 x 4 layers, LoRA r=8 all-linear, batch 8, {figures['tokens']} tokens "
                      f"(mean {figures['mean_len']:.0f}, max {figures['max_len']} an example), "
                      f"{torch.get_num_threads()} threads",
                 figures={k: figures[k] for k in ("ours", "theirs", "tokens")})  # fmt: skip
    results = [cpu]
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here; GPU figures skipped", file=sys.stderr)
        else:
            sys.stdout = sink
            try:
                gpu = measure(GPU_CONFIG, 256, 3, torch.bfloat16)
            finally:
                sys.stdout = stdout
            tflops = 6 * gpu["n_params"] * median(gpu["ours"]) / 1e12
            results.append(Result("gpu_1b_finetune_vs_padded_trainer_tokens_per_s",
                                  ratio(median(gpu["ours"]), median(gpu["theirs"])),
                                  f"finetune.py {median(gpu['ours']):.0f} tok/s / Trainer padded "
                                  f"{median(gpu['theirs']):.0f} tok/s", Aim(">=", 1.5),
                                  note=f"MFU {tflops / args.peak_tflops:.1%} ({tflops:.1f} TFLOP/s by 6N, "
                                       f"{torch.cuda.get_device_name()})",
                                  figures={"mfu": tflops / args.peak_tflops}))  # fmt: skip
    sink.close()
    report.publish("trainer", results, time.monotonic() - started, torch=torch.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
