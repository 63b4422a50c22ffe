"""What a `CodeBox` does, written once for its sync and async twins: pure, no I/O.

Each operation is a generator for the engine (`codebox._engine`): it yields requests
(`Send`, `Open`, `ReadLine`, `ReadChunk`, `CloseStream`, `Sleep`, and the engine's `Emit`)
and receives their results; `_transport` carries them out over httpx. Every request goes
through `call`, the one place where retries happen (streams included), and every operation
on a session starts it first if it was never started (`session`).

Adding an operation means: a request builder in `_requests`, a generator here, and a
method of `RemoteOps` (`_box`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._engine import Cleanup, Emit, Op, Revoked
from .._protocol import (
    FILE_OPS,
    INTERRUPT,
    LIFETIME,
    SHELL,
    SNAPSHOTS,
    START_OPTIONS,
    STREAM,
    TEMPLATES,
)
from ..errors import CodeBoxError, CodeBoxNotFoundError
from ..schema import (
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxStatus,
    CommandResult,
    ExecError,
    OutputChunk,
    Snapshot,
    fold_chunks,
)
from ._ndjson import CommandLines, StreamState
from ._replies import Capabilities, Reply, require
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
    snapshot_request,
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


@dataclass
class Answer:
    """An answer an operation holds open (`Open`), read with `ReadLine` or `ReadChunk`."""

    response: Any = None
    parts: Any = None  # its lines or its bytes, once the operation reads it
    what: str = ""


@dataclass(frozen=True)
class Send:
    """Send ``request`` and read its whole answer; the result is a `Reply`. A transport
    failure comes back as `SendFailed`."""

    request: Request[Any]


@dataclass(frozen=True)
class Open:
    """Send ``request`` and keep its answer open in ``answer``; the result is a `Reply`
    without content (with the whole body when the status is an error). A transport failure
    comes back as `SendFailed`."""

    request: Request[Any]
    answer: Answer


@dataclass(frozen=True)
class ReadLine:
    """The next line of the open answer; ``None`` once it has ended."""

    answer: Answer


@dataclass(frozen=True)
class ReadChunk:
    """The next piece of the open answer's body, as bytes; ``None`` once it has ended."""

    answer: Answer


@dataclass(frozen=True)
class CloseStream(Cleanup):
    """Close the open answer, if any (the server sees the client leave)."""

    answer: Answer


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` before the next attempt."""

    seconds: float


class SendFailed(Exception):
    """A request did not get an answer; raised by the transport into the operation.

    Attributes:
        error: The `CodeBoxError` to raise if the request is not sent again.
        unsent: The connection failed before anything was sent (safe to repeat).
    """

    def __init__(self, error: CodeBoxError, unsent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.unsent = unsent


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
    lifetime: float | None = None  # seconds the session may stay unused (sent at start)
    template: str | None = None  # the server's template the session starts from
    snapshot: str | None = None  # the snapshot the session starts from


# -- building blocks -------------------------------------------------------------------------


def call(st: ClientState, req: Request[T], answer: Answer | None = None) -> Op[T]:
    """Send ``req`` until it has an answer the retry policy accepts; its result. A streamed
    request (``req.stream``) keeps its answer open in ``answer``.

    Raises:
        CodeBoxError: The answer is an error, or no answer came.
    """
    first, attempt = st.retry.monotonic(), 0
    while True:
        try:
            if req.stream:
                assert answer is not None
                reply: Reply = yield Open(req, answer)
            else:
                reply = yield Send(req)
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


def session(st: ClientState) -> Op[str]:
    """The session's id, starting a session first if the box has none (a box that was
    never started, or was stopped, starts lazily)."""
    if not st.started or st.session_id is None:
        if st.env:
            require((yield from capabilities(st)), START_OPTIONS, "start with env")
        if st.lifetime is not None:
            require((yield from capabilities(st)), LIFETIME, "lifetime")
        if st.template:
            require((yield from capabilities(st)), TEMPLATES, "start from a template")
        if st.snapshot:
            require((yield from capabilities(st)), SNAPSHOTS, "start from a snapshot")
        st.session_id = yield from call(st, start_request(st.env, st.lifetime, st.template,
                                                          st.snapshot))
        st.started = True
    return st.session_id


# -- the operations --------------------------------------------------------------------------


def start(st: ClientState) -> Op[CodeBoxStatus]:
    yield from session(st)
    return CodeBoxStatus(status="started")


def stop(st: ClientState) -> Op[CodeBoxStatus]:
    if st.started and st.session_id is not None:
        try:
            yield from call(st, stop_request(st.session_id))
        except CodeBoxNotFoundError:
            pass  # stopped already (by its lifetime, or another client)
    st.started = False
    return CodeBoxStatus(status="stopped")


def status(st: ClientState) -> CodeBoxStatus:
    """What the box knows, no I/O: ``"running"`` once a session is started."""
    return CodeBoxStatus(status="running" if st.started else "stopped")


def run(st: ClientState, code: str, timeout: float | None, *, streaming: bool
        ) -> Op[CodeBoxOutput]:
    """Run ``code``. With ``streaming``, emit each chunk: as it comes where the server
    streams, else after the run."""
    sid = yield from session(st)
    caps = yield from capabilities(st)
    if streaming and caps.has(STREAM):
        lines = StreamState(f"stream in session {sid}")
        try:
            return (yield from _streamed(st, stream_request(sid, code, timeout, caps), caps,
                                         lines))
        except Revoked:
            # The box was stopped under the run: what came, then the run's end, as a
            # LocalBox says it.
            error = ExecError(name="KernelDiedError",
                              value="the box was stopped while this code ran")
            yield Emit(OutputChunk(type="error", content=str(error)))
            chunks = [*lines.chunks, OutputChunk(type="error", content=str(error))]
            return CodeBoxOutput.from_chunks(fold_chunks(chunks), error=error)
    output = yield from call(st, run_request(sid, code, timeout, caps))
    if streaming:
        for chunk in output.chunks:
            yield Emit(chunk)
    return output


def _streamed(st: ClientState, req: Request[None], caps: Capabilities,
              lines: StreamState | None = None) -> Op[CodeBoxOutput]:
    answer = Answer()
    yield from call(st, req, answer)
    lines = lines if lines is not None else StreamState(req.what)
    try:
        while not lines.ended and (line := (yield ReadLine(answer))) is not None:
            chunk = lines.feed(line)
            if chunk is not None:
                yield Emit(chunk)
    except BaseException as exc:
        # The consumer left (or failed, or was cancelled): leaving the answer tells the
        # server to stop the run; the interrupt makes sure of it (unless the box is being
        # stopped: then the stop does).
        yield CloseStream(answer)
        if (not lines.ended and not isinstance(exc, Revoked) and caps.has(INTERRUPT)
                and st.session_id is not None):
            try:
                yield from call(st, interrupt_request(st.session_id))
            except CodeBoxError as exc:
                logger.warning("CodeBox: could not interrupt the abandoned run: %s", exc)
        raise
    yield CloseStream(answer)
    return lines.result()


def snapshot(st: ClientState) -> Op[Snapshot]:
    """Snapshot the session on the server (extension ``snapshots``)."""
    sid = yield from session(st)
    require((yield from capabilities(st)), SNAPSHOTS, "snapshot")
    return (yield from call(st, snapshot_request(sid)))


def restart(st: ClientState) -> Op[CodeBoxStatus]:
    return (yield from call(st, restart_request((yield from session(st)))))


def install(st: ClientState, names: tuple[str, ...], timeout: float) -> Op[CodeBoxStatus]:
    sid = yield from session(st)
    caps = yield from capabilities(st)
    statuses = []
    for req in install_requests(sid, names, caps, timeout):
        statuses.append((yield from call(st, req)))
    return join_statuses(statuses)


OnProgress = Callable[[int, int], Any]


def upload(st: ClientState, name: str, data: bytes | memoryview, timeout: float,
           on_progress: OnProgress | None = None) -> Op[CodeBoxFile]:
    req = upload_request((yield from session(st)), name, bytes(data), timeout)
    if on_progress is not None:
        # The client reads the content as it sends it: each read is progress.
        content: Any = _Reporting(bytes(data), on_progress)
        req = dataclasses.replace(req, files={"file": (name, content, "application/octet-stream")})
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


def _opened(req: Request[Any]) -> Request[Reply]:
    """``req`` with its answer kept open, to be read piece by piece."""
    return Request(req.op, req.what, req.method, req.path, lambda r: r, params=req.params,
                   json=req.json, timeout=req.timeout, stream=True)


def download(st: ClientState, name: str, timeout: float,
             on_progress: OnProgress | None = None) -> Op[CodeBoxFile]:
    req = download_request((yield from session(st)), name, timeout)
    if on_progress is None:
        return (yield from call(st, req))
    answer = Answer()
    reply = yield from call(st, _opened(req), answer)
    length = reply.headers.get("content-length", "")
    total, parts, done = int(length) if length.isdigit() else 0, [], 0
    on_progress(0, total)
    try:
        while (part := (yield ReadChunk(answer))) is not None:
            parts.append(part)
            done += len(part)
            on_progress(done, max(total, done))
    finally:
        yield CloseStream(answer)
    return req.interpret(Reply(reply.status, reply.headers, b"".join(parts)))


def read(st: ClientState, name: str, timeout: float) -> Op[None]:
    """Emit the file's size (its ``Content-Length``), then its content as it arrives."""
    req = download_request((yield from session(st)), name, timeout)
    answer = Answer()
    reply = yield from call(st, _opened(req), answer)
    length = reply.headers.get("content-length", "")
    try:
        if not length.isdigit():
            raise CodeBoxError(f"{req.what}: the server did not say the file's size")
        yield Emit(int(length))
        while (part := (yield ReadChunk(answer))) is not None:
            yield Emit(part)
    finally:
        yield CloseStream(answer)


def list_files(st: ClientState) -> Op[list[CodeBoxFile]]:
    return (yield from call(st, files_request((yield from session(st)))))


# -- shell commands and file operations (extensions ``shell``, ``file-ops``) -------------


def shell(st: ClientState, args: dict[str, Any], *, streaming: bool) -> Op[CommandResult]:
    """Run a shell command (``args`` checked: command, timeout, cwd, env). With
    ``streaming``, emit each chunk as it comes."""
    sid = yield from session(st)
    caps = yield from capabilities(st)
    require(caps, SHELL, "shell")
    if not streaming:
        return (yield from call(st, shell_request(sid, args)))
    req = shell_stream_request(sid, args)
    lines = CommandLines(req.what)
    yield from _streamed(st, req, caps, lines)
    return lines.command_result()


def _file_ops(st: ClientState) -> Op[str]:
    sid = yield from session(st)
    require((yield from capabilities(st)), FILE_OPS, "file operations")
    return sid


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
        assert st.session_id is not None
        yield from call(st, status_request(st.session_id))
        return False
    return True
