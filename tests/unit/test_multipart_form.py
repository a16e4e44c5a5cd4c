"""`POST /v1/files`'s form is bounded: only its known fields, each once and short, whatever the body holds."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import pytest

from services.files.multipart_form import MAX_FIELD_BYTES, StreamedForm
from shared.errors import InvalidRequest

FORM_TYPE = "multipart/form-data; boundary=b"
MiB = 1024 * 1024


def _field(name: str, value: str) -> bytes:
    return f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def _file(content: bytes) -> bytes:
    return b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n' + content + b"\r\n"


async def _stream(parts: Iterator[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _read(form: StreamedForm) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in form.file_chunks()])
    return asyncio.run(collect())


def _many_fields(count: int, name: str) -> Iterator[bytes]:
    """A file, then `count` fields named `name` with `{i}` replaced by the field's number."""
    yield _file(b'{"a": 1}\n')
    for i in range(count):
        yield _field(name.format(i=i), "x" * 100)
    yield b"--b--\r\n"


def test_the_known_fields_are_kept_and_the_file_streams() -> None:
    body = [_field("purpose", "fine-tune"), _file(b"data"), _field("format", "chat"), b"--b--\r\n"]
    form = StreamedForm(FORM_TYPE, _stream(iter(body)))
    assert _read(form) == b"data"
    assert form.fields == {"purpose": "fine-tune", "format": "chat"}


@pytest.mark.parametrize(("body", "code", "param"), [
    (_field("purpose", "fine-tune") + _field("colour", "red") + b"--b--\r\n", "unknown_parameter", "colour"),
    (_field("expires_after[anchor]", "created_at") + b"--b--\r\n", "unknown_parameter", "expires_after[anchor]"),
    (b'--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n', "unknown_parameter", None),
    (_field("purpose", "fine-tune") + _field("purpose", "fine-tune") + b"--b--\r\n", "duplicate_parameter",
     "purpose"),
    (_field("purpose", "x" * (MAX_FIELD_BYTES + 1)) + b"--b--\r\n", None, "purpose"),
])
def test_an_unknown_repeated_or_long_field_is_refused(body: bytes, code: str | None, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _read(StreamedForm(FORM_TYPE, _stream(iter([body]))))
    assert refused.value.param == param
    if code is not None:
        assert refused.value.code == code


def test_a_part_with_endless_headers_is_refused() -> None:
    headers = b"".join(f"X-H{i}: {'v' * 1000}\r\n".encode() for i in range(20))
    body = b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n' + headers + b"\r\nx\r\n--b--\r\n"
    with pytest.raises(InvalidRequest):
        _read(StreamedForm(FORM_TYPE, _stream(iter([body]))))


@pytest.mark.parametrize("name", ["purpose", "field{i}"])
def test_200000_fields_leave_memory_flat(name: str) -> None:
    """The issue's reproduction (200,000 fields took files to 834 MiB): parsed straight from a generator, the
    form is refused at the first field it must not keep, and what the parser held at its peak is kilobytes."""
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest):
            _read(StreamedForm(FORM_TYPE, _stream(_many_fields(200_000, name))))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MiB, f"peak {peak / MiB:.1f} MiB"
