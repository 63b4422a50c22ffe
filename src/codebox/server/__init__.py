"""``codebox serve``: the CodeBox REST API server (docs/protocol.md), on FastAPI and uvicorn.

Each session is a `codebox.LocalBox` with a kernel of its own, on one Kernel Gateway the
server spawns (or an existing one, ``gateway_url``). Needs the ``server`` extra:
``pip install 'codebox[server]'``.

    from codebox.server import ServerSettings, serve
    serve(ServerSettings(api_keys=["secret"], port=8069))
"""

from __future__ import annotations

from .app import API_PREFIX, create_app
from .runner import serve
from .settings import ServerSettings

__all__ = ["API_PREFIX", "ServerSettings", "create_app", "serve"]
