"""How the errors of boxes and sessions become HTTP answers: a status and ``{"detail": ...}``."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxTimeoutError,
    GatewayError,
    KernelDiedError,
)
from ..local._snapshots import SnapshotTooLarge
from .pausing import SnapshotNotFound
from .sessions import SessionNotFound, TooManySessions
from .store import StoreUnavailable
from .uploads import BadUpload, UploadTooLarge

# First match wins: subclasses before their bases.
_STATUSES: tuple[tuple[type[CodeBoxError], int], ...] = (
    (SessionNotFound, 404),
    (SnapshotNotFound, 404),
    (TooManySessions, 429),
    (StoreUnavailable, 503),
    (UploadTooLarge, 413),
    (SnapshotTooLarge, 413),
    (BadUpload, 422),
    (CodeBoxNotFoundError, 404),
    (CodeBoxTimeoutError, 504),
    (KernelDiedError, 503),
    (CodeBoxConnectionError, 503),
    (GatewayError, 503),
    (CodeBoxAuthError, 503),  # the gateway refused *our* token: a server fault
)

log = logging.getLogger(__name__)

INFRASTRUCTURE_ERRORS = (KernelDiedError, CodeBoxConnectionError, GatewayError)
"""Failures that may mean the gateway died under the operation."""


class ErrorResponse(JSONResponse):
    """``{"detail": ...}`` as ASCII JSON: a detail that quotes the request (a lone surrogate,
    ...) must not fail to encode and turn a client's error into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {
        "description": "Why: a sentence, or (a request that failed validation) the problems.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {
            "type": "object",
            "required": ["loc", "msg", "type"],
            "properties": {
                "loc": {"type": "array", "items": {"anyOf": [{"type": "string"},
                                                             {"type": "integer"}]}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
            },
        }}],
    }},
}
"""The JSON schema of every error body, for the OpenAPI document."""


def status_for(exc: CodeBoxError) -> int:
    """The HTTP status of a `CodeBoxError`; 400 for a failure of the request's own doing
    (a failed install, an upload over a directory, ...)."""
    return next((status for kind, status in _STATUSES if isinstance(exc, kind)), 400)


async def codebox_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a `CodeBoxError` raised by an endpoint."""
    assert isinstance(exc, CodeBoxError)
    status = status_for(exc)
    if status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    headers = {"Connection": "close"} if status == 413 else None
    return ErrorResponse({"detail": exc.message}, status_code=status, headers=headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 for a request that failed validation: where and why, without echoing the input
    (a NaN or a lone surrogate in it could not be written as JSON)."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
               "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
              for error in exc.errors()]
    return ErrorResponse({"detail": detail}, status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """An `HTTPException` of an endpoint (or of routing: 404, 405) as ``{"detail": ...}``.
    A 405's ``Allow`` names every method of the path (routing names only its first route's)."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return ErrorResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                         headers=headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method the application serves at the request's path, as its OpenAPI document
    lists them (GET with HEAD)."""
    table = getattr(request.app.state, "methods_by_path", None)
    if table is None:
        table = request.app.state.methods_by_path = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"),
             {method.upper() for method in operations})
            for path, operations in request.app.openapi().get("paths", {}).items()]
    methods: set[str] = set()
    for pattern, served in table:
        if pattern.match(request.url.path):
            methods |= served | ({"HEAD"} if "GET" in served else set())
    return sorted(methods)


async def server_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Any other failure of the server: a 500 whose body is JSON too (the traceback goes
    to the log, never to the client)."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return ErrorResponse({"detail": "internal server error"}, status_code=500)
