"""What auth needs from the HTTP request: the client's address and the public base URL, both believed
from forwarded headers only when the direct peer is a trusted proxy."""

from __future__ import annotations

from ipaddress import ip_address

from starlette.requests import Request

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


def public_base_url(request: Request, settings: Settings) -> str:
    """`BASE_URL`, unless a trusted proxy says the request came to another scheme or host."""
    peer = request.client.host if request.client else None
    if _trusted(peer, settings):
        host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        if host and proto in ("http", "https"):
            return f"{proto}://{host}"
    return settings.base_url
