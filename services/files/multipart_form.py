"""A multipart/form-data request body read as it streams (the web layer's part of `POST /v1/files`): the file
part's bytes are handed on as they arrive, never held whole; the other fields are a closed set, each small and
sent at most once, so whatever a body holds, the form never keeps more than a few kilobytes besides the file."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Collection
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from shared.errors import InvalidRequest

MAX_FIELD_BYTES = 4096
# What `POST /v1/files` reads besides the file: the openai SDK's `purpose`, and our optional `format`. Any other
# part is refused as it begins (as OpenAI refuses an unknown argument), before a byte of its value is read.
FORM_FIELDS = frozenset({"purpose", "format"})
# python-multipart bounds each part's headers (8 lines of about 4 KiB); this bounds what one part's keep.
MAX_HEADER_BYTES = 8 * 1024


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    header_bytes: int = 0
    name: str | None = None
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


class StreamedForm:
    """The form of one request: `file_chunks()` yields the `file_field` part's bytes; once it is exhausted,
    `fields` holds the other fields, `filename` the file's name as sent and `saw_file` whether there was one.
    A body that is not multipart/form-data, is malformed, or has a part outside `file_field` and `fields_allowed`
    (or one of them twice) raises InvalidRequest while it is read."""

    def __init__(self, content_type: str, body: AsyncIterable[bytes], file_field: str = "file",
                 fields_allowed: Collection[str] = FORM_FIELDS) -> None:
        self._content_type = content_type
        self._body = body
        self._file_field = file_field
        self._fields_allowed = frozenset(fields_allowed)
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.saw_file = False
        self._part = _Part()
        self._file_part: _Part | None = None
        self._header_field = b""
        self._header_value = b""
        self._pending: list[bytes] = []

    async def file_chunks(self) -> AsyncIterator[bytes]:
        content_type, params = parse_options_header(self._content_type)
        boundary = params.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise InvalidRequest("Expected a multipart/form-data body with a 'file' part.", param="file",
                                 code="invalid_content_type")
        parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._on_part_begin, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished, "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end})
        pending = self._pending
        async for chunk in self._body:
            try:
                parser.write(chunk)
            except InvalidRequest:
                raise
            except Exception as exc:
                raise InvalidRequest(f"Malformed multipart body: {exc}", param="file") from exc
            if pending:
                for data in pending:
                    yield data
                pending.clear()
        parser.finalize()
        self.filename = self._file_part.filename if self._file_part else None

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._count_header_bytes(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._count_header_bytes(end - start)

    def _count_header_bytes(self, n: int) -> None:
        self._part.header_bytes += n
        if self._part.header_bytes > MAX_HEADER_BYTES:
            raise InvalidRequest("A form part's headers are too long.", param="file", code="invalid_request")

    def _on_header_end(self) -> None:
        # latin-1 keeps the raw bytes (as parse_options_header expects): a UTF-8 filename is decoded below, once.
        self._part.headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        part = self._part
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        name = part.name = disposition.get(b"name", b"").decode(errors="replace")
        raw_filename = disposition.get(b"filename")
        part.filename = raw_filename.decode(errors="replace") if raw_filename is not None else None
        if name == self._file_field:
            if self.saw_file:
                raise InvalidRequest("Send exactly one 'file' part.", param="file")
            self.saw_file = True
            self._file_part = part
        elif name not in self._fields_allowed:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name[:64] or '(a part without a name)'}",
                                 param=name[:64] or None, code="unknown_parameter")
        elif name in self.fields:
            raise InvalidRequest(f"Send '{name}' once.", param=name, code="duplicate_parameter")
        else:
            self.fields[name] = ""  # claimed now, so that a second part of that name is refused as it begins

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part is self._file_part:
            self._pending.append(data[start:end])
        else:
            part.value += data[start:end]
            if len(part.value) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"Form field '{part.name}' is too long.", param=part.name)

    def _on_part_end(self) -> None:
        part = self._part
        if part is not self._file_part and part.name:
            self.fields[part.name] = part.value.decode(errors="replace")
