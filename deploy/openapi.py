"""The one public OpenAPI document: every route the gateway exposes, as a client sees it.

Each service's FastAPI app describes its own routes; this module builds those apps (their lifespans never run:
no AWS is touched), keeps the routes the gateway forwards to that service (`services.gateway.routing`, so
`/internal/*` stays out), adds the gateway's own, and writes down what the apps cannot tell
(`deploy/openapi_answers.py`): the success bodies built by hand, the error statuses each operation answers, all
with the shared error envelope, and the security schemes (an access token, or an API key on /v1 and /api).
FastAPI's 422 is replaced by the 400 the services really answer for a bad parameter or body.

The gateway cannot build this itself (a service never imports another), so the output is committed:
`python -m deploy.openapi` writes services/gateway/openapi.json, which the gateway serves at `/openapi.json`,
and a unit test keeps it equal to what this module builds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploy import openapi_answers as answers
from services.gateway import routing

Json = dict[str, Any]

SERVICES = ("auth", "files", "training", "inference")
DOCUMENT_FILE = Path(__file__).resolve().parents[1] / "services" / "gateway" / "openapi.json"
# FastAPI's validation error (a 422): the services answer a 400 in the error envelope instead.
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
METHODS = ("get", "put", "post", "delete", "patch")

SECURITY_SCHEMES: Json = {
    "accessToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A session's access token: `access_token` from /auth/register, /auth/login "
                                   "or /auth/refresh."},
    "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "API key",
               "description": "An API key from POST /auth/api-keys, for programs: accepted on /v1 and /api."},
}
TAGS = [
    {"name": "auth", "description": "Accounts, sessions, API keys, the audit log, and the keys that sign tokens."},
    {"name": "files", "description": "Training data: uploads (OpenAI's files API, and direct uploads in parts) and "
                                     "what validation found."},
    {"name": "training", "description": "Fine-tuning jobs (OpenAI's API), their estimates, progress and results."},
    {"name": "inference", "description": "Models, chat completions (OpenAI's API), deployments and evaluations."},
    {"name": "gateway", "description": "Live events for the web app."},
]
INFO: Json = {
    "title": "LLM Tuner API",
    "version": "1",
    "description": "Fine-tune language models on your own data, in your own AWS account. /v1 is compatible with "
                   "OpenAI's files, fine-tuning, models and chat completions APIs (the official SDKs work with "
                   "`base_url` set to this server's /v1); /api holds what OpenAI has no API for; /auth signs "
                   "people in. Every error answers `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
}


@contextlib.contextmanager
def building_apps() -> Iterator[None]:
    """Building an app reads its Settings (development defaults: no secret is needed to describe routes) and
    points the root logger at JSON lines; neither outlives the build."""
    saved_env = dict(os.environ)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    os.environ["ENVIRONMENT"] = "development"
    os.environ.setdefault("SERVICE_TOKEN", "openapi-document-build")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def service_document(service: str) -> Json:
    app = importlib.import_module(f"services.{service}.app").build_app()
    document: Json = app.openapi()
    return document


def _error(description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": answers.ref("Error")}}}


def _common_errors(method: str, path: str, operation: Json) -> dict[int, str]:
    errors: dict[int, str] = {}
    if operation.get("parameters") or "requestBody" in operation:
        errors[400] = "A parameter or the body is not valid (`param` names it)."
    if "requestBody" in operation:
        errors[413] = "The body is larger than the limit."
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        errors[404] = "No such object (another user's is not found either)."
    if not routing.is_public(method, path):
        errors[401] = "No access token or API key, or a bad, expired or revoked one."
    return errors


def _security(method: str, path: str) -> list[Json]:
    if routing.is_public(method, path):
        return []
    return [{"accessToken": []}] + ([{"apiKey": []}] if routing.accepts_api_keys(path) else [])


def describe(method: str, path: str, operation: Json, service: str) -> Json:
    """One operation as the gateway answers it."""
    key = (method.upper(), path)
    told = answers.OPERATIONS.get(key, answers.Answers())
    operation = {**operation, "tags": [service], "security": _security(*key)}
    if key in answers.REQUEST_BODIES:
        operation["requestBody"] = answers.REQUEST_BODIES[key]
    responses = {status: body for status, body in operation.get("responses", {}).items() if status != "422"}
    success = min(s for s in responses if s.startswith("2"))
    if told.body is not None:
        responses[success] = {"description": responses[success].get("description", "Successful Response"),
                              "content": {"application/json": {"schema": answers.ref(told.body)}}}
    for status, description in sorted({**_common_errors(*key, operation), **told.errors}.items()):
        responses[str(status)] = _error(description)
    responses.update({str(status): answer for status, answer in told.other.items()})
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _take_schemas(into: Json, found: Json, service: str) -> None:
    for name, schema in found.items():
        if name in FASTAPI_VALIDATION:
            continue
        if name in into and into[name] != schema:
            raise ValueError(f"{service} defines a schema {name!r} unlike another service's: rename one")
        into[name] = schema


def _referenced(node: Any, schemas: Json, seen: set[str]) -> set[str]:
    """The schema names `node` refers to, and those they refer to in turn."""
    if isinstance(node, dict):
        target = node.get("$ref", "")
        if isinstance(target, str) and target.startswith("#/components/schemas/"):
            name = target.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                _referenced(schemas[name], schemas, seen)
        for value in node.values():
            _referenced(value, schemas, seen)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, schemas, seen)
    return seen


def build() -> Json:
    paths: dict[str, Json] = {}
    schemas: Json = dict(answers.SCHEMAS)
    for service in SERVICES:
        with building_apps():
            document = service_document(service)
        for path, item in document.get("paths", {}).items():
            if routing.upstream_for(path) != service:
                continue  # the gateway does not forward it (`/internal/*`): not public
            for method, operation in item.items():
                if method in METHODS:
                    paths.setdefault(path, {})[method] = describe(method, path, operation, service)
        _take_schemas(schemas, document.get("components", {}).get("schemas", {}), service)
    for path, item in answers.GATEWAY_PATHS.items():
        for method, operation in item.items():
            paths.setdefault(path, {})[method] = describe(method, path, operation, "gateway")
    stale = [f"{m} {p}" for m, p in answers.OPERATIONS if m.lower() not in paths.get(p, {})]
    if stale:
        raise ValueError(f"deploy/openapi_answers.py describes operations no service has: {stale}")
    used = _referenced(paths, schemas, set())  # the internal routes' bodies go with them
    return {"openapi": "3.1.0", "info": INFO, "tags": TAGS, "paths": dict(sorted(paths.items())),
            "components": {"schemas": {name: schemas[name] for name in sorted(used)},
                           "securitySchemes": SECURITY_SCHEMES}}


def render(document: Json) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCUMENT_FILE)
    args = parser.parse_args()
    args.out.write_text(render(build()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
