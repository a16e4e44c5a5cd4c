"""Serving tests' helpers: a real LoRA adapter for the tiny demo model, a `model.tar.gz` as a training job
leaves it, LMI chat requests and their answers (plain, JSON lines), and the generation server processes a
SageMaker emulator runs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

CHAT = [{"role": "system", "content": "You are a guide to the animals of Zorbia."},
        {"role": "user", "content": "What color is the glimp?"}]


def lora_adapter(base_model: Path, out_dir: Path, seed: int = 0) -> Path:
    """A PEFT LoRA adapter for `base_model` with random, non-zero weights (an untrained LoRA's B is zero and
    would change nothing), saved with its tokenizer as the trainer saves a fine-tune."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model), config)
    model.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(base_model).save_pretrained(out_dir)
    return out_dir


def model_tarball(directory: Path) -> bytes:
    """`model.tar.gz` as SageMaker packs a model dir: its files at the archive's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return buffer.getvalue()


def upload_directory(s3: Any, directory: Path, bucket: str, prefix: str) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + path.relative_to(directory).as_posix())


def chat_request(**params: Any) -> dict[str, Any]:
    """An LMI chat completions request about the demo's domain; greedy unless told otherwise."""
    return {"messages": CHAT, "temperature": 0, **params}


def json_lines(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\n"), "a JSON lines body ends each line with a newline"
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def content(answer: dict[str, Any]) -> str:
    return str(answer["choices"][0]["message"]["content"])


def server_pids(workdir: Path) -> list[int]:
    """The generation server processes whose model lives under an emulator's work dir (alive, not zombies)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        joined = b" ".join(argv).decode("utf-8", "replace")
        if "deploy.local.generation_server" in joined and str(workdir) in joined and state != "Z":
            pids.append(int(proc.name))
    return pids
