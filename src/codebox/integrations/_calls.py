"""The shapes of a model's tool calls and of the answers to them, in the OpenAI and the
Anthropic formats (pure, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..schema import CodeBoxFile, CodeBoxOutput, CommandResult
from ._format import ToolFormat, ToolImage


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

