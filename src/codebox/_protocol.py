"""The CodeBox REST API, version 1, as both sides speak it: the names of the extensions a
server announces and the framing of streamed answers. `CodeBox` (the client, `remote/`) and
``codebox serve`` (`server/`) import these from here, so they cannot drift apart. The wire
format is in ``docs/protocol.md``."""

from __future__ import annotations

import json
from typing import Any

API_VERSION = "v1"

RICH_RUN = "rich-run"
"""``run`` answers with every field of `CodeBoxOutput`, and takes ``timeout``."""
STREAM = "stream"
"""``POST /codebox/{id}/run/stream``: NDJSON chunks, then an end line."""
INTERRUPT = "interrupt"
"""``POST /codebox/{id}/interrupt``."""
FILE_SIZES = "file-sizes"
"""``files`` entries are ``{"name", "size"}`` objects."""
START_OPTIONS = "start-options"
"""``POST /codebox/start`` with ``{"env": ...}``."""
SHELL = "shell"
"""``POST /codebox/{id}/shell`` and ``shell/stream``."""
FILE_OPS = "file-ops"
"""``files/remove``, ``files/rename``, ``files/mkdir``, ``files/info``."""
BUNDLES = "bundles"
"""Chunks carry ``data`` (the whole MIME bundle) and ``display_id``."""
LIST = "list"
"""``GET /codebox/sessions``: the key's sessions."""
LIFETIME = "lifetime"
"""``lifetime`` on start, and ``POST /codebox/{id}/lifetime``."""
TEMPLATES = "templates"
"""``template`` on start: a template of the server's, named in the capabilities."""
SNAPSHOTS = "snapshots"
"""``POST /codebox/{id}/snapshot``, ``DELETE /codebox/snapshots/{sid}``, ``snapshot`` on
start."""

END = "end"
"""The ``type`` of a stream's last line: ``{"type": "end", "output" | "result": ...}``, or
``{"type": "end", "error": {"status", "detail"}}`` when the server or the box failed."""


def ndjson_line(item: dict[str, Any]) -> bytes:
    """One line of a streamed answer."""
    return json.dumps(item, ensure_ascii=False).encode() + b"\n"
