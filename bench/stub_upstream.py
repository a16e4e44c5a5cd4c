"""A do-nothing upstream for the gateway: answers every request at once, so a benchmark through the gateway
measures the gateway's own work (routing, token verification, proxying) and not a service's."""

from __future__ import annotations

import json
import os
import sys

_BODY = json.dumps({"object": "list", "data": [], "has_more": False, "sessions": []}).encode()


async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]})
    await send({"type": "http.response.body", "body": _BODY})  # type: ignore[operator]


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1] if len(sys.argv) > 1 else os.environ["PORT"]),
                log_level="warning")
