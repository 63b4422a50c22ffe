"""Answers that follow the client: a run is cancelled — and so its kernel interrupted —
when the client goes away, and ``run/stream`` writes each chunk as an NDJSON line as soon as
the kernel produces it, reading the box only as fast as the client reads. Large answers are
written in pieces (`json_pieces`): the server never makes a second, whole copy of an
output to send it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .._protocol import END, ndjson_line
from ..errors import CodeBoxError
from ..schema import OutputChunk
from .errors import status_for

if TYPE_CHECKING:
    from .sessions import Session, SessionManager

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


def chunk_item(chunk: OutputChunk) -> dict[str, Any]:
    """A chunk as a line of a stream: ``type``/``content``, and the bundle and display id
    of a display (extension ``bundles``)."""
    item: dict[str, Any] = {"type": chunk.type, "content": chunk.content}
    if chunk.data is not None:
        item["data"] = chunk.data
    if chunk.display_id is not None:
        item["display_id"] = chunk.display_id
    return item


PIECE = 64 * 1024
"""Bytes of JSON written at a time: a long string is encoded a slice at a time."""


def json_pieces(value: Any) -> Iterator[bytes]:
    """The JSON of ``value`` (dicts, lists, strings, numbers, booleans, None), in pieces of
    about `PIECE` bytes. Characters that UTF-8 cannot carry (lone surrogates) become ``?``."""
    return _coalesced(_pieces(value))


def _coalesced(parts: Iterable[bytes]) -> Iterator[bytes]:
    buffer = bytearray()
    for part in parts:
        buffer += part
        if len(buffer) >= PIECE:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _text(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", errors="replace")


def _pieces(value: Any) -> Iterator[bytes]:
    if isinstance(value, str):
        if len(value) <= PIECE:
            yield _text(value)
            return
        yield b'"'
        for start in range(0, len(value), PIECE):  # escapes are per character: slices join
            yield _text(value[start:start + PIECE])[1:-1]
        yield b'"'
    elif isinstance(value, dict):
        yield b"{"
        for i, (key, item) in enumerate(value.items()):
            yield (b',' if i else b"") + _text(str(key)) + b":"
            yield from _pieces(item)
        yield b"}"
    elif isinstance(value, (list, tuple)):
        yield b"["
        for i, item in enumerate(value):
            if i:
                yield b","
            yield from _pieces(item)
        yield b"]"
    else:
        yield json.dumps(value, allow_nan=False).encode()


class PiecewiseJSON(StreamingResponse):
    """A JSON answer written in pieces as the client takes them (see `json_pieces`)."""

    def __init__(self, value: Any) -> None:
        super().__init__(_async(json_pieces(value)), media_type="application/json")


async def _async(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def box_stream(manager: SessionManager, session: Session,
                     open_stream: Callable[[], Any]) -> AsyncIterator[Any]:
    """The chunks of a box's stream (``open_stream()``: a run's or a command's), then its
    result, holding the session meanwhile. The box is read as the caller reads: nothing is
    held for a slow caller; closing early ends the run."""
    async with manager.use(session):
        stream = open_stream()
        async with stream:
            async for chunk in stream:
                yield chunk
        yield stream.result


async def output_lines(items: AsyncIterator[Any], key: str = "output") -> AsyncIterator[bytes]:
    """The NDJSON lines of a stream (`box_stream`): one per chunk, then ``{"type": "end",
    key: <the result>}``, or ``{"type": "end", "error": {"status", "detail"}}`` if the
    server or the box failed. Each line is written in pieces."""
    try:
        async for item in items:
            if isinstance(item, OutputChunk):
                body: dict[str, Any] = item.model_dump(mode="json", exclude_none=True)
            else:
                body = {"type": END, key: item.model_dump(mode="json")}
            for piece in json_pieces(body):
                yield piece
            yield b"\n"
    except Exception as exc:  # noqa: BLE001 - every failure ends the stream, said so
        yield ndjson_line(end_with_error(exc))
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def end_with_error(exc: BaseException) -> dict[str, Any]:
    """The last line of a stream whose run failed in the server or the box (not in the
    user's code): the status and detail the same failure gets on the plain route."""
    if isinstance(exc, CodeBoxError):
        return {"type": END, "error": {"status": status_for(exc), "detail": exc.message}}
    log.error("a streamed run failed", exc_info=exc)
    return {"type": END, "error": {"status": 500, "detail": "internal server error"}}


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


async def held_while_sent(session: Session, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``content``, with the session kept from culling until it is sent or the client left.

    The read holds the box's lease until it is sent or closed; this holds the session.
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
