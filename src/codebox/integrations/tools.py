"""Tools for LLM function calling: what to give a model, and how to answer its calls.

`tool_definitions` gives the JSON schemas of codebox's tools in the OpenAI or the
Anthropic tool format; `execute_tool_call` (and its async twin `aexecute_tool_call`) runs
one call the model made on a box and formats the result for the model: text kept within a
character budget (head and tail, saying what was cut), errors with the last frames of
their traceback, images as base64 image content blocks.

    from codebox import LocalBox
    from codebox.tools import execute_tool_call, tool_definitions

    tools = tool_definitions("anthropic")          # give these to the model
    with LocalBox() as box:
        result = execute_tool_call(box, tool_use_block, format="anthropic")
        messages.append({"role": "user", "content": [result.to_anthropic_block()]})

No dependency beyond codebox: a call is a plain dict (or an SDK object with the same
fields) and results are plain dicts, ready for either vendor's API.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..base import BaseBox
from ..errors import CodeBoxError
from ..schema import CodeBoxFile, CodeBoxOutput, CommandResult

logger = logging.getLogger(__name__)

ToolFormat = Literal["openai", "anthropic"]
"""The vendor format of tool definitions and content blocks."""

RUN_PYTHON = "run_python"
UPLOAD_FILE = "upload_file"
DOWNLOAD_FILE = "download_file"
LIST_FILES = "list_files"
INSTALL_PACKAGES = "install_packages"
RUN_SHELL = "run_shell"
REMOVE_FILE = "remove_file"

DEFAULT_MAX_CHARS = 8_000
"""Default character budget of the text a tool result gives the model."""

DEFAULT_TRACEBACK_FRAMES = 3
"""Default number of innermost traceback frames shown to the model."""

DEFAULT_MAX_IMAGES = 4
"""Default number of images one tool result carries (the others are only mentioned)."""

_MIN_MAX_CHARS = 200
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


# -- definitions --------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does (for the model) and the JSON schema of its
    arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

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
                        "description": "How content is encoded (default 'text', UTF-8).",
                    },
                },
                ["file_name", "content"],
            ),
        ),
        ToolSpec(
            DOWNLOAD_FILE,
            "Read a file from the working directory of the Python kernel: text files are "
            "returned as text, images as images; binary files are handed to the application.",
            _schema({"file_name": _FILE_NAME}, ["file_name"]),
        ),
        ToolSpec(
            LIST_FILES,
            "List every file in the working directory of the Python kernel, with sizes.",
            _schema({}, []),
        ),
        ToolSpec(
            REMOVE_FILE,
            "Delete a file, or a folder with everything in it, from the working directory.",
            _schema({"file_name": _FILE_NAME}, ["file_name"]),
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


# -- calls ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A call of a tool by a model: the tool's name, its arguments and the call's id."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None

    @classmethod
    def parse(cls, call: Any) -> ToolCall:
        """Read a call in any of the shapes a model API gives it.

        Accepts an OpenAI tool call (``{"id", "function": {"name", "arguments"}}``, the
        arguments as a JSON string or a dict), an Anthropic ``tool_use`` block (``{"id",
        "name", "input"}``), a plain ``{"name", "arguments"}`` dict, the SDK objects with
        those fields, or a `ToolCall`.

        Raises:
            ValueError: The call has none of these shapes, or its arguments are not a JSON
                object.
        """
        if isinstance(call, ToolCall):
            return call
        function = _field(call, "function")
        if function is not None:  # OpenAI
            name, arguments = _field(function, "name"), _field(function, "arguments")
        elif _field(call, "input") is not None:  # Anthropic tool_use
            name, arguments = _field(call, "name"), _field(call, "input")
        else:
            name, arguments = _field(call, "name"), _field(call, "arguments")
        if not isinstance(name, str) or not name:
            raise ValueError(f"not a tool call (no tool name): {call!r}")
        if arguments is None or arguments == "":
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise ValueError(f"the arguments of {name} are not valid JSON: {exc}") from exc
        if not isinstance(arguments, Mapping):
            raise ValueError(f"the arguments of {name} must be a JSON object")
        call_id = _field(call, "id") or _field(call, "tool_call_id")
        return cls(name=name, arguments=dict(arguments), id=call_id)


def _field(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolImage:
    """An image for the model: base64 data (no data-URL prefix) and its media type."""

    data: str
    media_type: str = "image/png"

    def to_block(self, format: ToolFormat) -> dict[str, Any]:
        """The image as a content block of the given format."""
        if format == "openai":
            url = f"data:{self.media_type};base64,{self.data}"
            return {"type": "image_url", "image_url": {"url": url}}
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": self.media_type, "data": self.data},
        }


@dataclass(repr=False)
class ToolResult:
    """What a tool call gave, formatted for a model.

    Attributes:
        text: The text the model reads, within the character budget.
        images: Images for the model (plots, downloaded pictures), at most ``max_images``.
        is_error: The code failed, the call was invalid, or the box failed.
        format: The format of `content`.
        tool_call_id: The id of the call this answers.
        name: The tool that was called.
        output: The full result of a ``run_python`` call (nothing cut).
        file: The file of a ``download_file`` call, with its content.
        command: The full result of a ``run_shell`` call (nothing cut).
    """

    text: str
    images: list[ToolImage] = field(default_factory=list)
    is_error: bool = False
    format: ToolFormat = "openai"
    tool_call_id: str | None = None
    name: str | None = None
    output: CodeBoxOutput | None = None
    file: CodeBoxFile | None = None
    command: CommandResult | None = None

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:60] + "…"
        return (f"ToolResult(name={self.name!r}, is_error={self.is_error}, text={text!r}, "
                f"images={len(self.images)})")

    @property
    def content(self) -> list[dict[str, Any]]:
        """The result as content blocks of `format`: one text block, then the images."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text}]
        return blocks + [image.to_block(self.format) for image in self.images]

    def to_anthropic_block(self) -> dict[str, Any]:
        """The ``tool_result`` block answering the call, for the next user message."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text}]
        blocks += [image.to_block("anthropic") for image in self.images]
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": self.tool_call_id,
            "content": blocks,
        }
        if self.is_error:
            block["is_error"] = True
        return block

    def to_openai_messages(self) -> list[dict[str, Any]]:
        """The messages answering the call in the OpenAI Chat Completions format (see
        `to_openai_messages`; for several calls of one turn, use that function)."""
        return to_openai_messages([self])


def to_openai_messages(results: Iterable[ToolResult]) -> list[dict[str, Any]]:
    """The messages answering the tool calls of one assistant turn, for Chat Completions.

    One ``tool`` message per call carries its text; they come first, as the API wants
    them right after the assistant message. Chat Completions accepts images only in user
    messages, so the images, if any, follow in one ``user`` message that names their calls.
    """
    results = list(results)
    messages: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": r.tool_call_id, "content": r.text} for r in results
    ]
    parts: list[dict[str, Any]] = []
    for r in results:
        if r.images:
            parts.append({"type": "text", "text": f"Images from tool call {r.tool_call_id}:"})
            parts += [image.to_block("openai") for image in r.images]
    if parts:
        messages.append({"role": "user", "content": parts})
    return messages


# -- formatting (pure) --------------------------------------------------------------------


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep ``text`` within ``max_chars`` characters: its head and its tail, with a note in
    between saying how much was cut (below about 100 characters, only the head is kept).
    """
    if len(text) <= max_chars:
        return text
    if max_chars <= 0:
        return ""
    # Budget the note for the largest number it can show, so the result always fits.
    keep = max_chars - len(_cut_note(len(text), text.count("\n") + 1))
    if keep < 20:
        return text[: max_chars - 1] + "…"
    head, tail = text[: keep * 2 // 5], text[len(text) - (keep - keep * 2 // 5):]
    newline = head.rfind("\n")
    if newline >= len(head) * 4 // 5:  # end the head on a line break when one is near
        head = head[: newline + 1]
    newline = tail.find("\n")
    if 0 <= newline <= len(tail) // 5:
        tail = tail[newline + 1:]
    middle = text[len(head): len(text) - len(tail)]
    return head + _cut_note(len(middle), middle.count("\n")) + tail


def _cut_note(chars: int, lines: int) -> str:
    return f"\n[... {chars} characters ({lines} line breaks) cut from the middle ...]\n"


_CHAINED = re.compile(
    r"^(The above exception was the direct cause of the following exception:"
    r"|During handling of the above exception, another exception occurred:)$",
    re.MULTILINE,
)


def last_frames(traceback: str, frames: int = DEFAULT_TRACEBACK_FRAMES) -> str:
    """The traceback with only its innermost ``frames`` frames, saying what was cut.

    Only the last exception of a chain is kept. A frame of the user's own code (IPython's
    ``Cell In[n]``) is kept too when the innermost frames are all in libraries, so the model
    sees which of its lines failed. Understands IPython's tracebacks (frames separated by
    blank lines) and plain Python ones (``  File ...`` lines); text it cannot split is
    returned unchanged.
    """
    sections = _CHAINED.split(traceback.strip("\n"))
    text = sections[-1].strip("\n")
    chained = (len(sections) - 1) // 2
    lines = text.splitlines()
    if any(line.startswith("  File ") for line in lines):
        return _chain_note(chained) + _last_python_frames(lines, frames)
    if lines and set(lines[0]) == {"-"}:  # IPython's rule above the header
        lines = lines[1:]
    if lines and "Traceback (most recent call last)" in lines[0]:
        lines = lines[1:]
    blocks = [b for b in "\n".join(lines).split("\n\n") if b.strip()]
    if len(blocks) < 2:
        return traceback.strip("\n")
    body, final = blocks[:-1], blocks[-1]
    kept = list(range(max(0, len(body) - frames), len(body)))
    own = [i for i in range(len(body)) if body[i].startswith("Cell In[")]
    if own and not any(i in own for i in kept):
        kept.insert(0, own[-1])
    parts, previous = [], -1
    for i in kept:
        if i > previous + 1:
            gap = i - previous - 1
            parts.append(f"[... {gap} frame{'s' if gap != 1 else ''} cut ...]")
        parts.append(body[i])
        previous = i
    title = "Traceback (most recent call last):\n"
    return _chain_note(chained) + title + "\n\n".join([*parts, final])


def _chain_note(chained: int) -> str:
    if not chained:
        return ""
    return f"[{chained} earlier exception{'s' if chained != 1 else ''} in the chain cut]\n"


def _last_python_frames(lines: list[str], frames: int) -> str:
    starts = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    cut = max(0, len(starts) - frames)
    if not cut:
        return "\n".join(lines)
    head = lines[: starts[0]]
    kept = lines[starts[cut]:]
    note = f"  [... {cut} outer frame{'s' if cut != 1 else ''} cut ...]"
    return "\n".join([*head, note, *kept])


def format_output(
    output: CodeBoxOutput,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    traceback_frames: int = DEFAULT_TRACEBACK_FRAMES,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> tuple[str, list[ToolImage]]:
    """The text and the images a model gets for the result of a run.

    The outputs are kept in order; an error comes last with the innermost
    ``traceback_frames`` frames of its traceback. If the whole does not fit in
    ``max_chars``, the output keeps its head and tail (the note says what was cut) and the
    error is kept whole where it fits.

    Returns:
        ``(text, images)``; the images are the first ``max_images`` PNGs.
    """
    parts: list[str] = []
    images: list[ToolImage] = []
    n_images = 0
    for chunk in output.chunks:
        kind = chunk.type
        if kind in ("stdout", "stderr"):
            parts.append(chunk.content)
        elif kind in ("text", "text/html", "application/json", "text/markdown", "text/latex"):
            parts.append(_own_line(chunk.content, parts))
        elif kind == "image/png":
            n_images += 1
            if len(images) < max_images:
                images.append(ToolImage(chunk.content))
                parts.append(_own_line(f"[image {n_images}: PNG, attached]", parts))
            else:
                parts.append(_own_line(f"[image {n_images}: PNG, not attached (limit)]", parts))
        elif kind == "error":
            continue  # told below, with its traceback
        else:
            parts.append(_own_line(f"[{kind} output, {len(chunk.content)} characters]", parts))
    body = "".join(parts)
    if output.truncated:
        body += _own_line("[the box cut this output at its output limit]", [body])

    error_text = ""
    if output.error is not None:
        err = output.error
        tb = last_frames(err.traceback, traceback_frames) if err.traceback.strip() else ""
        if not (tb and str(err).strip() in tb):
            error_text = "\n".join(filter(None, [tb, str(err)]))
        else:
            error_text = tb
        if err.name == "TimeoutError":
            error_text += "\n(The kernel was interrupted; variables defined before are kept.)"
        error_text = truncate_middle(error_text, max_chars // 2)
    if not body.strip() and not error_text:
        return "[the code ran and printed nothing]", images

    sep = "\n" if body and not body.endswith("\n") and error_text else ""
    room = max_chars - len(error_text) - len(sep)
    body = truncate_middle(body, room) if body else ""
    return body + sep + error_text, images


def _own_line(text: str, before: list[str]) -> str:
    """``text`` on a line of its own after what came ``before``."""
    last = before[-1] if before else ""
    lead = "\n" if last and not last.endswith("\n") else ""
    return lead + text + ("" if text.endswith("\n") else "\n")


def format_command(result: CommandResult, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text a model gets for a shell command: its output in order (head and tail kept
    within ``max_chars``), then how it ended."""
    if result.timed_out:
        ending = ("[the command ran out of time and was ended, with every process it "
                  "started]")
    else:
        ending = f"[exit code {result.exit_code}]"
    if result.truncated:
        ending = "[the box cut this output at its output limit]\n" + ending
    body = str(result)
    if not body:
        return "[no output]\n" + ending
    sep = "" if body.endswith("\n") else "\n"
    return truncate_middle(body, max_chars - len(ending) - len(sep)) + sep + ending


def file_kind(file: CodeBoxFile) -> Literal["image", "text", "binary"]:
    """How a file is shown to a model: as an image (PNG, JPEG, GIF, WebP by extension), as
    text (UTF-8 without NUL bytes), or not at all (binary)."""
    if posixpath.splitext(file.name.lower())[1] in _IMAGE_TYPES:
        return "image"
    try:
        text = (file.content or b"").decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "binary" if "\x00" in text else "text"


def format_file(
    file: CodeBoxFile, *, max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[str, list[ToolImage]]:
    """The text and the images a model gets for a downloaded file (see `file_kind`).

    Images come as an image, text within the budget; binary files are only described (the
    application has them on the result).
    """
    data = file.content or b""
    kind = file_kind(file)
    if kind == "image":
        media_type = _IMAGE_TYPES[posixpath.splitext(file.name.lower())[1]]
        image = ToolImage(base64.b64encode(data).decode("ascii"), media_type)
        return f"{file.name} ({len(data)} bytes): image attached", [image]
    if kind == "binary":
        return (f"{file.name} is a binary file of {len(data)} bytes; it was handed to the "
                "application, not shown."), []
    header = f"{file.name} ({len(data)} bytes):\n"
    return header + truncate_middle(data.decode("utf-8"), max_chars - len(header)), []


def format_files(files: list[CodeBoxFile], *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text a model gets for a list of files: one ``name (size bytes)`` per line."""
    if not files:
        return "The working directory is empty."
    lines = [f"{f.name} ({f.size} bytes)" if f.size is not None else f.name for f in files]
    return truncate_middle("\n".join(lines), max_chars)


# -- execution: prepare (pure) -> one call on the box -> interpret (pure) -------------------


@dataclass(frozen=True)
class _Action:
    method: str  # the box's sync method; the async twin is "a" + method
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Options:
    format: ToolFormat
    max_chars: int
    traceback_frames: int
    max_images: int
    timeout: float | None


class _InvalidCall(ValueError):
    """The model's call cannot be carried out as given."""


def _string_arg(call: ToolCall, key: str) -> str:
    value = call.arguments.get(key)
    if not isinstance(value, str):
        raise _InvalidCall(f"{call.name} needs the argument {key!r} as a string")
    return value


def _prepare(call: ToolCall, opts: _Options) -> _Action:
    if call.name not in TOOLS:
        raise _InvalidCall(f"unknown tool {call.name!r}; the tools are {', '.join(TOOLS)}")
    extra = set(call.arguments) - set(TOOLS[call.name].parameters["properties"])
    if extra:
        raise _InvalidCall(f"{call.name} takes no argument(s) {sorted(extra)}")
    if call.name == RUN_PYTHON:
        return _Action("run", (_string_arg(call, "code"),), {"timeout": opts.timeout})
    if call.name == RUN_SHELL:
        command = _string_arg(call, "command")
        if not command.strip():
            raise _InvalidCall("run_shell needs a command")
        cwd = call.arguments.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise _InvalidCall("cwd must be a string")
        return _Action("shell", (command,), {"timeout": opts.timeout, "cwd": cwd or None})
    if call.name == REMOVE_FILE:
        return _Action("remove", (_string_arg(call, "file_name"),))
    if call.name == UPLOAD_FILE:
        content: str | bytes = _string_arg(call, "content")
        encoding = call.arguments.get("encoding", "text")
        if encoding == "base64":
            try:
                content = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _InvalidCall(f"content is not valid base64: {exc}") from exc
        elif encoding != "text":
            raise _InvalidCall(f"encoding must be 'text' or 'base64', not {encoding!r}")
        return _Action("upload", (_string_arg(call, "file_name"), content))
    if call.name == DOWNLOAD_FILE:
        return _Action("download", (_string_arg(call, "file_name"),))
    if call.name == LIST_FILES:
        return _Action("list_files")
    names = call.arguments.get("package_names")
    if isinstance(names, str):
        names = [names]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise _InvalidCall("install_packages needs 'package_names', a list of package names")
    return _Action("install", tuple(names))


def _interpret(call: ToolCall, value: Any, opts: _Options) -> ToolResult:
    result = ToolResult(text="", format=opts.format, tool_call_id=call.id, name=call.name)
    if call.name == RUN_PYTHON:
        result.output = value
        result.text, result.images = format_output(
            value, max_chars=opts.max_chars, traceback_frames=opts.traceback_frames,
            max_images=opts.max_images,
        )
        result.is_error = value.error is not None
    elif call.name == RUN_SHELL:
        result.command = value
        result.text = format_command(value, max_chars=opts.max_chars)
        result.is_error = not value.ok
    elif call.name == UPLOAD_FILE:
        result.text = f"Wrote {value.name} ({value.size} bytes)."
    elif call.name == REMOVE_FILE:
        result.text = f"Removed {call.arguments['file_name']}."
    elif call.name == DOWNLOAD_FILE:
        result.file = value
        result.text, result.images = format_file(value, max_chars=opts.max_chars)
    elif call.name == LIST_FILES:
        result.text = format_files(value, max_chars=opts.max_chars)
    else:
        result.text = f"{value}."
    return result


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


def _start(call: Any, opts: _Options) -> tuple[ToolCall | None, _Action | ToolResult]:
    """Parse and check a call: the action to carry out, or the error result to return."""
    try:
        parsed = ToolCall.parse(call)
    except ValueError as exc:
        return None, _failed(None, f"Invalid tool call: {exc}", opts, _field(call, "id"))
    try:
        return parsed, _prepare(parsed, opts)
    except _InvalidCall as exc:
        return parsed, _failed(parsed, f"Invalid call of {parsed.name}: {exc}", opts)


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
    parsed, step = _start(call, opts)
    if isinstance(step, ToolResult):
        return step
    assert parsed is not None
    try:
        value = getattr(box, step.method)(*step.args, **step.kwargs)
    except (CodeBoxError, ValueError) as exc:  # the model's call, refused by the box
        return _box_failed(parsed, exc, opts)
    return _interpret(parsed, value, opts)


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
    parsed, step = _start(call, opts)
    if isinstance(step, ToolResult):
        return step
    assert parsed is not None
    try:
        value = await getattr(box, "a" + step.method)(*step.args, **step.kwargs)
    except (CodeBoxError, ValueError) as exc:  # the model's call, refused by the box
        return _box_failed(parsed, exc, opts)
    return _interpret(parsed, value, opts)


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
    "ToolCall",
    "ToolFormat",
    "ToolImage",
    "ToolResult",
    "ToolSpec",
    "aexecute_tool_call",
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
