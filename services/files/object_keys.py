"""A file's id, and where its objects live in the bucket. Keys come from ids only: a filename never reaches one."""

from __future__ import annotations

import secrets
import string

from services.files.models import FileRecord

_ALPHABET = string.ascii_letters + string.digits


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


FILES_PREFIX = "files/"  # every user's files' bytes, and the multipart uploads that write them


def files_prefix(user_id: str) -> str:
    """Where the user's files' bytes are, and their direct uploads in flight."""
    return f"{FILES_PREFIX}{user_id}/"


def object_key(user_id: str, file_id: str) -> str:
    """The file's bytes as uploaded."""
    return files_prefix(user_id) + file_id


def normalized_key(user_id: str, file_id: str) -> str:
    """A validated fine-tune file's examples in the one internal form: the trainer's input."""
    return f"normalized/{user_id}/{file_id}.jsonl"


def report_key(user_id: str, file_id: str) -> str:
    """A fine-tune file's validation report."""
    return f"reports/{user_id}/{file_id}.json"


def user_prefixes(user_id: str) -> tuple[str, ...]:
    """Every prefix that holds objects of one user's files."""
    return files_prefix(user_id), f"normalized/{user_id}/", f"reports/{user_id}/"


def stored_keys(record: FileRecord) -> list[str]:
    """Every object a file owns: its bytes, and what validation derived from them (the normalized JSONL,
    the report), by convention and by any other `*_key` the record names."""
    keys = [record.s3_key, normalized_key(record.user_id, record.file_id), report_key(record.user_id, record.file_id)]
    named = [v for k, v in record.model_dump().items() if k.endswith("_key") and isinstance(v, str) and v]
    return list(dict.fromkeys(keys + named))
