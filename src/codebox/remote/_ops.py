"""What a `CodeBox` does, written once for its sync and async twins: pure, no I/O.

Each operation is a generator that yields I/O requests (`Send`, `Open`, `ReadLine`,
`CloseStream`, `Sleep`, `Emit`) and receives their results; `codebox.remote._drivers`
carries them out, once with ``httpx.Client`` and once with ``httpx.AsyncClient``. Every
request goes through `call`, the one place where retries happen (streams included).

Adding an operation means: a request builder in `_requests`, a generator here, and two
thin twins on `CodeBox` that hand the generator to a driver.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import CodeBoxError
from ..schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, OutputChunk
from ._ndjson import StreamState
from ._replies import INTERRUPT, STREAM, Capabilities, Reply, require
from ._requests import (
    Request,
    capabilities_request,
    download_request,
    files_request,
    install_requests,
    interrupt_request,
    join_statuses,
    restart_request,
    run_request,
    start_request,
    status_request,
    stop_request,
    stream_request,
    upload_request,
)
from ._retry import RetryPolicy

logger = logging.getLogger(__name__)

T = TypeVar("T")

# -- the I/O requests --------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``request`` and read its whole answer; the result is a `Reply`. A transport
    failure comes back as `SendFailed`."""

    request: Request[Any]


@dataclass(frozen=True)
class Open:
    """Send ``request`` and keep its answer open for `ReadLine`; the result is a `Reply`
    without content (with the whole body when the status is an error). A transport failure
    comes back as `SendFailed`."""

    request: Request[Any]


@dataclass(frozen=True)
class ReadLine:
    """The next line of the open answer; ``None`` once it has ended."""


@dataclass(frozen=True)
class CloseStream:
    """Close the open answer, if any (the server sees the client leave)."""


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` before the next attempt."""

    seconds: float


@dataclass(frozen=True)
class Emit:
    """Hand one output chunk to the caller (``on_output``, or the stream's consumer)."""

    chunk: OutputChunk


Io = Send | Open | ReadLine | CloseStream | Sleep
"""The requests a driver carries out itself (it hands `Emit` on to the consumer)."""
IoRequest = Io | Emit
Op = Generator[IoRequest, Any, T]


class SendFailed(Exception):
    """A request did not get an answer; thrown into the operation by the driver.

    Attributes:
        error: The `CodeBoxError` to raise if the request is not sent again.
        unsent: The connection failed before anything was sent (safe to repeat).
    """

    def __init__(self, error: CodeBoxError, unsent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.unsent = unsent


class StreamAbandoned(Exception):
    """Thrown into a streaming run whose consumer left: the run is interrupted."""


# -- the state of one box's session ---------------------------------------------------------


@dataclass
class ClientState:
    """A `CodeBox`'s session as far as the client knows it.

    Attributes:
        session_id: The server's id of the session (decimal string), once known.
        started: The session is believed to exist on the server.
        caps: What the server offers, once asked.
        retry: When requests are sent again.
    """

    session_id: str | None = None
    started: bool = False
    caps: Capabilities | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def sid(self) -> str:
        """The session id of a started session."""
        if not self.started or self.session_id is None:
            raise CodeBoxError("the CodeBox session is not started")
        return self.session_id


# -- building blocks -------------------------------------------------------------------------


def call(st: ClientState, req: Request[T]) -> Op[T]:
    """Send ``req`` until it has an answer the retry policy accepts; its result.

    Raises:
        CodeBoxError: The answer is an error, or no answer came.
    """
    first, attempt = st.retry.monotonic(), 0
    while True:
        try:
            reply: Reply = yield Open(req) if req.stream else Send(req)
        except SendFailed as failed:
            delay = st.retry.after_failure(req.op, attempt, failed.unsent)
            if delay is None or not st.retry.in_time(first, delay):
                raise failed.error from failed.error.__cause__
        else:
            delay = st.retry.after_reply(req.op, attempt, reply)
            if delay is None or not st.retry.in_time(first, delay):
                return req.interpret(reply)
        logger.info("CodeBox %s: try %d failed; retry in %.2fs", req.what, attempt + 1, delay)
        yield Sleep(delay)
        attempt += 1


def capabilities(st: ClientState) -> Op[Capabilities]:
    """What the server offers (asked once per box)."""
    if st.caps is None:
        st.caps = yield from call(st, capabilities_request())
    return st.caps


# -- the operations --------------------------------------------------------------------------


def start(st: ClientState) -> Op[CodeBoxStatus]:
    if not st.started:
        st.session_id = yield from call(st, start_request())
        st.started = True
    return CodeBoxStatus(status="started")


def stop(st: ClientState) -> Op[CodeBoxStatus]:
    if st.started and st.session_id is not None:
        yield from call(st, stop_request(st.session_id))
    st.started = False
    return CodeBoxStatus(status="stopped")


def status(st: ClientState) -> Op[CodeBoxStatus]:
    if not st.started or st.session_id is None:
        return CodeBoxStatus(status="stopped")
    return (yield from call(st, status_request(st.session_id)))


def run(st: ClientState, code: str, timeout: float | None, *, streaming: bool) -> Op[CodeBoxOutput]:
    """Run ``code``. With ``streaming``, emit each chunk: as it comes where the server
    streams, else after the run."""
    caps = yield from capabilities(st)
    if streaming and caps.has(STREAM):
        return (yield from _streamed(st, stream_request(st.sid, code, timeout, caps), caps))
    output = yield from call(st, run_request(st.sid, code, timeout, caps))
    if streaming:
        for chunk in output.chunks:
            yield Emit(chunk)
    return output


def _streamed(st: ClientState, req: Request[None], caps: Capabilities) -> Op[CodeBoxOutput]:
    yield from call(st, req)
    lines = StreamState(req.what)
    try:
        while not lines.ended and (line := (yield ReadLine())) is not None:
            chunk = lines.feed(line)
            if chunk is not None:
                yield Emit(chunk)
    except BaseException:
        # The consumer left (or failed, or was cancelled): leaving the answer tells the
        # server to stop the run; the interrupt makes sure of it.
        yield CloseStream()
        if not lines.ended and caps.has(INTERRUPT):
            try:
                yield from call(st, interrupt_request(st.sid))
            except CodeBoxError as exc:
                logger.warning("CodeBox: could not interrupt the abandoned run: %s", exc)
        raise
    yield CloseStream()
    return lines.result()


def interrupt(st: ClientState) -> Op[CodeBoxStatus]:
    """Interrupt the running execution; a box without a session has none: nothing is sent."""
    if not st.started or st.session_id is None:
        return CodeBoxStatus(status="stopped")
    require((yield from capabilities(st)), INTERRUPT, "interrupt")
    return (yield from call(st, interrupt_request(st.session_id)))


def restart(st: ClientState) -> Op[CodeBoxStatus]:
    return (yield from call(st, restart_request(st.sid)))


def install(st: ClientState, names: tuple[str, ...], timeout: float | None) -> Op[CodeBoxStatus]:
    caps = yield from capabilities(st)
    statuses = []
    for req in install_requests(st.sid, names, caps, timeout):
        statuses.append((yield from call(st, req)))
    return join_statuses(statuses)


def upload(st: ClientState, name: str, data: bytes, timeout: float | None) -> Op[CodeBoxFile]:
    return (yield from call(st, upload_request(st.sid, name, data, timeout)))


def download(st: ClientState, name: str, timeout: float | None) -> Op[CodeBoxFile]:
    return (yield from call(st, download_request(st.sid, name, timeout)))


def list_files(st: ClientState) -> Op[list[CodeBoxFile]]:
    return (yield from call(st, files_request(st.sid)))
