"""What keeps a client from holding the server's memory or connections: a cap on request
bodies, and deadlines for clients that send slowly or stall.

`RequestGuard` (ASGI middleware) answers 413 to a JSON body larger than the cap, before
reading it (by ``Content-Length``) or as soon as it grows past it (a chunked body), and 408
to a client that stalls in the middle of a body. Uploads have their own, larger limit
(`codebox.server.uploads`), so their bodies are only watched for stalls.
`guarded_protocol` makes uvicorn's HTTP/1.1 protocol drop a connection that has not sent a
request's headers in full within the deadline, which no ASGI middleware can see.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


class _Stalled(Exception):
    """The client sent nothing for the body deadline."""


class _TooLarge(Exception):
    """The body grew past the cap."""


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        # The rest of the body is not read: the connection cannot carry another request.
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: cap request bodies, and answer a stalled body with 408.

    Args:
        app: The application.
        max_body: The most bytes of a request body, except on paths ending with one of
            ``own_limit`` (they enforce a limit of their own while streaming).
        stall_timeout: The most seconds a client may send nothing while sending a body.
        own_limit: Path endings whose bodies are streamed and limited by the endpoint.
    """

    def __init__(self, app: ASGIApp, *, max_body: int, stall_timeout: float,
                 own_limit: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.stall_timeout = stall_timeout
        self.own_limit = own_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def watched_receive() -> Message:
            try:
                return await asyncio.wait_for(receive(), self.stall_timeout)
            except TimeoutError:
                raise _Stalled from None

        try:
            if scope["path"].endswith(self.own_limit):
                await self.app(scope, watched_receive, tracked_send)
                return
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_body:
                raise _TooLarge
            # JSON bodies are read whole by the endpoint anyway: read them here, capped.
            body = await self._read(watched_receive)
        except _TooLarge:
            await _answer(send, 413, f"the request body is larger than {self.max_body} bytes, "
                          "the most this server accepts")
            return
        except _Stalled:
            await _answer(send, 408, f"the client sent nothing for {self.stall_timeout:g} s")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # a disconnect, once the client goes

        try:
            await self.app(scope, replay, tracked_send)
        except _Stalled:
            if started:
                raise
            await _answer(send, 408, f"the client sent nothing for {self.stall_timeout:g} s")

    async def _read(self, receive: Receive) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b""  # gone: the endpoint sees the disconnect on its own receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def guarded_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, dropping a connection whose request headers have not all
    arrived ``header_timeout`` seconds after it opened or after its previous response."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers arrived
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Unless a pipelined request already started: its headers are in.
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self._arm()

    return GuardedH11Protocol
