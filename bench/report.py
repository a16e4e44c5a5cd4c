"""How every bench prints its results and keeps them: one line per ratio (and its note) on stdout, and the
whole report as `bench/results/<name>.json` for later comparison."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import Result

RESULTS = Path(__file__).parent / "results"


def print_results(results: Sequence[Result]) -> None:
    for result in results:
        print(result.line())
        if result.note:
            print(f"    note: {result.note}")


def machine(**extra: Any) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), **extra}


def save(name: str, report: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def publish(bench: str, results: Sequence[Result], seconds: float, **machine_extra: Any) -> None:
    """The header, the result lines, and `<bench>-latest.json` with the machine it ran on."""
    print(f"bench.{bench}: {os.cpu_count()} CPUs, {seconds:.0f} s in all")
    print_results(results)
    save(f"{bench}-latest", {"machine": machine(**machine_extra), "results": [r.as_json() for r in results]})
