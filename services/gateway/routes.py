"""The gateway's routing table: which service answers a path, and which paths need no token."""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.settings import Settings

PUBLIC = frozenset({("POST", "/auth/register"), ("POST", "/auth/login"), ("GET", "/.well-known/jwks.json")})


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str


ROUTES = (
    Route("/.well-known/jwks.json", "auth"),
    Route("/auth", "auth"),
    Route("/v1/files", "files"),
    Route("/v1/fine_tuning", "training"),
    Route("/api/catalog", "training"),
)


def upstream_for(path: str) -> str | None:
    """The service for a path: a prefix matches itself and what lies below it, never a longer name."""
    for route in ROUTES:
        if path == route.prefix or path.startswith(route.prefix + "/"):
            return route.service
    return None


def base_urls(settings: Settings) -> dict[str, str]:
    return {"auth": settings.auth_url, "files": settings.files_url, "training": settings.training_url}


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC
