"""The gateway's routing table: which service answers a path, which paths need no token, and where a program's
API key stands in for one."""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.settings import Settings

# Routes a person reaches before having (or while renewing) an access token; auth guards them itself
# (rate limits, the refresh cookie and its CSRF token, the OAuth state).
PUBLIC = frozenset({("POST", "/auth/register"), ("POST", "/auth/login"), ("POST", "/auth/refresh"),
                    ("POST", "/auth/logout"), ("GET", "/auth/providers"), ("GET", "/.well-known/jwks.json")})
PUBLIC_PREFIXES = ("/auth/google/",)


@dataclass(frozen=True)
class Upstream:
    prefix: str
    service: str


UPSTREAMS = (
    Upstream("/.well-known/jwks.json", "auth"),
    Upstream("/auth", "auth"),
    Upstream("/api/audit", "auth"),
    Upstream("/v1/files", "files"),
    Upstream("/v1/fine_tuning", "training"),
    Upstream("/api/catalog", "training"),
    Upstream("/api/estimates", "training"),
    Upstream("/api/jobs", "training"),
    Upstream("/api/uploads", "files"),
    Upstream("/api/files", "files"),
    Upstream("/v1/models", "inference"),
    Upstream("/v1/chat/completions", "inference"),
    Upstream("/api/serving", "inference"),
    Upstream("/api/deployments", "inference"),
    Upstream("/api/evaluations", "inference"),
)


# Services' private endpoints (auth's key exchange and revocation list): never reachable from outside.
INTERNAL_PREFIX = "/internal"
# Where a program's API key stands in for an access token; signing in and managing keys need a person.
API_KEY_PREFIXES = ("/v1", "/api")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def upstream_for(path: str) -> str | None:
    """The service for a path: a prefix matches itself and what lies below it, never a longer name.
    A path with `.` or `..` segments has none: the upstream URL would resolve them (`/auth/../internal`)."""
    segments = path.split("/")
    if "." in segments or ".." in segments or _under(path, INTERNAL_PREFIX):
        return None
    for upstream in UPSTREAMS:
        if _under(path, upstream.prefix):
            return upstream.service
    return None


def base_urls(settings: Settings) -> dict[str, str]:
    return {"auth": settings.auth_url, "files": settings.files_url, "training": settings.training_url,
            "inference": settings.inference_url}


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or (method == "GET" and path.startswith(PUBLIC_PREFIXES))


def accepts_api_keys(path: str) -> bool:
    return any(_under(path, prefix) for prefix in API_KEY_PREFIXES)
