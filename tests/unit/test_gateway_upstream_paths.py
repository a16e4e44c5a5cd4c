"""The gateway forwards the client's path as the service must read it: whatever the client percent-encoded
(a control character, `%`, `?`) arrives encoded again, never as a URL httpx refuses (which was a 500 on every
`/{id}` route, found by schemathesis) nor as a different path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request

from services.gateway import proxy


class NotFoundBody(httpx.AsyncByteStream):
    """A body still to be read, as a real service's response is (httpx reads a plain bytes body at once)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"error": {"message": "No such file.", "type": "invalid_request_error", "param": null, "code": null}}'


def request_for(path: str) -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode("utf-8", "surrogateescape"),
             "query_string": b"limit=2", "headers": [(b"host", b"gateway")], "scheme": "http",
             "server": ("gateway", 80), "client": ("127.0.0.1", 5000), "root_path": ""}
    return Request(scope, receive)


@pytest.mark.parametrize(("decoded", "sent"), [
    ("/v1/files/\x03\x7f", b"/v1/files/%03%7F"),
    ("/v1/files/100%", b"/v1/files/100%25"),
    ("/v1/files/a?b#c", b"/v1/files/a%3Fb%23c"),
    ("/v1/files/é 1", b"/v1/files/%C3%A9%201"),
    ("/v1/models/ft:llm-tuner/tiny-chat:user-1::ab12", b"/v1/models/ft:llm-tuner/tiny-chat:user-1::ab12"),
])
async def test_the_upstream_gets_the_path_the_client_meant(decoded: str, sent: bytes) -> None:
    seen: list[httpx.URL] = []

    def service(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(404, headers={"content-type": "application/json"}, stream=NotFoundBody())

    async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as client:
        response = await proxy.forward(client, "http://files:5002", request_for(decoded))
    assert response.status_code == 404  # the service's answer, not the gateway's 500
    assert seen[0].raw_path == sent + b"?limit=2"
