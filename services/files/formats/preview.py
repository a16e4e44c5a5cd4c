"""Making normalised examples safe to show.

The preview's JSON carries every string verbatim. A string that a spreadsheet would run as a formula (it
starts with =, +, -, @, a tab or a carriage return: OWASP's CSV-injection list) is flagged by its path, and
whoever renders examples as CSV must write such cells through `csv_safe_cell`, which makes them text.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a formula-like value gets a leading apostrophe."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    """(path, string) for every string in a normalised example (its nesting is bounded by validation)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{path}[{i}]")]
    return []


def formula_like_paths(example: dict[str, Any]) -> list[str]:
    return [path for path, text in _strings(example, "") if text.startswith(FORMULA_STARTS)]


def shortened(example: dict[str, Any], max_chars: int) -> tuple[dict[str, Any], list[str]]:
    """The example with each text longer than `max_chars` cut to that length, and the paths that were cut."""
    cut: list[str] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str) and len(value) > max_chars:
            cut.append(path)
            return value[:max_chars]
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(example, ""), cut
