"""LangChain tools on a box: ``run_python``, ``run_shell``, ``upload_file``,
``download_file``, ``list_files``, ``remove_file`` and ``install_packages`` (the
``codebox[langchain]`` extra, on ``langchain-core``).

    from codebox import LocalBox
    from codebox.integrations.langchain import CodeBoxToolkit

    box = LocalBox()
    tools = CodeBoxToolkit(box=box).get_tools()     # give them to a chat model or an agent
    tools[0].invoke({"code": "print(6 * 7)"})       # "42\\n"

Every tool works sync (``invoke``) and async (``ainvoke``) and answers with the same text a
model gets from `codebox.integrations.tools` (each tool is made from its record there).
Called with a ``ToolCall`` (as an agent does), a tool returns a ``ToolMessage`` whose
``artifact`` is the `codebox.integrations.tools.ToolResult` — with the full `CodeBoxOutput`
of a run and the content of a downloaded file.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

try:
    from langchain_core.tools import BaseTool, BaseToolkit, StructuredTool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "codebox's LangChain tools need langchain-core: pip install 'codebox[langchain]'"
    ) from exc

from ..base import BaseBox
from ..remote import CodeBox
from .tools import (
    DEFAULT_MAX_CHARS,
    DOWNLOAD_FILE,
    INSTALL_PACKAGES,
    LIST_FILES,
    REMOVE_FILE,
    RUN_PYTHON,
    RUN_SHELL,
    TOOLS,
    UPLOAD_FILE,
    ToolCall,
    ToolResult,
    aexecute_tool_call,
    execute_tool_call,
)

# The argument models LangChain validates, each made from its tool's JSON schema.
RunPythonInput = TOOLS[RUN_PYTHON].input_model
RunShellInput = TOOLS[RUN_SHELL].input_model
RemoveFileInput = TOOLS[REMOVE_FILE].input_model
UploadFileInput = TOOLS[UPLOAD_FILE].input_model
DownloadFileInput = TOOLS[DOWNLOAD_FILE].input_model
ListFilesInput = TOOLS[LIST_FILES].input_model
InstallPackagesInput = TOOLS[INSTALL_PACKAGES].input_model


def _content(result: ToolResult) -> str | list[dict[str, Any]]:
    """Text alone, or a text block and image blocks (the OpenAI-style blocks LangChain's
    chat models accept)."""
    return result.content if result.images else result.text


class CodeBoxToolkit(BaseToolkit):
    """The codebox tools, all bound to one box.

    Attributes:
        box: The box the tools run on (default: ``CodeBox()``, a `LocalBox` without an API
            key, started by the first call). The caller stops it: ``toolkit.box.stop()``.
        names: Which tools `get_tools` returns, in order (default: all of them).
        max_chars: Character budget of each result's text.
        timeout: Seconds a ``run_python`` or ``run_shell`` call may take (default: the
            box's setting).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    box: BaseBox = Field(default_factory=lambda: CodeBox())
    names: tuple[str, ...] = tuple(TOOLS)
    max_chars: int = DEFAULT_MAX_CHARS
    timeout: float | None = None

    def get_tools(self) -> list[BaseTool]:
        """One LangChain tool per name in `names`, each with a sync and an async body."""
        return [self._tool(name) for name in self.names]

    def _tool(self, name: str) -> BaseTool:
        if name not in TOOLS:
            raise ValueError(f"unknown tool {name!r}; codebox offers {list(TOOLS)}")
        options: dict[str, Any] = {"format": "openai", "max_chars": self.max_chars,
                                   "timeout": self.timeout}

        def run(**arguments: Any) -> tuple[str | list[dict[str, Any]], ToolResult]:
            call = ToolCall(name, {k: v for k, v in arguments.items() if v is not None})
            result = execute_tool_call(self.box, call, **options)
            return _content(result), result

        async def arun(**arguments: Any) -> tuple[str | list[dict[str, Any]], ToolResult]:
            call = ToolCall(name, {k: v for k, v in arguments.items() if v is not None})
            result = await aexecute_tool_call(self.box, call, **options)
            return _content(result), result

        return StructuredTool.from_function(
            func=run,
            coroutine=arun,
            name=name,
            description=TOOLS[name].description,
            args_schema=TOOLS[name].input_model,
            response_format="content_and_artifact",
        )


def codebox_tools(box: BaseBox | None = None, **options: Any) -> list[BaseTool]:
    """The LangChain tools on ``box`` (default: a new ``CodeBox()``).

    Args:
        box: The box the tools run on.
        **options: Other fields of `CodeBoxToolkit` (``names``, ``max_chars``,
            ``timeout``).
    """
    if box is not None:
        options["box"] = box
    return CodeBoxToolkit(**options).get_tools()


__all__ = [
    "CodeBoxToolkit",
    "DownloadFileInput",
    "InstallPackagesInput",
    "ListFilesInput",
    "RemoveFileInput",
    "RunPythonInput",
    "RunShellInput",
    "UploadFileInput",
    "codebox_tools",
]
