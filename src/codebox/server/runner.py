"""Running the server: uvicorn on a socket we bind ourselves (so ``--port 0`` works and the
address we announce is the real one), until SIGINT or SIGTERM; then every session, kernel
and the gateway are stopped before we return."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from ..local._gateway import shared_gateway
from .app import API_PREFIX, create_app
from .guard import guarded_protocol
from .settings import ServerSettings

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free one).

    Raises:
        OSError: The address cannot be bound (in use, unknown host, ...).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _configure_logging(level: str) -> None:
    root = logging.getLogger("codebox")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def serve(settings: ServerSettings, *, announce: Callable[[str], Any] = print) -> int:
    """Serve the CodeBox REST API until SIGINT or SIGTERM.

    Args:
        settings: The server's settings.
        announce: Called with the line that gives the address, once the server is ready.

    Returns:
        0 after a clean stop; 1 if the server could not start.

    Raises:
        ValueError: The settings are not safe to serve with (see
            `ServerSettings.check_security`).
        OSError: The address cannot be bound.
    """
    settings.check_security()
    _configure_logging(settings.log_level)
    sock = bind(settings.host, settings.port)
    url = url_of(sock)
    try:
        app = create_app(settings, on_ready=lambda: announce(
            f"codebox serve: listening on {url} (CODEBOX_BASE_URL={url}{API_PREFIX})"))
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        lifespan="on",
        http=guarded_protocol(settings.client_timeout),
        # Annotated int, used as seconds by asyncio.wait_for: a float is kept as given.
        timeout_graceful_shutdown=settings.shutdown_timeout,  # type: ignore[arg-type]
        # The announce line says where we listen; uvicorn's own lines would say it again.
        access_log=settings.log_level == "debug",
    )
    server = uvicorn.Server(config)
    # uvicorn handles the signals while it runs and raises them again once it stopped:
    # by then everything is shut down, so that second delivery must not kill us.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in _SIGNALS}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        shared_gateway.close()
    if not server.started:
        log.error("the server could not start")
        return 1
    log.info("stopped")
    return 0
