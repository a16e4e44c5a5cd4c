"""Which format a file is in, from its first bytes (the upload's explicit `format` overrides)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass

from services.files.formats.examples import KNOWN_KEYS, layout_of

FORMATS = ("jsonl", "json", "csv", "txt")
HEAD_BYTES = 64 * 1024
BOM = b"\xef\xbb\xbf"
_MAGIC = {  # the start of common binary formats somebody might upload by mistake
    b"PK\x03\x04": "a ZIP archive (or an .xlsx/.docx file)", b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
    b"BZh": "a bzip2 archive", b"\xfd7zXZ": "an xz archive", b"7z\xbc\xaf": "a 7-Zip archive",
    b"PAR1": "a Parquet file", b"SQLite format 3": "an SQLite database", b"\x7fELF": "an executable",
    b"\xd0\xcf\x11\xe0": "an old Office document (.xls/.doc)",
}
_TEXT_CONTROLS = set(b"\t\n\r\f\b")


@dataclass(frozen=True)
class Unreadable:
    code: str
    message: str


def unreadable(head: bytes) -> Unreadable | None:
    """Why the file cannot be training text at all (binary, UTF-16, empty), judged from its first bytes."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Unreadable("invalid_utf8", "The file is UTF-16 encoded; save it as UTF-8.")
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return Unreadable("binary_content", f"The file looks like {what}, not text.")
    controls = sum(1 for b in head if b < 32 and b not in _TEXT_CONTROLS)
    if b"\x00" in head or controls > len(head) // 10:
        return Unreadable("binary_content", "The file holds binary data, not text.")
    if not head.removeprefix(BOM).strip():
        return Unreadable("empty_file", "The file is empty.")
    return None


def _json_object(line: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*(:)?|[\[{]|[\]}]')


def _top_level_keys(text: bytes) -> set[str]:
    """The keys of the outermost object that appear in `text` (the start of a JSON object)."""
    keys, depth = set(), 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
        elif depth == 1 and match.group(2):
            keys.add(match.group(1).decode("utf-8", errors="replace"))
    return keys


def _csv_header(line: bytes) -> list[str] | None:
    try:
        fields = next(csv.reader([line.decode("utf-8", errors="replace")]))
    except (csv.Error, StopIteration):
        return None
    return [f.strip().lower() for f in fields]


def detect(head: bytes, filename: str, *, complete: bool) -> str:
    """The format of a file starting with `head` (`complete`: the head is the whole file)."""
    text = head.removeprefix(BOM).lstrip()
    first, newline, _ = text.partition(b"\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        if not newline and not complete:  # one line longer than the head: a long example, or minified JSON
            keys = _top_level_keys(text)
            return "json" if "data" in keys and layout_of(keys) is None else "jsonl"
        record = _json_object(first)
        if record is not None:  # one object per line, unless it is a whole {"data": [...]} document
            wrapped = isinstance(record.get("data"), list) and layout_of(record) is None
            return "json" if wrapped else "jsonl"
        # A first line that is not an object by itself: JSON Lines only if later lines are.
        later = text.split(b"\n")[1:21] if complete else text.split(b"\n")[1:-1][:20]
        return "jsonl" if any(_json_object(line) is not None for line in later) else "json"
    header = _csv_header(first)
    is_csv_name = filename.lower().endswith(".csv")
    if is_csv_name or (header and len(header) > 1 and set(header) <= KNOWN_KEYS):
        return "csv"
    return "txt"
