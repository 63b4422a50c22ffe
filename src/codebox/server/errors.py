"""How the errors of boxes and sessions become HTTP answers: a status and ``{"detail": ...}``."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from ..errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxTimeoutError,
    GatewayError,
    KernelDiedError,
)
from .sessions import SessionNotFound, TooManySessions
from .uploads import BadUpload, UploadTooLarge

# First match wins: subclasses before their bases.
_STATUSES: tuple[tuple[type[CodeBoxError], int], ...] = (
    (SessionNotFound, 404),
    (TooManySessions, 429),
    (UploadTooLarge, 413),
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
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)
