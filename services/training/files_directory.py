"""Asking the files service about a file training's projection has not heard of yet.

A job's files are decided from the projection (file_projection.py), fed by files' events. A file uploaded a moment
ago may not be in it yet (its `file.uploaded` is on its way), so a file the projection does not know is asked about
over HTTP: files' own `GET /v1/files/{id}`, with the caller's own access token, which files verifies itself and
answers only for the caller's files (another user's file is a 404 there as everywhere). That answer is files' word
at the time of the request, so a job on an unknown or foreign file is refused at once, and a file just uploaded
is accepted, its launch waiting for the projection as before. Where files cannot answer (FILES_URL unset, a time-
out, a 5xx) the job is accepted and its launch decides (launch.py's UNKNOWN_FILE_GRACE_S): creating a job does not
depend on files being up for a file files already announced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSeen:
    """What files says about a file id for the caller: not theirs or not there (`found` False), or its state."""

    found: bool
    purpose: str | None = None
    status: str | None = None  # uploaded, processed or error (files' OpenAI statuses)


class FilesDirectory:
    def __init__(self, files_url: str, timeout_s: float) -> None:
        self._base = files_url.rstrip("/")
        self._timeout = timeout_s

    async def find(self, file_id: str, bearer_token: str) -> FileSeen | None:
        """What files says about the caller's file; None when files could not answer."""
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.get(f"{self._base}/v1/files/{quote(file_id, safe='')}",
                                          headers={"Authorization": f"Bearer {bearer_token}"})
        except httpx.HTTPError as exc:
            log.warning("files could not be asked about a file", extra={"file_id": file_id, "error": str(exc)})
            return None
        if response.status_code == 404:
            return FileSeen(found=False)
        if response.status_code != 200:
            log.warning("files did not answer about a file", extra={"file_id": file_id,
                                                                    "status": response.status_code})
            return None
        body = response.json()
        return FileSeen(found=True, purpose=str(body.get("purpose")), status=str(body.get("status")))
