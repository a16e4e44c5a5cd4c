"""The files worker's validation, run over a local file: the same code the worker runs over an S3 stream
(format detection, checks, normalisation to the internal form, the report), the normalised lines counted
instead of uploaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from services.files.formats import Limits, validate_stream

CHUNK = 64 * 1024


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            yield block


def validate_local_file(path: Path, max_line_bytes: int = 4 * 1024 * 1024) -> int:
    async def run() -> int:
        written = 0

        async def sink(line: bytes) -> None:
            nonlocal written
            written += len(line)

        report = await validate_stream(_chunks(path), filename=path.name, requested_format=None,
                                       limits=Limits(max_line_bytes=max_line_bytes), sink=sink)
        return report.examples

    return asyncio.run(run())
