"""The doctor's two outputs: lines for people, JSON for programs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from deploy.doctor.model import Check, Status

NAME_WIDTH = 40


def failed_any(checks: Sequence[Check]) -> bool:
    return any(c.status is Status.FAIL for c in checks)


def summary(checks: Sequence[Check]) -> dict[str, int]:
    counts = Counter(c.status for c in checks)
    return {status.value.lower(): counts.get(status, 0) for status in Status}


def text(checks: Sequence[Check], heading: str = "") -> str:
    width = min(max((len(c.name) for c in checks), default=0), NAME_WIDTH)
    lines = [heading] if heading else []
    for check in checks:
        if len(check.name) > width:  # a long name gets a line of its own
            lines.append(f"{check.status.value:<4}  {check.name}")
            lines.append(f"{'':<4}  {'':<{width}}  {check.detail}")
        else:
            lines.append(f"{check.status.value:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status is not Status.PASS:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    counts = summary(checks)
    lines.append(f"\n{len(checks)} checks: {counts['pass']} passed, {counts['fail']} failed, "
                 f"{counts['warn']} warning{'' if counts['warn'] == 1 else 's'}, {counts['skip']} skipped")
    return "\n".join(lines)


def as_json(checks: Sequence[Check], target: dict[str, str]) -> str:
    return json.dumps({"ok": not failed_any(checks), "target": target, "summary": summary(checks),
                       "checks": [c.as_dict() for c in checks]}, indent=2)
