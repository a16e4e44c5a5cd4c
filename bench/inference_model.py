"""The models bench.inference serves, built on this machine from a config with random weights (no download).

- **Qwen2.5-0.5B at 4 of its 24 layers**: every width of the real model (hidden 896, intermediate 4864, 14 query
  and 2 key-value heads, tied embeddings) and its real 151,936-token vocabulary, so the output layer, which on a
  model this small is much of each token's cost, is the real one. Weights saved in bf16 as the Hub's are; both
  sides load them in fp32, as the generation server does. One token takes tens of milliseconds on 2 cores.
- Its tokenizer is byte-level BPE as Qwen's, built from a generated vocabulary of exactly the model's size (byte
  pairs, then triples, of the printable ASCII letters), so that every id the random model emits decodes to text
  (a tokenizer trained on a small corpus would stop near a thousand ids and decode the rest to nothing, which
  would leave a stream without content). Its chat template is Qwen2.5's own
  (tests/fixtures/chat_templates/qwen2.5-instruct.jinja, sources in its SOURCES.md) with Qwen's three special
  tokens; `<|im_end|>` ends a turn.

Built once into `.data/bench-models/` (git-ignored; `make clean` removes it) and reused.
"""

from __future__ import annotations

import itertools
import json
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".data" / "bench-models"
QWEN_TEMPLATE = ROOT / "tests" / "fixtures" / "chat_templates" / "qwen2.5-instruct.jinja"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # Qwen2.5's, in its order
MODEL_SEED = 0
FORMAT = 1  # bump when what is built changes, so a stale cache is rebuilt

# Qwen/Qwen2.5-0.5B-Instruct's config.json, but for the number of layers.
QWEN25_05B: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
    "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True, "hidden_act": "silu",
}
QWEN25_05B_LAYERS = 24


def byte_level_bpe(vocab_size: int) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` of exactly `vocab_size` ordinary tokens: the 256 byte symbols, the
    ordered pairs of the 95 printable ASCII symbols (space included), then triples of the 53 most used ones
    (space and the letters), as many as fit. Every merge joins two tokens already in the vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    space = "\u0120"  # the byte-level symbol for " "
    printable = [space, *string.ascii_lowercase, *string.ascii_uppercase, *string.digits, *string.punctuation]
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []

    def add(left: str, right: str) -> bool:
        if len(vocab) >= vocab_size:
            return False
        vocab[left + right] = len(vocab)
        merges.append((left, right))
        return True

    for left, right in itertools.product(printable, repeat=2):
        if not add(left, right):
            break
    common = printable[:53]
    for a, b, c in itertools.product(common, repeat=3):
        if not add(a + b, c):
            break
    if len(vocab) != vocab_size:
        raise ValueError(f"could not build {vocab_size} tokens (got {len(vocab)})")
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def build_tokenizer(vocab_size: int) -> Any:
    """Qwen2.5's chat template and special tokens on `byte_level_bpe`; len() == `vocab_size`."""
    from transformers import PreTrainedTokenizerFast

    backend = byte_level_bpe(vocab_size - len(SPECIAL_TOKENS))
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",  # noqa: S106
                                        pad_token="<|endoftext|>", model_max_length=32768)  # noqa: S106
    tokenizer.chat_template = QWEN_TEMPLATE.read_text(encoding="utf-8")
    if len(tokenizer) != vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    return tokenizer


def build_model(tokenizer: Any, layers: int) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**QWEN25_05B, num_hidden_layers=layers, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(MODEL_SEED)
    model: Any = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.to(dtype=torch.bfloat16)


def qwen_shape(layers: int = 4, cache: Path = CACHE) -> Path:
    """The Qwen2.5-0.5B shape at `layers` layers, with its tokenizer: a save_pretrained folder, built once."""
    out = cache / f"qwen2.5-0.5b-{layers}-layers"
    marker = out / "bench_model.json"
    if marker.is_file() and json.loads(marker.read_text()).get("format") == FORMAT:
        return out
    shutil.rmtree(out, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=cache))
    try:
        tokenizer = build_tokenizer(QWEN25_05B["vocab_size"])
        model = build_model(tokenizer, layers)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        parameters = sum(p.numel() for p in model.parameters())
        (staging / "bench_model.json").write_text(json.dumps({"format": FORMAT, "layers": layers,
                                                              "parameters": parameters}) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; the server reads it as any model folder
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def parameters(model_dir: Path) -> int:
    return int(json.loads((model_dir / "bench_model.json").read_text())["parameters"])
