"""AWS's binary event stream (`application/vnd.amazon.eventstream`), the encoding side; botocore's
`botocore/eventstream.py` is the decoder it is written against.

A message: a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes; big-endian uint32s),
the headers (each: name length uint8, name, value type 7 = string, value length uint16, value), the payload,
and a CRC32 of everything before it.
"""

from __future__ import annotations

import json
import struct
from binascii import crc32

STRING_HEADER_TYPE = 7
PRELUDE_LENGTH = 12
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024  # what botocore's decoder accepts in one message


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    encoded_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = PRELUDE_LENGTH + len(encoded_headers) + len(payload) + 4
    lengths = struct.pack("!II", total, len(encoded_headers))
    prelude = lengths + struct.pack("!I", crc32(lengths) & 0xFFFFFFFF)
    message = prelude + encoded_headers + payload
    return message + struct.pack("!I", crc32(message) & 0xFFFFFFFF)


def payload_parts(data: bytes) -> bytes:
    """InvokeEndpointWithResponseStream's `PayloadPart` events carrying `data` as raw bytes (split only if it
    exceeds what one message may hold)."""
    return b"".join(
        encode_message({":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                        ":message-type": "event"}, data[start:start + MAX_PAYLOAD_BYTES])
        for start in range(0, max(len(data), 1), MAX_PAYLOAD_BYTES))


def exception_event(exception_type: str, fields: dict[str, str]) -> bytes:
    """A modelled error in the stream (e.g. `ModelStreamError` with Message and ErrorCode): botocore raises
    it as an EventStreamError while the caller iterates."""
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, json.dumps(fields).encode("utf-8"))


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    return (struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", STRING_HEADER_TYPE, len(raw_value))
            + raw_value)
