"""Answers that follow the client: a run is cancelled — and so its kernel interrupted —
when the client goes away, and ``run/stream`` writes each chunk as an NDJSON line as soon as
the kernel produces it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import CodeBoxError
from ..schema import CodeBoxOutput, CommandResult, OutputChunk
from .errors import status_for

if TYPE_CHECKING:
    from ..local import LocalBox
    from .sessions import Session

T = TypeVar("T")

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has gone (the request body must have been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _finish(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it.

    Raises:
        ClientGone: The client went away (``work`` was cancelled).
    """
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _finish(job, watch)
        raise
    if not job.done():
        await _finish(job, watch)
        raise ClientGone()
    await _finish(watch)
    return job.result()


def line(item: dict[str, Any]) -> bytes:
    return json.dumps(item, ensure_ascii=False).encode() + b"\n"


def end_with_error(exc: BaseException) -> dict[str, Any]:
    """The last line of a stream whose run failed in the server or the box (not in the
    user's code): the status and detail the same failure gets on the plain route."""
    if isinstance(exc, CodeBoxError):
        return {"type": "end", "error": {"status": status_for(exc), "detail": exc.message}}
    log.error("a streamed run failed", exc_info=exc)
    return {"type": "end", "error": {"status": 500, "detail": "internal server error"}}


async def run_lines(
    start: Callable[[Callable[[OutputChunk], None]], Awaitable[CodeBoxOutput | CommandResult]],
    key: str = "output",
) -> AsyncIterator[bytes]:
    """The NDJSON lines of a run: one per chunk as produced, then ``{"type": "end",
    "output": ...}``, or ``{"type": "end", "error": {"status", "detail"}}`` if the server or
    the box failed. ``start(on_output)`` runs the code (or the shell command, whose result
    comes as ``key="result"``). Closing the iterator early cancels the run."""
    queue: asyncio.Queue[OutputChunk | None] = asyncio.Queue()
    task = asyncio.ensure_future(start(queue.put_nowait))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (chunk := await queue.get()) is not None:
            yield line({"type": chunk.type, "content": chunk.content})
        try:
            output = task.result()
        except Exception as exc:  # noqa: BLE001 - every failure ends the stream, said so
            yield line(end_with_error(exc))
        else:
            yield line({"type": "end", key: output.model_dump(mode="json")})
    finally:
        if not task.done():
            await _finish(task)


class FollowedStream(StreamingResponse):
    """A streamed answer that stops producing when the client disconnects, even while its
    producer is silent, and always closes its producer (which may hold a box)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _finish(pump, watch)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _pump(self, send: Send) -> None:
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class RunStream(FollowedStream):
    """The NDJSON lines of a run; a client that disconnects cancels the run."""

    def __init__(self, lines: AsyncIterator[bytes]) -> None:
        super().__init__(lines, media_type=NDJSON, headers={"Cache-Control": "no-store"})


async def open_download(box: LocalBox, name: str) -> tuple[int, AsyncIterator[bytes]]:
    """Start reading the file ``name`` of ``box``: its size, and its content in chunks.

    Raises:
        CodeBoxNotFoundError: There is no such file (nothing is held then).
    """
    reader = box._aread(name)
    try:
        size = await reader.__anext__()
    except BaseException:
        await reader.aclose()
        raise
    assert isinstance(size, int)
    return size, _bytes_of(reader)


async def _bytes_of(reader: AsyncGenerator[int | bytes | memoryview, None]) -> AsyncIterator[bytes]:
    try:
        async for part in reader:
            yield part if isinstance(part, bytes) else bytes(part)
    finally:
        await reader.aclose()


async def held_while_sent(session: Session, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``content``, with the session kept from culling until it is sent or the client left.

    Not `SessionManager.use`: that may reset the session's box, whose lock the read holds.
    """
    session.busy += 1
    try:
        async for part in content:
            session.touch()
            yield part
    finally:
        session.busy -= 1
        session.touch()
        aclose = getattr(content, "aclose", None)
        if aclose is not None:
            await aclose()
