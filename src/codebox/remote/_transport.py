"""The transport of a `CodeBox`: HTTP over httpx, with blocking I/O (`HttpTransport`, on
one thread-safe ``httpx.Client``) or on an event loop (`AsyncHttpTransport`). Each carries
out the requests of `_ops` for the engine; httpx failures become `CodeBoxError` here, in
`convert`, the one place where they are converted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx

from ..errors import CodeBoxConnectionError, CodeBoxError, CodeBoxTimeoutError
from ._ops import Answer, CloseStream, Open, ReadChunk, ReadLine, Send, SendFailed, Sleep
from ._replies import Reply
from ._requests import Request

_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""Failures that happen before a request is sent: safe to retry whatever the operation."""

HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def convert(what: str, exc: Exception) -> CodeBoxError:
    """The `CodeBoxError` for an httpx exception."""
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__
        return CodeBoxTimeoutError(f"CodeBox {what} timed out ({kind}): {exc}")
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol):
        return CodeBoxConnectionError(f"CodeBox {what} failed: connection error: {exc}")
    return CodeBoxError(f"CodeBox {what} failed: {type(exc).__name__}: {exc}")


def _failed(req: Request[Any], exc: Exception) -> SendFailed:
    error = convert(req.what, exc)
    error.__cause__ = exc
    return SendFailed(error, unsent=isinstance(exc, _UNSENT))


def _args(req: Request[Any], timeout: float) -> dict[str, Any]:
    return {
        "method": req.method,
        "url": req.path,
        "params": req.params,
        "json": req.json,
        "files": req.files,
        "timeout": httpx.Timeout(timeout, **req.timeout),
    }


def _reply(response: httpx.Response, content: bytes = b"") -> Reply:
    return Reply(response.status_code, response.headers, content)


class HttpTransport:
    """Carries out a box's requests with blocking I/O on one ``httpx.Client``.

    Args:
        make_client: Makes the client (on first use, and after `close`).
        timeout: The default seconds of a request.
        sleep: How to wait between attempts (default: `_sleep`, looked up at each wait, so
            tests can record the waits instead).
    """

    def __init__(self, make_client: Callable[[], httpx.Client], timeout: float,
                 sleep: Callable[[float], None] | None = None) -> None:
        self._make_client = make_client
        self._timeout = timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def handle(self, req: Any) -> Any:
        if isinstance(req, Sleep):
            return (self._sleep or _sleep)(req.seconds)
        if isinstance(req, CloseStream):
            return self._close_answer(req.answer)
        if isinstance(req, (ReadLine, ReadChunk)):
            return self._read(req.answer, isinstance(req, ReadLine))
        return self._send(req)

    def _send(self, req: Send | Open) -> Reply:
        try:
            if isinstance(req, Open):
                return self._open(req)
            response = self.client().request(**_args(req.request, self._timeout))
        except HTTPX_ERRORS as exc:
            raise _failed(req.request, exc) from exc
        return _reply(response, response.content)

    def _open(self, req: Open) -> Reply:
        self._close_answer(req.answer)
        client = self.client()
        response = client.send(client.build_request(**_args(req.request, self._timeout)),
                               stream=True)
        if not response.is_success:
            try:
                return _reply(response, response.read())
            finally:
                response.close()
        req.answer.response, req.answer.what = response, req.request.what
        return _reply(response)

    @staticmethod
    def _read(answer: Answer, lines: bool) -> str | bytes | None:
        response = answer.response
        assert isinstance(response, httpx.Response)
        if answer.parts is None:
            answer.parts = response.iter_lines() if lines else response.iter_bytes()
        assert isinstance(answer.parts, Iterator)
        try:
            return next(answer.parts, None)
        except HTTPX_ERRORS as exc:
            raise convert(answer.what, exc) from exc

    @staticmethod
    def _close_answer(answer: Answer) -> None:
        response, answer.response, answer.parts = answer.response, None, None
        if response is not None:
            response.close()

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def abort(self) -> None:
        """Nothing to cut: each answer belongs to the operation that opened it."""

    def close(self) -> None:
        """Close the HTTP client (a later request makes a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class AsyncHttpTransport:
    """Carries out a box's requests on the event loop it was made on, on one
    ``httpx.AsyncClient``."""

    def __init__(self, make_client: Callable[[], httpx.AsyncClient], timeout: float,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._make_client = make_client
        self._timeout = timeout
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None

    async def handle(self, req: Any) -> Any:
        if isinstance(req, Sleep):
            return await (self._sleep or _asleep)(req.seconds)
        if isinstance(req, CloseStream):
            return await self._close_answer(req.answer)
        if isinstance(req, (ReadLine, ReadChunk)):
            return await self._read(req.answer, isinstance(req, ReadLine))
        return await self._send(req)

    async def _send(self, req: Send | Open) -> Reply:
        try:
            if isinstance(req, Open):
                return await self._open(req)
            response = await self.client().request(**_args(req.request, self._timeout))
        except HTTPX_ERRORS as exc:
            raise _failed(req.request, exc) from exc
        return _reply(response, response.content)

    async def _open(self, req: Open) -> Reply:
        await self._close_answer(req.answer)
        client = self.client()
        response = await client.send(client.build_request(**_args(req.request, self._timeout)),
                                     stream=True)
        if not response.is_success:
            try:
                return _reply(response, await response.aread())
            finally:
                await response.aclose()
        req.answer.response, req.answer.what = response, req.request.what
        return _reply(response)

    @staticmethod
    async def _read(answer: Answer, lines: bool) -> str | bytes | None:
        response = answer.response
        assert isinstance(response, httpx.Response)
        if answer.parts is None:
            answer.parts = response.aiter_lines() if lines else response.aiter_bytes()
        assert isinstance(answer.parts, AsyncIterator)
        try:
            return await anext(answer.parts, None)
        except HTTPX_ERRORS as exc:
            raise convert(answer.what, exc) from exc

    @staticmethod
    async def _close_answer(answer: Answer) -> None:
        response, answer.response, answer.parts = answer.response, None, None
        if response is not None:
            await response.aclose()

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def abort(self) -> None:
        """Nothing to cut: each answer belongs to the operation that opened it."""

    async def aclose(self) -> None:
        """Close the HTTP client (a later request makes a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
