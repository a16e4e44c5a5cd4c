from __future__ import annotations

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    auth_url: str = "http://127.0.0.1:5001"
    files_url: str = "http://127.0.0.1:5002"
    training_url: str = "http://127.0.0.1:5003"
    upstream_connect_timeout_s: float = 3.0
    # Uploads and downloads stream through; a read may wait on a slow client or a big object.
    upstream_read_timeout_s: float = 300.0
    max_upstream_connections: int = 200
