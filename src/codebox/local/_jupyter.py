"""The Jupyter messaging protocol, as codebox speaks it: pure, no I/O.

- building messages and framing them for the kernel websocket (the binary
  ``v1.kernel.websocket.jupyter.org`` subprotocol, which carries raw buffers both ways);
- parsing frames back into `Message` objects (v1 binary frames and legacy JSON text frames);
- `Execution`: the state machine that turns the messages of one ``execute_request`` into
  output chunks and decides when that execution is finished.

Everything here is tested with recorded message sequences, without a kernel.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..schema import CodeBoxOutput, ExecError, OutputChunk

WS_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
PROTOCOL_VERSION = "5.3"

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# An object whose text/plain is only its default repr: a richer type says more.
_PLACEHOLDER_REPR = re.compile(r"^<[^\n]* object( at 0x[0-9a-fA-F]+)?>$")
RATE_LIMIT_NOTICES = ("IOPub data rate exceeded", "IOPub message rate exceeded")
# Display data types in the order of preference when a message offers several.
_IMAGE_TYPES = ("image/png", "image/svg+xml", "image/jpeg")
_RICH_TYPES = ("text/html", "text/markdown", "text/latex", "application/json")


def strip_ansi(text: str) -> str:
    """Remove ANSI colour and cursor codes."""
    return _ANSI.sub("", text)


class Message:
    """A message received from the kernel websocket (only the parts codebox reads)."""

    __slots__ = ("buffers", "channel", "content", "msg_type", "parent_id")

    def __init__(
        self,
        channel: str,
        msg_type: str,
        parent_id: str | None,
        content: dict[str, Any],
        buffers: Sequence[bytes | memoryview] = (),
    ) -> None:
        self.channel = channel
        self.msg_type = msg_type
        self.parent_id = parent_id
        self.content = content
        self.buffers = buffers

    def __repr__(self) -> str:
        return f"Message({self.channel}/{self.msg_type}, parent={self.parent_id})"


class Session:
    """Builds and frames the messages of one client session with one kernel."""

    def __init__(self, session_id: str | None = None, username: str = "codebox") -> None:
        self.session_id = session_id or uuid.uuid4().hex
        self.username = username

    def header(self, msg_type: str) -> dict[str, Any]:
        return {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": self.session_id,
            "username": self.username,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": PROTOCOL_VERSION,
        }

    def execute_request(
        self,
        code: str,
        *,
        silent: bool = False,
        store_history: bool = True,
        buffers: Sequence[bytes | memoryview] = (),
        metadata: dict[str, Any] | None = None,
        stop_on_error: bool = False,
    ) -> tuple[str, bytes]:
        """An ``execute_request`` on the shell channel: ``(msg_id, frame)``.

        ``stop_on_error`` makes the kernel abort the requests queued behind a failing one.
        """
        header = self.header("execute_request")
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history and not silent,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": stop_on_error,
        }
        return header["msg_id"], encode_frame("shell", header, content, metadata, buffers)


def encode_frame(
    channel: str,
    header: dict[str, Any],
    content: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    buffers: Sequence[bytes | memoryview] = (),
    parent_header: dict[str, Any] | None = None,
) -> bytes:
    """Frame a message for the v1 websocket subprotocol.

    Layout: a little-endian u64 count of offsets, the u64 offsets, then the channel name,
    header, parent header, metadata, content and raw buffers, back to back.
    """
    parts: list[bytes | memoryview] = [
        channel.encode(),
        _dumps(header),
        _dumps(parent_header or {}),
        _dumps(metadata or {}),
        _dumps(content),
        *buffers,
    ]
    count = len(parts) + 1
    offset = 8 * (count + 1)
    table = [count.to_bytes(8, "little")]
    for part in parts:
        table.append(offset.to_bytes(8, "little"))
        offset += len(part)
    table.append(offset.to_bytes(8, "little"))
    return b"".join([*table, *parts])


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decode_frame(frame: bytes | str) -> Message:
    """Parse a websocket frame: v1 binary, or a legacy JSON text frame."""
    if isinstance(frame, str):
        msg = json.loads(frame)
        parent = msg.get("parent_header") or {}
        return Message(
            msg.get("channel") or "",
            msg["header"]["msg_type"],
            parent.get("msg_id"),
            msg.get("content") or {},
        )
    view = memoryview(frame)
    count = int.from_bytes(view[:8], "little")
    offsets = [int.from_bytes(view[8 * i : 8 * i + 8], "little") for i in range(1, count + 1)]
    if count < 6 or offsets[-1] != len(frame):
        raise ValueError(f"malformed kernel websocket frame ({len(frame)} bytes)")
    parts = [view[offsets[i] : offsets[i + 1]] for i in range(count - 1)]
    header = json.loads(bytes(parts[1]))
    parent = json.loads(bytes(parts[2])) if len(parts[2]) > 2 else {}
    return Message(
        bytes(parts[0]).decode(),
        header["msg_type"],
        parent.get("msg_id"),
        json.loads(bytes(parts[4])),
        parts[5:],
    )


def display_chunk(data: dict[str, Any]) -> OutputChunk | None:
    """The chunk for a display message's MIME bundle: an image if there is one, else the
    ``text/plain`` repr, unless that is only a placeholder (``<... object>``) and a richer
    type exists; else the first other type."""
    for mime in _IMAGE_TYPES:
        if mime in data:
            content = data[mime]
            if mime != "image/svg+xml" and isinstance(content, str) and "\n" in content:
                content = "".join(content.split())
            return OutputChunk(type=mime, content=_as_text(content))
    text = data.get("text/plain")
    rich = next((m for m in _RICH_TYPES if m in data), None)
    if text is not None and not (rich and _PLACEHOLDER_REPR.match(text)):
        return OutputChunk(type="text", content=_as_text(text))
    other = rich or next((m for m in data if m != "text/plain"), None)
    if other is None:
        return None
    return OutputChunk(type=other, content=_as_text(data[other]))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(map(str, value))
    return json.dumps(value)


def error_from(content: dict[str, Any]) -> ExecError:
    """An `ExecError` from an ``error`` message or an error ``execute_reply``."""
    traceback = content.get("traceback") or []
    return ExecError(
        name=str(content.get("ename", "Error")),
        value=str(content.get("evalue", "")),
        traceback=strip_ansi("\n".join(traceback)),
    )


class Execution:
    """The state of one execution: feed it every message the websocket delivers.

    It keeps the output of its own ``msg_id`` in order and ignores the rest. It is finished
    when both the shell ``execute_reply`` and the IOPub ``status: idle`` have arrived (either
    may come first), or when the kernel died or restarted under it.

    Args:
        msg_id: The ``msg_id`` of the ``execute_request``.
        output_limit: Most characters of text output to keep; the rest is cut (None: all).
    """

    def __init__(self, msg_id: str, *, output_limit: int | None = None) -> None:
        self.msg_id = msg_id
        self.output_limit = output_limit
        self.reply: dict[str, Any] | None = None
        self.idle = False
        self.died: str | None = None
        self.started = False  # a message of this execution has arrived
        self.error: ExecError | None = None
        self.truncated = False
        self._text_kept = 0
        # Output as [type, [pieces]]: adjacent stream pieces of one type merge into one chunk.
        self._parts: list[tuple[str, list[str]]] = []

    @property
    def done(self) -> bool:
        return (self.reply is not None and self.idle) or self.died is not None

    def feed(self, msg: Message) -> OutputChunk | None:
        """Take one message; return the output chunk it carries for this execution, if any."""
        if msg.parent_id != self.msg_id:
            if msg.parent_id is None and msg.msg_type == "status":
                state = msg.content.get("execution_state")
                if state in ("restarting", "dead"):
                    self.died = state
            return None
        self.started = True
        kind = msg.msg_type
        content = msg.content
        if kind == "status":
            if content.get("execution_state") == "idle":
                self.idle = True
            return None
        if kind == "execute_reply":
            self.reply = content
            if content.get("status") == "error" and self.error is None:
                self.error = error_from(content)
            elif content.get("status") == "aborted" and self.error is None:
                self.error = ExecError(name="Aborted", value="the execution was aborted")
            return None
        if kind == "stream":
            text = content.get("text", "")
            name = "stderr" if content.get("name") == "stderr" else "stdout"
            if name == "stderr" and text.startswith(RATE_LIMIT_NOTICES):
                # The gateway dropped output: say so instead of passing it off as complete.
                self.truncated = True
            return self._add(OutputChunk(type=name, content=text))
        if kind in ("execute_result", "display_data", "update_display_data"):
            chunk = display_chunk(content.get("data") or {})
            return self._add(chunk) if chunk is not None else None
        if kind == "error":
            self.error = error_from(content)
            return self._add(OutputChunk(type="error", content=str(self.error)))
        return None

    def _add(self, chunk: OutputChunk) -> OutputChunk | None:
        if chunk.type in ("stdout", "stderr", "text") and self.output_limit is not None:
            room = self.output_limit - self._text_kept
            if room <= 0:
                self.truncated = True
                return None
            if len(chunk.content) > room:
                self.truncated = True
                cut = chunk.content[:room]
                note = f"\n[codebox: output truncated after {self.output_limit} characters]\n"
                chunk = OutputChunk(type=chunk.type, content=cut + note)
                self._text_kept = self.output_limit
            else:
                self._text_kept += len(chunk.content)
        if chunk.type in ("stdout", "stderr") and self._parts and self._parts[-1][0] == chunk.type:
            self._parts[-1][1].append(chunk.content)
        else:
            self._parts.append((chunk.type, [chunk.content]))
        return chunk

    def output(self, error: ExecError | None = None) -> CodeBoxOutput:
        """The result so far; ``error`` overrides the execution's own (timeouts, deaths)."""
        chunks = [OutputChunk(type=t, content="".join(p)) for t, p in self._parts]
        err = error or self.error
        if error is not None:
            # The error this execution ends with replaces what the interrupt produced.
            chunks = [c for c in chunks if c.type != "error"]
            chunks.append(OutputChunk(type="error", content=str(error)))
        count = self.reply.get("execution_count") if self.reply else None
        return CodeBoxOutput.from_chunks(
            chunks, error=err, execution_count=count, truncated=self.truncated
        )
