"""Filenames as clients send them, made safe to show and to send back. A filename never reaches a key."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

MAX_FILENAME_CHARS = 255
MAX_EXTENSION_CHARS = 16
DEFAULT_FILENAME = "upload"


def clean_filename(name: str | None) -> str:
    """The last path segment, without control or format characters, at most 255 characters (the
    extension kept when a long name is cut)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in unicodedata.normalize("NFC", base) if c.isprintable()).strip()
    if base in ("", ".", ".."):
        return DEFAULT_FILENAME
    if len(base) <= MAX_FILENAME_CHARS:
        return base
    stem, dot, extension = base.rpartition(".")
    if stem and dot and len(extension) <= MAX_EXTENSION_CHARS:
        return stem[:MAX_FILENAME_CHARS - len(extension) - 1].rstrip() + "." + extension
    return base[:MAX_FILENAME_CHARS].rstrip()


def _ascii_fallback(name: str) -> str:
    # Only what every client reads literally inside a quoted-string: printable ASCII less `"`, `\` and `%`
    # (some browsers percent-decode the plain parameter).
    return "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition header value (RFC 6266): an ASCII `filename` every client understands, and
    `filename*` (RFC 8187, UTF-8, percent-encoded) with the real name when it is not plain ASCII."""
    name = clean_filename(filename)
    fallback = _ascii_fallback(name)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value
