"""Configuration that is not AWS: the Google OAuth client, and the secrets the services refuse as placeholders."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from deploy.doctor.context import Context
from deploy.doctor.model import Check, failed, passed, skipped, warned
from services.auth.google_routes import CALLBACK_PATH
from services.auth.oidc_client import SCOPES, GoogleProvider, GoogleSignInFailed
from services.auth.settings import Settings as AuthSettings
from services.auth.signing_keys import ConfigurationError, Signer
from services.files.settings import Settings as FilesSettings
from services.gateway.settings import Settings as GatewaySettings
from services.training.settings import Settings as TrainingSettings
from shared.settings import is_placeholder

CONSOLE = "Google Cloud Console → APIs & Services → Credentials → OAuth 2.0 Client IDs → your client"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]"}


def redirect_uri(settings: AuthSettings) -> str:
    """The redirect URI the auth service sends to Google (services/auth/google_routes.py), absent a trusted
    proxy's forwarded scheme and host."""
    return settings.base_url + CALLBACK_PATH


def base_url_problem(base_url: str, development: bool) -> str | None:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"BASE_URL {base_url!r} is not an absolute http(s) URL"
    if parts.query or parts.fragment:
        return f"BASE_URL {base_url!r} has a query or fragment; Google redirect URIs may not"
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS and not development:
        return f"BASE_URL {base_url!r} is http: Google accepts http redirect URIs only for localhost"
    return None


def authorization_error(status: int, location: str, body: str) -> str | None:
    """What Google's authorization endpoint said about the client and redirect URI: None when it went on to
    sign-in. Its errors come as an error page, or as a redirect to /signin/oauth/error with `authError`
    (base64) naming the error."""
    text = body + location
    for part in urlsplit(location).query.split("&"):
        if part.startswith("authError="):
            value = part.split("=", 1)[1].replace("%3D", "=")
            try:
                text += base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                pass
    for error in ("redirect_uri_mismatch", "invalid_client", "deleted_client", "unauthorized_client"):
        if error in text:
            return error
    if status >= 400 or "/oauth/error" in location:
        return f"error (HTTP {status})"
    return None


async def google_oauth(ctx: Context) -> list[Check]:
    settings = ctx.auth
    if not settings.google_client_id:
        return [skipped("google-oauth", "Google sign-in is off (GOOGLE_CLIENT_ID unset)",
                        "to turn it on: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET, and register "
                        f"{redirect_uri(settings)} in {CONSOLE} → Authorized redirect URIs")]
    return [await _redirect_uri(ctx), await _client_secret(ctx)]


async def _redirect_uri(ctx: Context) -> Check:
    name, settings = "google-oauth.redirect-uri", ctx.auth
    uri = redirect_uri(settings)
    problem = base_url_problem(settings.base_url, ctx.is_development)
    if problem:
        return failed(name, problem, "set BASE_URL to the public address people reach the app at, "
                      "e.g. BASE_URL=https://tuner.example.com")
    expected = f"{settings.base_url}/auth/google/callback"
    if uri != expected:  # the service's callback path and the guide's must stay the same
        return failed(name, f"the app sends redirect_uri {uri}, not {expected}",
                      "services/auth/google_routes.py CALLBACK_PATH must be /auth/google/callback")
    register = f"in {CONSOLE} → Authorized redirect URIs, add exactly {uri} (scheme, host and port included)"
    try:
        metadata = await GoogleProvider(settings).metadata()
        params = {"client_id": settings.google_client_id, "redirect_uri": uri, "response_type": "code",
                  "scope": SCOPES}
        async with httpx.AsyncClient(timeout=ctx.http_timeout_s, follow_redirects=False) as client:
            answer = await client.get(f"{metadata.authorization_endpoint}?{urlencode(params)}")
    except (GoogleSignInFailed, httpx.HTTPError) as exc:
        return warned(name, f"the app uses redirect_uri {uri}; Google could not be asked whether it is registered "
                      f"({exc})", register)
    error = authorization_error(answer.status_code, answer.headers.get("location", ""), answer.text)
    if error == "redirect_uri_mismatch":
        return failed(name, f"Google refuses redirect_uri {uri} for client {settings.google_client_id} "
                      "(redirect_uri_mismatch): sign-in with Google fails", register)
    if error:
        return failed(name, f"Google refuses client {settings.google_client_id}: {error}",
                      f"check GOOGLE_CLIENT_ID against {CONSOLE}")
    return passed(name, f"Google accepts redirect_uri {uri} for client {settings.google_client_id}")


async def _client_secret(ctx: Context) -> Check:
    name, settings = "google-oauth.client-secret", ctx.auth
    secret = settings.google_client_secret
    fix = f"set GOOGLE_CLIENT_SECRET to the client secret shown in {CONSOLE}"
    if secret is None:
        return failed(name, "GOOGLE_CLIENT_ID is set but GOOGLE_CLIENT_SECRET is not", fix)
    if is_placeholder(secret.get_secret_value()):
        return failed(name, "GOOGLE_CLIENT_SECRET holds a placeholder, not the client's secret", fix)
    # A made-up code: a client that authenticates gets invalid_grant, a wrong id or secret invalid_client.
    form = {"grant_type": "authorization_code", "code": "llm-tuner-doctor-probe",
            "redirect_uri": redirect_uri(settings), "client_id": settings.google_client_id,
            "client_secret": secret.get_secret_value()}
    try:
        metadata = await GoogleProvider(settings).metadata()
        async with httpx.AsyncClient(timeout=ctx.http_timeout_s) as client:
            answer = await client.post(metadata.token_endpoint, data=form, headers={"Accept": "application/json"})
        error = str(answer.json().get("error", ""))
    except (GoogleSignInFailed, httpx.HTTPError, ValueError, AttributeError) as exc:
        return warned(name, f"GOOGLE_CLIENT_SECRET is set (not a placeholder); Google could not be asked whether "
                      f"it is right ({exc})", fix)
    if error in ("invalid_client", "unauthorized_client"):
        return failed(name, f"Google's token endpoint rejects the client id and secret ({error})", fix)
    return passed(name, "GOOGLE_CLIENT_SECRET is set and Google accepts the client's credentials")


SERVICE_SETTINGS: tuple[type[BaseModel], ...] = (AuthSettings, FilesSettings, TrainingSettings, GatewaySettings)


async def secrets(ctx: Context) -> Check:
    """The services' own refusal (shared/settings.py) of unset or placeholder secrets, and auth's signing key."""
    if ctx.is_development:
        return skipped("secrets", f"ENVIRONMENT={ctx.environment}: the services accept placeholder secrets here",
                       "set ENVIRONMENT=production (or staging) where it runs for real")
    problems: list[str] = []
    checked: set[str] = set()
    for settings_class in SERVICE_SETTINGS:
        try:
            loaded = settings_class()
        except ValidationError as exc:
            problems += [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
            continue
        checked |= {n.upper() for n, f in type(loaded).model_fields.items() if f.annotation in
                    (SecretStr, SecretStr | None)}
    try:  # the signing key as auth loads it at start: set, and an RSA key in PEM
        Signer.from_settings(ctx.auth.model_copy(update={"environment": ctx.environment}))
    except (ConfigurationError, ValueError, TypeError) as exc:
        problems.append(str(exc) if "JWT_PRIVATE_KEY" in str(exc) else f"JWT_PRIVATE_KEY: {exc}")
    problems = list(dict.fromkeys(problems))
    if problems:
        return failed("secrets", "; ".join(problems),  # the services name the first refusal of each
                      "put the real values in the environment (on AWS: the service's secret in Secrets Manager), "
                      "e.g. JWT_PRIVATE_KEY from `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`")
    return passed("secrets", f"ENVIRONMENT={ctx.environment}: no secret unset or a placeholder "
                             f"({', '.join(sorted(checked)) or 'none defined'})")
