"""Byte-stream splitters for each format: each holds one record (a CSV row, a JSON array element, a chunk of
text) at most, so memory stays bounded whatever the size of the file."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

_CSV_STOP = re.compile(rb'["\n]')
_NON_WS = re.compile(rb"[^ \t\r\n]")
_STRUCTURAL = re.compile(rb'["\[\]{}]')
_STRING_STOP = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb"[,\]} \t\r\n]")


async def line_batches(chunks: AsyncIterator[bytes],
                       max_line_bytes: int) -> AsyncIterator[list[tuple[int, bytes | None]]]:
    """Split a byte stream into numbered lines, handed on as the lines each chunk completes (one list per
    chunk: a few hundred lines cross one `await` rather than one each); a line over the limit comes as None,
    never held."""
    buffer = bytearray()
    line_no, skipping = 1, False
    async for chunk in chunks:
        pieces = chunk.split(b"\n")
        tail = pieces.pop()  # the start of a line the next chunk goes on with
        if pieces:
            first = pieces[0]
            if skipping:
                first_line = None
            elif buffer:
                buffer += first
                first_line = None if len(buffer) > max_line_bytes else bytes(buffer)
            else:
                first_line = None if len(first) > max_line_bytes else first
            batch: list[tuple[int, bytes | None]] = [(line_no, first_line)]
            for number, piece in enumerate(pieces[1:], line_no + 1):
                batch.append((number, None if len(piece) > max_line_bytes else piece))
            line_no += len(pieces)
            buffer.clear()
            skipping = False
            yield batch
        if not skipping:
            buffer += tail
            if len(buffer) > max_line_bytes:
                buffer.clear()
                skipping = True
    if buffer or skipping:
        yield [(line_no, None if skipping else bytes(buffer))]


async def lines(chunks: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """Split a byte stream into numbered lines; a line over the limit is yielded as None, never held."""
    async for batch in line_batches(chunks, max_line_bytes):
        for item in batch:
            yield item


async def csv_records(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """Split CSV bytes into records, each with the line it starts on. A newline inside a quoted field does not
    end a record (a doubled quote toggles twice, so it needs no special case). A record over `max_bytes` is
    yielded as None, never held."""
    buffer = bytearray()
    line, start_line, in_quotes, skipping = 1, 1, False, False
    async for chunk in chunks:
        pos = 0
        while pos < len(chunk):
            if in_quotes:
                end = chunk.find(b'"', pos)
                stop = len(chunk) if end < 0 else end + 1
                in_quotes = end < 0
            else:
                match = _CSV_STOP.search(chunk, pos)
                stop = len(chunk) if match is None else match.end()
                in_quotes = match is not None and match.group() == b'"'
            piece = chunk[pos:stop]
            line += piece.count(b"\n")
            ends_record = not in_quotes and piece.endswith(b"\n")
            if not skipping:
                buffer += piece[:-1] if ends_record else piece
                if len(buffer) > max_bytes:
                    buffer.clear()
                    skipping = True
            pos = stop
            if ends_record:
                yield start_line, None if skipping else bytes(buffer)
                buffer.clear()
                skipping, start_line = False, line
    if buffer or skipping:
        yield start_line, None if skipping else bytes(buffer)


@dataclass
class JsonElement:
    line: int  # where the element starts
    index: int  # 1-based position in the array
    data: bytes | None  # None when `problem` says why it was not kept
    problem: str | None = None  # "line_too_long" or "nesting_too_deep"


@dataclass
class JsonDocumentError:
    line: int
    code: str
    message: str


@dataclass
class _Value:
    line: int
    index: int
    capture: bool
    then: str  # the state to return to after the value
    depth: int = 0
    in_string: bool = False
    escape: bool = False
    scalar: bool = False
    too_deep: bool = False
    too_long: bool = False
    data: bytearray = field(default_factory=bytearray)


class JsonElements:
    """Splits a JSON document (an array of examples, or an object with them as a list under "data") into the
    bytes of each element as they stream past. Only brackets, quotes and the top-level keys are looked at;
    each element is parsed later on its own, so its nesting is checked here first (no RecursionError) and an
    element over the size limit is dropped and reported, never held."""

    def __init__(self, max_element_bytes: int, max_depth: int) -> None:
        self._max_bytes, self._max_depth = max_element_bytes, max_depth
        self._state = "start"
        self._line, self._line_pos = 1, 0
        self._index = 0
        self._key = bytearray()
        self._is_object = False
        self._found_data = False
        self._value: _Value | None = None
        self.failed = False

    def feed(self, chunk: bytes) -> list[JsonElement | JsonDocumentError]:
        out: list[JsonElement | JsonDocumentError] = []
        pos = 0
        while pos < len(chunk) and not self.failed:
            if self._value is not None:
                pos = self._scan_value(chunk, pos, out)
                continue
            if self._state == "key":
                pos = self._scan_key(chunk, pos)
                continue
            match = _NON_WS.search(chunk, pos)
            if match is None:
                break
            pos = self._step(chunk, match.start(), out)
        self._line += chunk.count(b"\n", self._line_pos)
        self._line_pos = 0
        return out

    def close(self) -> list[JsonElement | JsonDocumentError]:
        if self.failed:
            return []
        if self._state != "end" or self._value is not None:
            return [self._fail("invalid_json", "The JSON document ends early (an unclosed bracket or string).")]
        if self._is_object and not self._found_data:
            return [self._fail("unknown_format", "A JSON object must hold its examples as a list under 'data'.")]
        return []

    def _line_at(self, chunk: bytes, pos: int) -> int:
        self._line += chunk.count(b"\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def _fail(self, code: str, message: str) -> JsonDocumentError:
        self.failed = True
        return JsonDocumentError(self._line, code, message)

    def _step(self, chunk: bytes, pos: int, out: list[JsonElement | JsonDocumentError]) -> int:
        """One structural byte outside any element, at `pos`; returns where to go on."""
        c, state = chunk[pos : pos + 1], self._state
        self._line_at(chunk, pos)
        if state == "start":
            if c == b"[":
                self._state = "elements"
            elif c == b"{":
                self._is_object, self._state = True, "keys"
            else:
                out.append(self._fail("invalid_json", "A JSON document must start with '[' or '{'."))
            return pos + 1
        if state in ("elements", "next_element"):
            if c == b"]" and state == "elements":
                self._close_array()
                return pos + 1
            self._index += 1
            self._value = _Value(self._line, self._index, capture=True, then="after_element")
            return self._open_value(chunk, pos)
        if state == "after_element":
            if c == b",":
                self._state = "next_element"
            elif c == b"]":
                self._close_array()
            else:
                out.append(self._fail("invalid_json", "Expected ',' or ']' after an array element."))
            return pos + 1
        if state in ("keys", "next_key"):
            if c == b'"':
                self._key.clear()
                self._state = "key"
            elif c != b"}" or state == "next_key":
                out.append(self._fail("invalid_json", "Expected a quoted key in the JSON object."))
            else:
                self._state = "end"
            return pos + 1
        if state == "colon":
            if c != b":":
                out.append(self._fail("invalid_json", "Expected ':' after a key."))
            self._state = "value"
            return pos + 1
        if state == "value":
            if bytes(self._key) == b"data":
                if c != b"[":
                    out.append(self._fail("wrong_type", "'data' must be a list of examples."))
                self._found_data, self._state = True, "elements"
                return pos + 1
            self._value = _Value(self._line, 0, capture=False, then="after_value")
            return self._open_value(chunk, pos)
        if state == "after_value":
            if c == b",":
                self._state = "next_key"
            elif c == b"}":
                self._state = "end"
            else:
                out.append(self._fail("invalid_json", "Expected ',' or '}' after a value."))
            return pos + 1
        out.append(self._fail("invalid_json", "Unexpected data after the end of the JSON document."))
        return pos + 1

    def _close_array(self) -> None:
        self._state = "after_value" if self._is_object else "end"

    def _scan_key(self, chunk: bytes, pos: int) -> int:
        end = chunk.find(b'"', pos)  # keys worth knowing ("data") have no escapes
        stop = len(chunk) if end < 0 else end
        if len(self._key) < 64:
            self._key += chunk[pos:stop][:64]
        if end < 0:
            return len(chunk)
        if self._key.endswith(b"\\"):  # an escaped quote: the key goes on
            self._key += b'"'
            return end + 1
        self._state = "colon"
        return end + 1

    def _open_value(self, chunk: bytes, pos: int) -> int:
        value = self._value
        assert value is not None
        c = chunk[pos : pos + 1]
        if c in (b"{", b"["):
            value.depth = 1
        elif c == b'"':
            value.in_string = True
        else:
            value.scalar = True
            return pos
        self._keep(value, c)
        return pos + 1

    def _keep(self, value: _Value, piece: bytes) -> None:
        if not value.capture or value.too_long or value.too_deep:
            return
        value.data += piece
        if len(value.data) > self._max_bytes:
            value.too_long = True
            value.data = bytearray()

    def _scan_value(self, chunk: bytes, pos: int, out: list[JsonElement | JsonDocumentError]) -> int:
        value = self._value
        assert value is not None
        start = pos
        while pos < len(chunk):
            if value.escape:
                value.escape = False
                pos += 1
            elif value.in_string:
                match = _STRING_STOP.search(chunk, pos)
                if match is None:
                    pos = len(chunk)
                    break
                pos = match.end()
                if match.group() == b"\\":
                    value.escape = True
                else:
                    value.in_string = False
                    if value.depth == 0:
                        return self._end_value(chunk, start, pos, out)
            elif value.scalar:
                match = _SCALAR_END.search(chunk, pos)
                if match is None:
                    pos = len(chunk)
                    break
                return self._end_value(chunk, start, match.start(), out)
            else:
                match = _STRUCTURAL.search(chunk, pos)
                if match is None:
                    pos = len(chunk)
                    break
                pos = match.end()
                c = match.group()
                if c == b'"':
                    value.in_string = True
                elif c in (b"[", b"{"):
                    value.depth += 1
                    if value.depth > self._max_depth and not value.too_deep:
                        value.too_deep, value.data = True, bytearray()
                else:
                    value.depth -= 1
                    if value.depth == 0:
                        return self._end_value(chunk, start, pos, out)
        self._keep(value, chunk[start:pos])
        return pos

    def _end_value(self, chunk: bytes, start: int, end: int, out: list[JsonElement | JsonDocumentError]) -> int:
        value = self._value
        assert value is not None
        self._keep(value, chunk[start:end])
        self._value = None
        self._state = value.then
        if value.capture:
            problem = "nesting_too_deep" if value.too_deep else "line_too_long" if value.too_long else None
            out.append(JsonElement(value.line, value.index, None if problem else bytes(value.data), problem))
        return end


class TextChunker:
    """Plain text cut into training chunks of at most `target` characters, filled greedily: a chunk that is
    full is cut at its last paragraph boundary (a blank line) when it has one, else between lines; a line
    longer than the room left is split at a space. Holds one chunk at most."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._parts: list[str] = []  # the chunk's text: lines and the separators between them
        self._size = 0
        self._line = 0  # the chunk's first line
        self._cut = 0  # where in _parts its last paragraph boundary is (0: none)
        self._cut_line = 0  # the first line after that boundary
        self._sep = "\n"  # what joins the next line to the chunk: a newline, or a blank line after one

    def add(self, line_no: int, line: str) -> list[tuple[int, str]]:
        """Feed one line (without its newline); returns the chunks completed, each with its first line."""
        out: list[tuple[int, str]] = []
        if not line.strip():
            self._sep = "\n\n"
            return out
        while True:
            sep = self._sep if self._parts else ""
            room = self._target - self._size - len(sep)
            if len(line) <= room:
                self._append(line_no, sep, line)
                return out
            if self._parts and (len(line) <= self._target or room < self._target // 4):
                # A line that starts a paragraph cuts right here; one inside a paragraph at the last boundary.
                self._emit(out, at_paragraph=len(line) <= self._target and sep == "\n")
                continue
            cut = line.rfind(" ", room // 2, room)  # a line too long for the room: fill it up to a space
            cut = cut + 1 if cut > 0 else room
            if line[:cut].strip():
                self._append(line_no, sep, line[:cut].rstrip())
            self._emit(out)
            line = line[cut:]

    def close(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        self._emit(out)
        return out

    def _append(self, line_no: int, sep: str, text: str) -> None:
        if not self._parts:
            self._line = line_no
        if sep == "\n\n":
            self._cut, self._cut_line = len(self._parts), line_no
        self._parts += [sep, text] if sep else [text]
        self._size += len(sep) + len(text)
        self._sep = "\n"

    def _emit(self, out: list[tuple[int, str]], at_paragraph: bool = False) -> None:
        if not self._parts:
            return
        if at_paragraph and self._cut:
            out.append((self._line, "".join(self._parts[: self._cut])))
            self._parts = self._parts[self._cut + 1 :]  # the paragraph after the boundary stays
            self._size, self._line = sum(map(len, self._parts)), self._cut_line
        else:
            out.append((self._line, "".join(self._parts)))
            self._parts, self._size = [], 0
        self._cut = 0


def nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether the JSON text in `raw` nests deeper than `limit` (strings skipped; nothing parsed)."""
    depth, pos, in_string = 0, 0, False
    while True:
        match = (_STRING_STOP if in_string else _STRUCTURAL).search(raw, pos)
        if match is None:
            return False
        pos, c = match.end(), match.group()
        if in_string:
            if c == b"\\":
                pos += 1
            else:
                in_string = False
        elif c == b'"':
            in_string = True
        elif c in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
