"""The files worker's validation, run over a local file: the same code the worker runs over an S3 stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from services.files.validation import ChatValidator, lines

CHUNK = 64 * 1024


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            yield block


def validate_local_file(path: Path, max_line_bytes: int = 4 * 1024 * 1024) -> int:
    async def run() -> int:
        validator = ChatValidator()
        async for line_no, raw in lines(_chunks(path), max_line_bytes):
            if raw is None:
                validator.too_long(line_no, max_line_bytes)
            else:
                validator.feed(line_no, raw)
        return validator.examples

    return asyncio.run(run())
