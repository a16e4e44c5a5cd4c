"""The OpenAI-style error envelope, `{"error": {"message", "type", "param", "code"}}`, and its HTTP edge."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# What AWS answers a caller it wants to slow down (botocore's own list of throttling codes, those our services see).
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
                              "RequestThrottledException", "TooManyRequestsException", "SlowDown",
                              "ProvisionedThroughputExceededException", "RequestLimitExceeded"})
THROTTLED_RETRY_AFTER_S = 1


def is_throttling(exc: BaseException) -> bool:
    """AWS refused a call for its rate (past botocore's own retries): no fault of the request or message."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in THROTTLING_CODES


class APIError(Exception):
    """An expected failure with its HTTP status; raised anywhere, translated only at the edge."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status_code: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers
        if status_code is not None:
            self.status_code = status_code


class InvalidRequest(APIError):
    status_code = 400


class Unauthorized(APIError):
    status_code = 401
    error_type = "authentication_error"

    def __init__(self, message: str = "Missing or invalid credentials.", **kw: Any) -> None:
        kw.setdefault("code", "invalid_api_key")
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(APIError):
    status_code = 403
    error_type = "permission_error"


class NotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, message: str = "Not found.", **kw: Any) -> None:
        kw.setdefault("code", "not_found")
        super().__init__(message, **kw)


class Conflict(APIError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLarge(APIError):
    status_code = 413


class Unavailable(APIError):
    status_code = 503
    error_type = "service_unavailable"


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(status: int, message: str, error_type: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type, param, code), status_code=status, headers=headers)


_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 409: "conflict_error",
                 413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
                 429: "rate_limit_error"}


_UNION_BRANCHES = {"int", "float", "str", "bool", "list", "dict", "constrained-int", "constrained-float",
                   "constrained-str"}


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    """The field a client got wrong, as a dotted path; pydantic's union-branch tags are not fields."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    parts = [p for p in parts if p not in _UNION_BRANCHES and "[" not in p]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.error_type, exc.param, exc.code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"Unknown request URL: {request.method} {request.url.path}."
        else:
            message = str(exc.detail)
        error_type = _STATUS_TYPES.get(exc.status_code, "server_error" if exc.status_code >= 500 else "error")
        code = "not_found" if exc.status_code == 404 else None
        return error_response(exc.status_code, message, error_type, None, code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors() or [{"loc": (), "msg": "Invalid request."}]
        first = errors[0]
        if first.get("type") == "json_invalid":
            return error_response(400, "We could not parse the JSON body of your request.",
                                  "invalid_request_error", None, "invalid_json")
        param = _validation_param(tuple(first.get("loc", ())))
        # `"auto" | int in bounds`: pydantic reports each branch; the bound says more than "should be 'auto'".
        same_field = [e for e in errors if _validation_param(tuple(e.get("loc", ()))) == param]
        first = next((e for e in same_field if e.get("type") != "literal_error"), first)
        message = f"{first.get('msg', 'Invalid value')}" + (f" - '{param}'" if param else "")
        return error_response(400, message, "invalid_request_error", param, "invalid_value")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc)


def unexpected_error_response(exc: BaseException) -> JSONResponse:
    """An exception no handler expected: AWS throttling us past botocore's retries is a 503 the client may retry
    after `Retry-After` (nothing was done wrong, nothing is lost); anything else is a logged 500."""
    if is_throttling(exc):
        log.warning("AWS throttled a request past its retries", extra={"error": repr(exc)})
        return error_response(503, "The service is busy; retry in a moment.", "server_error", None, "throttled",
                              {"Retry-After": str(THROTTLED_RETRY_AFTER_S)})
    log.exception("unhandled error", extra={"error": repr(exc)}, exc_info=exc)
    return error_response(500, "The server had an error while processing your request.", "server_error")
