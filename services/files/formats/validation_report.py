"""The validation report: errors by line, warnings, statistics; built as examples stream past, in bounded
memory (the first errors listed, the rest counted; duplicates found through 8-byte hashes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from services.files.formats.examples import ExampleError, text_chars

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_line_bytes: int = 4 * MiB  # a line, CSV row or JSON array element longer than this is refused, not held
    max_nesting: int = 64  # JSON nested deeper than this is refused before it is parsed
    context_tokens: int = 4096  # examples estimated longer are flagged as likely to be truncated
    chars_per_token: int = 4  # the token estimate: characters / 4
    text_chunk_chars: int = 2000  # plain text is cut into training chunks of about this size
    min_examples: int = 10  # OpenAI's minimum for a fine-tuning job
    max_listed_errors: int = 100
    max_hashes: int = 1_000_000  # examples checked for duplicates (about 60 MB of hashes at most)
    max_warning_lines: int = 10


class Location(NamedTuple):  # a tuple: one is made for every line, and a frozen dataclass costs twice as much
    line: int
    item: int | None = None  # the CSV row or JSON array element, where the format has them
    kind: str = "line"  # "line", "row" (CSV) or "example" (JSON array)

    @property
    def label(self) -> str:
        if self.kind == "line" or self.item is None:
            return f"Line {self.line}"
        return f"{self.kind.capitalize()} {self.item} (line {self.line})"


@dataclass
class _Warning:
    count: int = 0
    lines: list[int] = field(default_factory=list)


@dataclass
class _Range:
    low: int | None = None
    high: int = 0
    total: int = 0

    def add(self, value: int) -> None:
        if self.low is None or value < self.low:
            self.low = value
        if value > self.high:
            self.high = value
        self.total += value

    def summary(self, n: int) -> dict[str, float | int]:
        return {"min": self.low or 0, "mean": round(self.total / n, 1) if n else 0, "max": self.high}


class ReportBuilder:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.examples = 0
        self.errors: list[dict[str, Any]] = []
        self.error_counts: Counter[str] = Counter()
        self.layout: str | None = None
        self._warnings: dict[str, _Warning] = {}
        self._ignored_keys: Counter[str] = Counter()
        self._hashes: set[int] = set()
        self._tokens = _Range()
        self._chars = _Range()
        self._roles: Counter[str] = Counter()
        self._types: Counter[str] = Counter()

    @property
    def has_errors(self) -> bool:
        return bool(self.error_counts)

    def error(self, where: Location, code: str, predicate: str) -> None:
        """A problem of one line, row or element: `predicate` completes the sentence ("Line 3 " + "is ...")."""
        self._add(where, code, f"{where.label} {predicate}")

    def invalid(self, where: Location, exc: ExampleError) -> None:
        """A record that is well-formed but no valid example."""
        self._add(where, exc.code, f"{where.label}: {exc.message}")

    def file_error(self, code: str, message: str, line: int = 1) -> None:
        """A problem of the whole file (its encoding, its structure)."""
        self._add(Location(line), code, message)

    def _add(self, where: Location, code: str, message: str) -> None:
        self.error_counts[code] += 1
        if len(self.errors) < self.limits.max_listed_errors:
            entry: dict[str, Any] = {"line": where.line, "code": code, "message": message}
            if where.item is not None:
                entry[where.kind] = where.item
            self.errors.append(entry)

    def ignored(self, keys: set[str] | frozenset[str]) -> None:
        if len(self._ignored_keys) < 50 or keys <= self._ignored_keys.keys():
            self._ignored_keys.update(keys)

    def _warn(self, code: str, where: Location) -> None:
        warning = self._warnings.setdefault(code, _Warning())
        warning.count += 1
        if len(warning.lines) < self.limits.max_warning_lines:
            warning.lines.append(where.line)

    def example(self, where: Location, example: dict[str, Any], encoded: bytes) -> None:
        """Count a good example, given as the normalised line it becomes."""
        self.examples += 1
        kind = example["type"]
        if kind == "chat":  # most examples: their characters and roles in one pass
            chars, roles = 0, self._roles
            for message in example["messages"]:
                chars += len(message["content"])
                roles[message["role"]] += 1
        else:
            chars = text_chars(example)
            if "messages" in example:
                self._roles.update([m["role"] for m in example["messages"]])
        limits = self.limits
        tokens = -(-chars // limits.chars_per_token)
        self._chars.add(chars)
        self._tokens.add(tokens)
        self._types[kind] += 1
        if tokens > limits.context_tokens:
            self._warn("truncation_likely", where)
        # Python's own 64-bit hash of the line (SipHash, seeded per process): all a duplicate check within
        # one run needs, at about 60 bytes an example in the set.
        digest = hash(encoded)
        if digest in self._hashes:
            self._warn("duplicate_examples", where)
        elif len(self._hashes) < self.limits.max_hashes:
            self._hashes.add(digest)

    def _warnings_list(self) -> list[dict[str, Any]]:
        limits, out = self.limits, []
        if 0 < self.examples < limits.min_examples:
            out.append({"code": "too_few_examples", "count": self.examples, "lines": [],
                        "message": f"The file has {self.examples} example(s); fine-tuning needs at least "
                                   f"{limits.min_examples}, and 50 to 100 usually give clear gains."})
        texts = {
            "truncation_likely": f"example(s) are estimated longer than {limits.context_tokens} tokens "
                                 f"(characters / {limits.chars_per_token}) and would likely be truncated.",
            "duplicate_examples": "example(s) repeat an earlier example"
                                  + (f" (checked among the first {limits.max_hashes})."
                                     if self.examples > limits.max_hashes else "."),
        }
        for code, text in texts.items():
            if code in self._warnings:
                w = self._warnings[code]
                out.append({"code": code, "count": w.count, "lines": w.lines, "message": f"{w.count} {text}"})
        if self._ignored_keys:
            names = ", ".join(f"'{k[:40]}'" for k in sorted(self._ignored_keys)[:20])
            out.append({"code": "ignored_keys", "count": sum(self._ignored_keys.values()), "lines": [],
                        "message": f"These keys (or columns) are not part of the example layout and were "
                                   f"ignored: {names}."})
        return out

    def finish(self, *, format: str | None, format_source: str) -> Report:
        if not self.examples and not self.has_errors:
            self.file_error("empty_file", "The file has no training examples.")
        n = self.examples
        statistics: dict[str, Any] = {
            "examples": n, "estimated_tokens": self._tokens.total,
            "tokens_per_example": self._tokens.summary(n), "chars_per_example": self._chars.summary(n),
            "example_types": dict(self._types), "role_counts": dict(self._roles),
        }
        listed = len(self.errors)
        return Report({
            "status": "error" if self.has_errors else "processed",
            "format": format, "format_source": format_source, "layout": self.layout,
            "example_type": _example_type(self.layout),
            "counts": {"examples": n, "errors": sum(self.error_counts.values()), "warnings": 0},
            "errors": self.errors, "error_counts": dict(self.error_counts),
            "errors_not_listed": sum(self.error_counts.values()) - listed,
            "warnings": self._warnings_list(), "statistics": statistics,
            "limits": {"context_tokens": self.limits.context_tokens, "max_line_bytes": self.limits.max_line_bytes,
                       "max_nesting": self.limits.max_nesting},
        })


def _example_type(layout: str | None) -> str | None:
    if layout is None:
        return None
    return {"text": "text", "plain_text": "text", "preference": "preference",
            "prompt_chosen_rejected": "preference"}.get(layout, "chat")


class Report:
    """The finished report: `body` is what is stored (as JSON) and served."""

    def __init__(self, body: dict[str, Any]) -> None:
        body["counts"]["warnings"] = len(body["warnings"])
        self.body = body

    @property
    def ok(self) -> bool:
        return bool(self.body["status"] == "processed")

    @property
    def examples(self) -> int:
        return int(self.body["counts"]["examples"])

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body["errors"])

    def status_details(self) -> str | None:
        """OpenAI's `status_details`: the first error, and how many more there are."""
        if self.ok:
            return None
        first = self.body["errors"][0]
        more = self.body["counts"]["errors"] - 1
        return f"Invalid file format. {first['message']}" + (f" ({more} more error(s))" if more else "")

    def summary(self) -> dict[str, str | int]:
        """What the file record keeps of the report."""
        values = {"format": self.body["format"], "layout": self.body["layout"],
                  "example_type": self.body["example_type"], "error_count": self.body["counts"]["errors"],
                  "warning_count": self.body["counts"]["warnings"],
                  "estimated_tokens": self.body["statistics"]["estimated_tokens"]}
        return {k: v for k, v in values.items() if v is not None}
