"""The program a `LocalBox` spawns: a Jupyter Kernel Gateway, configured for codebox.

Run as ``python -m codebox._gateway_app``. The parent writes one JSON line of settings to
our stdin (so the token shows neither in ``ps`` nor in the environment) and keeps the pipe
open: when it closes — the parent stopped us, exited or was killed, even with SIGKILL — we
shut the gateway and its kernels down. We bind the listening socket ourselves and report
the port on stdout (``codebox-gateway-ready <port>``), so the port is the one we really got.

Changes against a stock gateway, each for a measured reason:
- the IOPub rate limit is off: it replaces output above ~1 MB/s with a one-line notice;
- the kernel websocket sets TCP_NODELAY: without it every execution waits ~40 ms on
  delayed ACKs;
- the optional ``rfc3987_syntax`` import of jsonschema is blocked: it builds a grammar at
  import time and costs ~1.2 s of start-up, for a format check the gateway never needs.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import threading
from typing import Any

READY = "codebox-gateway-ready"
_SLOW_IMPORTS = ("rfc3987_syntax",)


class _BlockSlowImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.split(".")[0] in _SLOW_IMPORTS:
            raise ImportError(f"{name} is not needed by the codebox gateway")
        return None


def _build_app(settings: dict[str, Any]) -> Any:
    from jupyter_server.services.kernels.connection.channels import (
        ZMQChannelsWebsocketConnection,
    )
    from kernel_gateway.gatewayapp import KernelGatewayApp
    from tornado import netutil
    from traitlets.config import Config

    class NoDelayConnection(ZMQChannelsWebsocketConnection):
        """Kernel websocket with TCP_NODELAY and without the IOPub rate limit."""

        def connect(self) -> Any:
            self.websocket_handler.set_nodelay(True)
            return super().connect()

    class CodeBoxGatewayApp(KernelGatewayApp):
        def init_http_server(self) -> None:
            from tornado import httpserver

            self.http_server = httpserver.HTTPServer(self.web_app)
            sockets = netutil.bind_sockets(0, self.ip)
            self.http_server.add_sockets(sockets)
            self.port = sockets[0].getsockname()[1]

        def start_app(self) -> None:
            super().start_app()
            sys.stdout.write(f"{READY} {self.port}\n")
            sys.stdout.flush()

    config = Config()
    config.KernelGatewayApp.ip = "127.0.0.1"
    config.KernelGatewayApp.port_retries = 0
    config.KernelGatewayApp.auth_token = settings["token"]
    config.KernelGatewayApp.kernel_websocket_connection_class = NoDelayConnection
    config.KernelGatewayApp.log_level = "DEBUG" if settings.get("debug") else "WARN"
    config.JupyterWebsocketPersonality.list_kernels = True
    config.ZMQChannelsWebsocketConnection.limit_rate = False
    app = CodeBoxGatewayApp(config=config)
    app.initialize(argv=[])
    return app


def _watch_parent(app: Any) -> None:
    """Stop the gateway when our stdin closes, i.e. when the parent is gone."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    app.io_loop.add_callback(app.stop)
    # If a graceful stop hangs, do not outlive the parent anyway.
    timer = threading.Timer(10.0, os._exit, args=(1,))
    timer.daemon = True
    timer.start()


def main() -> None:
    sys.meta_path.insert(0, _BlockSlowImports())
    line = sys.stdin.buffer.readline()
    if not line:
        sys.exit("codebox gateway: no settings on stdin")
    app = _build_app(json.loads(line))
    threading.Thread(target=_watch_parent, args=(app,), daemon=True).start()
    app.start()


if __name__ == "__main__":
    main()
