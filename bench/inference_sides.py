"""The two sides bench.inference compares, each generating from the same messages, greedy, one request at a time:

- `GatewaySide`: the official `openai` SDK against the gateway (gateway -> inference -> SageMaker runtime in the
  emulator -> the generation server), a plain request or a streamed one;
- `InProcessSide`: plain transformers in the bench's own process, `model.generate` from the same folder of
  weights, in the same dtype (fp32) and with the same number of torch threads as the server, its KV cache on;
  the chat template rendered and tokenized inside the timing, as the server does it inside its own.

Each returns a `Generation`: its seconds, its completion tokens (the server's usage, or the tokens generate
added, an end-of-turn token counted on both sides alike), its text, and for a streamed one the seconds to the
first token's text.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Mismatch(RuntimeError):
    """The two sides did not generate the same thing, so their speeds would not compare."""


@dataclass(frozen=True)
class Generation:
    seconds: float
    tokens: int
    text: str
    first_token_s: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


class GatewaySide:
    def __init__(self, client: Any, model: str, messages: list[dict[str, str]], max_tokens: int) -> None:
        self.client, self.model, self.messages, self.max_tokens = client, model, messages, max_tokens

    def plain(self) -> Generation:
        started = time.perf_counter()
        completion = self.client.chat.completions.create(model=self.model, messages=self.messages, temperature=0,
                                                         max_tokens=self.max_tokens)
        seconds = time.perf_counter() - started
        return Generation(seconds, completion.usage.completion_tokens, completion.choices[0].message.content or "")

    def streamed(self) -> Generation:
        """Time to the first chunk that carries content (the role-only chunk, if any, does not count)."""
        started = time.perf_counter()
        stream = self.client.chat.completions.create(model=self.model, messages=self.messages, temperature=0,
                                                     max_tokens=self.max_tokens, stream=True,
                                                     stream_options={"include_usage": True})
        first: float | None = None
        parts: list[str] = []
        tokens = 0
        for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.delta.content:
                    if first is None:
                        first = time.perf_counter() - started
                    parts.append(choice.delta.content)
        return Generation(time.perf_counter() - started, tokens, "".join(parts), first)

    def concurrent(self, clients: int) -> tuple[float, list[Generation]]:
        """`clients` plain requests sent at once: (the wall seconds until the last answer, the answers)."""
        with ThreadPoolExecutor(clients) as pool:
            started = time.perf_counter()
            answers = list(pool.map(lambda _: self.plain(), range(clients)))
            return time.perf_counter() - started, answers


class InProcessSide:
    def __init__(self, model_dir: Path, threads: int, messages: list[dict[str, str]], max_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.messages, self.max_tokens = messages, max_tokens

    def generate(self) -> Generation:
        import torch

        clock = FirstTokenClock()
        clock.started = time.perf_counter()
        inputs: Any = self.tokenizer.apply_chat_template(self.messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False, use_cache=True,
                                      streamer=clock)
        seconds = time.perf_counter() - clock.started
        new = out[0, inputs["input_ids"].shape[1]:]
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        return Generation(seconds, int(new.shape[0]), text, clock.first_s)

    def prompt_tokens(self) -> int:
        return len(self.tokenizer.apply_chat_template(self.messages, add_generation_prompt=True, tokenize=True,
                                                      return_dict=False))


class FirstTokenClock:
    """A transformers streamer (put/end) that notes when generate hands over its first new token: its first
    put is the prompt, its second the first token."""

    def __init__(self) -> None:
        self.started = 0.0
        self.first_s: float | None = None
        self._puts = 0

    def put(self, value: Any) -> None:
        self._puts += 1
        if self._puts == 2:
            self.first_s = time.perf_counter() - self.started

    def end(self) -> None:
        pass


def same_generation(reference: Generation, other: Generation, where: str) -> None:
    """Greedy on the same weights: the same number of tokens and the same text, or the figures mean nothing."""
    if other.tokens != reference.tokens:
        raise Mismatch(f"{where}: {other.tokens} completion tokens, in-process {reference.tokens}")
    if other.text != reference.text:
        raise Mismatch(f"{where}: the text differs from in-process greedy generation: "
                       f"{other.text[:80]!r} against {reference.text[:80]!r}")
