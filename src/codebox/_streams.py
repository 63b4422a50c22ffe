"""Streams of output chunks that cannot wedge their box.

A stream is an iterator and a context manager over one operation (a run, a command, a
download). It takes the box's lease (`_lease`) at its first chunk and keeps it until it is
finished or closed, so nothing else uses the box's connections meanwhile; another thread or
task that calls the box waits its turn. What happens to a stream nobody reads any more is
the lease's business: its own caller closes it at its next call, and others take the box
back from one that was garbage-collected or left unread too long (reading it again then
raises `CodeBoxError`). ``result`` holds the operation's result once the stream is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _engine as engine
from ._lease import Hold, Lease
from .errors import CodeBoxError
from .schema import CodeBoxOutput, CommandResult, OutputChunk

if TYPE_CHECKING:
    from .base import BaseBox

T = TypeVar("T")
R = TypeVar("R")
_S = TypeVar("_S", bound="_SyncStream[Any, Any]")
_A = TypeVar("_A", bound="_AsyncStream[Any, Any]")

TAKEN = ("this stream was closed (and its run interrupted): the box was taken for another "
         "operation, or stopped, before the stream was finished or closed")


def raise_if_stopped_under(hold: Hold, exc: CodeBoxError) -> None:
    """An operation that failed because the box was stopped under it (its connection cut)
    says so, rather than how its connection ended."""
    if hold.revoked and not isinstance(exc, engine.Revoked):
        raise engine.Revoked(f"the box was stopped while this operation ran ({exc})") from exc


class _Base(Generic[T, R]):
    """What both flavours share: the box, the operation to carry out, the state."""

    _interruptible = True  # `interrupt` reaches it (code and commands; not a transfer)

    def __init__(self, box: BaseBox, make_op: Callable[[], engine.Op[R]]) -> None:
        self._box = box
        self._lease: Lease = box._lease
        self._make_op = make_op
        self._hold: Hold | None = None
        self._closed = False
        self._taken = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.result: R | None = None
        """The operation's result once the stream is over (None before, or if it failed)."""

    def _held(self, hold: Hold, transport: Any) -> None:
        self._box._used()
        hold.stream = weakref.ref(self)
        hold.abort = transport.abort
        self._hold = hold
        # Collected unclosed: the box's next caller takes the box back (no I/O here).
        self._finalizer = weakref.finalize(self, self._lease.abandon, hold)

    def _check_open(self) -> Hold | None:
        """The hold to read under, None before the start; raises once the box was taken."""
        if self._closed:
            if self._taken:
                raise CodeBoxError(TAKEN)
            return None
        hold = self._hold
        if hold is not None and hold.revoked:
            self._taken = True
        return hold

    @contextlib.contextmanager
    def _reading(self, hold: Hold) -> Iterator[None]:
        """While the next item is read (the lease is not taken back from a stream being
        read): a failure ends the stream, and says so if a stop of the box caused it."""
        hold.reading = True
        try:
            yield
        except CodeBoxError as exc:
            self._finish()
            raise_if_stopped_under(hold, exc)
            raise
        except BaseException:
            self._finish()
            raise
        finally:
            hold.reading = False
            hold.since = time.monotonic()

    def _finish(self) -> None:
        self._closed = True
        hold, self._hold = self._hold, None
        if self._finalizer is not None:
            self._finalizer.detach()
        if hold is not None:
            self._box._used()
            self._lease.release(hold)


class _SyncStream(_Base[T, R], Iterator[T]):
    """What an operation emits, in order, read with blocking I/O."""

    def __init__(self, box: BaseBox, make_op: Callable[[], engine.Op[R]]) -> None:
        super().__init__(box, make_op)
        self._reader = threading.Lock()
        self._steps: Any = None

    def __iter__(self) -> _SyncStream[T, R]:
        return self

    def __next__(self) -> T:
        with self._reader:
            hold = self._check_open()
            if self._closed and hold is None:
                raise StopIteration
            if self._taken:
                self._close()
                raise CodeBoxError(TAKEN)
            if hold is None:
                hold = self._lease.acquire("stream", interruptible=self._interruptible)
                try:
                    transport = self._box._transport()
                    self._steps = engine.steps(self._make_op(), transport,
                                               self._lease.guard(hold))
                except BaseException:
                    self._lease.release(hold)
                    raise
                self._held(hold, transport)
            with self._reading(hold):
                try:
                    return next(self._steps)
                except StopIteration as stop:
                    self.result = stop.value
            self._finish()
            raise StopIteration

    def close(self) -> None:
        """Stop reading: the run is ended if it is still going. Idempotent."""
        with self._reader:
            self._close()

    def take_back(self) -> None:
        """Close the stream for its box's next operation: reading it again raises."""
        with self._reader:
            self._taken = not self._closed
            self._close()

    def _close(self) -> None:
        steps, self._steps = self._steps, None
        try:
            if steps is not None:
                steps.close()  # the operation unwinds: interrupts its run, closes its answer
        finally:
            self._finish()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _AsyncStream(_Base[T, R], AsyncIterator[T]):
    """What an operation emits, in order, read on an event loop."""

    def __init__(self, box: BaseBox, make_op: Callable[[], engine.Op[R]]) -> None:
        super().__init__(box, make_op)
        self._reader: asyncio.Lock | None = None
        self._steps: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop its run began on

    def __aiter__(self) -> _AsyncStream[T, R]:
        return self

    def _lock(self) -> asyncio.Lock:
        if self._reader is None:
            self._reader = asyncio.Lock()
        return self._reader

    async def __anext__(self) -> T:
        async with self._lock():
            hold = self._check_open()
            if self._closed and hold is None:
                raise StopAsyncIteration
            if self._taken:
                await self._close()
                raise CodeBoxError(TAKEN)
            if hold is None:
                await self._box._aprepare()
                hold = await self._lease.aacquire("stream",
                                                 interruptible=self._interruptible)
                try:
                    self.loop = asyncio.get_running_loop()
                    transport = self._box._atransport()
                    self._steps = engine.asteps(self._make_op(), transport,
                                                self._lease.guard(hold))
                except BaseException:
                    self._lease.release(hold)
                    raise
                self._held(hold, transport)
            with self._reading(hold):
                item = await self._steps.__anext__()
            if isinstance(item, engine.Done):
                self.result = item.value
                self._steps = None
                self._finish()
                raise StopAsyncIteration
            return item

    async def aclose(self) -> None:
        """Stop reading: the run is ended if it is still going. Idempotent."""
        async with self._lock():
            await self._close()

    async def take_back(self) -> None:
        """Close the stream for its box's next operation: reading it again raises."""
        async with self._lock():
            self._taken = not self._closed
            await self._close()

    async def _close(self) -> None:
        steps, self._steps = self._steps, None
        try:
            if steps is not None:
                await steps.aclose()
        finally:
            self._finish()

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


class ChunkStream(_SyncStream[OutputChunk, R]):
    """The chunks of an operation, in the order produced: iterate it, ideally in a
    ``with`` block. Leaving it early (``close()``, the end of the ``with`` block) ends its
    run. `result` holds the operation's result (`CodeBoxOutput`, `CommandResult`) after."""


class AsyncChunkStream(_AsyncStream[OutputChunk, R]):
    """Async version of `ChunkStream`: ``async for`` it, ideally in an ``async with``
    block; `aclose` leaves it early."""


class RunStream(ChunkStream[CodeBoxOutput]):
    """The chunks of a run; `result` is its `CodeBoxOutput` once the stream is over."""


class AsyncRunStream(AsyncChunkStream[CodeBoxOutput]):
    """Async version of `RunStream`."""


class CommandStream(ChunkStream[CommandResult]):
    """The output of a command as it comes; `result` holds the `CommandResult` once the
    stream is over.

        with box.stream_shell("make") as stream:
            for chunk in stream:
                print(chunk.content, end="")
        print(stream.result.exit_code)
    """


class AsyncCommandStream(AsyncChunkStream[CommandResult]):
    """Async version of `CommandStream` (``async for``, ``async with``, ``aclose()``)."""


class DownloadStream(_SyncStream[bytes, None]):
    """The content of a file as the box sends it, piece by piece: iterate it for ``bytes``
    (ideally in a ``with`` block); `open` starts the transfer and returns the size. (The
    operation emits the size first, then the pieces.)"""

    _interruptible = False
    size: int | None = None

    def open(self) -> int:
        """Start the transfer; the file's size in bytes.

        Raises:
            CodeBoxNotFoundError: There is no such file.
        """
        if self.size is None:
            self.size = int(super().__next__())
        return self.size

    def __next__(self) -> bytes:
        self.open()
        return bytes(super().__next__())


class AsyncDownloadStream(_AsyncStream[bytes, None]):
    """Async version of `DownloadStream` (``await stream.open()``, ``async for``)."""

    _interruptible = False
    size: int | None = None

    async def open(self) -> int:
        """Async version of `DownloadStream.open`."""
        if self.size is None:
            self.size = int(await super().__anext__())
        return self.size

    async def __anext__(self) -> bytes:
        await self.open()
        return bytes(await super().__anext__())
