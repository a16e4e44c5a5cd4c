"""List operations' pagination: an opaque NextToken that carries the offset of the next page."""

from __future__ import annotations

import base64
import binascii
import json

from .errors import ValidationError


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValidationError("The pagination token is invalid.") from exc
    if not isinstance(offset, int) or offset < 0:
        raise ValidationError("The pagination token is invalid.")
    return offset
