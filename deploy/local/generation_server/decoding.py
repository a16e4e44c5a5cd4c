"""The two pure steps of the decode loop: picking the next token, and turning the tokens so far into text
that is safe to send (never part of a stop string, never half a UTF-8 character)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

REPLACEMENT_CHAR = "\ufffd"  # what a decoder shows for the first bytes of a character still incomplete


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0; otherwise a draw from the tempered distribution cut to its top-p nucleus.
    The draw uses `generator` only, so the same seed gives the same tokens."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked above each
        sorted_probs = torch.where(before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


class TextAssembler:
    """Text deltas from a growing token sequence. It decodes the whole sequence at each step (so merges and
    multi-byte characters come out right) and holds back any tail that could still become a stop string;
    the deltas concatenate to the final text, streamed or not."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str]) -> None:
        self._decode, self._stops = decode, tuple(stops)
        self._sent = 0  # characters of the decoded text already handed out
        self.text = ""

    def add(self, tokens: Sequence[int]) -> tuple[str, bool]:
        """The new text safe to send, and whether a stop string has appeared (the text then ends before it)."""
        self.text = self._decode(tokens)
        cut = self._first_stop()
        if cut is not None:
            self.text = self.text[:cut]
            return self._take(cut), True
        return self._take(len(self.text) - self._held_back()), False

    def rest(self) -> str:
        """Everything not yet sent, at the end of the generation."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self._sent:
            return ""
        delta, self._sent = self.text[self._sent:end], end
        return delta

    def _first_stop(self) -> int | None:
        found = [i for i in (self.text.find(stop, max(0, self._sent - len(stop))) for stop in self._stops) if i >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        held = len(self.text) - len(self.text.rstrip(REPLACEMENT_CHAR))
        tail = self.text[:len(self.text) - held] if held else self.text
        for stop in self._stops:  # the longest tail that is a proper prefix of a stop string
            for size in range(min(len(stop) - 1, len(tail)), 0, -1):
                if stop.startswith(tail[-size:]):
                    held = max(held, len(self.text) - (len(tail) - size))
                    break
        return held
