"""``codebox mcp``: an MCP server (stdio transport) that lends an LLM one box per session.

It offers the tools of `codebox.integrations.tools` — ``run_python``, ``run_shell``,
``upload_file``, ``download_file``, ``list_files``, ``remove_file``, ``install_packages`` —
each made from its record there, on one box, made
when the first tool is called and stopped when the session ends. The box is a `LocalBox`,
or a box on a CodeBox server when ``CODEBOX_API_KEY`` is set. Needs the ``codebox[mcp]`` extra (the
official ``mcp`` SDK).

A client starts it as a subprocess, e.g. in a desktop client's configuration::

    {"mcpServers": {"codebox": {"command": "codebox", "args": ["mcp"]}}}
"""

from __future__ import annotations

import base64
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from pydantic import Field

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.types import (
        BlobResourceContents,
        CallToolResult,
        EmbeddedResource,
        ImageContent,
        TextContent,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "codebox's MCP server needs the official MCP SDK, version 2: "
        "pip install 'codebox[mcp]'"
    ) from exc

from .. import __version__
from ..base import BaseBox
from ..errors import CodeBoxError
from ..remote import CodeBox
from ..sandbox import parse_network, with_network
from ..settings import CodeBoxSettings
from .tools import (
    DEFAULT_MAX_CHARS,
    TOOLS,
    ToolCall,
    ToolResult,
    ToolSpec,
    aexecute_tool_call,
    file_kind,
)

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "This server runs Python code in a stateful Jupyter kernel of its own: variables, "
    "imports and files persist between calls for the whole session. Use run_python to "
    "compute, analyse data and plot (plt.show() returns the figure as an image); run_shell "
    "for command-line tools in the same directory; move files in and out with upload_file "
    "and download_file."
)


class _Session:
    """The box of one MCP session: made on the first call, stopped at the end."""

    def __init__(self, box: BaseBox | None, settings: CodeBoxSettings | None) -> None:
        self._given = box
        self._settings = settings
        self._box: BaseBox | None = box

    @property
    def box(self) -> BaseBox:
        if self._box is None:
            self._box = CodeBox(settings=self._settings)
            logger.info("session box: %r", self._box)
        return self._box

    async def close(self) -> None:
        if self._box is not None and self._box is not self._given:
            try:
                await self._box.astop()
            except CodeBoxError as exc:
                logger.warning("stopping the session's box failed: %s", exc)
            self._box = None


def _mcp_function(
    spec: ToolSpec, call: Callable[..., Awaitable[CallToolResult]]
) -> Callable[..., Awaitable[CallToolResult]]:
    """A function whose signature is the tool's arguments (from its record's input model),
    for the SDK to publish as the tool's input schema."""
    parameters = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if info.is_required() else info.default,
            annotation=Annotated[info.annotation, Field(description=info.description)],
        )
        for name, info in spec.input_model.model_fields.items()
    ]

    async def tool(**arguments: Any) -> CallToolResult:
        return await call(spec.name, **arguments)

    tool.__name__ = spec.name
    tool.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=CallToolResult,
    )
    return tool


def _to_mcp(result: ToolResult) -> CallToolResult:
    content: list[Any] = [TextContent(type="text", text=result.text)]
    content += [
        ImageContent(type="image", data=image.data, mime_type=image.media_type)
        for image in result.images
    ]
    file = result.file
    if file is not None and file.content is not None and file_kind(file) == "binary":
        blob = BlobResourceContents(
            uri=f"codebox:///{file.name}",
            blob=base64.b64encode(file.content).decode("ascii"),
            mime_type="application/octet-stream",
        )
        content.append(EmbeddedResource(type="resource", resource=blob))
    return CallToolResult(content=content, is_error=result.is_error)


def build_server(
    box: BaseBox | None = None,
    *,
    settings: CodeBoxSettings | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    run_timeout: float | None = None,
) -> MCPServer[Any]:
    """The MCP server, with its tools bound to one box per session.

    Args:
        box: The box to lend (the caller starts and stops it). Default: a box made with
            `CodeBox` when the first tool is called, stopped when the session ends.
        settings: Settings of that default box (default: from ``CODEBOX_*`` and ``.env``).
        max_chars: Character budget of each tool result's text.
        run_timeout: Seconds a ``run_python`` or ``run_shell`` call may take (default: the
            box's setting, no limit).

    Returns:
        An ``mcp.server.mcpserver.MCPServer``; run it with ``run_stdio_async()``.
    """
    session = _Session(box, settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        try:
            yield None
        finally:
            await session.close()

    server: MCPServer[Any] = MCPServer(
        "codebox", instructions=INSTRUCTIONS, version=__version__, lifespan=lifespan,
    )

    async def call(name: str, **arguments: Any) -> CallToolResult:
        result = await aexecute_tool_call(
            session.box, ToolCall(name, {k: v for k, v in arguments.items() if v is not None}),
            format="anthropic", max_chars=max_chars, timeout=run_timeout,
        )
        return _to_mcp(result)

    for spec in TOOLS.values():
        server.add_tool(_mcp_function(spec, call), name=spec.name, description=spec.description)
    return server


def serve_stdio(
    box: BaseBox | None = None,
    *,
    settings: CodeBoxSettings | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    run_timeout: float | None = None,
) -> None:
    """Serve MCP over stdin/stdout until the client closes the session.

    Args: as `build_server`.
    """
    server = build_server(box, settings=settings, max_chars=max_chars, run_timeout=run_timeout)
    anyio.run(server.run_stdio_async)


def main(sandbox: bool | None = None, network: str | bool | list[str] | None = None) -> None:
    """Entry point of ``codebox mcp`` (and ``python -m codebox.integrations.mcp``): logs to stderr
    (stdout carries the protocol) and serves one session over stdio.

    Args:
        sandbox: Sandbox the local box. Default: ``CODEBOX_SANDBOX`` if set, else yes (an
            agent runs code nobody reviewed).
        network: The sandbox's network policy (`Sandbox.network`, or its text form:
            ``"true"``, ``"pypi.org,*.example.com"``). Default: ``CODEBOX_SANDBOX_NETWORK``,
            else the policy's own (none).

    Raises:
        ValueError: ``network`` is not a policy.
    """
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = CodeBoxSettings()
    if sandbox is not None:
        settings = settings.model_copy(update={"sandbox": sandbox})
    elif "sandbox" not in settings.model_fields_set:
        settings = settings.model_copy(update={"sandbox": True})
    network = parse_network(network) if network is not None else settings.sandbox_network
    settings = settings.model_copy(update={"sandbox": with_network(settings.sandbox, network)})
    serve_stdio(settings=settings)


if __name__ == "__main__":
    main()
