"""Chat JSONL validation (through the formats pipeline) and the bounded line splitter it is fed by."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from services.files.filenames import clean_filename
from services.files.formats import Limits, Report, validate_stream
from services.files.formats.readers import lines
from services.files.object_keys import object_key

MAX_LISTED_ERRORS = Limits().max_listed_errors


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _split(data: bytes, size: int, limit: int = 100) -> list[tuple[int, bytes | None]]:
    async def collect() -> list[tuple[int, bytes | None]]:
        return [item async for item in lines(_chunks(data, size), limit)]
    return asyncio.run(collect())


def test_lines_are_numbered_across_chunk_boundaries() -> None:
    data = b"first\nsecond line\n\nlast"
    for size in (1, 3, 7, 100):
        assert _split(data, size) == [(1, b"first"), (2, b"second line"), (3, b""), (4, b"last")]


def test_an_overlong_line_is_reported_not_held() -> None:
    data = b"ok\n" + b"x" * 500 + b"\nafter\n"
    assert _split(data, 16, limit=100) == [(1, b"ok"), (2, None), (3, b"after")]


def test_lines_match_a_plain_split_whatever_the_chunks() -> None:
    """Lines come a chunk's worth at a time; however the stream is cut, they are the file's lines, each over the
    limit as None (at the limit kept), and a last line without a newline kept."""
    rows = [b"", b"a", b"x" * 10, b"y" * 11, b"z" * 30, b"", b"\r", b"b" * 9]
    for trailing in (b"", b"\n"):
        data = b"\n".join(rows) + trailing
        expected = [(n, row if len(row) <= 10 else None) for n, row in enumerate(rows, 1)]
        for size in (1, 2, 5, 10, 11, 12, 64, 1000):
            assert _split(data, size, limit=10) == expected, (size, trailing)


def _example(*messages: tuple[str, str]) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]}).encode()


def _validate(*lines_: bytes, file_format: str | None = None) -> Report:
    return asyncio.run(validate_stream(_chunks(b"\n".join(lines_), 64 * 1024), filename="train.jsonl",
                                       requested_format=file_format, limits=Limits()))


def test_validator_counts_good_examples_and_names_each_bad_line() -> None:
    report = _validate(
        _example(("system", "s"), ("user", "q"), ("assistant", "a")),
        b"{oops",
        _example(("user", "q")),
        _example(("robot", "q"), ("assistant", "a")),
        _example(("user", ""), ("assistant", "a")),
        b"\xff\xfe",
        b"[]",
        json.dumps({"messages": [{"role": "user", "content": "q", "extra": 1},
                                 {"role": "assistant", "content": "a"}]}).encode())
    assert report.examples == 1 and not report.ok
    # `[]` was `not_an_object` before the formats pipeline; it is a `wrong_type` now.
    assert [(e["line"], e["code"]) for e in report.errors] == [
        (2, "invalid_json"), (3, "missing_assistant"), (4, "unknown_role"), (5, "empty_content"),
        (6, "invalid_utf8"), (7, "wrong_type"), (8, "unknown_key")]
    assert (report.status_details() or "").startswith("Invalid file format. Line 2")


def test_errors_beyond_the_first_hundred_are_counted_not_listed() -> None:
    # Lines of "nope" read as plain text unless the format is given.
    report = _validate(*[b"nope"] * 250, file_format="jsonl")
    assert len(report.errors) == MAX_LISTED_ERRORS and report.body["error_counts"]["invalid_json"] == 250


def test_an_empty_file_is_not_ok() -> None:
    report = _validate(b"   ")
    assert not report.ok and [e["code"] for e in report.errors] == ["empty_file"]


def test_filenames_never_reach_object_keys() -> None:
    assert object_key("user-1", "file-abc") == "files/user-1/file-abc"
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\Users\\me\\data.jsonl") == "data.jsonl"
    assert clean_filename("a\x00b\nc.jsonl") == "abc.jsonl"
    assert clean_filename(None) == "upload"


def test_json_lines_parse_and_fail_as_json_loads_says() -> None:
    """Whitespace around a line's value is fine; anything after it, or no value, is the decoder's own message."""
    good = _example(("user", "hi"), ("assistant", "hello"))
    report = _validate(b"  " + good + b" \r", good.replace(b"hi", b"hey"), good + b" extra", b"   ", b"{")
    assert [(e["line"], e["message"]) for e in report.errors] == [
        (3, "Line 3 is not valid JSON (Extra data at column 94)."),
        (5, "Line 5 is not valid JSON (Expecting property name enclosed in double quotes at column 2).")]
    assert report.examples == 2
