"""Events the files service publishes, to its topic `llm-tuner-files-events`.

Consumers: files itself (`file.uploaded`: validate the object), training (every one of them: its own projection
of the files its jobs use; `file.validated` / `file.rejected` wake the jobs waiting on that file), and every
gateway replica (live updates for the owner's browsers).
"""

from __future__ import annotations

from typing import Any, Literal

from shared.contracts.event import Event

FILE_UPLOADED = "file.uploaded"
FILE_VALIDATED = "file.validated"
FILE_REJECTED = "file.rejected"
FILE_DELETED = "file.deleted"


class FileEvent(Event):
    """What every file event carries: the file as stored."""

    file_id: str
    user_id: str
    purpose: str
    filename: str
    bytes: int
    s3_uri: str


class FileUploaded(FileEvent):
    TYPE = FILE_UPLOADED


class ValidationResult(FileEvent):
    """A validated file's report. Fine-tune files' examples, normalised to one internal form
    (services/files/formats/examples.py), are at `normalized_uri`: what training reads."""

    examples: int
    format: str | None = None
    example_type: str | None = None
    estimated_tokens: int | None = None
    normalized_uri: str | None = None
    report_uri: str | None = None


class FileValidated(ValidationResult):
    TYPE = FILE_VALIDATED
    status: Literal["processed"] = "processed"


class FileRejected(ValidationResult):
    """`errors` are the report's first 20 ({line, code, message}); the whole report is at `report_uri`."""

    TYPE = FILE_REJECTED
    status: Literal["error"] = "error"
    error: str
    errors: list[dict[str, Any]] = []


class FileDeleted(FileEvent):
    TYPE = FILE_DELETED
    reason: Literal["deleted", "user_deleted"]


FileStatus = Literal["uploaded", "processed", "error", "deleted"]


def file_status(event: FileEvent) -> FileStatus:
    """The file's status (OpenAI's names) as the event leaves it: what every consumer's projection records."""
    if isinstance(event, FileUploaded):
        return "uploaded"
    if isinstance(event, FileRejected):
        return "error"
    if isinstance(event, FileDeleted):
        return "deleted"
    return "processed"
