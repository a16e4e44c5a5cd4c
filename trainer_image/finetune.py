"""SageMaker training entry point: LoRA fine-tuning of a causal LM on chat-format JSONL.

Runs as the container's ENTRYPOINT (SageMaker appends the argument `train`), in SageMaker script mode
(hyperparameters also arrive as `--name value` arguments), or locally:
`python finetune.py [--name value ...]`.

Contract (SageMaker training container; every path may be overridden by its environment variable):
  SM_INPUT_CONFIG_DIR   /opt/ml/input/config      hyperparameters.json: every value a string
  SM_CHANNEL_TRAIN      /opt/ml/input/data/train  one or more JSONL files (any name), read in sorted order
  SM_CHANNEL_VALIDATION (optional)                 same format; its loss is evaluated after every epoch
                                                   (none: hyperparameter validation_split holds out that
                                                   share of the train examples instead, chosen by the seed)
  SM_CHANNEL_MODEL      (optional)                 a base model + tokenizer saved with save_pretrained;
                                                   when present it is used instead of `model_id`
  SM_CHECKPOINT_DIR     /opt/ml/checkpoints       checkpoints at each epoch end and on SIGTERM; a run
                                                   restarted on the same data resumes from the newest
  SM_MODEL_DIR          /opt/ml/model             on success: the LoRA adapter, the tokenizer and
                                                   training_summary.json (nothing is written there otherwise);
                                                   with merge_adapter=true also merged/: base + adapter merged
  SM_OUTPUT_DATA_DIR    /opt/ml/output/data       metrics.jsonl, results.csv (step, train_loss, train_accuracy,
                                                   valid_loss, valid_mean_token_accuracy) and a copy of
                                                   training_summary.json
  SM_OUTPUT_DIR         /opt/ml/output            `failure`: the reason, when the run fails or is stopped

Data: one JSON object per line, in the platform's internal example form (what the files service normalises
every upload to), or OpenAI's chat line (the same as the first without "type"):
  {"type": "chat", "messages": [{"role": "system|user|assistant|tool", "content": "...", "weight": 0|1}, ...]}
      loss on assistant tokens only; `"weight": 0` leaves an assistant message out of the loss
  {"type": "text", "text": "..."}    continued pre-training: loss on every token (an end-of-text token added)
  {"type": "preference", ...}        needs DPO, which this trainer does not do: the run fails saying so

Stdout carries one line per logged step, JSON after a fixed prefix (SageMaker MetricDefinitions parse it):
  METRICS {"step": 3, "epoch": 0.5, "train_loss": 2.3104, "train_accuracy": 0.41, "learning_rate": 0.0002, ...}
with "valid_loss" and "valid_mean_token_accuracy" added on the step that ends an epoch when there is
validation data. A tokenizer without a chat template gets a ChatML fallback template.

GPU: bf16 (where supported) and SDPA attention. Options: gradient_checkpointing=true, load_in_4bit=true (QLoRA:
needs CUDA and bitsandbytes, imported only then; the run fails saying so when either is missing).

Exit status: 0 success, 1 failure (reason in `failure`), 143 stopped by SIGTERM/SIGINT (checkpoint kept,
no model published).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler, set_seed
from transformers.utils import logging as hf_logging

log = logging.getLogger("finetune")

METRICS_PREFIX = "METRICS "
ROLES = frozenset({"system", "user", "assistant", "tool"})
IGNORE_INDEX = -100
EXIT_FAILED = 1
EXIT_STOPPED = 128 + signal.SIGTERM  # 143, what a shell reports for a process ended by SIGTERM
FAILURE_REASON_LIMIT = 1024  # SageMaker truncates FailureReason to this length
MAX_GRAD_NORM = 1.0
SUPPORTED_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial",
    "constant", "constant_with_warmup", "inverse_sqrt",
)  # fmt: skip
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
MODULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
DEFAULT_MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"
MERGED_DIR = "merged"


# --------------------------------------------------------------------------------------------- errors


class TrainingError(Exception):
    """An expected failure: its message is the job's FailureReason."""

    exit_code = EXIT_FAILED


class HyperparameterError(TrainingError):
    pass


class DataError(TrainingError):
    pass


class ModelLoadError(TrainingError):
    pass


class TrainingStopped(TrainingError):
    exit_code = EXIT_STOPPED


# ---------------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    model_dir: Path
    output_data_dir: Path
    output_dir: Path
    input_config_dir: Path
    train_channel: Path
    validation_channel: Path | None
    model_channel: Path | None
    checkpoint_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Paths:
        input_dir = Path(env.get("SM_INPUT_DIR", "/opt/ml/input"))

        def optional_channel(name: str) -> Path | None:
            # A bring-your-own container gets no SM_CHANNEL_* variables: look where SageMaker mounts channels.
            value = env.get(f"SM_CHANNEL_{name.upper()}")
            if value:
                return Path(value)
            default = input_dir / "data" / name
            return default if default.is_dir() else None

        return cls(
            model_dir=Path(env.get("SM_MODEL_DIR", "/opt/ml/model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")),
            output_dir=Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output")),
            input_config_dir=Path(env.get("SM_INPUT_CONFIG_DIR", str(input_dir / "config"))),
            train_channel=Path(env.get("SM_CHANNEL_TRAIN", str(input_dir / "data" / "train"))),
            validation_channel=optional_channel("validation"),
            model_channel=optional_channel("model"),
            checkpoint_dir=Path(env.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints")),
        )


# ------------------------------------------------------------------------------------ hyperparameters


@dataclass(frozen=True)
class Hyperparameters:
    model_id: str = DEFAULT_MODEL_ID
    n_epochs: int = 3
    batch_size: int = 4
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
    gradient_checkpointing: bool = False
    load_in_4bit: bool = False  # QLoRA: needs CUDA and bitsandbytes
    merge_adapter: bool = False  # also save the base model with the adapter merged in, under merged/
    # Where the merged model goes as its own archive (s3://.../merged-model.tar.gz), so model.tar.gz stays the
    # small adapter; without it merged/ stays inside model.tar.gz.
    merged_model_uri: str = ""
    # Names the caller set explicitly (the rest are defaults); not a hyperparameter itself.
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "given"}
        if isinstance(self.target_modules, tuple):
            values["target_modules"] = list(self.target_modules)
        return values


def _unquote(value: Any) -> Any:
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


def parse_hyperparameters(raw: Mapping[str, Any]) -> tuple[Hyperparameters, list[str]]:
    """Validate hyperparameters as SageMaker passes them (strings); return them and the names ignored."""
    known = {f.name for f in dataclasses.fields(Hyperparameters)} - {"given"}
    values = {name: _unquote(value) for name, value in raw.items()}
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
        batch_size=_parse_int("batch_size", get("batch_size"), 1),
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
        gradient_checkpointing=_parse_bool("gradient_checkpointing", get("gradient_checkpointing")),
        load_in_4bit=_parse_bool("load_in_4bit", get("load_in_4bit")),
        merge_adapter=_parse_bool("merge_adapter", get("merge_adapter")),
        merged_model_uri=_parse_s3_uri("merged_model_uri", get("merged_model_uri")),
        given=frozenset(given),
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


# ----------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, Any]]
    source: str  # "file.jsonl:line", for error messages


@dataclass(frozen=True)
class TextDocument:
    """Plain text for continued pre-training: every token is a target."""

    text: str
    source: str


Example = Conversation | TextDocument
PREFERENCE_UNSUPPORTED = "preference data needs DPO, not supported by this trainer yet"


def _jsonl_files(channel: Path, channel_name: str) -> list[Path]:
    if not channel.is_dir():
        raise DataError(f"{channel_name} channel {channel} does not exist or is not a directory")
    # A channel holds whatever objects lie under its S3 prefix, named or not (the platform keys uploads by
    # id, with no extension), so every regular file counts; hidden ones (".part", ".DS_Store") do not.
    files = sorted((p for p in channel.rglob("*") if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.relative_to(channel))
    if not files:
        raise DataError(f"{channel_name} channel {channel} holds no data file")
    return files


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "a message is not a JSON object"
    role = message.get("role")
    if role not in ROLES:
        return f"role must be one of {', '.join(sorted(ROLES))}, got {role!r}"
    if not isinstance(message.get("content"), str):
        return f"{role} message content must be a string"
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            return f"weight must be 0 or 1, got {weight!r}"
        if role != "assistant":
            return f"weight is only allowed on assistant messages, found on a {role} message"
    return None


def _conversation_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        return 'each line must be an object with a non-empty "messages" list'
    messages = record["messages"]
    for message in messages:
        problem = _message_problem(message)
        if problem:
            return problem
    if messages[0]["role"] == "assistant":
        return "a conversation must not start with an assistant message"
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in messages):
        return "no assistant message to learn from (none, or all have weight 0)"
    return None


def _example(record: Any, source: str) -> Example | str:
    """The example a line holds, or what is wrong with it."""
    kind = record.get("type", "chat") if isinstance(record, dict) else None
    if kind == "text":
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            return "text must be a non-empty string"
        return TextDocument(text, source)
    if kind == "preference":
        raise DataError(f"{source}: {PREFERENCE_UNSUPPORTED}")
    if kind not in ("chat", None):
        return f"unknown example type {str(kind)[:40]!r}; expected chat or text"
    problem = _conversation_problem(record)
    return problem if problem else Conversation(record["messages"], source)


def load_conversations(channel: Path, channel_name: str) -> list[Example]:
    """Every example of the channel, or a DataError naming the first problems by file and line."""
    conversations: list[Example] = []
    problems: list[str] = []
    for path in _jsonl_files(channel, channel_name):
        try:
            # Lines end at "\n" only: splitlines() would also cut at U+2028 or U+0085, which JSON strings
            # may hold as they are.
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{source}: invalid JSON ({exc.msg})")
                continue
            example = _example(record, source)
            if isinstance(example, str):
                problems.append(f"{source}: {example}")
            else:
                conversations.append(example)
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"invalid {channel_name} data, {len(problems)} bad line(s): {shown}{more}")
    if not conversations:
        raise DataError(f"{channel_name} channel {channel} holds no examples (all files are empty)")
    return conversations


# ------------------------------------------------------------------------------------- tokenization


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class TokenizedSet:
    examples: list[TokenizedExample]
    truncated: int = 0
    dropped: int = 0  # nothing left to learn from after truncation

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def loss_tokens(self) -> int:
        return sum(e.loss_tokens for e in self.examples)


def has_generation_tags(tokenizer: Any) -> bool:
    return bool(GENERATION_TAG.search(tokenizer.get_chat_template()))


def _render(tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _message_char_spans(
    tokenizer: Any, messages: list[dict[str, Any]], text: str, indices: list[int]
) -> list[tuple[int, int]]:
    """Character span of each assistant message `i` in `text`: what rendering messages[:i+1] adds to rendering
    messages[:i] with the generation prompt (so the span holds the reply and its end-of-turn marker)."""
    spans = []
    for i in indices:
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1])
        if not through.startswith(before) or not text.startswith(through):
            raise DataError(
                "the base model's chat template renders earlier turns differently as the conversation grows, "
                "so assistant turns cannot be located; use a template with {% generation %} markers"
            )
        spans.append((len(before), len(through)))
    return spans


def _tokens_overlapping(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """1 for every token that overlaps a span (the rule transformers uses for its assistant mask)."""
    return [
        int(any(start < span_end and end > span_start for span_start, span_end in spans))
        for start, end in offsets
    ]


def assistant_token_mask(
    tokenizer: Any, messages: list[dict[str, Any]], *, use_generation_tags: bool
) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and a 0/1 mask of the assistant tokens that carry loss.

    With {% generation %} markers the template itself says which tokens are the assistant's; otherwise (and
    to leave out `weight: 0` messages) each assistant message is located by rendering growing prefixes.
    """
    template_messages = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    excluded = [i for i in assistant if messages[i].get("weight", 1) == 0]
    text = _render(tokenizer, template_messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    offsets = encoding["offset_mapping"]
    if use_generation_tags:
        tagged = tokenizer.apply_chat_template(
            template_messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        if (
            list(tagged["input_ids"]) != input_ids
        ):  # cannot happen unless transformers changes how it tokenizes
            raise DataError("apply_chat_template tokenized the conversation differently from the tokenizer")
        mask = list(tagged["assistant_masks"])
        if excluded:
            spans = _message_char_spans(tokenizer, template_messages, text, excluded)
            mask = [m * (1 - x) for m, x in zip(mask, _tokens_overlapping(offsets, spans), strict=True)]
    else:
        included = [i for i in assistant if i not in excluded]
        mask = _tokens_overlapping(offsets, _message_char_spans(tokenizer, template_messages, text, included))
    return input_ids, mask


def text_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """Token ids of a plain-text example, closed by the end-of-text token, every one of them a target."""
    input_ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None:
        input_ids.append(tokenizer.eos_token_id)
    return input_ids, [1] * len(input_ids)


def tokenize_conversations(
    tokenizer: Any, conversations: Sequence[Example], max_seq_length: int, *, use_generation_tags: bool
) -> TokenizedSet:
    result = TokenizedSet(examples=[])
    for conversation in conversations:
        try:
            if isinstance(conversation, TextDocument):
                input_ids, mask = text_tokens(tokenizer, conversation.text)
            else:
                input_ids, mask = assistant_token_mask(
                    tokenizer, conversation.messages, use_generation_tags=use_generation_tags
                )
        except DataError as exc:
            raise DataError(f"{conversation.source}: {exc}") from exc
        except Exception as exc:  # the chat template may raise on a message layout it does not support
            raise DataError(f"{conversation.source}: the chat template failed: {exc}") from exc
        if len(input_ids) > max_seq_length:
            result.truncated += 1
            input_ids, mask = input_ids[:max_seq_length], mask[:max_seq_length]
        labels = [token if keep else IGNORE_INDEX for token, keep in zip(input_ids, mask, strict=True)]
        # The first token is never a target; in a packed row it would otherwise be predicted from the end of
        # the previous example.
        labels[0] = IGNORE_INDEX
        example = TokenizedExample(input_ids, labels)
        if example.loss_tokens == 0:
            result.dropped += 1
        else:
            result.examples.append(example)
    return result


def dataset_fingerprint(*sets: TokenizedSet) -> str:
    digest = hashlib.sha256()
    for tokenized in sets:
        for example in tokenized.examples:
            digest.update(json.dumps([example.input_ids, example.labels]).encode())
        digest.update(b"|")
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class PackedBatch:
    """Several examples concatenated into one row; position ids restart at each example, which (with the
    cache off) keeps examples from attending to each other and wastes nothing on padding."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    tokens: int
    loss_tokens: int


def pack(examples: Sequence[TokenizedExample], device: torch.device) -> PackedBatch:
    input_ids: list[int] = []
    position_ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        input_ids += example.input_ids
        position_ids += range(len(example.input_ids))
        labels += example.labels
    return PackedBatch(
        input_ids=torch.tensor([input_ids], dtype=torch.long, device=device),
        position_ids=torch.tensor([position_ids], dtype=torch.long, device=device),
        labels=torch.tensor([labels], dtype=torch.long, device=device),
        tokens=len(input_ids),
        loss_tokens=sum(e.loss_tokens for e in examples),
    )


def split_validation(examples: Sequence[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): floor(share x n) examples picked by the seed, both keeping the file's order."""
    held = math.floor(len(examples) * share)
    if held <= 0:
        return list(examples), []
    picked = set(random.Random(seed).sample(range(len(examples)), held))  # noqa: S311 - sampling, not security
    return ([e for i, e in enumerate(examples) if i not in picked],
            [e for i, e in enumerate(examples) if i in picked])


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch, a pure function of (seed, epoch), so a resumed run sees the same."""
    order = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)  # noqa: S311 - shuffling, not security
    return order


def epoch_steps(
    examples: Sequence[TokenizedExample], hp: Hyperparameters, epoch: int
) -> list[list[list[TokenizedExample]]]:
    """The optimizer steps of one epoch: each a list of micro-batches, each a list of examples."""
    order = epoch_order(len(examples), hp.seed, epoch)
    micro = [[examples[i] for i in order[s : s + hp.batch_size]] for s in range(0, len(order), hp.batch_size)]
    accumulate = hp.gradient_accumulation_steps
    return [micro[s : s + accumulate] for s in range(0, len(micro), accumulate)]


def steps_per_epoch(n_examples: int, hp: Hyperparameters) -> int:
    return math.ceil(math.ceil(n_examples / hp.batch_size) / hp.gradient_accumulation_steps)


def loss_and_correct(model: Any, batch: PackedBatch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's loss tokens (normalised by the caller, across accumulation) and
    how many of those tokens the model predicts exactly (argmax), for token accuracy."""
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    flat_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    targets = batch.labels[:, 1:].reshape(-1)
    loss = F.cross_entropy(flat_logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        keep = targets != IGNORE_INDEX
        correct = int((flat_logits.argmax(dim=-1)[keep] == targets[keep]).sum().item())
    return loss, correct


def loss_sum(model: Any, batch: PackedBatch) -> torch.Tensor:
    """Summed cross-entropy over the batch's loss tokens."""
    return loss_and_correct(model, batch)[0]


@torch.no_grad()
def evaluate(
    model: Any, examples: Sequence[TokenizedExample], batch_size: int, device: torch.device
) -> tuple[float, float]:
    """(mean loss, token accuracy) over the loss tokens of `examples`."""
    model.eval()
    total, correct, tokens = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = pack(examples[start : start + batch_size], device)
        loss, hits = loss_and_correct(model, batch)
        total += loss.item()
        correct += hits
        tokens += batch.loss_tokens
    model.train()
    return total / tokens, correct / tokens


# ------------------------------------------------------------------------------------------- signals


class StopSignal:
    """SIGTERM (StopTrainingJob, spot interruption) or SIGINT.

    Inside the training loop the signal only sets a flag, checked after every optimizer step so that a
    checkpoint can be written; elsewhere it interrupts at once.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self.deferred = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = signal.Signals(signum).name
        if not self.deferred:
            raise TrainingStopped(f"Training stopped by {self.received}; no model was published")


# --------------------------------------------------------------------------------------- checkpoints

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_STATE = "trainer_state.json"
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"


@dataclass
class Progress:
    step: int = 0
    trained_tokens: int = 0
    last_train_loss: float | None = None
    last_valid_loss: float | None = None
    last_valid_accuracy: float | None = None


def save_checkpoint(
    directory: Path, progress: Progress, fingerprint: str, model: Any, optimizer: Any, scheduler: Any
) -> Path:
    """Write into a temp folder, then rename: a checkpoint folder that exists is complete."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{progress.step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        adapter = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
        save_file(adapter, str(staging / ADAPTER_FILE))
        torch.save(optimizer.state_dict(), staging / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), staging / SCHEDULER_FILE)
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, staging / RNG_FILE)
        state = {"fingerprint": fingerprint, **dataclasses.asdict(progress)}
        (staging / CHECKPOINT_STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for older in directory.glob(f"{CHECKPOINT_PREFIX}*"):
        if older != final and older.is_dir():
            shutil.rmtree(older, ignore_errors=True)
    return final


def load_checkpoint(
    directory: Path, fingerprint: str, model: Any, optimizer: Any, scheduler: Any
) -> Progress | None:
    """Restore the newest checkpoint of this very run (same data and hyperparameters), if one is usable."""
    if not directory.is_dir():
        return None
    for stale in directory.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for candidate in sorted(directory.glob(f"{CHECKPOINT_PREFIX}*"), reverse=True):
        try:
            state = json.loads((candidate / CHECKPOINT_STATE).read_text(encoding="utf-8"))
            if state.get("fingerprint") != fingerprint:
                log.warning("ignoring checkpoint %s: it belongs to other data or hyperparameters", candidate)
                continue
            adapter = load_file(str(candidate / ADAPTER_FILE))
            optimizer_state = torch.load(candidate / OPTIMIZER_FILE, weights_only=True)
            scheduler_state = torch.load(candidate / SCHEDULER_FILE, weights_only=True)
            rng = torch.load(candidate / RNG_FILE, weights_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            log.warning("ignoring unreadable checkpoint %s: %s", candidate, exc)
            continue
        set_peft_model_state_dict(model, adapter)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        fields = {f.name for f in dataclasses.fields(Progress)}
        return Progress(**{k: v for k, v in state.items() if k in fields})
    return None


# ------------------------------------------------------------------------------------------- model


def publish_merged_model(merged_dir: Path, uri: str, scratch: Path, client: Any = None) -> None:
    """Pack the merged model as merged-model.tar.gz (its files at the archive's root, as model.tar.gz holds the
    adapter's) and upload it to `uri` with the job's own credentials (SageMaker's execution role; the local
    emulator passes its endpoint). boto3's upload_file sends big archives in parallel multipart parts."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    with tempfile.TemporaryDirectory(dir=scratch if scratch.is_dir() else None) as tmp:
        archive = Path(tmp) / "merged-model.tar.gz"
        with tarfile.open(archive, "w:gz", compresslevel=1) as tar:  # weights barely compress: favour speed
            for path in sorted(merged_dir.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(merged_dir)))
        if client is None:
            import boto3  # only merging jobs need it

            client = boto3.client("s3")
        try:
            client.upload_file(str(archive), bucket, key)
        except Exception as exc:
            raise RuntimeError(f"cannot upload the merged model to {uri}: {exc}") from exc
        log.info("merged model uploaded to %s (%d bytes)", uri, archive.stat().st_size)


HF_TOKEN_SECRET_PARAM = "hf_token_secret"  # noqa: S105 - the hyperparameter's name, not a secret


def fetch_hf_token(secret_id: str | None, client: Any = None) -> str | None:
    """The Hugging Face token for gated models, read from AWS Secrets Manager at start: only the secret's
    name or ARN travels with the job (hyperparameter `hf_token_secret`), never the token. The secret holds
    the token itself or JSON with "HF_TOKEN" (or "token")."""
    if not secret_id:
        return None
    try:
        if client is None:
            import boto3  # only jobs that need a token need boto3

            # An ARN names its region; else the job's own (SageMaker sets AWS_REGION in the container).
            region = secret_id.split(":")[3] if secret_id.startswith("arn:") else os.environ.get("AWS_REGION")
            client = boto3.client("secretsmanager", **({"region_name": region} if region else {}))
        response = client.get_secret_value(SecretId=secret_id)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read the Hugging Face token from Secrets Manager secret {secret_id}: {exc}"
        ) from exc
    text = (response.get("SecretString") or response.get("SecretBinary", b"").decode("utf-8", "replace")).strip()
    token: Any = text
    if text.startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = {}
        if not isinstance(values, dict):
            values = {}
        token = values.get("HF_TOKEN") or values.get("hf_token") or values.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ModelLoadError(f"Secrets Manager secret {secret_id} holds no Hugging Face token")
    return token.strip()


def use_hf_token(token: str | None) -> None:
    """The Hub client reads HF_TOKEN at each download: set in this process only, never in the job's config."""
    if token:
        os.environ["HF_TOKEN"] = token
        log.info("Hugging Face token read from Secrets Manager")


def resolve_model_source(paths: Paths, hp: Hyperparameters, scratch: Path) -> str:
    """The folder or Hub id to load the base model from: the model channel when there is one."""
    channel = paths.model_channel
    if channel is None:
        return hp.model_id
    if not channel.is_dir():
        raise ModelLoadError(f"model channel {channel} is not a directory")
    for candidate in (channel, *sorted(p for p in channel.iterdir() if p.is_dir())):
        if (candidate / "config.json").is_file():
            return str(candidate)
    archives = sorted(channel.glob("*.tar.gz"))
    if len(archives) == 1:  # a SageMaker model artifact (model.tar.gz) passed as the channel
        target = scratch / "base-model"
        with tarfile.open(archives[0]) as archive:
            archive.extractall(target, filter="data")
        for candidate in (target, *sorted(p for p in target.iterdir() if p.is_dir())):
            if (candidate / "config.json").is_file():
                return str(candidate)
    raise ModelLoadError(
        f"model channel {channel} holds no config.json (a folder written by save_pretrained)"
    )


def pick_device() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        # Older GPUs (T4, V100) lack bf16; fp16 would need loss scaling, so they train in fp32.
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.device("cpu"), torch.float32


# Used when the base model's tokenizer has none (a base, not instruct, model): ChatML turns, with the
# assistant's reply and its end marker inside {% generation %} so the loss mask comes from the template; no
# separator after the end marker, so the prefix-rendering method finds the same spans.
FALLBACK_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def load_tokenizer(source: str) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"the tokenizer of {source} is not a fast tokenizer; token offsets are needed")
    if not tokenizer.chat_template:
        log.warning("the tokenizer of %s has no chat template; using a ChatML fallback template", source)
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def _quantization_config(device: torch.device, dtype: torch.dtype) -> Any:
    """QLoRA's 4-bit NF4 config; bitsandbytes is imported only here, when load_in_4bit asks for it."""
    if device.type != "cuda":
        raise HyperparameterError("load_in_4bit (QLoRA) needs a CUDA GPU; none is available")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise HyperparameterError(
            "load_in_4bit (QLoRA) needs the bitsandbytes package, which is not installed in this image"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


def load_model(source: str, hp: Hyperparameters, device: torch.device, dtype: torch.dtype) -> Any:
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device.type == "cuda":
        kwargs["attn_implementation"] = "sdpa"  # flash/memory-efficient kernels; packed rows via position ids
    if hp.load_in_4bit:
        kwargs["quantization_config"] = _quantization_config(device, dtype)
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the base model {source}: {exc}") from exc
    model.config.use_cache = False  # packed rows rely on position ids, which the cache path ignores
    if hp.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=hp.gradient_checkpointing)
    else:
        model.to(device)
        if hp.gradient_checkpointing:
            # transformers 5 renamed it activation_checkpointing_enable; the old name warns.
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()  # the frozen embeddings' output must carry grad for LoRA
    # Seeded right before the adapter is created: that is what makes LoRA's initial weights reproducible.
    set_seed(hp.seed)
    target = hp.target_modules if isinstance(hp.target_modules, str) else list(hp.target_modules)
    config = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=target,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules that the model does not have
        raise HyperparameterError(f"cannot add the LoRA adapter: {exc}") from exc


# --------------------------------------------------------------------------------------------- loop


RESULTS_CSV = "results.csv"
RESULTS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def emit_metrics(record: dict[str, Any], sink: Path) -> None:
    """A METRICS line on stdout, a line of metrics.jsonl and a row of results.csv (beside it)."""
    line = json.dumps(record)
    print(METRICS_PREFIX + line, flush=True)
    with sink.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
    results = sink.parent / RESULTS_CSV
    new = not results.exists()
    with results.open("a", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        if new:
            writer.writerow(RESULTS_COLUMNS)
        writer.writerow(["" if record.get(name) is None else record[name] for name in RESULTS_COLUMNS])


@dataclass
class TrainingRun:
    hp: Hyperparameters
    paths: Paths
    model: Any
    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    device: torch.device
    fingerprint: str
    stop: StopSignal

    def iterate(
        self, total_steps: int, per_epoch: int, start: int
    ) -> Iterator[tuple[int, int, list[list[TokenizedExample]]]]:
        """(global step, epoch, micro-batches) from step `start` + 1 on."""
        for epoch in range(start // per_epoch, self.hp.n_epochs):
            steps = epoch_steps(self.train, self.hp, epoch)
            for index, micro_batches in enumerate(steps):
                step = epoch * per_epoch + index + 1
                if start < step <= total_steps:
                    yield step, epoch, micro_batches

    def run(self, metrics_sink: Path) -> Progress:
        hp = self.hp
        per_epoch = steps_per_epoch(len(self.train), hp)
        total_steps = per_epoch * hp.n_epochs
        optimizer = torch.optim.AdamW(self._trainable(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        scheduler = get_scheduler(
            hp.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(hp.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )

        def checkpoint() -> Path:
            return save_checkpoint(
                self.paths.checkpoint_dir, progress, self.fingerprint, self.model, optimizer, scheduler
            )

        resumed = load_checkpoint(
            self.paths.checkpoint_dir, self.fingerprint, self.model, optimizer, scheduler
        )
        progress = resumed or Progress()
        if resumed:
            log.info("resuming from the checkpoint at step %d/%d", progress.step, total_steps)

        self.model.train()
        window_loss, window_tokens, window_correct = 0.0, 0, 0
        self.stop.deferred = True
        for step, epoch, micro_batches in self.iterate(total_steps, per_epoch, progress.step):
            learning_rate = scheduler.get_last_lr()[0]
            step_loss, step_loss_tokens, step_tokens, step_correct = self._optimizer_step(
                micro_batches, step, optimizer
            )
            scheduler.step()
            progress.step = step
            progress.trained_tokens += step_tokens
            window_loss += step_loss
            window_tokens += step_loss_tokens
            window_correct += step_correct

            epoch_done = step % per_epoch == 0
            evaluated = epoch_done and bool(self.validation)
            if step % hp.logging_steps == 0 or step == total_steps or evaluated:
                progress.last_train_loss = round(window_loss / window_tokens, 4)
                record = {
                    "step": step,
                    "epoch": round(step / per_epoch, 4),
                    "train_loss": progress.last_train_loss,
                    "train_accuracy": round(window_correct / window_tokens, 4),
                    "learning_rate": float(f"{learning_rate:.6g}"),
                    "total_steps": total_steps,
                    "trained_tokens": progress.trained_tokens,
                }
                if evaluated:
                    valid_loss, valid_accuracy = evaluate(self.model, self.validation, hp.batch_size, self.device)
                    progress.last_valid_loss = record["valid_loss"] = round(valid_loss, 4)
                    progress.last_valid_accuracy = record["valid_mean_token_accuracy"] = round(valid_accuracy, 4)
                emit_metrics(record, metrics_sink)
                window_loss, window_tokens, window_correct = 0.0, 0, 0
            if epoch_done:
                log.info("epoch %d/%d done at step %d", epoch + 1, hp.n_epochs, step)
            if self.stop.received:
                raise TrainingStopped(
                    f"Training stopped by {self.stop.received} at step {step}/{total_steps}; "
                    f"checkpoint saved to {checkpoint()}; no model was published"
                )
            if epoch_done:  # the last one too: a restart after the final step publishes without retraining
                checkpoint()
        self.stop.deferred = False
        if self.stop.received:  # arrived after the last step's check
            raise TrainingStopped(f"Training stopped by {self.stop.received}; no model was published")
        return progress

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _optimizer_step(
        self, micro_batches: list[list[TokenizedExample]], step: int, optimizer: torch.optim.Optimizer
    ) -> tuple[float, int, int, int]:
        """Forward and backward over the micro-batches, then one update. Returns the summed loss, the
        number of loss tokens, the number of tokens and the number of loss tokens predicted exactly. The loss
        is normalised over the whole step, so gradient accumulation gives the same update as one large batch."""
        batches = [pack(examples, self.device) for examples in micro_batches]
        loss_tokens = sum(b.loss_tokens for b in batches)
        total, correct = 0.0, 0
        for batch in batches:
            loss, hits = loss_and_correct(self.model, batch)
            (loss / loss_tokens).backward()
            total += loss.item()
            correct += hits
        if not math.isfinite(total):
            raise TrainingError(f"the training loss became {total} at step {step}; lower the learning rate")
        torch.nn.utils.clip_grad_norm_(self._trainable(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total, loss_tokens, sum(b.tokens for b in batches), correct


# ---------------------------------------------------------------------------------------------- main


def write_failure(paths: Paths, reason: str) -> None:
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        (paths.output_dir / "failure").write_text(reason[:FAILURE_REASON_LIMIT], encoding="utf-8")
    except OSError as exc:
        log.error("could not write the failure file in %s: %s", paths.output_dir, exc)


def _log_data(name: str, tokenized: TokenizedSet, hp: Hyperparameters) -> None:
    log.info(
        "%s data: %d examples, %d tokens, %d assistant (loss) tokens",
        name, len(tokenized.examples), tokenized.tokens, tokenized.loss_tokens,
    )  # fmt: skip
    if tokenized.truncated:
        log.warning("%s data: %d examples longer than max_seq_length=%d were truncated",
                    name, tokenized.truncated, hp.max_seq_length)  # fmt: skip
    if tokenized.dropped:
        log.warning("%s data: %d examples dropped: no assistant token left within max_seq_length=%d",
                    name, tokenized.dropped, hp.max_seq_length)  # fmt: skip


def train(paths: Paths, overrides: Mapping[str, str], stop: StopSignal) -> dict[str, Any]:
    started = time.monotonic()
    raw_hyperparameters = {**read_hyperparameters_file(paths.input_config_dir), **overrides}
    hp, ignored = parse_hyperparameters(raw_hyperparameters)
    ignored = [name for name in ignored if name != HF_TOKEN_SECRET_PARAM]
    use_hf_token(fetch_hf_token(str(_unquote(raw_hyperparameters.get(HF_TOKEN_SECRET_PARAM) or "")) or None))
    if ignored:
        log.warning("ignoring unknown hyperparameters: %s", ", ".join(ignored))
    log.info("hyperparameters: %s", json.dumps(hp.as_dict()))

    train_conversations = load_conversations(paths.train_channel, "train")
    validation_conversations = (
        load_conversations(paths.validation_channel, "validation") if paths.validation_channel else []
    )
    if hp.validation_split > 0:
        if validation_conversations:
            log.warning("validation_split ignored: the validation channel is the validation set")
        else:
            train_conversations, validation_conversations = split_validation(
                train_conversations, hp.validation_split, hp.seed
            )
            log.info("validation_split %g: %d examples held out", hp.validation_split,
                     len(validation_conversations))
    with tempfile.TemporaryDirectory(prefix="finetune-") as scratch:
        source = resolve_model_source(paths, hp, Path(scratch))
        device, dtype = pick_device()
        log.info("base model: %s (device %s, %s)", source, device, str(dtype).removeprefix("torch."))
        tokenizer = load_tokenizer(source)
        use_generation_tags = has_generation_tags(tokenizer)
        mask_method = "generation_tags" if use_generation_tags else "prefix_rendering"
        log.info("assistant tokens located by %s", mask_method.replace("_", " "))

        train_set = tokenize_conversations(
            tokenizer, train_conversations, hp.max_seq_length, use_generation_tags=use_generation_tags
        )
        validation_set = tokenize_conversations(
            tokenizer, validation_conversations, hp.max_seq_length, use_generation_tags=use_generation_tags
        )
        _log_data("train", train_set, hp)
        if not train_set.examples:
            raise DataError(
                f"no training example keeps an assistant token within max_seq_length={hp.max_seq_length}"
            )
        if validation_conversations:
            _log_data("validation", validation_set, hp)

        model = load_model(source, hp, device, dtype)
    trainable, total = model.get_nb_trainable_parameters()
    log.info(
        "LoRA adapter: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total
    )

    base_model = hp.model_id if paths.model_channel is None or "model_id" in hp.given else source
    fingerprint = hashlib.sha256(
        json.dumps([hp.as_dict(), base_model, dataset_fingerprint(train_set, validation_set)]).encode()
    ).hexdigest()
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    metrics_sink = paths.output_data_dir / "metrics.jsonl"
    run = TrainingRun(
        hp, paths, model, train_set.examples, validation_set.examples, device, fingerprint, stop
    )
    progress = run.run(metrics_sink)

    # The adapter records where its base model came from: name the model, not the container's channel path.
    model.peft_config["default"].base_model_name_or_path = base_model
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(paths.model_dir)
    tokenizer.save_pretrained(paths.model_dir)
    if hp.merge_adapter:
        merged_dir = paths.model_dir / MERGED_DIR
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        log.info("merged model saved to %s", merged_dir)
        if hp.merged_model_uri:
            publish_merged_model(merged_dir, hp.merged_model_uri, paths.model_dir.parent)
            shutil.rmtree(merged_dir)
    summary = {
        "status": "completed",
        "base_model": base_model,
        "base_model_source": "model_channel" if paths.model_channel else "model_id",
        "hyperparameters": hp.as_dict(),
        "ignored_hyperparameters": ignored,
        "examples": len(train_set.examples),
        "validation_examples": len(validation_set.examples),
        "truncated_examples": train_set.truncated,
        "dropped_examples": train_set.dropped,
        "tokens_per_epoch": train_set.tokens,
        "assistant_tokens_per_epoch": train_set.loss_tokens,
        "trained_tokens": progress.trained_tokens,
        "steps": progress.step,
        "epochs": hp.n_epochs,
        "final_train_loss": progress.last_train_loss,
        "final_valid_loss": progress.last_valid_loss,
        "final_valid_mean_token_accuracy": progress.last_valid_accuracy,
        "merged_model": (hp.merged_model_uri or MERGED_DIR) if hp.merge_adapter else None,
        "mask_method": mask_method,
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "duration_s": round(time.monotonic() - started, 2),
    }
    text = json.dumps(summary, indent=2) + "\n"
    (paths.model_dir / "training_summary.json").write_text(text, encoding="utf-8")
    (paths.output_data_dir / "training_summary.json").write_text(text, encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    # peft calls a transformers method that transformers 5 renamed; the warning is noise in the job log.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    paths = Paths.from_env(os.environ)
    with contextlib.suppress(OSError):  # left by an earlier attempt of a restarted job
        (paths.output_dir / "failure").unlink(missing_ok=True)
    stop = StopSignal()
    stop.install()
    log.info("fine-tune starting (torch %s)", torch.__version__)
    try:
        summary = train(paths, parse_cli_overrides(argv), stop)
    except TrainingError as exc:
        log.error("%s", exc)
        write_failure(paths, str(exc))
        return exc.exit_code
    except Exception as exc:
        traceback.print_exc()
        write_failure(paths, f"unexpected error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    log.info(
        "done: %d steps, final train loss %s, %.1f s; adapter saved to %s",
        summary["steps"], summary["final_train_loss"], summary["duration_s"], paths.model_dir,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
