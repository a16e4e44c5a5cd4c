"""What a check reports: one `Check` per thing checked."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 (a status, not a password)
    FAIL = "FAIL"
    WARN = "WARN"  # works, but not as it should be (or could not be checked fully)
    SKIP = "SKIP"  # not checkable here, with a note saying why


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""  # a command or console step that fixes it; empty when nothing needs fixing

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


def passed(name: str, detail: str) -> Check:
    return Check(name, Status.PASS, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def warned(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, Status.WARN, detail, fix)


def skipped(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, Status.SKIP, detail, fix)
