"""The FastAPI application of `codebox serve`: the API under ``/api/v1``, and
``/openapi.json``, ``/docs`` and ``/health`` at the root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import CodeBoxError
from ..settings import CodeBoxSettings
from .errors import (
    ERROR_SCHEMA,
    codebox_error_handler,
    http_error_handler,
    server_error_handler,
    validation_error_handler,
)
from .guard import RequestGuard
from .models import Health
from .routes import router
from .sessions import SessionManager
from .settings import ServerSettings
from .templates import ServerTemplates

API_PREFIX = "/api/v1"

# The errors any API request may meet, each with the `Error` body.
_ERROR_STATUSES = {
    400: "A request the session refused (a failed install, an upload over a directory, ...).",
    401: "No API key.",
    403: "An API key the server does not accept.",
    404: "No such session for this API key, or no such file.",
    408: "The client stalled while sending the request.",
    413: "The request body or the uploaded file is too large.",
    422: "A request that is not valid: `detail` says where and why.",
    503: "The session's kernel or gateway failed under the request.",
    504: "The kernel did not answer in time.",
}


def create_app(
    settings: ServerSettings | None = None,
    *,
    box_settings: CodeBoxSettings | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """The ASGI application of the CodeBox REST API server.

    Its lifespan builds the templates not built yet, spawns the Kernel Gateway (unless
    ``settings.gateway_url`` names one) with a warm pool per template, and, on shutdown,
    stops every session and the gateway.

    Args:
        settings: The server's settings (default: read from ``CODEBOX_SERVER_*``).
        box_settings: The settings of the sessions' boxes (default: from ``CODEBOX_*``).
        on_ready: Called once the server is ready to serve.

    Raises:
        ValueError: The settings would serve without authentication beyond loopback, or
            without any key and without ``no_auth``; a template file is not a template.
    """
    settings = settings if settings is not None else ServerSettings()
    settings.check_security()
    box_settings = box_settings or CodeBoxSettings()
    templates = ServerTemplates(settings.templates)
    # The server decides whether its sessions are sandboxed, not the boxes' own settings.
    # (A sandboxed session works in its kernel's own directory, so it has a warm pool too.)
    policy = settings.sandbox_policy()
    box_settings = box_settings.model_copy(update={
        "sandbox": policy or False,
        "template_pool_sizes": templates.pool_sizes(settings.template_pool_size),
        "output_limit": min(settings.output_limit,
                            box_settings.output_limit or settings.output_limit)})
    manager = SessionManager(settings, box_settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await templates.build(box_settings)
        await manager.open()
        try:
            await templates.warm(manager.box_settings)
            if on_ready is not None:
                on_ready()
            yield
        finally:
            await manager.close()

    app = FastAPI(
        title="CodeBox API",
        version=__version__,
        description="Run Python code in isolated, stateful Jupyter kernels: the CodeBox REST "
        "API, version 1, with the codebox extensions (rich results, streaming, interrupt, "
        "file sizes).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.manager = manager
    app.state.templates = templates
    manager.templates = dict(templates.by_name)
    app.add_exception_handler(CodeBoxError, codebox_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, server_error_handler)
    app.add_middleware(RequestGuard, max_body=settings.max_request_size,
                       stall_timeout=settings.client_timeout, own_limit=("/upload",))
    app.include_router(router, prefix=API_PREFIX)

    @app.get("/health", response_model=Health, tags=["server"])
    async def health(request: Request) -> Health:
        """The server is up (no API key needed)."""
        return Health(status="ok", version=__version__, sessions=await manager.total())

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Give every API operation the error statuses it may answer, with their body."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith(API_PREFIX):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in _ERROR_STATUSES.items():
                entry = responses.setdefault(str(status), {"description": description})
                entry["content"] = content
            if "429" in responses:
                responses["429"]["content"] = content
    return schema
