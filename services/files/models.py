"""The files service's types: a file's record as the files table holds it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

Purpose = Literal["fine-tune", "fine-tune-results", "assistants", "batch", "vision", "user_data", "evals"]
UPLOADABLE_PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data", "evals")
# `uploading`: a direct upload not yet completed; such a file is not part of the /v1 API until it is.
Status = Literal["uploading", "uploaded", "processed", "error"]


class FileRecord(BaseModel):
    file_id: str
    user_id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    status: Status = "uploaded"
    status_details: str | None = None
    s3_key: str
    examples: int | None = None
    upload_id: str | None = None  # the S3 multipart upload of a direct upload, while `uploading`
    upload_expires_at: int | None = None  # then it is aborted and its quota released
    # Validation (fine-tune files): the requested format until then, the format read after; the report's summary.
    format: str | None = None
    layout: str | None = None
    example_type: str | None = None  # chat, text or preference: what the trainer gets
    normalized_key: str | None = None  # the normalised examples, the trainer's input
    report_key: str | None = None
    error_count: int | None = None
    warning_count: int | None = None
    estimated_tokens: int | None = None

    def openai(self) -> dict[str, Any]:
        """The FileObject the openai SDK expects, every key present."""
        return {"id": self.file_id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": self.status,
                "status_details": self.status_details, "expires_at": None}


def file_event_fields(record: FileRecord, bucket: str) -> dict[str, Any]:
    """What every file event carries (shared/contracts/files_events.FileEvent): the file as stored."""
    return {"file_id": record.file_id, "user_id": record.user_id, "purpose": record.purpose,
            "filename": record.filename, "bytes": record.bytes, "s3_uri": f"s3://{bucket}/{record.s3_key}"}
