"""Hosting records in memory, all of them also kept in `<workdir>/.hosting/state.json` so that a restarted
emulator still knows its models, configs, endpoints and inference components.

Readers get copies; every change goes through `add`, `update` or `remove`, under one lock, persisted before
the call returns. Missing and duplicate names are answered as SageMaker answers them: ValidationException
"Could not find endpoint "arn:..."." and "Cannot create already existing endpoint "arn:..."."
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .endpoint_records import RECORD_TYPES, Record, to_json
from .errors import ValidationError
from .models import now

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
R = TypeVar("R", bound=Record)


class EndpointStore:
    def __init__(self, directory: Path, arn: Callable[[str, str], str]) -> None:
        self.directory = directory
        self._arn = arn  # (kind, name) -> ARN
        self._records: dict[str, dict[str, Any]] = {kind: {} for kind in RECORD_TYPES}
        self._lock = threading.RLock()

    def load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / STATE_FILE
        if not path.exists():
            return
        try:
            state = json.loads(path.read_text())
            for kind, cls in RECORD_TYPES.items():
                self._records[kind] = {data["name"]: cls(**data) for data in state.get(kind, [])}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("hosting state unreadable; starting empty", extra={"path": str(path), "error": str(exc)})
        log.info("loaded hosting records", extra={kind: len(records) for kind, records in self._records.items()})

    def arn(self, cls: type[Any], name: str) -> str:
        return self._arn(cls.KIND, name)

    def add(self, record: Record) -> None:
        with self._lock:
            records = self._records[record.KIND]
            if record.name in records:
                raise ValidationError(f'Cannot create already existing {record.KIND} "{record.arn}".')
            records[record.name] = copy.deepcopy(record)
            self._persist()

    def get(self, cls: type[R], name: str) -> R:
        with self._lock:
            record = self._records[cls.KIND].get(name)
            if record is None:
                raise ValidationError(f'Could not find {cls.KIND} "{self.arn(cls, name)}".')
            return copy.deepcopy(record)

    def find(self, cls: type[R], name: str) -> R | None:
        with self._lock:
            record = self._records[cls.KIND].get(name)
            return copy.deepcopy(record) if record is not None else None

    def all(self, cls: type[R]) -> list[R]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._records[cls.KIND].values()]

    def update(self, cls: type[R], name: str, when: Callable[[R], bool] | None = None, **changes: Any) -> bool:
        """Change fields of a record (a status change also moves LastModifiedTime), only if it still exists
        and `when` holds for it; True when it changed."""
        with self._lock:
            record = self._records[cls.KIND].get(name)
            if record is None or (when is not None and not when(record)):
                return False
            for key, value in changes.items():
                setattr(record, key, value)
            if "status" in changes and hasattr(record, "last_modified_time"):
                record.last_modified_time = now()
                log.info("hosting status", extra={"kind": cls.KIND, "resource": name, "status": changes["status"]})
            self._persist()
            return True

    def remove(self, cls: type[R], name: str) -> None:
        with self._lock:
            if self._records[cls.KIND].pop(name, None) is not None:
                self._persist()

    def _persist(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {kind: [to_json(r) for r in records.values()] for kind, records in self._records.items()}
        tmp = self.directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.directory / STATE_FILE)
