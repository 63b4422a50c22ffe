"""Answers that follow the client: a run is cancelled — and so its kernel interrupted —
when the client goes away, and ``run/stream`` writes each chunk as an NDJSON line as soon as
the kernel produces it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import CodeBoxError
from ..schema import CodeBoxOutput, ExecError, OutputChunk

T = TypeVar("T")

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


def failed(exc: CodeBoxError) -> CodeBoxOutput:
    """A run that failed once its answer had started: the failure as the run's error."""
    error = ExecError(name=type(exc).__name__, value=exc.message)
    return CodeBoxOutput.from_chunks([OutputChunk(type="error", content=str(error))], error=error)


async def run_lines(
    start: Callable[[Callable[[OutputChunk], None]], Awaitable[CodeBoxOutput]],
) -> AsyncIterator[bytes]:
    """The NDJSON lines of a run: one per chunk as produced, then ``{"type": "end",
    "output": ...}``. ``start(on_output)`` runs the code. Closing the iterator early
    cancels the run."""
    queue: asyncio.Queue[OutputChunk | None] = asyncio.Queue()
    task = asyncio.ensure_future(start(queue.put_nowait))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (chunk := await queue.get()) is not None:
            yield line({"type": chunk.type, "content": chunk.content})
        try:
            output = task.result()
        except CodeBoxError as exc:
            output = failed(exc)
            yield line({"type": "error", "content": output.content})
        yield line({"type": "end", "output": output.model_dump(mode="json")})
    finally:
        if not task.done():
            await _finish(task)


class RunStream(StreamingResponse):
    """An NDJSON stream that stops producing — cancelling the run — when the client
    disconnects, even while the run is silent."""

    def __init__(self, lines: AsyncIterator[bytes]) -> None:
        super().__init__(lines, media_type=NDJSON, headers={"Cache-Control": "no-store"})

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
