from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

Purpose = Literal["fine-tune", "fine-tune-results", "assistants", "batch", "vision", "user_data", "evals"]
UPLOADABLE_PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data", "evals")
Status = Literal["uploaded", "processed", "error"]


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

    def openai(self) -> dict[str, Any]:
        """The FileObject the openai SDK expects, every key present."""
        return {"id": self.file_id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": self.status,
                "status_details": self.status_details, "expires_at": None}
