"""Results as ratios, with the aim each one is held to; pure functions, unit-tested."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no measurements")
    return float(statistics.median(values))


def ratio(measured: float, baseline: float) -> float:
    if baseline <= 0:
        raise ValueError(f"baseline must be positive, got {baseline}")
    return measured / baseline


@dataclass(frozen=True)
class Aim:
    op: Literal[">=", "<="]
    target: float

    def met(self, value: float) -> bool:
        return value >= self.target if self.op == ">=" else value <= self.target

    def __str__(self) -> str:
        return f"aim {self.op} {self.target:g}"


@dataclass(frozen=True)
class Result:
    name: str
    ratio: float
    detail: str  # what was divided by what, in words and numbers
    aim: Aim | None = None  # None: a baseline shown for context, held to nothing
    note: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        return None if self.aim is None else self.aim.met(self.ratio)

    def line(self) -> str:
        verdict = "context, no aim" if self.aim is None else f"{self.aim}: {'met' if self.met else 'NOT met'}"
        return f"{self.name}  ratio={format_ratio(self.ratio)}  ({self.detail})  {verdict}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ratio": round(self.ratio, 4), "detail": self.detail,
                "aim": str(self.aim) if self.aim else None, "met": self.met, "note": self.note or None,
                **self.figures}


def format_ratio(value: float) -> str:
    """Two decimals where they matter, fewer where the ratio is large."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
