"""Small helpers for service entry points."""

from __future__ import annotations

import os


def serve_port(default: int) -> int:
    return int(os.environ.get("PORT", default))


def serve_host() -> str:
    return os.environ.get("HOST", "127.0.0.1")
