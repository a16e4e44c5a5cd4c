"""The model: loading it, rendering a chat with its own template, the one decode loop, scoring, and LoRA
adapters (peft) switched per request.

Every method that touches the model runs on the scheduler's single generation thread, so a request's
adapter choice cannot change under another request's feet. `prepare` only reads the tokenizer and may run
anywhere.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .chat_request import ChatRequest, InvalidRequest
from .decoding import TextAssembler, pick_token

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 512  # when a request gives no max_tokens: until the context is full, at most this


class UnknownAdapter(Exception):
    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"Adapter {name!r} is not loaded on this server.")
        self.message = str(self)


@dataclass(frozen=True)
class Prepared:
    """A request checked against the model: its prompt tokens and the completion budget."""

    request: ChatRequest
    adapter: str | None
    prompt_ids: list[int]
    max_new_tokens: int


@dataclass(frozen=True)
class Piece:
    """A step of a generation: new text (maybe empty), and on the last piece the finish reason."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None


class Engine:
    def __init__(self, model: Any, tokenizer: Any, context_length: int) -> None:
        self._base, self.tokenizer, self.context_length = model, tokenizer, context_length
        self._peft: Any = None  # a PeftModel around the base while at least one adapter is loaded
        # `prepare` runs beside the generation thread; the Rust tokenizer refuses concurrent mutable use.
        self._tokenizer_lock = threading.Lock()
        eos = model.generation_config.eos_token_id
        self._eos = {t for t in ([eos] if isinstance(eos, int) else eos or []) if t is not None}
        if tokenizer.eos_token_id is not None:
            self._eos.add(tokenizer.eos_token_id)
        # The loop reads only the last position's logits: asking for those alone spares the prefill the output
        # layer over the whole prompt (with a 150k vocabulary, more than the layers' own work on a small model).
        # transformers' generate does the same where the model's forward takes it.
        self._last_logits = ({"logits_to_keep": 1}
                             if "logits_to_keep" in inspect.signature(model.forward).parameters else {})

    @classmethod
    def load(cls, model_dir: str, max_model_len: int | None = None) -> Engine:
        """`model_dir`: a save_pretrained folder (or, on a real machine, a Hub id)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.eval()
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"{model_dir}: the tokenizer has no chat template; a chat server needs one")
        context = int(getattr(model.config, "max_position_embeddings", 0) or tokenizer.model_max_length)
        if max_model_len:
            context = min(context, max_model_len)
        log.info("model loaded", extra={"model": model_dir, "context_length": context})
        return cls(model, tokenizer, context)

    # --- requests ------------------------------------------------------------------------------------

    def prepare(self, request: ChatRequest, adapter: str | None) -> Prepared:
        """The prompt as the model's chat template renders it, and the 400s a request can earn before it
        queues: an unknown adapter, a conversation the template refuses, a prompt beyond the context."""
        if adapter is not None and adapter not in self.adapters():
            raise UnknownAdapter(adapter)
        if request.score:
            ids = self._render(request.messages[:-1], add_generation_prompt=True)
            total = len(ids) + len(self._answer_ids(request.messages))
            if total > self.context_length:
                raise InvalidRequest(self._too_long_message(total))
            return Prepared(request, adapter, ids, 0)
        ids = self._render(request.messages, add_generation_prompt=True)
        prompt, ctx = len(ids), self.context_length
        if request.max_tokens is not None:
            if prompt + request.max_tokens > ctx:
                raise InvalidRequest(
                    f"This model's maximum context length is {ctx} tokens. However, you requested "
                    f"{prompt + request.max_tokens} tokens ({prompt} in the messages, {request.max_tokens} in "
                    "the completion). Please reduce the length of the messages or completion.")
            return Prepared(request, adapter, ids, request.max_tokens)
        if prompt >= ctx:
            raise InvalidRequest(self._too_long_message(prompt))
        return Prepared(request, adapter, ids, min(DEFAULT_MAX_NEW_TOKENS, ctx - prompt))

    def generate(self, prepared: Prepared, cancelled: Callable[[], bool]) -> Iterator[Piece]:
        """THE decode loop (a KV cache, one token per step), for streamed and plain answers alike."""
        request = prepared.request
        generator = None
        if request.temperature > 0:
            generator = torch.Generator()
            if request.seed is None:
                generator.seed()
            else:
                generator.manual_seed(request.seed)
        text = TextAssembler(self._decode, request.stop)
        tokens: list[int] = []
        with self._selected(prepared.adapter) as model, torch.inference_mode():
            out = model(input_ids=torch.tensor([prepared.prompt_ids]), use_cache=True, **self._last_logits)
            while not cancelled():
                token = pick_token(out.logits[0, -1], request.temperature, request.top_p, generator)
                tokens.append(token)
                if token in self._eos:
                    yield Piece(text.rest(), len(tokens), "eos_token")
                    return
                delta, stopped = text.add(tokens)
                if stopped:
                    yield Piece(delta, len(tokens), "stop_sequence")
                    return
                if len(tokens) >= prepared.max_new_tokens:
                    yield Piece(delta + text.rest(), len(tokens), "length")
                    return
                if delta:
                    yield Piece(delta, len(tokens))
                out = model(input_ids=torch.tensor([[token]]), cache=out.cache, use_cache=True)

    def score(self, prepared: Prepared) -> dict[str, Any]:
        """The local `llmt_score` extension: mean token NLL of the final assistant message, as its template
        renders it (content and end-of-turn), given the conversation before it."""
        answer = self._answer_ids(prepared.request.messages)
        ids = torch.tensor([prepared.prompt_ids + answer])
        with self._selected(prepared.adapter) as model, torch.inference_mode():
            logits = model(input_ids=ids).logits[0, len(prepared.prompt_ids) - 1:-1]
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(answer))
        return {"object": "llmt.score", "loss": float(loss), "tokens": len(answer)}

    # --- adapters --------------------------------------------------------------------------------------

    def adapters(self) -> list[str]:
        return sorted(self._peft.peft_config) if self._peft is not None else []

    def load_adapter(self, name: str, path: str) -> None:
        """A PEFT adapter directory (adapter_config.json + weights), under `name`. Loading a name again
        replaces it."""
        from peft import PeftModel

        if not (Path(path) / "adapter_config.json").is_file():
            raise InvalidRequest(f"{path} holds no adapter_config.json: not a PEFT adapter directory")
        if name in self.adapters():
            self.unload_adapter(name)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._base, path, adapter_name=name)
            self._peft.eval()
        else:
            self._peft.load_adapter(path, adapter_name=name)
        log.info("adapter loaded", extra={"adapter": name, "path": path})

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters():
            raise UnknownAdapter(name)
        if self.adapters() == [name]:  # peft cannot delete its last adapter and still run the base
            self._base = self._peft.unload()
            self._peft = None
        else:
            with warnings.catch_warnings():  # "adapter X was active ... setting another": expected here
                warnings.simplefilter("ignore", UserWarning)
                self._peft.delete_adapter(name)
        log.info("adapter unloaded", extra={"adapter": name})

    # --- helpers -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _selected(self, adapter: str | None) -> Iterator[Any]:
        if adapter is not None:
            if adapter not in self.adapters():  # unloaded while the request waited
                raise UnknownAdapter(adapter)
            self._peft.set_adapter(adapter)
            yield self._peft
        elif self._peft is not None:
            with self._peft.disable_adapter():
                yield self._peft
        else:
            yield self._base

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
        from jinja2 import TemplateError

        try:
            with self._tokenizer_lock:
                ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                         tokenize=True, return_dict=False)
        except TemplateError as exc:  # e.g. a template that refuses a role or an order of roles
            raise InvalidRequest(f"The model's chat template refused the messages: {exc}") from exc
        return list(ids)

    def _answer_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens the final assistant message adds to the rendered conversation."""
        before = self._render(messages[:-1], add_generation_prompt=True)
        whole = self._render(messages, add_generation_prompt=False)
        if whole[:len(before)] == before and len(whole) > len(before):
            return whole[len(before):]
        with self._tokenizer_lock:
            answer = self.tokenizer.encode(messages[-1]["content"], add_special_tokens=False)
        return [*answer, self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else answer

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _too_long_message(self, tokens: int) -> str:
        return (f"This model's maximum context length is {self.context_length} tokens. However, your messages "
                f"resulted in {tokens} tokens. Please reduce the length of the messages.")


def configure_torch_threads(threads: int | None = None) -> int:
    """A CPU server shares the machine: GENERATION_SERVER_TORCH_THREADS, else OMP_NUM_THREADS, else 2."""
    count = threads or int(os.environ.get("GENERATION_SERVER_TORCH_THREADS")
                           or os.environ.get("OMP_NUM_THREADS") or 2)
    torch.set_num_threads(max(1, count))
    return torch.get_num_threads()
