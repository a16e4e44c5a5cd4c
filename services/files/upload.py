"""Multipart uploads streamed into S3: the body is parsed as it arrives and the file part goes to an S3
multipart upload one part at a time, so memory stays at one part whatever the size of the file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from shared.errors import InvalidRequest, PayloadTooLarge

MAX_FIELD_BYTES = 4096


class S3StreamWriter:
    """`before_write(total)` runs before the bytes that bring the file to `total` are kept (the quota
    reservation); raising there, like passing `max_bytes`, stops the upload: the caller then calls `abort`."""

    def __init__(self, s3: Any, bucket: str, key: str, *, part_bytes: int, max_bytes: int,
                 sse: dict[str, str] | None = None,
                 before_write: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._part_bytes = max(part_bytes, 5 * 1024 * 1024)  # S3's minimum for all parts but the last
        self._max_bytes = max_bytes
        self._sse = sse or {"ServerSideEncryption": "AES256"}
        self._before_write = before_write
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max_bytes:
            raise PayloadTooLarge(f"File is larger than the {self._max_bytes} byte limit.", param="file",
                                  code="file_too_large")
        if self._before_write is not None:
            await self._before_write(self.size)
        self._buffer += data
        while len(self._buffer) >= self._part_bytes:
            chunk = bytes(self._buffer[: self._part_bytes])
            del self._buffer[: self._part_bytes]
            await self._upload_part(chunk)

    async def _upload_part(self, chunk: bytes) -> None:
        if self._upload_id is None:
            created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._key, **self._sse)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        result = await self._s3.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                            PartNumber=number, Body=chunk)
        self._parts.append({"PartNumber": number, "ETag": result["ETag"]})

    async def finish(self) -> None:
        if self._upload_id is None:  # small file: one PUT
            await self._s3.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), **self._sse)
            return
        if self._buffer:
            await self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        await self._s3.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                                 MultipartUpload={"Parts": self._parts})

    async def abort(self) -> None:
        """Nothing of the upload stays: the unfinished multipart upload and its parts are dropped."""
        if self._upload_id is not None:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            self._upload_id = None
        self._buffer.clear()


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


@dataclass
class ParsedUpload:
    fields: dict[str, str]
    filename: str | None
    saw_file: bool


async def stream_multipart_to(request: Request, file_field: str, writer: S3StreamWriter) -> ParsedUpload:
    """Parse `request`'s multipart body; the `file_field` part's bytes go to `writer` as they arrive."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Expected a multipart/form-data body with a 'file' part.", param="file",
                             code="invalid_content_type")
    fields: dict[str, str] = {}
    pending: list[bytes] = []
    state: dict[str, Any] = {"part": None, "header_field": b"", "header_value": b"", "file": None,
                             "saw_file": False}

    def on_part_begin() -> None:
        state["part"] = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        # latin-1 keeps the raw bytes (as parse_options_header expects): a UTF-8 filename is decoded below, once.
        state["part"].headers[state["header_field"].decode("latin-1").lower()] = state["header_value"].decode(
            "latin-1")
        state["header_field"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        part: _Part = state["part"]
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = disposition.get(b"name", b"").decode(errors="replace")
        raw_filename = disposition.get(b"filename")
        part.filename = raw_filename.decode(errors="replace") if raw_filename is not None else None
        if part.name == file_field:
            if state["saw_file"]:
                raise InvalidRequest("Send exactly one 'file' part.", param="file")
            state["saw_file"] = True
            state["file"] = part

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part: _Part = state["part"]
        if part is state["file"]:
            pending.append(bytes(data[start:end]))
        else:
            part.value += data[start:end]
            if len(part.value) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"Form field '{part.name}' is too long.", param=part.name)

    def on_part_end() -> None:
        part: _Part = state["part"]
        if part is not state["file"] and part.name:
            fields[part.name] = part.value.decode(errors="replace")

    parser = MultipartParser(boundary, callbacks={  # type: ignore[arg-type]
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except InvalidRequest:
            raise
        except Exception as exc:
            raise InvalidRequest(f"Malformed multipart body: {exc}", param="file") from exc
        for data in pending:
            await writer.write(data)
        pending.clear()
    parser.finalize()
    file_part: _Part | None = state["file"]
    return ParsedUpload(fields=fields, filename=file_part.filename if file_part else None,
                        saw_file=state["saw_file"])
