"""Tools for LLM function calling: what to give a model, and how to answer its calls.

`tool_definitions` gives the JSON schemas of codebox's tools in the OpenAI or the
Anthropic tool format; `execute_tool_call` (and its async twin `aexecute_tool_call`) runs
one call the model made on a box and formats the result for the model: text kept within a
character budget (head and tail, saying what was cut), errors with the last frames of
their traceback, images as base64 image content blocks (their alt text in the text).

    from codebox import LocalBox
    from codebox.integrations.tools import execute_tool_call, tool_definitions

    tools = tool_definitions("anthropic")          # give these to the model
    with LocalBox() as box:
        result = execute_tool_call(box, tool_use_block, format="anthropic")
        messages.append({"role": "user", "content": [result.to_anthropic_block()]})

No dependency beyond codebox: a call is a plain dict (or an SDK object with the same
fields) and results are plain dicts, ready for either vendor's API.

Each tool is one record, a `ToolSpec`: its name, its description, the JSON schema of its
arguments, the box call it makes and how its result reads. The vendor definitions, the
LangChain tools (`codebox.integrations.langchain`) and the MCP tools
(`codebox.integrations.mcp`) are all made from these records.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from ..base import BaseBox
from ..errors import CodeBoxError
from ._calls import ToolCall, ToolResult, _field, to_openai_messages
from ._format import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_IMAGES,
    DEFAULT_TRACEBACK_FRAMES,
    ToolFormat,
    ToolImage,
    alt_text,
    file_kind,
    format_command,
    format_file,
    format_files,
    format_output,
    last_frames,
    truncate_middle,
)

logger = logging.getLogger(__name__)

RUN_PYTHON = "run_python"
UPLOAD_FILE = "upload_file"
DOWNLOAD_FILE = "download_file"
LIST_FILES = "list_files"
INSTALL_PACKAGES = "install_packages"
RUN_SHELL = "run_shell"
REMOVE_FILE = "remove_file"

_MIN_MAX_CHARS = 200


# -- the record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    format: ToolFormat
    max_chars: int
    traceback_frames: int
    max_images: int
    timeout: float | None


class _InvalidCall(ValueError):
    """The model's call cannot be carried out as given."""


@dataclass(frozen=True)
class BoxCall:
    """One call of a box's method: made blocking (`run`) or awaited (`arun`, the method's
    ``a``-prefixed twin), with the same arguments."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def run(self, box: BaseBox) -> Any:
        """Call the method on ``box`` and return its result."""
        return getattr(box, self.method)(*self.args, **self.kwargs)

    async def arun(self, box: BaseBox) -> Any:
        """Async version of `run`: awaits the method's async twin."""
        return await getattr(box, "a" + self.method)(*self.args, **self.kwargs)


Prepare = Callable[[dict[str, Any], _Options], BoxCall]
"""A tool's executor: its checked arguments (and the call's options) to the box call."""

Present = Callable[[Any, dict[str, Any], _Options], ToolResult]
"""A tool's result formatter: what the box call returned to what the model reads."""


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does (for the model), the JSON schema of its arguments,
    the box call it makes (`prepare`) and how its result reads (`present`)."""

    name: str
    description: str
    parameters: dict[str, Any]
    prepare: Prepare | None = field(default=None, repr=False, compare=False)
    present: Present | None = field(default=None, repr=False, compare=False)

    def to_openai(self) -> dict[str, Any]:
        """The tool in the OpenAI Chat Completions format (``tools=[...]``)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def to_anthropic(self) -> dict[str, Any]:
        """The tool in the Anthropic Messages format (``tools=[...]``)."""
        return {"name": self.name, "description": self.description, "input_schema": self.parameters}

    @cached_property
    def input_model(self) -> type[BaseModel]:
        """The arguments as a pydantic model made from `parameters` (``RunPythonInput`` for
        ``run_python``): what LangChain validates and MCP publishes."""
        return _input_model(self)


_JSON_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _python_type(prop: dict[str, Any]) -> Any:
    if "enum" in prop:
        return Literal[tuple(prop["enum"])]
    if prop.get("type") == "array":
        return list[_python_type(prop["items"])]  # type: ignore[misc]
    return _JSON_TYPES[prop["type"]]


def _input_model(spec: ToolSpec) -> type[BaseModel]:
    required = set(spec.parameters.get("required", ()))
    fields: dict[str, Any] = {}
    for key, prop in spec.parameters["properties"].items():
        kind = _python_type(prop)
        described = {"description": prop.get("description")}
        if key in required:
            fields[key] = (kind, Field(..., **described))
        elif "default" in prop:
            fields[key] = (kind, Field(prop["default"], **described))
        else:
            fields[key] = (kind | None, Field(None, **described))
    name = "".join(word.title() for word in spec.name.split("_")) + "Input"
    model: type[BaseModel] = create_model(
        name, __doc__=f"Arguments of ``{spec.name}``.", __module__=__name__, **fields,
    )
    return model


def _check_arguments(spec: ToolSpec, arguments: dict[str, Any]) -> None:
    """What the JSON schema says of a call's arguments: no unknown ones, the required ones
    there, strings and enums of the right kind (arrays are each tool's to read)."""
    properties = spec.parameters["properties"]
    extra = set(arguments) - set(properties)
    if extra:
        raise _InvalidCall(f"{spec.name} takes no argument(s) {sorted(extra)}")
    for key, prop in properties.items():
        value = arguments.get(key)
        if value is None and key not in spec.parameters["required"]:
            continue
        if prop.get("type") == "string" and not isinstance(value, str):
            raise _InvalidCall(f"{spec.name} needs the argument {key!r} as a string")
        if "enum" in prop and value not in prop["enum"]:
            allowed = " or ".join(map(repr, prop["enum"]))
            raise _InvalidCall(f"{key} must be {allowed}, not {value!r}")
        if key in spec.parameters["required"] and value is None:
            raise _InvalidCall(f"{spec.name} needs the argument {key!r}")


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_FILE_NAME = {
    "type": "string",
    "description": "Path relative to the working directory, e.g. 'data.csv' or 'out/plot.png'.",
}


# -- the tools ------------------------------------------------------------------------------


def _run_python(args: dict[str, Any], opts: _Options) -> BoxCall:
    return BoxCall("run", (args["code"],), {"timeout": opts.timeout})


def _show_run(value: Any, args: dict[str, Any], opts: _Options) -> ToolResult:
    text, images = format_output(value, max_chars=opts.max_chars,
                                 traceback_frames=opts.traceback_frames,
                                 max_images=opts.max_images)
    return ToolResult(text=text, images=images, is_error=value.error is not None, output=value)


def _run_shell(args: dict[str, Any], opts: _Options) -> BoxCall:
    if not args["command"].strip():
        raise _InvalidCall("run_shell needs a command")
    return BoxCall("shell", (args["command"],), {"timeout": opts.timeout,
                                                 "cwd": args.get("cwd") or None})


def _show_shell(value: Any, args: dict[str, Any], opts: _Options) -> ToolResult:
    return ToolResult(text=format_command(value, max_chars=opts.max_chars),
                      is_error=not value.ok, command=value)


def _upload(args: dict[str, Any], opts: _Options) -> BoxCall:
    content: str | bytes = args["content"]
    if args.get("encoding") == "base64":
        try:
            content = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _InvalidCall(f"content is not valid base64: {exc}") from exc
    return BoxCall("upload", (args["file_name"], content))


def _download(args: dict[str, Any], opts: _Options) -> BoxCall:
    return BoxCall("download", (args["file_name"],))


def _show_file(value: Any, args: dict[str, Any], opts: _Options) -> ToolResult:
    text, images = format_file(value, max_chars=opts.max_chars)
    return ToolResult(text=text, images=images, file=value)


def _install(args: dict[str, Any], opts: _Options) -> BoxCall:
    names = args.get("package_names")
    if isinstance(names, str):  # models sometimes give one name bare
        names = [names]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise _InvalidCall("install_packages needs 'package_names', a list of package names")
    return BoxCall("install", tuple(names))


def _says(text: Callable[[Any, dict[str, Any]], str]) -> Present:
    """A formatter for a result that is one sentence."""
    return lambda value, args, opts: ToolResult(text=text(value, args))


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            RUN_PYTHON,
            "Run Python code in a stateful Jupyter kernel. Variables, imports and files persist "
            "between calls. Returns what the code prints (stdout and stderr), the value of the "
            "last expression, the error with its traceback if the code fails, and images of "
            "plots (call plt.show() to display a matplotlib figure). Files are read and written "
            "relative to the working directory.",
            _schema({"code": {"type": "string", "description": "The Python code to run."}},
                    ["code"]),
            _run_python,
            _show_run,
        ),
        ToolSpec(
            RUN_SHELL,
            "Run a shell command (/bin/sh) in the same box as the Python kernel: same working "
            "directory and files. Use it for command-line tools: ls, grep, git, pip, curl, "
            "unzip, ... Returns what the command printed (stdout and stderr, in order) and its "
            "exit code; a non-zero exit code means the command failed. Commands do not keep "
            "state between calls (use cwd, not cd, to work in a folder).",
            _schema(
                {
                    "command": {"type": "string", "description": "The command line to run."},
                    "cwd": {
                        "type": "string",
                        "description": "Folder to run it in, relative to the working "
                        "directory (default: the working directory).",
                    },
                },
                ["command"],
            ),
            _run_shell,
            _show_shell,
        ),
        ToolSpec(
            UPLOAD_FILE,
            "Write a file into the working directory of the Python kernel, creating folders "
            "as needed. Give text as is, or binary content base64-encoded with "
            "encoding='base64'.",
            _schema(
                {
                    "file_name": _FILE_NAME,
                    "content": {"type": "string", "description": "The file's content."},
                    "encoding": {
                        "type": "string",
                        "enum": ["text", "base64"],
                        "default": "text",
                        "description": "How content is encoded (default 'text', UTF-8).",
                    },
                },
                ["file_name", "content"],
            ),
            _upload,
            _says(lambda value, args: f"Wrote {value.name} ({value.size} bytes)."),
        ),
        ToolSpec(
            DOWNLOAD_FILE,
            "Read a file from the working directory of the Python kernel: text files are "
            "returned as text, images as images; binary files are handed to the application.",
            _schema({"file_name": _FILE_NAME}, ["file_name"]),
            _download,
            _show_file,
        ),
        ToolSpec(
            LIST_FILES,
            "List every file in the working directory of the Python kernel, with sizes.",
            _schema({}, []),
            lambda args, opts: BoxCall("list_files"),
            lambda value, args, opts: ToolResult(text=format_files(value,
                                                                   max_chars=opts.max_chars)),
        ),
        ToolSpec(
            REMOVE_FILE,
            "Delete a file, or a folder with everything in it, from the working directory.",
            _schema({"file_name": _FILE_NAME}, ["file_name"]),
            lambda args, opts: BoxCall("remove", (args["file_name"],)),
            _says(lambda value, args: f"Removed {args['file_name']}."),
        ),
        ToolSpec(
            INSTALL_PACKAGES,
            "Install Python packages with pip into the kernel's environment.",
            _schema(
                {
                    "package_names": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "description": "pip requirement strings, e.g. ['pandas', 'numpy>=2'].",
                    }
                },
                ["package_names"],
            ),
            _install,
            _says(lambda value, args: f"{value}."),
        ),
    )
}
"""Every tool codebox offers, by name."""


def tool_definitions(
    format: ToolFormat = "openai", *, names: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The tool definitions to give a model.

    Args:
        format: ``"openai"`` (Chat Completions ``tools``) or ``"anthropic"`` (Messages
            ``tools``).
        names: Which tools, in order (default: all of `TOOLS`: ``run_python``,
            ``run_shell``, ``upload_file``, ``download_file``, ``list_files``,
            ``remove_file``, ``install_packages``).

    Returns:
        One JSON-ready dict per tool.

    Raises:
        ValueError: An unknown format or tool name.
    """
    _check_format(format)
    chosen = list(TOOLS) if names is None else list(names)
    unknown = [n for n in chosen if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; codebox offers {list(TOOLS)}")
    specs = [TOOLS[n] for n in chosen]
    return [s.to_openai() if format == "openai" else s.to_anthropic() for s in specs]


def _check_format(format: str) -> None:
    if format not in ("openai", "anthropic"):
        raise ValueError(f"format must be 'openai' or 'anthropic', not {format!r}")


# -- execution: prepare (pure) -> one call on the box -> present (pure) --------------------


def _failed(call: ToolCall | None, message: str, opts: _Options, call_id: str | None = None
            ) -> ToolResult:
    return ToolResult(
        text=truncate_middle(message, opts.max_chars), is_error=True, format=opts.format,
        tool_call_id=call.id if call is not None else call_id,
        name=call.name if call is not None else None,
    )


def _options(
    format: ToolFormat, max_chars: int, traceback_frames: int, max_images: int,
    timeout: float | None,
) -> _Options:
    _check_format(format)
    if max_chars < _MIN_MAX_CHARS:
        raise ValueError(f"max_chars must be at least {_MIN_MAX_CHARS}, not {max_chars}")
    return _Options(format, max_chars, traceback_frames, max_images, timeout)


def _start(call: Any, opts: _Options) -> tuple[ToolCall, BoxCall] | ToolResult:
    """Parse and check a call: the call and its box call, or the error result to return."""
    try:
        parsed = ToolCall.parse(call)
    except ValueError as exc:
        return _failed(None, f"Invalid tool call: {exc}", opts, _field(call, "id"))
    spec = TOOLS.get(parsed.name)
    try:
        if spec is None or spec.prepare is None:
            raise _InvalidCall(f"unknown tool {parsed.name!r}; the tools are {', '.join(TOOLS)}")
        _check_arguments(spec, parsed.arguments)
        return parsed, spec.prepare(parsed.arguments, opts)
    except _InvalidCall as exc:
        return _failed(parsed, f"Invalid call of {parsed.name}: {exc}", opts)


def _finish(call: ToolCall, value: Any, opts: _Options) -> ToolResult:
    present = TOOLS[call.name].present
    assert present is not None  # every tool that prepares a box call presents its result
    result = present(value, call.arguments, opts)
    return replace(result, format=opts.format, tool_call_id=call.id, name=call.name)


def _box_failed(call: ToolCall, exc: Exception, opts: _Options) -> ToolResult:
    logger.info("tool call %s failed: %s", call.name, exc)
    return _failed(call, f"{call.name} failed: {exc}", opts)


def execute_tool_call(
    box: BaseBox,
    call: Any,
    *,
    format: ToolFormat = "openai",
    max_chars: int = DEFAULT_MAX_CHARS,
    traceback_frames: int = DEFAULT_TRACEBACK_FRAMES,
    max_images: int = DEFAULT_MAX_IMAGES,
    timeout: float | None = None,
) -> ToolResult:
    """Carry out a tool call a model made, on ``box``, and format the result for the model.

    A failure the model can act on (its code raised, an unknown tool, bad arguments, a
    missing file, a failed install, a box error) is an error result
    (``is_error=True``) whose text says what went wrong; it is not raised.

    Args:
        box: The box to run on.
        call: The call, as `ToolCall.parse` accepts it (an OpenAI tool call, an Anthropic
            ``tool_use`` block, a ``{"name", "arguments"}`` dict, ...).
        format: The format of the result's image blocks (`ToolResult.content`).
        max_chars: Character budget of the result's text (at least 200).
        traceback_frames: Innermost frames of an error's traceback to keep.
        max_images: Most images in one result.
        timeout: Seconds a ``run_python`` or ``run_shell`` call may take (default: the
            box's ``run_timeout``, no limit).

    Returns:
        The `ToolResult`; `ToolResult.to_openai_messages` and
        `ToolResult.to_anthropic_block` make the answer to send back.

    Raises:
        ValueError: An unknown ``format`` or a ``max_chars`` below 200.
    """
    opts = _options(format, max_chars, traceback_frames, max_images, timeout)
    step = _start(call, opts)
    if isinstance(step, ToolResult):
        return step
    parsed, box_call = step
    try:
        value = box_call.run(box)
    except (CodeBoxError, ValueError) as exc:  # the model's call, refused by the box
        return _box_failed(parsed, exc, opts)
    return _finish(parsed, value, opts)


async def aexecute_tool_call(
    box: BaseBox,
    call: Any,
    *,
    format: ToolFormat = "openai",
    max_chars: int = DEFAULT_MAX_CHARS,
    traceback_frames: int = DEFAULT_TRACEBACK_FRAMES,
    max_images: int = DEFAULT_MAX_IMAGES,
    timeout: float | None = None,
) -> ToolResult:
    """Async version of `execute_tool_call`."""
    opts = _options(format, max_chars, traceback_frames, max_images, timeout)
    step = _start(call, opts)
    if isinstance(step, ToolResult):
        return step
    parsed, box_call = step
    try:
        value = await box_call.arun(box)
    except (CodeBoxError, ValueError) as exc:  # the model's call, refused by the box
        return _box_failed(parsed, exc, opts)
    return _finish(parsed, value, opts)


__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_TRACEBACK_FRAMES",
    "DOWNLOAD_FILE",
    "INSTALL_PACKAGES",
    "LIST_FILES",
    "REMOVE_FILE",
    "RUN_PYTHON",
    "RUN_SHELL",
    "TOOLS",
    "UPLOAD_FILE",
    "BoxCall",
    "ToolCall",
    "ToolFormat",
    "ToolImage",
    "ToolResult",
    "ToolSpec",
    "aexecute_tool_call",
    "alt_text",
    "execute_tool_call",
    "file_kind",
    "format_command",
    "format_file",
    "format_files",
    "format_output",
    "last_frames",
    "to_openai_messages",
    "tool_definitions",
    "truncate_middle",
]
