"""The trainer's hyperparameters: what SageMaker passes (strings, perhaps JSON-quoted by the Python SDK) from
hyperparameters.json and `--name value` arguments, validated into one frozen Hyperparameters."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HyperparameterError

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"
SUPPORTED_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial",
    "constant", "constant_with_warmup", "inverse_sqrt",
)  # fmt: skip
MODULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
METHODS = ("supervised", "dpo")
DEFAULT_BETA = 0.1  # DPO's beta for "auto": the value of the DPO paper and of most libraries
MAX_BETA = 2.0


@dataclass(frozen=True)
class Hyperparameters:
    model_id: str = DEFAULT_MODEL_ID
    n_epochs: int = 3
    # Examples per micro-batch group: batch_size x gradient_accumulation_steps examples make an optimizer step.
    # 0 ("auto"): a step is tokens_per_step tokens instead (memory.auto_tokens_per_step when that is 0 too).
    batch_size: int = 0
    tokens_per_step: int = 0
    # The most tokens in one row (one forward and backward pass); 0 ("auto"): as the memory model plans it for
    # the device (memory.plan), never below max_seq_length.
    micro_batch_tokens: int = 0
    learning_rate: float = 2e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    max_seq_length: int = 512
    seed: int = 42
    logging_steps: int = 1
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    validation_split: float = 0.0
    gradient_checkpointing: bool | None = None  # None ("auto"): on only when the memory model says it is needed
    # A checkpoint within the epoch at least this often (seconds; 0: only at epoch ends and at a stop), so a long
    # epoch interrupted by spot, a time limit or a crash loses at most this much training.
    checkpoint_interval_s: float = 900.0
    load_in_4bit: bool = False  # QLoRA: needs CUDA and bitsandbytes
    # Compile each decoder layer with torch.compile (dynamic shapes: rows vary in length), fast_path.py: faster
    # steps once compiled, at the cost of compiling at start (and again for a few new row lengths). Off by default.
    torch_compile: bool = False
    merge_adapter: bool = False  # also save the base model with the adapter merged in, under merged/
    # Where the merged model goes as its own archive (s3://.../merged-model.tar.gz), so model.tar.gz stays the
    # small adapter; without it merged/ stays inside model.tar.gz.
    merged_model_uri: str = ""
    # "supervised" (SFT on chat or text examples) or "dpo" (Direct Preference Optimization on preference pairs,
    # dpo.py) with its beta: how far the policy may move from the reference (larger: closer to it).
    method: str = "supervised"
    beta: float = DEFAULT_BETA
    # Names the caller set explicitly (the rest are defaults); not a hyperparameter itself.
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "given"}
        if isinstance(self.target_modules, tuple):
            values["target_modules"] = list(self.target_modules)
        return values


def unquote(value: Any) -> Any:
    """SageMaker passes strings; the Python SDK JSON-encodes each value, so a string may arrive quoted."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            return text
        return decoded.strip() if isinstance(decoded, str) else decoded
    return text


def _parse_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise HyperparameterError(f"hyperparameter {name} must be an integer, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"hyperparameter {name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise HyperparameterError(f"hyperparameter {name} must be an integer, got {value!r}")
    if number < minimum:
        raise HyperparameterError(f"hyperparameter {name} must be >= {minimum}, got {value!r}")
    return int(number)


def _parse_float(
    name: str, value: Any, *, minimum: float, maximum: float | None = None, minimum_inclusive: bool = True
) -> float:
    if isinstance(value, bool):
        raise HyperparameterError(f"hyperparameter {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"hyperparameter {name} must be a number, got {value!r}") from None
    too_low = number < minimum if minimum_inclusive else number <= minimum
    too_high = maximum is not None and number > maximum
    if not math.isfinite(number) or too_low or too_high:
        low = f"{'>=' if minimum_inclusive else '>'} {minimum:g}"
        bounds = low if maximum is None else f"{low} and <= {maximum:g}"
        raise HyperparameterError(f"hyperparameter {name} must be {bounds}, got {value!r}")
    return number


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise HyperparameterError(f"hyperparameter {name} must be true or false, got {value!r}")


def _parse_auto_int(name: str, value: Any, minimum: int) -> int:
    """An integer, or "auto" (0)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return 0
    return _parse_int(name, value, minimum) if value not in (0, "0") else 0


def _parse_auto_bool(name: str, value: Any) -> bool | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    return _parse_bool(name, value)


def _parse_s3_uri(name: str, value: Any) -> str:
    text = str(value or "").strip()
    bucket, _, key = text.removeprefix("s3://").partition("/")
    if text and (not text.startswith("s3://") or not bucket or not key or key.endswith("/")):
        raise HyperparameterError(f"hyperparameter {name} must be an s3://bucket/key URI, got {value!r}")
    return text


def _parse_target_modules(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise HyperparameterError(
                f"hyperparameter target_modules is not a valid list: {value!r}"
            ) from None
    names = [str(v).strip() for v in value] if isinstance(value, list) else str(value).split(",")
    names = [n.strip() for n in names if n.strip()]
    if names == ["all-linear"]:
        return "all-linear"
    bad = [n for n in names if not MODULE_NAME.match(n) or n == "all-linear"]
    if not names or bad:
        raise HyperparameterError(
            "hyperparameter target_modules must be 'all-linear' or a comma-separated list of module names "
            f"(e.g. 'q_proj,v_proj'), got {value!r}"
        )
    return tuple(names)


def _parse_method(value: Any) -> str:
    method = str(value).strip().lower()
    if method not in METHODS:
        raise HyperparameterError(f"hyperparameter method must be one of {', '.join(METHODS)}, got {value!r}")
    return method


def _parse_beta(value: Any) -> float:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return DEFAULT_BETA
    return _parse_float("beta", value, minimum=0.0, maximum=MAX_BETA, minimum_inclusive=False)


def parse_hyperparameters(raw: Mapping[str, Any]) -> tuple[Hyperparameters, list[str]]:
    """Validate hyperparameters as SageMaker passes them (strings); return them and the names ignored."""
    known = {f.name for f in dataclasses.fields(Hyperparameters)} - {"given"}
    values = {name: unquote(value) for name, value in raw.items()}
    ignored = sorted(name for name in values if name not in known)
    given = {name: value for name, value in values.items() if name in known}
    defaults = Hyperparameters()

    def get(name: str) -> Any:
        return given.get(name, getattr(defaults, name))

    model_id = str(get("model_id")).strip()
    if not model_id:
        raise HyperparameterError("hyperparameter model_id must not be empty")
    lr_scheduler = str(get("lr_scheduler")).strip().lower()
    if lr_scheduler not in SUPPORTED_SCHEDULERS:
        raise HyperparameterError(
            f"hyperparameter lr_scheduler must be one of {', '.join(SUPPORTED_SCHEDULERS)}; "
            f"got {lr_scheduler!r}"
        )
    hp = Hyperparameters(
        model_id=model_id,
        n_epochs=_parse_int("n_epochs", get("n_epochs"), 1),
        batch_size=_parse_auto_int("batch_size", get("batch_size"), 1),
        tokens_per_step=_parse_auto_int("tokens_per_step", get("tokens_per_step"), 1),
        micro_batch_tokens=_parse_auto_int("micro_batch_tokens", get("micro_batch_tokens"), 2),
        learning_rate=_parse_float(
            "learning_rate", get("learning_rate"), minimum=0.0, minimum_inclusive=False
        ),
        lora_r=_parse_int("lora_r", get("lora_r"), 1),
        lora_alpha=_parse_int("lora_alpha", get("lora_alpha"), 1),
        lora_dropout=_parse_float("lora_dropout", get("lora_dropout"), minimum=0.0, maximum=0.99),
        target_modules=_parse_target_modules(get("target_modules")),
        max_seq_length=_parse_int("max_seq_length", get("max_seq_length"), 2),
        seed=_parse_int("seed", get("seed"), 0),
        logging_steps=_parse_int("logging_steps", get("logging_steps"), 1),
        gradient_accumulation_steps=_parse_int(
            "gradient_accumulation_steps", get("gradient_accumulation_steps"), 1
        ),
        warmup_ratio=_parse_float("warmup_ratio", get("warmup_ratio"), minimum=0.0, maximum=1.0),
        weight_decay=_parse_float("weight_decay", get("weight_decay"), minimum=0.0),
        lr_scheduler=lr_scheduler,
        validation_split=_parse_float("validation_split", get("validation_split"), minimum=0.0, maximum=0.5),
        gradient_checkpointing=_parse_auto_bool("gradient_checkpointing", get("gradient_checkpointing")),
        checkpoint_interval_s=_parse_float("checkpoint_interval_s", get("checkpoint_interval_s"), minimum=0.0),
        load_in_4bit=_parse_bool("load_in_4bit", get("load_in_4bit")),
        torch_compile=_parse_bool("torch_compile", get("torch_compile")),
        merge_adapter=_parse_bool("merge_adapter", get("merge_adapter")),
        merged_model_uri=_parse_s3_uri("merged_model_uri", get("merged_model_uri")),
        method=_parse_method(get("method")),
        beta=_parse_beta(get("beta")),
        given=frozenset(given),
    )
    if hp.micro_batch_tokens and hp.micro_batch_tokens < hp.max_seq_length:
        raise HyperparameterError(
            f"hyperparameter micro_batch_tokens ({hp.micro_batch_tokens}) must be at least max_seq_length "
            f"({hp.max_seq_length}): a row holds at least one whole example"
        )
    if hp.load_in_4bit and hp.merge_adapter:
        raise HyperparameterError(
            "merge_adapter cannot be combined with load_in_4bit (merging into 4-bit weights loses precision); "
            "merge the published adapter into the full-precision base model instead"
        )
    return hp, ignored


def read_hyperparameters_file(config_dir: Path) -> dict[str, Any]:
    path = config_dir / "hyperparameters.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HyperparameterError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise HyperparameterError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def parse_cli_overrides(argv: Sequence[str]) -> dict[str, str]:
    """Hyperparameters given as `--name value` or `--name=value` (script mode, local runs); they override
    hyperparameters.json. A leading `train`, which SageMaker passes to a training image, is ignored."""
    args = list(argv)
    if args[:1] == ["train"]:
        args = args[1:]
    overrides: dict[str, str] = {}
    index = 0
    while index < len(args):
        token = args[index]
        if not token.startswith("--") or len(token) == 2:
            raise HyperparameterError(f"unexpected command-line argument {token!r}; use --name value")
        name, sep, value = token[2:].partition("=")
        if not sep:
            if index + 1 >= len(args):
                raise HyperparameterError(f"missing value for command-line argument {token}")
            index += 1
            value = args[index]
        overrides[name.replace("-", "_")] = value
        index += 1
    return overrides
