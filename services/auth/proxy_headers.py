"""What auth needs from the HTTP request: the client's address (believed from X-Forwarded-For only when the
direct peer is a trusted proxy) and what the client says it is. The public address is never taken from a
request: it is `BASE_URL` (settings.base_url), whatever Host or X-Forwarded-Host say."""

from __future__ import annotations

from ipaddress import ip_address

from starlette.requests import Request

from services.auth.models import ClientInfo
from services.auth.settings import Settings


def _trusted(host: str | None, settings: Settings) -> bool:
    if not host:
        return False
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in settings.trusted_proxies)


def client_ip(request: Request, settings: Settings) -> str:
    peer = request.client.host if request.client else ""
    if not _trusted(peer, settings):
        return peer or "unknown"
    # Walk X-Forwarded-For from the right: the first address not one of our proxies is the client's.
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, settings):
            return hop
    return hops[0] if hops else peer


def client_info(request: Request, settings: Settings) -> ClientInfo:
    return ClientInfo(ip=client_ip(request, settings), user_agent=request.headers.get("user-agent", "")[:256])
