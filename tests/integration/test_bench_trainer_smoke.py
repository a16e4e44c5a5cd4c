"""The GPU trainer bench's smoke mode, run as a person runs it: `python -m bench.trainer --gpu --quick`. Without CUDA
it says so on stderr, measures the quick small shape on CPU (ours, the padded Trainer and TRL's SFTTrainer) and
prints every figure with a number; its results go to the git-ignored bench/results/. About 25 s on a quiet 2-core
machine with one thread."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[2]
FIGURES = (
    "small_llama_ours_vs_padded_trainer_tokens_per_s",
    "small_llama_ours_vs_padded_trainer_peak_memory",
    "small_llama_ours_vs_trl_sft_tokens_per_s",
    "small_llama_ours_vs_trl_sft_peak_memory",
    "small_llama_ours_mfu",
)
# Each side's figures in the notes: tokens/s, MFU, HFU and peak memory.
SIDE = re.compile(r"(ours|padded Trainer|TRL SFTTrainer): ([\d.]+) tok/s, MFU ([\d.]+)%, HFU ([\d.]+)%, "
                  r"peak ([\d,]+) MiB")


def test_the_gpu_bench_in_quick_mode_runs_without_cuda_and_prints_every_figure() -> None:
    # WHEN the one command of the GPU bench's smoke mode runs on this machine, one thread
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "bench.trainer", "--gpu", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    # THEN it exits 0, having said on stderr that it measured on CPU where there is no CUDA
    assert done.returncode == 0, done.stderr[-4000:]
    cuda = torch.cuda.is_available()
    assert cuda or "--gpu: no CUDA device here" in done.stderr
    # AND every figure is printed with a number, the tokens/s ratios held to their aims, MFU context off the 8B GPU run
    lines = {m.group(1): m.group(0) for m in re.finditer(r"^(\w+)  ratio=([\d.]+)  .*$", done.stdout, re.M)}
    assert set(FIGURES) <= set(lines), done.stdout
    assert "aim >= 2: " in lines["small_llama_ours_vs_padded_trainer_tokens_per_s"]
    assert "aim >= 1.2: " in lines["small_llama_ours_vs_trl_sft_tokens_per_s"]
    assert lines["small_llama_ours_mfu"].endswith("context, no aim")
    # AND each side's tokens/s, MFU, HFU and peak memory are in the notes, all above zero
    sides = {m.group(1): [float(v.replace(",", "")) for v in m.groups()[1:]] for m in SIDE.finditer(done.stdout)}
    assert set(sides) == {"ours", "padded Trainer", "TRL SFTTrainer"}, done.stdout
    assert all(value > 0 for values in sides.values() for value in values), sides
    assert cuda or "no Liger (CPU" in done.stdout  # TRL's baseline runs without Liger here, and says so
    # AND the report went to bench/results/, which git ignores, so the run leaves the work tree clean
    written = ROOT / "bench" / "results" / f"trainer{'-gpu' if cuda else ''}-quick-latest.json"
    assert {r["name"] for r in json.loads(written.read_text())["results"]} == set(FIGURES)
    if (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(written)], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{written} is not git-ignored"
