"""A training file, streamed: its format found, every record checked and normalised, the report built."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

from services.files.formats.detect import BOM, HEAD_BYTES, detect, unreadable
from services.files.formats.examples import (
    LAYOUT_HELP,
    LAYOUTS_BY_NAME,
    ExampleError,
    Layout,
    is_verbatim_chat,
    layout_of,
    normalise,
    plain_chat,
)
from services.files.formats.readers import (
    JsonDocumentError,
    JsonElements,
    TextChunker,
    csv_records,
    line_batches,
    lines,
    nesting_exceeds,
)
from services.files.formats.validation_report import Limits, Location, Report, ReportBuilder

# Where the normalised examples go: whole lines, several a call (those one chunk of the file made).
Sink = Callable[[bytes], Awaitable[None]]
# A reader counts each good example in the report as it reads it and hands on the normalised lines (those before
# the file's first error) in batches, what one chunk of the file held: an example costs no `await` of its own,
# and no parsed example outlives its line (a batch of them kept the garbage collector busy).
Lines = AsyncIterator[list[bytes]]
_INVALID = object()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_CHAT_PREFIX = b'{"type":"chat",'
_CHAT = LAYOUTS_BY_NAME["chat"]
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # built once: json.loads with options builds one a call
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _parse_json(raw: bytes, where: Location, report: ReportBuilder) -> Any:
    """The JSON value in `raw`, or _INVALID with the reason reported."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.error(where, "invalid_utf8", f"is not valid UTF-8 (byte {exc.start + 1}).")
        return _INVALID
    if (raw.count(b"[") + raw.count(b"{") > report.limits.max_nesting
            and nesting_exceeds(raw, report.limits.max_nesting)):
        report.error(where, "nesting_too_deep", f"is nested deeper than {report.limits.max_nesting} levels.")
        return _INVALID
    try:  # most lines: one value, no whitespace around it (decode's own checks for that cost two regex matches)
        value, end = _DECODER.raw_decode(text)
        if end == len(text):
            return value
    except (ValueError, RecursionError):
        pass  # decode, below, says what is wrong, as it always has
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        report.error(where, "invalid_json", f"is not valid JSON ({exc.msg} at column {exc.colno}).")
    except (ValueError, RecursionError) as exc:
        report.error(where, "invalid_json", f"is not valid JSON ({str(exc)[:80]}).")
    return _INVALID


class _Records:
    """JSON records to examples; the first good record sets the file's layout, and others must follow it."""

    def __init__(self, report: ReportBuilder) -> None:
        self._report = report
        self._layout: Layout | None = None

    def example(self, where: Location, record: Any, raw: bytes) -> tuple[dict[str, Any], bytes | None] | None:
        """The example `record` (parsed from `raw`) makes, with its normalised line when `raw` itself can
        serve (an OpenAI chat line already in the internal form but for its type: most files); or None."""
        report = self._report
        if not isinstance(record, dict):
            kind = "a list" if isinstance(record, list) else f"a JSON {type(record).__name__}"
            report.error(where, "wrong_type", f"is {kind}; each example must be a JSON object.")
            return None
        only_messages = len(record) == 1 and "messages" in record
        if only_messages and (self._layout is None or self._layout is _CHAT):
            example = plain_chat(record)  # most lines of most files: no layout search, no copy
            if example is not None:
                if self._layout is None:
                    self._layout, report.layout = _CHAT, _CHAT.name
                return example, self._verbatim_line(raw)
        layout = _CHAT if only_messages else layout_of(record)
        if layout is None:
            report.error(where, "unknown_format", f"matches no known example layout; expected {LAYOUT_HELP}.")
            return None
        if self._layout is not None and layout is not self._layout:
            report.error(where, "mixed_formats", f"is a {layout.name} example, but the file's first example is "
                                                 f"{self._layout.name}; use one layout per file.")
            return None
        try:
            example = normalise(record, layout)
        except ExampleError as exc:
            report.invalid(where, exc)
            return None
        if self._layout is None:
            self._layout, report.layout = layout, layout.name
        extra = None if only_messages else record.keys() - layout.keys
        if extra:
            report.ignored(extra)
        return example, self._verbatim_line(raw) if is_verbatim_chat(record, example) else None

    @staticmethod
    def _verbatim_line(raw: bytes) -> bytes | None:
        """The normalised line of a chat record that needed no change: its own bytes with the type added."""
        body = raw.strip()
        # Not when escapes may hide lone surrogates, nor for a pretty-printed JSON element (its newlines).
        if b"\\u" in body or b"\n" in body:
            return None
        return _CHAT_PREFIX + body[1:]


def _too_long(report: ReportBuilder, where: Location) -> None:
    report.error(where, "line_too_long", f"is longer than {report.limits.max_line_bytes} bytes.")


def _counted(report: ReportBuilder, where: Location, example: dict[str, Any], normalised: bytes | None) -> bytes | None:
    """Count a good example (with its normalised line when the reader has it already, else it is encoded); its
    line, to be written, while the file has no error."""
    try:
        line = normalised or encode(example)
    except UnicodeEncodeError:
        report.error(where, "invalid_utf8", "holds an unpaired surrogate escape (\\ud800-\\udfff).")
        return None
    report.example(where, example, line)
    return None if report.has_errors else line


async def _jsonl(chunks: AsyncIterator[bytes], report: ReportBuilder) -> Lines:
    records = _Records(report)
    async for batch in line_batches(chunks, report.limits.max_line_bytes):
        out: list[bytes] = []
        for line_no, raw in batch:
            where = Location(line_no)
            if raw is None:
                _too_long(report, where)
            elif raw.strip():
                record = _parse_json(raw, where, report)
                result = None if record is _INVALID else records.example(where, record, raw)
                line = None if result is None else _counted(report, where, *result)
                if line is not None:
                    out.append(line)
        if out:
            yield out


async def _json(chunks: AsyncIterator[bytes], report: ReportBuilder) -> Lines:
    records = _Records(report)
    scanner = JsonElements(report.limits.max_line_bytes, report.limits.max_nesting)

    async def items() -> AsyncIterator[Any]:
        async for chunk in chunks:
            for item in scanner.feed(chunk):
                yield item
            if scanner.failed:
                return
        for item in scanner.close():
            yield item

    async for item in items():
        if isinstance(item, JsonDocumentError):
            report.file_error(item.code, item.message, item.line)
            return
        where = Location(item.line, item.index, "example")
        if item.problem == "nesting_too_deep":
            report.error(where, "nesting_too_deep", f"is nested deeper than {report.limits.max_nesting} levels.")
        elif item.data is None:
            _too_long(report, where)
        else:
            record = _parse_json(item.data, where, report)
            result = None if record is _INVALID else records.example(where, record, item.data)
            line = None if result is None else _counted(report, where, *result)
            if line is not None:
                yield [line]


def _csv_record(header: list[str], fields: list[str], layout: Layout, where: Location,
                report: ReportBuilder) -> Any:
    record: dict[str, Any] = {k: v for k, v in zip(header, fields, strict=True)
                              if k in layout.keys and (v.strip() or k in layout.required)}
    if layout.name == "chat" and record.get("messages", "").strip():  # a chat row holds its messages as JSON
        record["messages"] = _parse_json(record["messages"].encode(), where, report)
        if record["messages"] is _INVALID:
            return _INVALID
    return record


async def _csv(chunks: AsyncIterator[bytes], report: ReportBuilder) -> Lines:
    header: list[str] | None = None
    layout: Layout | None = None
    row = 0
    async for line_no, raw in csv_records(chunks, report.limits.max_line_bytes):
        where = Location(line_no, row + 1 if header else None, "row")
        if raw is None:
            _too_long(report, where)
            row += header is not None
            continue
        try:
            text = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            report.error(where, "invalid_utf8", f"is not valid UTF-8 (byte {exc.start + 1}).")
            row += header is not None
            continue
        if not text.strip():
            continue
        try:
            fields = next(csv.reader([text], strict=True))
        except (csv.Error, StopIteration) as exc:
            report.error(where, "invalid_csv", f"is not valid CSV ({exc}).")
            row += header is not None
            continue
        if header is None:
            header = [f.strip().lower() for f in fields]
            layout = layout_of(header)
            if layout is None or len(set(header)) != len(header):
                problem = "repeats a column name" if layout else f"names no known columns; expected {LAYOUT_HELP}"
                report.file_error("unknown_format", f"The header row (line {line_no}) {problem}.", line_no)
                return
            report.layout = layout.name
            if set(header) - layout.keys:
                report.ignored(set(header) - layout.keys)
            continue
        assert layout is not None
        row += 1
        if len(fields) != len(header):
            report.error(where, "ragged_row", f"has {len(fields)} field(s); the header has {len(header)}.")
            continue
        record = _csv_record(header, fields, layout, where, report)
        if record is _INVALID:
            continue
        try:
            example = normalise(record, layout)
        except ExampleError as exc:
            report.invalid(where, exc)
            continue
        line = _counted(report, where, example, None)
        if line is not None:
            yield [line]


async def _txt(chunks: AsyncIterator[bytes], report: ReportBuilder) -> Lines:
    chunker = TextChunker(report.limits.text_chunk_chars)
    report.layout = "plain_text"
    async for line_no, raw in lines(chunks, report.limits.max_line_bytes):
        if raw is None:
            _too_long(report, Location(line_no))
            continue
        try:
            text = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            report.error(Location(line_no), "invalid_utf8", f"is not valid UTF-8 (byte {exc.start + 1}).")
            continue
        if "\x00" in text:
            report.error(Location(line_no), "binary_content", "holds a NUL byte: binary data, not text.")
            continue
        out = [line for start, chunk in chunker.add(line_no, text)
               if (line := _counted(report, Location(start), {"type": "text", "text": chunk}, None)) is not None]
        if out:
            yield out
    out = [line for start, chunk in chunker.close()
           if (line := _counted(report, Location(start), {"type": "text", "text": chunk}, None)) is not None]
    if out:
        yield out


READERS: dict[str, Callable[[AsyncIterator[bytes], ReportBuilder], Lines]] = {
    "jsonl": _jsonl, "json": _json, "csv": _csv, "txt": _txt}


async def _peek(chunks: AsyncIterator[bytes], size: int) -> tuple[bytes, bool, AsyncIterator[bytes]]:
    """The first `size` bytes (or more), whether that is the whole stream, and the stream again from byte 0
    (a UTF-8 byte order mark removed)."""
    source = aiter(chunks)
    head = bytearray()
    complete = False
    while len(head) < size:
        try:
            head += await anext(source)
        except StopAsyncIteration:
            complete = True
            break
    start = bytes(head).removeprefix(BOM)

    async def again() -> AsyncIterator[bytes]:
        yield start
        async for chunk in source:
            yield chunk

    return start, complete, again()


def encode(example: dict[str, Any]) -> bytes:
    """One line of the normalised file (without its newline)."""
    return _ENCODER.encode(example).encode("utf-8")


async def validate_stream(chunks: AsyncIterator[bytes], *, filename: str, requested_format: str | None,
                          limits: Limits, sink: Sink | None = None) -> Report:
    """Validate a file as it streams; each good example goes to `sink` as a normalised JSON line, until the
    first error (a file with errors is not trained on, so its normalised form is not needed)."""
    report = ReportBuilder(limits)
    head, complete, stream = await _peek(chunks, HEAD_BYTES)
    problem = unreadable(head)
    if problem is not None:
        report.file_error(problem.code, problem.message)
        return report.finish(format=requested_format, format_source="requested" if requested_format else "detected")
    file_format = requested_format or detect(head, filename, complete=complete)
    async for lines_written in READERS[file_format](stream, report):
        if sink is not None:
            lines_written.append(b"")
            await sink(b"\n".join(lines_written))
    return report.finish(format=file_format, format_source="requested" if requested_format else "detected")
