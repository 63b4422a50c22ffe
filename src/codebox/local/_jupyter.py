"""The Jupyter messaging protocol, as codebox speaks it: pure, no I/O.

- building messages and framing them for the kernel websocket (the binary
  ``v1.kernel.websocket.jupyter.org`` subprotocol, which carries raw buffers both ways);
- parsing frames back into `Message` objects (v1 binary frames and legacy JSON text frames);
- `Execution`: the state machine that turns the messages of one ``execute_request`` into
  output chunks (whole MIME bundles, ``clear_output`` and display updates applied as a
  notebook applies them, every kind within the run's output limits) and decides when that
  execution is finished.

Everything here is tested with recorded message sequences, without a kernel.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .. import _output_caps as caps
from .._limits import MESSAGE_LIMIT, OUTPUT_LIMIT, TRUNCATED_KEY
from ..schema import CLEAR_OUTPUT, ChunkFold, CodeBoxOutput, ExecError, OutputChunk

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

    __slots__ = ("buffers", "channel", "content", "metadata", "msg_type", "parent_id")

    def __init__(
        self,
        channel: str,
        msg_type: str,
        parent_id: str | None,
        content: dict[str, Any],
        buffers: Sequence[bytes | memoryview] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.channel = channel
        self.msg_type = msg_type
        self.parent_id = parent_id
        self.content = content
        self.buffers = buffers
        self.metadata = metadata or {}

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
            "date": datetime.now(UTC).isoformat(),
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
            metadata=_dict(msg.get("metadata")),
        )
    view = memoryview(frame)
    count = int.from_bytes(view[:8], "little")
    offsets = [int.from_bytes(view[8 * i : 8 * i + 8], "little") for i in range(1, count + 1)]
    if count < 6 or offsets[-1] != len(frame):
        raise ValueError(f"malformed kernel websocket frame ({len(frame)} bytes)")
    parts = [view[offsets[i] : offsets[i + 1]] for i in range(count - 1)]
    header = json.loads(bytes(parts[1]))
    parent = json.loads(bytes(parts[2])) if len(parts[2]) > 2 else {}
    metadata = json.loads(bytes(parts[3])) if len(parts[3]) > 2 else {}
    return Message(
        bytes(parts[0]).decode(),
        header["msg_type"],
        parent.get("msg_id"),
        json.loads(bytes(parts[4])),
        parts[5:],
        _dict(metadata),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def display_chunk(data: dict[str, Any], display_id: str | None = None) -> OutputChunk | None:
    """The chunk for a display message's MIME bundle, the bundle kept whole in ``data``.

    Its ``type``/``content`` is the richest part: an image if there is one, else the
    ``text/plain`` repr, unless that is only a placeholder (``<... object>``) and a richer
    type exists; else the first other type.
    """
    data = _normalized(data)
    for mime in _IMAGE_TYPES:
        if mime in data:
            return _chunk(mime, data, display_id)
    text = data.get("text/plain")
    rich = next((m for m in _RICH_TYPES if m in data), None)
    if text is not None and not (rich and _PLACEHOLDER_REPR.match(_as_text(text))):
        return OutputChunk(type="text", content=_as_text(text), data=data, display_id=display_id)
    other = rich or next((m for m in data if m != "text/plain"), None)
    if other is None:
        return None
    return _chunk(other, data, display_id)


def _chunk(mime: str, data: dict[str, Any], display_id: str | None) -> OutputChunk:
    return OutputChunk(type=mime, content=_as_text(data[mime]), data=data, display_id=display_id)


def _normalized(data: dict[str, Any]) -> dict[str, Any]:
    """The bundle with base64 images on one line (the kernel may wrap them), so an
    image's ``content`` is its ``data`` value."""
    wrapped = [m for m in _IMAGE_TYPES if m != "image/svg+xml"
               and isinstance(data.get(m), str) and "\n" in data[m]]
    if not wrapped:
        return data
    return {**data, **{m: "".join(data[m].split()) for m in wrapped}}


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(map(str, value))
    return json.dumps(value)


def error_from(content: dict[str, Any]) -> ExecError:
    """An `ExecError` from an ``error`` message or an error ``execute_reply``."""
    name = content.get("ename")
    return ExecError(
        name="Error" if name is None else caps.as_text(name),
        value=caps.as_text(content.get("evalue")),
        traceback=strip_ansi(caps.traceback_text(content)),
    )


class Execution:
    """The state of one execution: feed it every message the websocket delivers.

    It keeps the output of its own ``msg_id`` in order and ignores the rest. It is finished
    when both the shell ``execute_reply`` and the IOPub ``status: idle`` have arrived (either
    may come first), or when the kernel died or restarted under it.

    What `feed` returns is what to hand a live consumer: every chunk that ends up in the
    result, in order; a ``"clear_output"`` chunk when the code clears its output; a chunk
    with the ``display_id`` of a shown display when the code updates it. `output` is those
    chunks folded (`codebox.schema.ChunkFold`): what a notebook shows at the end.

    Output is bounded, every kind, as every hop bounds it (`codebox._output_caps`): past
    ``output_limit`` bytes kept in all or ``message_limit`` bytes of one message, it is cut
    with a notice of what was dropped, and the output is marked ``truncated``; what an
    earlier hop cut under the same limits fits and passes whole. Output a hop before us cut
    (``metadata[TRUNCATED_KEY]``, or the gateway's rate-limit notice) is marked too.

    Args:
        msg_id: The ``msg_id`` of the ``execute_request``.
        output_limit: Most bytes of output kept (None: no limit at all).
        message_limit: Most bytes kept of one message.
    """

    def __init__(self, msg_id: str, *, output_limit: int | None = OUTPUT_LIMIT,
                 message_limit: int | None = MESSAGE_LIMIT) -> None:
        self.msg_id = msg_id
        self.output_limit = output_limit
        self.reply: dict[str, Any] | None = None
        self.idle = False
        self.died: str | None = None
        self.started = False  # a message of this execution has arrived
        self.error: ExecError | None = None
        self._budget = caps.RunBudget(output_limit, message_limit)
        self._fold = ChunkFold()
        self._cut_before = False  # a hop before us cut this run's output

    @property
    def done(self) -> bool:
        return (self.reply is not None and self.idle) or self.died is not None

    @property
    def truncated(self) -> bool:
        """Whether any of this run's output was cut or dropped, here or before."""
        return self._cut_before or self._budget.truncated

    def unanswered(self, error: ExecError) -> list[OutputChunk]:
        """End an execution the kernel went idle for and never answered (an IPython kernel
        interrupted just as it begins a request drops it) with ``error``; returns the
        chunks to hand a live consumer."""
        self.reply = {"status": "error"}
        self.idle = True
        content = {"ename": error.name, "evalue": error.value,
                   "traceback": [error.traceback] if error.traceback else []}
        chunk = self._output("error", content)
        return [c for c in (chunk, self._closing()) if c is not None]

    def feed(self, msg: Message) -> OutputChunk | None:
        """Take one message; return the chunk to hand a live consumer, if any."""
        if msg.parent_id != self.msg_id:
            if msg.parent_id is None and msg.msg_type == "status":
                state = msg.content.get("execution_state")
                if state in ("restarting", "dead"):
                    self.died = state
            return None
        self.started = True
        if msg.metadata.get(TRUNCATED_KEY):
            self._cut_before = True
        kind = msg.msg_type
        content = msg.content
        if kind == "status":
            if content.get("execution_state") == "idle":
                self.idle = True
            return self._closing()
        if kind == "execute_reply":
            self.reply = content
            if content.get("status") == "error" and self.error is None:
                self.error = error_from(self._budget.take_reply(content, msg.metadata)[0])
            elif content.get("status") == "aborted" and self.error is None:
                self.error = ExecError(name="Aborted", value="the execution was aborted")
            return self._closing()
        if (kind == "stream" and content.get("name") == "stderr"
                and caps.as_text(content.get("text")).startswith(RATE_LIMIT_NOTICES)):
            # The gateway dropped output: say so instead of passing it off as complete.
            self._cut_before = True
        return self._output(kind, content, msg.metadata)

    def _output(self, kind: str, content: dict[str, Any],
                metadata: dict[str, Any] | None = None) -> OutputChunk | None:
        """The chunk of an output message: what the run's budget keeps of it."""
        if kind not in caps.OUTPUT_TYPES:
            return None
        kept, _ = self._budget.take(kind, content, metadata)
        if kept is None:
            return None
        if kind == "stream":
            text = caps.as_text(kept.get("text"))
            chunk = OutputChunk(type=caps.stream_kind(kept), content=text)
        elif kind == "clear_output":
            chunk = OutputChunk(type=CLEAR_OUTPUT, content="",
                                data={"wait": bool(kept.get("wait"))})
        elif kind == "error":
            self.error = error_from(kept)
            chunk = OutputChunk(type="error", content=str(self.error))
        else:
            shown = display_chunk(kept["data"], caps.display_id(kept))
            if shown is None:
                return None
            chunk = shown
        self._fold.add(chunk)
        return chunk

    def _closing(self) -> OutputChunk | None:
        """Once the execution is over: the notice of what was dropped, per kind."""
        if not self.done:
            return None
        text, _ = self._budget.closing()
        if not text:
            return None
        chunk = OutputChunk(type="stderr", content=text)
        self._fold.add(chunk)
        return chunk

    def output(self, error: ExecError | None = None) -> CodeBoxOutput:
        """The result so far (what a notebook shows); ``error`` overrides the execution's
        own (timeouts, deaths)."""
        chunks = list(self._fold.chunks)
        err = error or self.error
        if error is not None:
            # The error this execution ends with replaces what the interrupt produced.
            chunks = [c for c in chunks if c.type != "error"]
            chunks.append(OutputChunk(type="error", content=str(error)))
        count = self.reply.get("execution_count") if self.reply else None
        return CodeBoxOutput.from_chunks(
            chunks, error=err, execution_count=count, truncated=self.truncated
        )
