"""The files service from a test: a valid fine-tune file, an upload over HTTP, its worker's queue drained."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.accounts import bearer
from tests.support.workers import drain

# Twelve chat examples: a fine-tune file that passes validation (OpenAI's minimum is ten).
GOOD = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                          {"role": "assistant", "content": f"a{i}"}]}) for i in range(12))


def upload(files_url: str, session: dict[str, Any], content: bytes, name: str = "train.jsonl",
           purpose: str = "fine-tune") -> httpx.Response:
    """`POST /v1/files` as the openai SDK sends it: a multipart form with the file and its purpose."""
    return httpx.post(f"{files_url}/v1/files", headers=bearer(session),
                      files={"file": (name, content, "application/jsonl")}, data={"purpose": purpose}, timeout=60)


async def drain_files_queue() -> None:
    """Run the files worker until its queue is idle: every uploaded file validated, every event handled."""
    await drain("files")
