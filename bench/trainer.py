"""`python -m bench.trainer [--quick] [--gpu]`: trained tokens per second of our trainer (TrainingRun.run, through
job.train as a SageMaker job runs it) against two baselines measured in the same run, with MFU, HFU and peak memory.

Baselines (bench/trainer_baselines.py): a plain transformers Trainer that pads each batch of 8 to its longest
example, and TRL's SFTTrainer in its fastest documented setting (packing "bfd", padding-free, Liger on CUDA where
liger_kernel is installed, FlashAttention 2 where flash_attn is, assistant-only loss, no gradient checkpointing;
fp32, SDPA and no Liger on CPU; the settings and the pages they come from are in that module's docstring). All
three train the same LoRA adapter (r=8, alpha 16, all linear layers, no dropout) on the same base model with the
same data, one epoch, learning rate 2e-4.

Models: the real shapes of catalog models, random weights from the config (no download):
- Llama-3.2-1B: hidden 2048, intermediate 8192, 32 heads, 8 kv heads, vocabulary 128,256, tied embeddings,
  rope_theta 500,000 (1.24B parameters at its 16 layers);
- Llama-3.1-8B: hidden 4096, intermediate 14336, 32 heads, 8 kv heads, vocabulary 128,256, untied.
Every width and the vocabulary are the real ones; on CPU only the depth is cut (CPU_PLAN: 4 of the 1B's 16 layers
on 12 examples, 1 of the 8B's 32 on 8), so that a run takes tens of minutes, not hours, on 2 cores; --full-depth
keeps every layer. Cutting layers raises the output layer's share of the FLOPs (the 1B: 21% at 16 layers, about
half at 4; the 8B: 7% at 32, 70% at 1), so these figures weigh the loss and the output layer far more than the
full models would. --gpu runs both at full depth in bf16 on 1,024 examples (not measured yet: no GPU was lent).
--quick: the old small Llama (hidden 256, 4 layers, the demo tokenizer's 772 tokens) on 32 examples, a smoke run of
about 25 s on CPU. `--gpu --quick` on a machine without CUDA says so on stderr and runs that smoke run on CPU: the
test suite runs exactly that command (tests/integration/test_bench_trainer_smoke.py).

Data: mixed-length chat examples (a quarter long, 16 to ~400 tokens), tokenized with the demo model's tokenizer
(its ids all fall in the real vocabulary; what matters to speed is the shapes and lengths, not which ids).
Tokens counted are real (non-pad) tokens; only the training loop is timed (TrainingRun.run, Trainer.train).
Runs rotate (ours, padded, TRL; then padded, TRL, ours; then TRL, ours, padded), 3 rounds; each figure is the
median of the 3 per-round ratios (--repeats). Aims: >= 2x the padded Trainer, >= 1.2x TRL, and ours' MFU >= 40% on
the 8B shape on a GPU (elsewhere MFU is context: a CPU's fp32 peak, a cut depth or a small model say little about
a GPU's).

Peak memory (bench/trainer_memory.py), per side from loading its model to the end of training, reset between runs:
torch.cuda.max_memory_allocated on CUDA; on CPU the growth of the process's peak RSS, coarser (page-granular,
allocator-dependent), "n/a" where the kernel cannot reset the peak. Ours / each baseline is printed, as context.

MFU and HFU (bench/trainer_flops.py for the accounting): LoRA's FLOPs per token are about 4N (frozen weights get
no weight gradient) + 6 x adapter + attention per example + the output layer over the positions each side
computes; HFU adds recomputation. Ours is observed, not assumed (`observing`): the positions that go through the
output layer's weight and the first decoder layer's MLP are counted, in the forward pass and again in the backward
pass. The peak on CPU is measured in the same run (a 4096 x 4096 fp32 matmul, 2048 with --quick, the best of
several, before and after the runs); on GPU it is the device's dense bf16 datasheet figure (GPU_PEAK_TFLOPS in
bench/trainer_flops.py: H100 SXM and H200 989, A100 312, A10G 125, L4 121 TFLOPS), or --peak-tflops, which
overrides it and is needed for any other GPU. Results: bench/results/trainer[-gpu][-quick]-latest.json (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench import report
from bench.stats import Aim, Result, median, ratio
from bench.trainer_baselines import BATCH_SIZE, Run, require_trl, run_padded_trainer, run_trl_sft, tokenized_examples
from bench.trainer_flops import LLAMA_3_1_8B, LLAMA_3_2_1B, Shape, Work, gpu_peak_tflops, like_for_like, training_flops
from bench.trainer_memory import measuring, mib
from trainer_image.demo_model import PROSE, build_tokenizer, write_jsonl
from trainer_image.llmt_trainer import job
from trainer_image.llmt_trainer import loss as trainer_loss
from trainer_image.llmt_trainer.checkpoints import Progress
from trainer_image.llmt_trainer.contract import Paths
from trainer_image.llmt_trainer.loop import StopSignal, TrainingRun

# On CPU: (layers, examples) per real shape, so that a full run (3 sides x 3 rounds x 2 shapes) takes about half an
# hour on 2 cores; the 8B's single layer costs about 1.5 times the 1B's four per token.
CPU_PLAN = {LLAMA_3_2_1B.name: (4, 12), LLAMA_3_1_8B.name: (1, 8)}
QUICK_EXAMPLES, GPU_EXAMPLES = 32, 1024  # GPU: 128 steps of 8, runs of seconds, not a blink
REPEATS = 3
PADDED_AIM, TRL_AIM, MFU_AIM = 2.0, 1.2, 0.40  # the MFU aim: the 8B shape on a GPU only (on CPU MFU is context)
HYPERPARAMETERS = {"n_epochs": "1", "batch_size": str(BATCH_SIZE), "learning_rate": "0.0002", "lora_r": "8",
                   "lora_alpha": "16", "lora_dropout": "0", "seed": "0", "logging_steps": "1000",
                   "max_seq_length": "512"}  # fmt: skip
LORA_R = 8
Side = Callable[[Path, list[dict[str, Any]], Path], Run]


def quick_shape() -> Shape:
    """The small Llama of earlier runs (big enough that padding costs show), with the demo tokenizer's vocabulary."""
    return Shape("small Llama", hidden=256, intermediate=688, layers=4, heads=4, kv_heads=4,
                 vocab=len(build_tokenizer()), tied_embeddings=True)  # fmt: skip


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


def build_base(folder: Path, shape: Shape, dtype: torch.dtype) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape.config())  # fmt: skip
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class RowCounter:
    """Positions through a computation, counted in the forward pass and again in the backward pass (where gradient
    checkpointing or a checkpointed loss recomputes them)."""

    def __init__(self) -> None:
        self.forward = self.again = 0

    def count(self, hidden: torch.Tensor) -> None:
        rows = hidden.shape[:-1].numel()
        if torch._C._current_graph_task_id() == -1:  # not inside a backward pass
            self.forward += rows
        else:
            self.again += rows


@contextlib.contextmanager
def observing(model: Any) -> Iterator[tuple[RowCounter, RowCounter]]:
    """(output layer, first decoder layer) counters of the positions `model` computes while the block runs.

    The output layer is counted wherever its weight goes through F.linear, not by a module hook: a fused loss uses
    the weight without calling the module (trainer_image/llmt_trainer/loss.py); and where the trainer's loss hands
    the weight to Liger's fused linear cross-entropy (loss.liger_loss, on CUDA), at that call: its Triton kernel
    makes the logits and their gradient in the forward pass, without F.linear and without recomputing them. The
    decoder layer is counted at its MLP: transformers checkpoints a layer's forward, so the layer's own hooks run
    once, while its submodules' run again when the backward pass recomputes them."""
    head, layer = RowCounter(), RowCounter()
    weight = model.get_output_embeddings().weight
    linear, fused_loss = F.linear, trainer_loss.liger_loss

    def counting_linear(inputs: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if w is weight:
            head.count(inputs)
        return linear(inputs, w, bias)

    def counting_fused_loss(device: torch.device) -> Any:
        fused = fused_loss(device)
        if fused is None:
            return None

        def call(w: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor) -> Any:
            if w is weight:
                head.count(hidden)
            return fused(w, hidden, targets)

        return call

    handle = model.get_decoder().layers[0].mlp.register_forward_pre_hook(lambda _module, args: layer.count(args[0]))
    F.linear = counting_linear  # type: ignore[assignment]
    trainer_loss.liger_loss = counting_fused_loss
    try:
        yield head, layer
    finally:
        F.linear = linear
        trainer_loss.liger_loss = fused_loss
        handle.remove()


def run_ours(base: Path, data: list[dict[str, Any]], work_dir: Path) -> Run:
    """One job.train run (as the container runs it), timing TrainingRun.run and counting what it computed."""
    write_jsonl(data, work_dir / "train" / "part-0.jsonl")
    env = {"SM_INPUT_CONFIG_DIR": str(work_dir / "config"), "SM_CHANNEL_TRAIN": str(work_dir / "train"),
           "SM_CHANNEL_MODEL": str(base), "SM_MODEL_DIR": str(work_dir / "model"),
           "SM_OUTPUT_DIR": str(work_dir / "out"), "SM_OUTPUT_DATA_DIR": str(work_dir / "out" / "data"),
           "SM_CHECKPOINT_DIR": str(work_dir / "checkpoints")}  # fmt: skip
    observed: dict[str, Any] = {}
    original = TrainingRun.run

    def run(self: TrainingRun, metrics_sink: Path) -> Progress:
        with observing(self.model.get_base_model()) as (head, layer):
            started = time.perf_counter()
            try:
                return original(self, metrics_sink)
            finally:
                observed.update(seconds=time.perf_counter() - started, head=head, layer=layer)

    TrainingRun.run = run  # type: ignore[method-assign]
    try:
        summary = job.train(Paths.from_env(env), HYPERPARAMETERS, StopSignal())
    finally:
        TrainingRun.run = original  # type: ignore[method-assign]
    lengths = tuple(len(e.input_ids) for e in tokenized_examples(base, data))
    head, layer = observed["head"], observed["layer"]
    if not head.forward:  # the warm-up run fails here, before the measured ones
        raise RuntimeError("bench.trainer saw no position go through the output layer: the trainer's loss computes it "
                           "some way that observing() does not see; count it there")  # fmt: skip
    work = Work(lengths, head_rows=head.forward, head_rows_recomputed=head.again,
                layers_recomputed=layer.again / max(layer.forward, 1))  # fmt: skip
    return Run(observed["seconds"], int(summary["trained_tokens"]), work)


SIDES: dict[str, Side] = {"ours": run_ours, "padded Trainer": run_padded_trainer, "TRL SFTTrainer": run_trl_sft}


def peak_flops(size: int = 4096, tries: int = 5) -> float:
    """This machine's fp32 matmul FLOP/s now: the best of `tries` timed size x size products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(tries):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def measure(shape: Shape, n_examples: int, repeats: int, dtype: torch.dtype) -> dict[str, list[Run]]:
    """Each side's runs on `shape`, rotating the order each repeat so that a slow patch hits all three; each run
    with its peak memory (bench/trainer_memory.py)."""
    cuda = torch.cuda.is_available()
    data = mixed_length_data(n_examples, seed=0)
    runs: dict[str, list[Run]] = {name: [] for name in SIDES}
    names = list(SIDES)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as scratch:
        root = Path(scratch)
        print(f"... {shape.label}: building the base model", file=sys.stderr, flush=True)
        base = build_base(root / "base", shape, dtype)
        for index, name in enumerate(names):  # first-call costs (allocator, thread pools, imports) out of the figures
            SIDES[name](base, data[:2], root / f"warmup-{index}")
            gc.collect()
        for i in range(repeats):
            for name in names[i % len(names):] + names[: i % len(names)]:
                with measuring(cuda) as peak:
                    result = SIDES[name](base, data, root / f"{names.index(name)}-{i}")
                gc.collect()  # the model of one run is gone before the next loads its own
                runs[name].append(dataclasses.replace(result, peak_bytes=peak.bytes))
                print(f"... {shape.label} run {i + 1}/{repeats}: {name} {result.tokens / result.seconds:.1f} tok/s, "
                      f"peak {mib(peak.bytes)}", file=sys.stderr, flush=True)  # fmt: skip
    return runs


def shape_results(key: str, shape: Shape, runs: dict[str, list[Run]], peak: float, peak_source: str,
                  precision: str, gpu: bool = False) -> list[Result]:  # fmt: skip
    """One shape's figures: ours against each baseline in tokens/s (held to aims) and in peak memory (context), and
    ours' MFU (aim >= MFU_AIM for the 8B shape on a GPU, context elsewhere); the notes give each side's tokens/s, MFU,
    HFU and peak memory."""
    speed = {name: median([r.tokens / r.seconds for r in rs]) for name, rs in runs.items()}
    util = {name: _utilisation(shape, rs, peak) for name, rs in runs.items()}
    memory = {name: _peak_memory(rs) for name, rs in runs.items()}
    lengths = runs["ours"][0].work.lengths
    per_token = like_for_like(shape, lengths, LORA_R) / sum(lengths)
    padded = runs["padded Trainer"][0].padded_tokens
    held = "torch.cuda.max_memory_allocated" if gpu else "growth of the peak RSS (VmHWM) over the run"
    context = (f"{shape.label}, {precision}, LoRA r={LORA_R} all-linear, {len(lengths)} examples, {sum(lengths)} "
               f"tokens (mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}); model FLOPs like-for-like "
               f"{per_token / 1e9:.2f} GFLOP/token; peak {peak / 1e9:,.0f} GFLOP/s ({peak_source}); peak memory: "
               f"{held}, model load included, the largest of the runs")  # fmt: skip
    sides = {name: f"{name}: {speed[name]:.1f} tok/s, MFU {util[name][0]:.1%}, HFU {util[name][1]:.1%}, peak "
                   f"{mib(memory[name])}" for name in runs}  # fmt: skip
    results = []
    padding = f"; the Trainer computed {padded} positions ({padded / sum(lengths):.2f}x: padding)"
    trl = f"; {runs['TRL SFTTrainer'][0].setting or 'TRL SFTTrainer'}"
    for baseline, suffix, target, extra in (("padded Trainer", "padded_trainer", PADDED_AIM, padding),
                                            ("TRL SFTTrainer", "trl_sft", TRL_AIM, trl)):  # fmt: skip
        both = ("ours", baseline)
        note = f"{sides['ours']}; {sides[baseline]}; {context}{extra}"
        # Each round's two runs are minutes apart, the rounds tens of minutes: on a shared machine the ratio within
        # a round is the steadier figure (as in bench.run).
        pairs = zip(runs["ours"], runs[baseline], strict=True)
        rounds = [ratio(a.tokens / a.seconds, b.tokens / b.seconds) for a, b in pairs]
        results.append(Result(
            f"{key}_ours_vs_{suffix}_tokens_per_s", median(rounds),
            f"median of the per-round ratios {', '.join(f'{r:.2f}' for r in rounds)}; medians: ours "
            f"{speed['ours']:.1f} tok/s, {baseline} {speed[baseline]:.1f} tok/s",
            Aim(">=", target), note=note,
            figures={"tokens_per_s": {n: [round(r.tokens / r.seconds, 2) for r in runs[n]] for n in both},
                     "mfu": {n: round(util[n][0], 4) for n in both}, "hfu": {n: round(util[n][1], 4) for n in both},
                     "peak_memory_bytes": {n: memory[n] for n in both},
                     "peak_flops": peak, "like_for_like_flops_per_token": per_token},
        ))  # fmt: skip
        ours_bytes, their_bytes = memory["ours"], memory[baseline]
        if ours_bytes and their_bytes:  # n/a (not measurable here) or nothing measured: no ratio to print
            results.append(Result(
                f"{key}_ours_vs_{suffix}_peak_memory", ours_bytes / their_bytes,
                f"peak memory, ours {mib(ours_bytes)} / {baseline} {mib(their_bytes)}; lower is less memory", None,
                note=f"{held}, model load included, the largest of the runs; {sides['ours']}; {sides[baseline]}",
                figures={"peak_memory_bytes": {n: memory[n] for n in both}},
            ))  # fmt: skip
    aimed = gpu and shape.name == LLAMA_3_1_8B.name and not shape.full_layers
    results.append(Result(
        f"{key}_ours_mfu", util["ours"][0],
        f"ours: model FLOPs per second / the peak, {util['ours'][0]:.1%} (HFU {util['ours'][1]:.1%})",
        Aim(">=", MFU_AIM) if aimed else None,
        note=("" if aimed else "context: MFU is held to its aim on the 8B shape on a GPU only; ") + context,
        figures={"mfu": round(util["ours"][0], 4), "hfu": round(util["ours"][1], 4), "peak_flops": peak},
    ))  # fmt: skip
    return results


def _peak_memory(runs: list[Run]) -> int | None:
    """The largest peak of the runs (the first measured run may pay one-off costs: the largest is the honest
    figure of what the side needs), or None where none could be measured."""
    measured = [r.peak_bytes for r in runs if r.peak_bytes is not None]
    return max(measured) if measured else None


def _utilisation(shape: Shape, runs: list[Run], peak: float) -> tuple[float, float]:
    """(MFU, HFU) of the median run by time."""
    run = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    flops = training_flops(shape, run.work, LORA_R)
    return flops.counted / run.seconds / peak, flops.hardware / run.seconds / peak


def _plan(quick: bool, gpu: bool, full_depth: bool, examples: int | None) -> list[tuple[str, Shape, int]]:
    """(figure name, shape, examples) of each shape to measure."""
    if quick:
        return [("small_llama", quick_shape(), examples or QUICK_EXAMPLES)]
    plan = []
    for shape in (LLAMA_3_2_1B, LLAMA_3_1_8B):
        layers, cpu_examples = CPU_PLAN[shape.name]
        key = shape.name.lower().replace("-", "_").replace(".", "_")  # Llama-3.2-1B -> llama_3_2_1b
        if gpu:
            plan.append((key, shape, examples or GPU_EXAMPLES))
        else:
            plan.append((key, shape if full_depth else shape.with_layers(layers), examples or cpu_examples))
    return plan


def _quiet() -> None:
    import logging

    logging.disable(logging.WARNING)  # the trainer's INFO lines would drown the figures
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # peft on transformers 5, trl deprecations: noise
    warnings.filterwarnings("ignore", category=UserWarning)
    importlib.import_module("datasets").disable_progress_bars()  # TRL's dataset preparation (trl requires datasets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="the small Llama only: a smoke run of under a minute")
    parser.add_argument("--full-depth", action="store_true", help="every layer of the real models on CPU too (slow)")
    parser.add_argument("--gpu", action="store_true", help="the real models at full depth on CUDA in bf16 (without "
                        "CUDA: says so on stderr and measures on CPU)")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak for MFU (default: from the device "
                        "name: H100 SXM and H200 989, H100 PCIe 756, A100 312, A10G 125, L4 121)")  # fmt: skip
    parser.add_argument("--examples", type=int, help=f"examples per run (default: {QUICK_EXAMPLES} quick, 12 and 8 "
                        f"CPU, {GPU_EXAMPLES} GPU)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=REPEATS, help="rounds of the three sides (default: 3)")
    args = parser.parse_args(argv)
    require_trl()
    _quiet()
    started = time.monotonic()
    gpu = args.gpu and torch.cuda.is_available()
    if args.gpu and not gpu:
        print(f"bench.trainer --gpu: no CUDA device here (torch {torch.__version__}); measuring "
              f"{'the quick small shape' if args.quick else 'the CPU plan'} on CPU in fp32 instead: no GPU figure",
              file=sys.stderr, flush=True)  # fmt: skip
    peak_gpu = _gpu_peak(args.peak_tflops) if gpu else None
    plan = _plan(args.quick, gpu, args.full_depth, args.examples)
    if gpu:
        dtype, precision = torch.bfloat16, f"bf16 CUDA, {torch.cuda.get_device_name()}"
    else:
        dtype, precision = torch.float32, f"fp32 CPU, {torch.get_num_threads()} threads"
    matmul = 2048 if args.quick else 4096  # a smaller product in the smoke run: seconds, not tens of seconds
    peak_before = peak_gpu[0] if peak_gpu else peak_flops(matmul)
    measured: list[tuple[str, Shape, dict[str, list[Run]]]] = []
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # the trainer's METRICS lines
    try:
        for key, shape, examples in plan:
            measured.append((key, shape, measure(shape, examples, args.repeats, dtype)))
    finally:
        sys.stdout.close()
        sys.stdout = stdout
    if peak_gpu:
        peak, source = peak_gpu
    else:
        peak = max(peak_before, peak_flops(matmul))
        source = f"fp32 {matmul}x{matmul} matmul, best of before and after the runs"
    results = [r for key, shape, runs in measured
               for r in shape_results(key, shape, runs, peak, source, precision, gpu=gpu)]  # fmt: skip
    name = "trainer" + ("-gpu" if gpu else "") + ("-quick" if args.quick else "")
    print(f"bench.trainer ({'GPU' if gpu else 'CPU'}{', quick' if args.quick else ''}): {os.cpu_count()} CPUs, "
          f"{time.monotonic() - started:.0f} s in all")  # fmt: skip
    report.print_results(results)
    report.save(f"{name}-latest", {"machine": report.machine(torch=torch.__version__, device=precision),
                                   "results": [r.as_json() for r in results]})  # fmt: skip
    return 0


def _gpu_peak(flag: float | None) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from): --peak-tflops, else the device's datasheet figure; SystemExit if neither."""
    device = torch.cuda.get_device_name()
    if flag:
        return flag * 1e12, f"--peak-tflops {flag:g}, {device}"
    known = gpu_peak_tflops(device)
    if known is None:
        raise SystemExit(f"bench.trainer --gpu: no known bf16 peak for {device!r}: pass --peak-tflops (dense bf16)")
    return known * 1e12, f"{device}: dense bf16 {known:g} TFLOPS (datasheet; --peak-tflops overrides)"


if __name__ == "__main__":
    sys.exit(main())
