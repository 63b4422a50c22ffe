"""The first hop out of a box: what the gateway codebox spawns lets through of a kernel's
output, and how fast.

- Every IOPub message of a run's output is charged to its run (the ``msg_id`` of the
  request it answers) and cut where it does not fit, counted and cut as the kernel does
  (`codebox._output_caps`): what the kernel cut passes whole, and a kernel that ignores
  the limits still cannot push more than a run's budget through the gateway. A message
  that answers no request this connection sent (of its last `REQUESTS_KEPT`) is not
  passed on at all: a codebox client reads only its own, and a kernel could otherwise
  make up a fresh run for every message.
- A message larger than the gateway ever passes is refused by ZMQ itself before it is
  read (`max_message_size`, ``ZMQ_MAXMSGSIZE`` on every socket to a kernel): the kernel's
  connection is dropped and made again, and that message is lost. Only a kernel that
  ignores the limits sends one.
- Backpressure: the websocket's write buffer is bounded. Once it holds more than
  `HIGH_WATER` bytes the connection stops reading the kernel's sockets until the client
  has taken it all; what waits meanwhile waits in the kernel's own queue: the gateway's
  ZMQ sockets queue at most `RECEIVE_QUEUE` messages (``ZMQ_RCVHWM``), so a connection
  holds at most `HIGH_WATER` plus that many messages of `max_message_size`. A kernel's
  IOPub socket drops what does not fit in its queue: only a kernel that ignores the limits,
  or many runs' output unread, ever fills it.

Imported by ``_gateway_app`` only (it needs jupyter_server and tornado).
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from codebox import _output_caps as caps

DELIMITER = b"<IDS|MSG>"
V1 = "v1.kernel.websocket.jupyter.org"
HIGH_WATER = 16 * 1024 * 1024
"""Most bytes waiting in one websocket's write buffer before reading from its kernel stops."""
RECEIVE_QUEUE = 8
"""Most messages from a kernel waiting in one of the gateway's ZMQ sockets."""
REQUESTS_KEPT = 64
"""Requests of a connection whose answers it passes on (the most recent ones)."""
FRAME_LIMIT = 64 * 1024
"""Most bytes of an output message's header, parent header and metadata together."""
_EMPTY = object()


def max_message_size(message_limit: int) -> int:
    """The largest message the gateway reads from a kernel: a message at the limit, with
    room for JSON's escapes of it."""
    return 2 * message_limit + 1024 * 1024


class Limits:
    """The output limits of each kernel: the gateway's own, tightened by a sandbox policy's
    ``output_limit``."""

    def __init__(self, run_limit: int, message_limit: int) -> None:
        self.run_limit, self.message_limit = run_limit, min(run_limit, message_limit)
        self.kernels: dict[str, int] = {}

    def note(self, kernel_id: str, env: dict[str, str] | None, policy_key: str) -> None:
        """Record the limit a kernel's start asked for (in its sandbox policy)."""
        try:
            asked = json.loads((env or {}).get(policy_key) or "{}").get("output_limit")
        except (ValueError, AttributeError):
            asked = None
        if isinstance(asked, int) and asked > 0:
            self.kernels[kernel_id] = asked

    def budget(self, kernel_id: str) -> caps.Budgets:
        """The budget of a connection to ``kernel_id``: the kernel's own limits (it counts
        and cuts the same way, so what it kept within them passes here whole)."""
        run = min(self.run_limit, self.kernels.get(kernel_id, self.run_limit))
        return caps.Budgets(run, min(run, self.message_limit))


class BoundedOutput:
    """A mixin for the gateway's kernel websocket connection class (jupyter_server's
    ``ZMQChannelsWebsocketConnection``): output bounded per run, and backpressure."""

    limits: Limits  # set on the class by the gateway app
    _codebox_budget: caps.Budgets | None = None
    _codebox_paused = False
    _codebox_asked: OrderedDict[str, None] | None = None

    @property
    def _codebox_requests(self) -> OrderedDict[str, None] | None:
        """The requests this connection sent (None: not known, in the legacy JSON form of
        the protocol, whose messages are not read here: nothing is filtered)."""
        if self.subprotocol != V1:  # type: ignore[attr-defined]
            return None
        if self._codebox_asked is None:
            self._codebox_asked = OrderedDict()
        return self._codebox_asked

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        self._codebox_note(incoming_msg)
        super().handle_incoming_message(incoming_msg)  # type: ignore[misc]

    def _codebox_note(self, ws_msg: Any) -> None:
        """Remember the ``msg_id`` of a request the client sends."""
        requests = self._codebox_requests
        if requests is None or not isinstance(ws_msg, (bytes, bytearray, memoryview)):
            return
        try:
            view = memoryview(ws_msg)
            start, end = (int.from_bytes(view[8 * i:8 * i + 8], "little") for i in (2, 3))
            msg_id = json.loads(bytes(view[start:end]))["msg_id"]
        except (ValueError, KeyError, TypeError):
            return
        requests[str(msg_id)] = None
        while len(requests) > REQUESTS_KEPT:
            requests.popitem(last=False)

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        if channel == "iopub":
            bounded = self._codebox_bound(stream, outgoing_msg)
            if bounded is None:
                return
            outgoing_msg = bounded
        super().handle_outgoing_message(stream, outgoing_msg)  # type: ignore[misc]
        self._codebox_backpressure()

    # -- bounds -------------------------------------------------------------------------

    def _codebox_bound(self, stream: Any, msg_list: list[Any]) -> list[Any] | None:
        """The message to pass on instead of ``msg_list`` (None: drop it)."""
        session = self.session  # type: ignore[attr-defined]
        idents, parts = session.feed_identities(msg_list)
        if len(parts) < 5:
            return msg_list  # jupyter_server reports malformed messages itself
        header = _loads(parts[1])
        parent = _loads(parts[2])
        run = parent.get("msg_id")
        msg_type = header.get("msg_type")
        if not isinstance(run, str) or not run:
            return msg_list
        requests = self._codebox_requests
        if requests is not None and run not in requests:
            return None  # it answers no request of this connection's
        if self._codebox_budget is None:
            self._codebox_budget = self.limits.budget(self.kernel_id)  # type: ignore[attr-defined]
        budgets = self._codebox_budget
        if msg_type == "status":
            said, dropped = budgets.closing(run) if _loads(parts[4]).get(
                "execution_state") == "idle" else ("", 0)
            if said:
                note = _message(session, header, parts[2], {caps.TRUNCATED_KEY: max(1, dropped)},
                                caps.closing_content(said))
                super().handle_outgoing_message(stream, idents + note)  # type: ignore[misc]
            return msg_list
        if msg_type not in caps.OUTPUT_TYPES:
            return msg_list
        if sum(len(memoryview(p)) for p in parts[1:4]) > FRAME_LIMIT:
            return None  # an output message whose headers hold more than headers do
        content, metadata = _loads(parts[4], None), _loads(parts[3])
        if content is None:
            return None  # not a message: nothing to count, nothing a client could read
        extra = sum(len(memoryview(p)) for p in parts[5:])
        kept, dropped = budgets.run(run).take(str(msg_type), content, metadata, extra)
        if kept is None:
            return None
        if not dropped:
            return msg_list
        metadata[caps.TRUNCATED_KEY] = dropped
        return idents + _signed(session, [bytes(parts[1]), bytes(parts[2]),
                                          caps.dumps(metadata), caps.dumps(kept)])

    # -- backpressure -------------------------------------------------------------------

    def _codebox_backpressure(self) -> None:
        ws = getattr(self.websocket_handler, "ws_connection", None)  # type: ignore[attr-defined]
        iostream = getattr(ws, "stream", None)
        if iostream is None or self._codebox_paused:
            return
        waiting = iostream._total_write_index - iostream._total_write_done_index
        if waiting <= HIGH_WATER or iostream.closed():
            return
        self._codebox_paused = True
        channels = dict(self.channels)  # type: ignore[attr-defined]
        for zmq_stream in channels.values():
            if not zmq_stream.closed():
                zmq_stream.stop_on_recv()

        def resume(_: Any) -> None:
            self._codebox_paused = False
            if self.channels != channels:  # type: ignore[attr-defined]
                return  # closed, or reconnected with new streams meanwhile
            for zmq_stream in channels.values():
                if not zmq_stream.closed():
                    zmq_stream.on_recv_stream(self.handle_outgoing_message)

        iostream.write(b"").add_done_callback(resume)  # done once all before it is sent


def _loads(part: Any, default: Any = _EMPTY) -> Any:
    """A message part's JSON object; ``default`` (an empty dict) if it holds none."""
    try:
        value = json.loads(bytes(part)) if len(part) else None
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {} if default is _EMPTY else default


def _signed(session: Any, parts: list[bytes]) -> list[bytes]:
    return [DELIMITER, session.sign(parts), *parts]


def _message(session: Any, like: dict[str, Any], parent: Any, metadata: dict[str, Any],
             content: dict[str, Any]) -> list[bytes]:
    """A new ``stream`` message of the same kernel session as ``like``, answering the
    request ``parent`` (its header, as the kernel sent it)."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "stream",
              "session": like.get("session", ""), "username": like.get("username", ""),
              "date": datetime.now(UTC).isoformat(),
              "version": like.get("version", "5.3")}
    return _signed(session, [caps.dumps(header), bytes(parent), caps.dumps(metadata),
                             caps.dumps(content)])
