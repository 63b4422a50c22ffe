"""Streams of output chunks that cannot wedge their box.

A stream (`ChunkStream`, `AsyncChunkStream`) is an iterator and a context manager. It
holds nothing between two chunks: a box remembers its open stream in a `StreamSlot`, and
the box's next operation *settles* the slot: a stream left unfinished and unclosed is
closed there (which interrupts its run) before the operation goes on. A stream that is
being read at that very moment (in another thread) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any

from .errors import CodeBoxError
from .schema import OutputChunk

_CLOSED_BY_BOX = (
    "this stream was closed (and its run interrupted) because another operation on the "
    "box began before the stream was finished or closed"
)


class StreamSlot:
    """The open stream of one box."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: ChunkStream | AsyncChunkStream | None = None

    def claim(self, stream: ChunkStream | AsyncChunkStream) -> None:
        with self._lock:
            self._open = stream

    def release(self, stream: ChunkStream | AsyncChunkStream) -> None:
        with self._lock:
            if self._open is stream:
                self._open = None

    @property
    def taken(self) -> bool:
        """Whether a stream is open (its run may be going on in the kernel)."""
        return self._open is not None

    def _take(self) -> ChunkStream | AsyncChunkStream | None:
        with self._lock:
            return self._open

    def settle(self) -> None:
        """Close the box's abandoned stream, if any (from blocking code).

        Raises:
            CodeBoxError: The abandoned stream is an async one whose event loop is running
                in another thread: it cannot be closed from here.
        """
        stream = self._take()
        if isinstance(stream, ChunkStream):
            stream.abandon()
        elif stream is not None:
            loop = stream.loop
            if loop is None or loop.is_closed():
                stream.forget()
            elif loop.is_running():
                raise CodeBoxError(
                    "an async stream of this box is still open on a running event loop: "
                    "finish it or close it (await stream.aclose()) before using the box "
                    "from blocking code"
                )
            else:
                loop.run_until_complete(stream.abandon())

    async def asettle(self) -> None:
        """Close the box's abandoned stream, if any (from a coroutine)."""
        stream = self._take()
        if isinstance(stream, ChunkStream):
            await asyncio.to_thread(stream.abandon)
        elif stream is not None:
            if stream.loop is asyncio.get_running_loop():
                await stream.abandon()
            else:
                stream.forget()  # its loop is gone or elsewhere: so is its connection


class ChunkStream(Iterator[OutputChunk], AbstractContextManager["ChunkStream"]):
    """The chunks of a run, in the order produced: iterate it, ideally in a ``with`` block.

    Leaving it early (``close()``, the end of the ``with`` block) interrupts the run. A
    stream left unfinished is closed by the box's next operation.

    Args:
        slot: The box's `StreamSlot`.
        begin: Starts the run; returns the driver's steps, which yield its chunks.
        lock: Held while the stream talks to the box (the box's lock, if it has one).
    """

    def __init__(
        self,
        slot: StreamSlot,
        begin: Callable[[], Generator[OutputChunk, None, Any]],
        lock: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self._slot = slot
        self._begin = begin
        self._lock = lock
        self._busy = threading.Lock()
        self._steps: Generator[OutputChunk, None, Any] | None = None
        self._closed = False
        self._closed_by_box = False

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> OutputChunk:
        with self._busy, self._lock():
            if self._closed:
                if self._closed_by_box:
                    raise CodeBoxError(_CLOSED_BY_BOX)
                raise StopIteration
            if self._steps is None:
                self._slot.settle()
                self._steps = self._begin()
                self._slot.claim(self)
            try:
                return next(self._steps)
            except BaseException:
                self._finish()
                raise

    def close(self) -> None:
        """Stop reading: the run is interrupted if it is still going. Idempotent."""
        with self._busy, self._lock():
            self._close()

    def abandon(self) -> None:
        """Close the stream for the box's next operation (under the box's lock), unless it
        is being read right now."""
        if self._busy.acquire(blocking=False):
            try:
                self._closed_by_box = not self._closed
                self._close()
            finally:
                self._busy.release()

    def _close(self) -> None:
        steps, self._steps = self._steps, None
        self._finish()
        if steps is not None:
            steps.close()

    def _finish(self) -> None:
        self._closed = True
        self._slot.release(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncChunkStream(
    AsyncIterator[OutputChunk], AbstractAsyncContextManager["AsyncChunkStream"]
):
    """Async version of `ChunkStream`: ``async for`` it, ideally in an ``async with`` block;
    `aclose` leaves it early.

    Args:
        slot: The box's `StreamSlot`.
        begin: Starts the run (a coroutine function); returns the driver's steps, which
            yield its chunks and then one item for which ``is_end`` is true.
        is_end: Tells the steps' last item.
        lock: Held while the stream talks to the box (the box's lock, if it has one).
    """

    def __init__(
        self,
        slot: StreamSlot,
        begin: Callable[[], Awaitable[AsyncGenerator[Any, None]]],
        is_end: Callable[[Any], bool],
        lock: Callable[[], AbstractAsyncContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self._slot = slot
        self._begin = begin
        self._is_end = is_end
        self._lock = lock
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop its run began on
        self._busy = False
        self._steps: AsyncGenerator[Any, None] | None = None
        self._closed = False
        self._closed_by_box = False

    def __aiter__(self) -> AsyncChunkStream:
        return self

    async def __anext__(self) -> OutputChunk:
        self._busy = True
        try:
            async with self._lock():
                if self._closed:
                    if self._closed_by_box:
                        raise CodeBoxError(_CLOSED_BY_BOX)
                    raise StopAsyncIteration
                if self._steps is None:
                    await self._slot.asettle()
                    self.loop = asyncio.get_running_loop()
                    self._steps = await self._begin()
                    self._slot.claim(self)
                try:
                    item = await self._steps.__anext__()
                except BaseException:
                    self._finish()
                    raise
                if self._is_end(item):
                    self._finish()
                    raise StopAsyncIteration
                return item
        finally:
            self._busy = False

    async def aclose(self) -> None:
        """Stop reading: the run is interrupted if it is still going. Idempotent."""
        async with self._lock():
            await self._close()

    async def abandon(self) -> None:
        """Close the stream for the box's next operation (under the box's lock), unless it
        is being read right now."""
        if not self._busy:
            self._closed_by_box = not self._closed
            await self._close()

    def forget(self) -> None:
        """Drop a stream whose event loop cannot be used any more."""
        self._closed_by_box = not self._closed
        self._steps = None
        self._finish()

    async def _close(self) -> None:
        steps, self._steps = self._steps, None
        self._finish()
        if steps is not None:
            await steps.aclose()

    def _finish(self) -> None:
        self._closed = True
        self._slot.release(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
