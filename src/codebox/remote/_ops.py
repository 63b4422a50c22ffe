"""What a `CodeBox` does, written once for its sync and async twins: pure, no I/O.

Each operation is a generator that yields I/O requests (`Send`, `Open`, `ReadLine`,
`ReadChunk`, `CloseStream`, `Sleep`, `Emit`) and receives their results; `codebox.remote._drivers`
carries them out, once with ``httpx.Client`` and once with ``httpx.AsyncClient``. Every
request goes through `call`, the one place where retries happen (streams included).

Adding an operation means: a request builder in `_requests`, a generator here, and two
thin twins on `CodeBox` that hand the generator to a driver.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import CodeBoxError, CodeBoxNotFoundError
from ..schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, CommandResult, OutputChunk
from ._ndjson import CommandLines, StreamState
from ._replies import (
    FILE_OPS,
    INTERRUPT,
    SHELL,
    START_OPTIONS,
    STREAM,
    Capabilities,
    Reply,
    require,
)
from ._requests import (
    Request,
    capabilities_request,
    download_request,
    file_info_request,
    files_request,
    install_requests,
    interrupt_request,
    join_statuses,
    make_dir_request,
    remove_request,
    rename_request,
    restart_request,
    run_request,
    shell_request,
    shell_stream_request,
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
class ReadChunk:
    """The next piece of the open answer's body, as bytes; ``None`` once it has ended."""


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


Io = Send | Open | ReadLine | ReadChunk | CloseStream | Sleep
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
    env: dict[str, str] = field(default_factory=dict)  # set in the kernel at start

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
        if st.env:
            require((yield from capabilities(st)), START_OPTIONS, "start with env")
        st.session_id = yield from call(st, start_request(st.env))
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


def _streamed(st: ClientState, req: Request[None], caps: Capabilities,
              lines: StreamState | None = None) -> Op[CodeBoxOutput]:
    yield from call(st, req)
    lines = lines if lines is not None else StreamState(req.what)
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


OnProgress = Callable[[int, int], Any]


def upload(st: ClientState, name: str, data: bytes, timeout: float | None,
           on_progress: OnProgress | None = None) -> Op[CodeBoxFile]:
    req = upload_request(st.sid, name, data, timeout)
    if on_progress is not None:
        # The client reads the content as it sends it: each read is progress.
        files: Any = {"file": (name, _Reporting(data, on_progress), "application/octet-stream")}
        req = dataclasses.replace(req, files=files)
    return (yield from call(st, req))


class _Reporting(io.BytesIO):
    """Upload content that says how much of it was read (sent) so far."""

    def __init__(self, data: bytes, on_progress: OnProgress) -> None:
        super().__init__(data)
        self._total, self._on_progress = len(data), on_progress
        on_progress(0, self._total)

    def read(self, size: int | None = -1) -> bytes:
        part = super().read(size)
        if part:
            self._on_progress(self.tell(), self._total)
        return part


def download(st: ClientState, name: str, timeout: float | None,
             on_progress: OnProgress | None = None) -> Op[CodeBoxFile]:
    req = download_request(st.sid, name, timeout)
    if on_progress is None:
        return (yield from call(st, req))
    opened: Request[Reply] = Request(req.op, req.what, req.method, req.path, lambda r: r,
                                     params=req.params, json=req.json, timeout=req.timeout,
                                     stream=True)
    reply = yield from call(st, opened)
    length = reply.headers.get("content-length", "")
    total, parts, done = int(length) if length.isdigit() else 0, [], 0
    on_progress(0, total)
    try:
        while (part := (yield ReadChunk())) is not None:
            parts.append(part)
            done += len(part)
            on_progress(done, max(total, done))
    finally:
        yield CloseStream()
    return req.interpret(Reply(reply.status, reply.headers, b"".join(parts)))


def list_files(st: ClientState) -> Op[list[CodeBoxFile]]:
    return (yield from call(st, files_request(st.sid)))


# -- shell commands and file operations (extensions ``shell``, ``file-ops``) -------------


def shell(st: ClientState, args: dict[str, Any], *, streaming: bool) -> Op[CommandResult]:
    """Run a shell command (``args`` checked: command, timeout, cwd, env). With
    ``streaming``, emit each chunk as it comes."""
    caps = yield from capabilities(st)
    require(caps, SHELL, "shell")
    if not streaming:
        return (yield from call(st, shell_request(st.sid, args)))
    req = shell_stream_request(st.sid, args)
    lines = CommandLines(req.what)
    yield from _streamed(st, req, caps, lines)
    return lines.command_result()


def _file_ops(st: ClientState) -> Op[str]:
    require((yield from capabilities(st)), FILE_OPS, "file operations")
    return st.sid


def remove(st: ClientState, path: str) -> Op[CodeBoxStatus]:
    return (yield from call(st, remove_request((yield from _file_ops(st)), path)))


def rename(st: ClientState, source: str, destination: str) -> Op[CodeBoxFile]:
    return (yield from call(st, rename_request((yield from _file_ops(st)), source, destination)))


def make_dir(st: ClientState, path: str) -> Op[CodeBoxFile]:
    return (yield from call(st, make_dir_request((yield from _file_ops(st)), path)))


def file_info(st: ClientState, path: str) -> Op[CodeBoxFile]:
    return (yield from call(st, file_info_request((yield from _file_ops(st)), path)))


def exists(st: ClientState, path: str) -> Op[bool]:
    try:
        yield from file_info(st, path)
    except CodeBoxNotFoundError:
        # 404 is also an unknown session: that is an error, not a missing file.
        yield from call(st, status_request(st.sid))
        return False
    return True
