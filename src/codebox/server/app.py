"""The FastAPI application of `codebox serve`: the API under ``/api/v1``, and
``/openapi.json``, ``/docs`` and ``/health`` at the root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request

from .. import __version__
from ..errors import CodeBoxError
from ..settings import CodeBoxSettings
from .errors import codebox_error_handler
from .models import Health
from .routes import router
from .sessions import SessionManager
from .settings import ServerSettings

API_PREFIX = "/api/v1"


def create_app(
    settings: ServerSettings | None = None,
    *,
    box_settings: CodeBoxSettings | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """The ASGI application of the CodeBox REST API server.

    Its lifespan spawns the Kernel Gateway (unless ``settings.gateway_url`` names one) and,
    on shutdown, stops every session and the gateway.

    Args:
        settings: The server's settings (default: read from ``CODEBOX_SERVER_*``).
        box_settings: The settings of the sessions' boxes (default: from ``CODEBOX_*``).
        on_ready: Called once the server is ready to serve.

    Raises:
        ValueError: The settings would serve without authentication beyond loopback, or
            without any key and without ``no_auth``.
    """
    settings = settings if settings is not None else ServerSettings()
    settings.check_security()
    box_settings = box_settings or CodeBoxSettings()
    # The server decides whether its sessions are sandboxed, not the boxes' own settings.
    policy = settings.sandbox_policy()
    update: dict[str, object] = {"sandbox": policy or False}
    if policy is not None:
        # A sandboxed session's kernel is bound to the session's directory when it starts,
        # so none can be started ahead: no warm pool.
        update["pool_size"] = 0
    box_settings = box_settings.model_copy(update=update)
    manager = SessionManager(settings, box_settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.open()
        try:
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
    app.add_exception_handler(CodeBoxError, codebox_error_handler)
    app.include_router(router, prefix=API_PREFIX)

    @app.get("/health", response_model=Health, tags=["server"])
    async def health(request: Request) -> Health:
        """The server is up (no API key needed)."""
        return Health(status="ok", version=__version__, sessions=len(manager))

    return app
