"""The chat JSONL validator and the bounded line splitter it is fed by."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from services.files.handlers import clean_filename, object_key
from services.files.validation import MAX_LISTED_ERRORS, ChatValidator, lines


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


def _example(*messages: tuple[str, str]) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]}).encode()


def test_validator_counts_good_examples_and_names_each_bad_line() -> None:
    v = ChatValidator()
    v.feed(1, _example(("system", "s"), ("user", "q"), ("assistant", "a")))
    v.feed(2, b"{oops")
    v.feed(3, _example(("user", "q")))
    v.feed(4, _example(("robot", "q"), ("assistant", "a")))
    v.feed(5, _example(("user", ""), ("assistant", "a")))
    v.feed(6, b"\xff\xfe")
    v.feed(7, b"[]")
    v.feed(8, json.dumps({"messages": [{"role": "user", "content": "q", "extra": 1},
                                       {"role": "assistant", "content": "a"}]}).encode())
    assert v.examples == 1 and not v.ok
    assert [(e.line, e.code) for e in v.errors] == [
        (2, "invalid_json"), (3, "missing_assistant"), (4, "unknown_role"), (5, "empty_content"),
        (6, "invalid_utf8"), (7, "not_an_object"), (8, "unknown_key")]
    assert v.summary() is not None and v.summary().startswith("Invalid file format. Line 2")  # type: ignore[union-attr]


def test_errors_beyond_the_first_hundred_are_counted_not_listed() -> None:
    v = ChatValidator()
    for i in range(250):
        v.feed(i + 1, b"nope")
    assert len(v.errors) == MAX_LISTED_ERRORS and v.error_counts["invalid_json"] == 250


def test_an_empty_file_is_not_ok() -> None:
    v = ChatValidator()
    v.feed(1, b"   ")
    assert not v.ok and v.summary() == "The file has no training examples."


def test_filenames_never_reach_object_keys() -> None:
    assert object_key("user-1", "file-abc") == "files/user-1/file-abc"
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\Users\\me\\data.jsonl") == "data.jsonl"
    assert clean_filename("a\x00b\nc.jsonl") == "abc.jsonl"
    assert clean_filename(None) == "upload"
