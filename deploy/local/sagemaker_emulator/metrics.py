"""AlgorithmSpecification.MetricDefinitions: each regex's first group, read from every log line."""

from __future__ import annotations

import re
from typing import Any


class MetricParser:
    def __init__(self, definitions: list[dict[str, Any]]) -> None:
        self._patterns = [(d["Name"], re.compile(d["Regex"])) for d in definitions]

    def parse(self, line: str) -> dict[str, float]:
        """The metrics this line reports (the last match per metric wins, as in SageMaker)."""
        values: dict[str, float] = {}
        for name, pattern in self._patterns:
            for match in pattern.finditer(line):
                text = match.group(1) if pattern.groups else match.group(0)
                try:
                    values[name] = float(text)
                except (TypeError, ValueError):
                    continue
        return values
