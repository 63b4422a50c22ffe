"""``CodeBox``: the client of the CodeBox REST API, over httpx, sync and async.

The requests, replies, errors and retry policy live in the pure `codebox.protocol`; this
module only sends: one ``httpx.Client`` and one ``httpx.AsyncClient`` per box, created when
first needed. Without an API key, ``CodeBox(...)`` is a `LocalBox`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx

from .._paths import check_file_name
from .._tls import verify_for
from ..base import BaseBox, Content, OnOutput, code_to_run
from ..errors import CodeBoxConnectionError, CodeBoxError, CodeBoxTimeoutError
from ..local import LocalBox
from ..schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, OutputChunk
from ..settings import CodeBoxSettings
from . import _protocol as P

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Looked up at call time, so tests can replace them instead of waiting.
_sleep = time.sleep
_asleep = asyncio.sleep

_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""Failures that happen before a request is sent: safe to retry whatever the operation."""

_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


def _convert(req: P.Request[Any], exc: Exception) -> CodeBoxError:
    """The `CodeBoxError` for an httpx exception: the one place where they are converted."""
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__
        return CodeBoxTimeoutError(f"CodeBox {req.what} timed out ({kind}): {exc}")
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol):
        return CodeBoxConnectionError(f"CodeBox {req.what} failed: connection error: {exc}")
    return CodeBoxError(f"CodeBox {req.what} failed: {type(exc).__name__}: {exc}")


def _reply(response: httpx.Response) -> P.Reply:
    return P.Reply(response.status_code, response.headers, response.content)


def _wants_local(settings: CodeBoxSettings, local: bool) -> bool:
    return local or settings.api_key in (None, "", "local")


def _resolve(
    api_key: str | None,
    base_url: str | None,
    settings: CodeBoxSettings | None,
    timeout: float | None,
) -> CodeBoxSettings:
    base = settings if settings is not None else CodeBoxSettings()
    update = {"api_key": api_key, "base_url": base_url, "timeout": timeout}
    update = {k: v for k, v in update.items() if v is not None}
    return base.model_copy(update=update) if update else base


class CodeBox(BaseBox):
    """A box on a CodeBox REST API server (see ``docs/protocol.md``); without a key, a `LocalBox`.

    The session starts with `start` (or lazily, with the first other operation) and its id
    is `session_id`, the server's integer id in decimal. Extensions (rich results,
    streaming, interrupt) are used where the server announces them; a core-only server works
    too. Requests that cannot run code twice are retried (``settings.max_retries``).

    Args:
        api_key: The API key (default: ``settings.api_key``, i.e. ``CODEBOX_API_KEY``).
            With none, or ``"local"``, the result is a `LocalBox`.
        base_url: The API's base URL (default: ``settings.base_url``).
        session_id: Attach to this existing session instead of starting one.
        settings: A `CodeBoxSettings` (default: read from the environment and ``.env``).
        timeout: Seconds allowed for one HTTP request (default: ``settings.timeout``).
            A run is allowed its own ``timeout`` plus a margin, and no limit without one.
        local: Return a `LocalBox` whatever the key.
    """

    def __new__(
        cls,
        api_key: str | None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
    ) -> Any:
        resolved = _resolve(api_key, base_url, settings, timeout)
        if _wants_local(resolved, local):
            return LocalBox(settings=resolved)
        return super().__new__(cls)

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
    ) -> None:
        super().__init__(settings=_resolve(api_key, base_url, settings, timeout))
        self._started = session_id is not None
        self._session_id = None if session_id is None else P.session_id_of(session_id)
        self._caps: P.Capabilities | None = None
        self._retry = P.RetryPolicy(max_retries=self.settings.max_retries)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_id(cls, session_id: int | str | uuid.UUID, **kwargs: Any) -> BaseBox:
        """Reattach to a session that exists on the server (nothing is sent until used).

        Without an API key, return the `LocalBox` of this process with that id.

        Args:
            session_id: An int, its decimal string, or a UUID (``UUID(int=n)`` is ``n``).
            **kwargs: The arguments of `CodeBox` (``api_key``, ``base_url``, ...).

        Raises:
            ValueError: ``session_id`` is not a session id.
            CodeBoxError: No key, and this process has no `LocalBox` with that id.
        """
        resolved = _resolve(kwargs.get("api_key"), None, kwargs.get("settings"), None)
        if _wants_local(resolved, kwargs.get("local", False)):
            return LocalBox.from_id(str(session_id))
        return cls(**{**kwargs, "session_id": session_id})

    def _state_name(self) -> str:
        if self._started:
            return "started"
        return "stopped" if self._session_id else "new"

    # -- transport --------------------------------------------------------------------

    def _client_args(self) -> dict[str, Any]:
        return {
            "base_url": self.settings.base_url,
            "headers": {"Authorization": f"Bearer {self.settings.api_key}"},
            "timeout": httpx.Timeout(self.settings.timeout),
            "verify": verify_for(self.settings.base_url),
        }

    def _request_args(self, req: P.Request[Any]) -> dict[str, Any]:
        return {
            "method": req.method,
            "url": req.path,
            "params": req.params,
            "json": req.json,
            "files": req.files,
            "timeout": httpx.Timeout(self.settings.timeout, **req.timeout),
        }

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(**self._client_args())
            return self._client

    def _ahttp(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._aclient is None or self._aloop is not loop:
                if self._aclient is not None:
                    logger.debug("%r: new event loop, new AsyncClient", self)
                self._aclient, self._aloop = httpx.AsyncClient(**self._client_args()), loop
            return self._aclient

    def _judge(
        self, req: P.Request[Any], attempt: int, outcome: httpx.Response | Exception
    ) -> P.Reply | float:
        """The final reply of an attempt, or the seconds to wait before the next one.

        Raises:
            CodeBoxError: The attempt failed in transport and is not retried.
        """
        if isinstance(outcome, Exception):
            delay = self._retry.after_failure(req.op, attempt, isinstance(outcome, _UNSENT))
            if delay is None:
                raise _convert(req, outcome) from outcome
        else:
            reply = _reply(outcome)
            delay = self._retry.after_reply(req.op, attempt, reply)
            if delay is None:
                return reply
        logger.info("CodeBox %s: try %d failed; retry in %.2fs", req.what, attempt + 1, delay)
        return delay

    def _send(self, req: P.Request[Any]) -> P.Reply:
        attempt = 0
        while True:  # the retry policy ends it
            try:
                outcome: httpx.Response | Exception = self._http().request(
                    **self._request_args(req)
                )
            except _HTTPX_ERRORS as exc:
                outcome = exc
            verdict = self._judge(req, attempt, outcome)
            if isinstance(verdict, P.Reply):
                return verdict
            _sleep(verdict)
            attempt += 1

    async def _asend(self, req: P.Request[Any]) -> P.Reply:
        attempt = 0
        while True:  # the retry policy ends it
            try:
                outcome: httpx.Response | Exception = await self._ahttp().request(
                    **self._request_args(req)
                )
            except _HTTPX_ERRORS as exc:
                outcome = exc
            verdict = self._judge(req, attempt, outcome)
            if isinstance(verdict, P.Reply):
                return verdict
            await _asleep(verdict)
            attempt += 1

    def _call(self, req: P.Request[T]) -> T:
        return req.interpret(self._send(req))

    async def _acall(self, req: P.Request[T]) -> T:
        return req.interpret(await self._asend(req))

    def _sid(self) -> str:
        if not self._started:
            self.start()
        assert self._session_id is not None
        return self._session_id

    async def _asid(self) -> str:
        if not self._started:
            await self.astart()
        assert self._session_id is not None
        return self._session_id

    def _capabilities(self) -> P.Capabilities:
        if self._caps is None:
            self._caps = self._call(P.capabilities_request())
        return self._caps

    async def _acapabilities(self) -> P.Capabilities:
        if self._caps is None:
            self._caps = await self._acall(P.capabilities_request())
        return self._caps

    def _run_timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.settings.run_timeout

    # -- clients ----------------------------------------------------------------------

    def close(self) -> None:
        """Release the HTTP clients (the session stays; use `stop` to end it).

        An ``AsyncClient`` cannot be closed from blocking code: it is dropped (use `aclose`
        from async code to close it properly).
        """
        with self._lock:
            client, self._client = self._client, None
            self._aclient = self._aloop = None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Async version of `close`; it closes both clients."""
        with self._lock:
            aclient, loop = self._aclient, self._aloop
        self.close()
        if aclient is not None and loop is asyncio.get_running_loop():
            await aclient.aclose()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> CodeBoxStatus:
        """Start a session on the server (idempotent). Returns the status ``"started"``."""
        if not self._started:
            self._session_id = self._call(P.start_request())
            self._started = True
            logger.debug("%r: started", self)
        return CodeBoxStatus(status="started")

    async def astart(self) -> CodeBoxStatus:
        """Async version of `start`."""
        if not self._started:
            self._session_id = await self._acall(P.start_request())
            self._started = True
            logger.debug("%r: started", self)
        return CodeBoxStatus(status="started")

    def stop(self) -> CodeBoxStatus:
        """Stop the session on the server (idempotent) and release the HTTP clients."""
        try:
            if self._started and self._session_id is not None:
                self._call(P.stop_request(self._session_id))
            self._started = False
        finally:
            self.close()
        return CodeBoxStatus(status="stopped")

    async def astop(self) -> CodeBoxStatus:
        """Async version of `stop`."""
        try:
            if self._started and self._session_id is not None:
                await self._acall(P.stop_request(self._session_id))
            self._started = False
        finally:
            await self.aclose()
        return CodeBoxStatus(status="stopped")

    def status(self) -> CodeBoxStatus:
        """The session's status on the server; ``"stopped"`` without asking if it was never
        started or was stopped by this box."""
        if not self._started or self._session_id is None:
            return CodeBoxStatus(status="stopped")
        return self._call(P.status_request(self._session_id))

    async def astatus(self) -> CodeBoxStatus:
        """Async version of `status`."""
        if not self._started or self._session_id is None:
            return CodeBoxStatus(status="stopped")
        return await self._acall(P.status_request(self._session_id))

    # -- code -------------------------------------------------------------------------

    def run(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        """Run code (or the local file ``file_path``) in the session; see `BaseBox.run`.

        With ``on_output`` on a server that streams, chunks are passed on as they arrive;
        otherwise after the run. On a core-only server ``timeout`` is not sent: the HTTP
        read waits ``timeout`` plus a margin and then raises `CodeBoxTimeoutError`.
        """
        source, limit = code_to_run(code, file_path), self._run_timeout(timeout)
        if on_output is not None and self._capabilities().has(P.STREAM):
            state = P.StreamState()
            for chunk in self._stream_chunks(source, limit, state):
                on_output(chunk)
            return state.result()
        output = self._call(P.run_request(self._sid(), source, limit, self._capabilities()))
        if on_output is not None:
            for chunk in output.chunks:
                on_output(chunk)
        return output

    async def arun(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        """Async version of `run`."""
        source, limit = code_to_run(code, file_path), self._run_timeout(timeout)
        if on_output is not None and (await self._acapabilities()).has(P.STREAM):
            state = P.StreamState()
            async for chunk in self._astream_chunks(source, limit, state):
                on_output(chunk)
            return state.result()
        req = P.run_request(await self._asid(), source, limit, await self._acapabilities())
        output = await self._acall(req)
        if on_output is not None:
            for chunk in output.chunks:
                on_output(chunk)
        return output

    def _stream_chunks(
        self, code: str, timeout: float | None, state: P.StreamState
    ) -> Iterator[OutputChunk]:
        req = P.stream_request(self._sid(), code, timeout, self._capabilities())
        state.what = req.what
        try:
            with self._http().stream(**self._request_args(req)) as response:
                if not response.is_success:
                    response.read()
                    req.interpret(_reply(response))
                for line in response.iter_lines():
                    chunk = state.feed(line)
                    if chunk is not None:
                        yield chunk
        except _HTTPX_ERRORS as exc:
            raise _convert(req, exc) from exc

    async def _astream_chunks(
        self, code: str, timeout: float | None, state: P.StreamState
    ) -> AsyncIterator[OutputChunk]:
        req = P.stream_request(await self._asid(), code, timeout, await self._acapabilities())
        state.what = req.what
        try:
            async with self._ahttp().stream(**self._request_args(req)) as response:
                if not response.is_success:
                    await response.aread()
                    req.interpret(_reply(response))
                async for line in response.aiter_lines():
                    chunk = state.feed(line)
                    if chunk is not None:
                        yield chunk
        except _HTTPX_ERRORS as exc:
            raise _convert(req, exc) from exc

    def stream(self, code: str, *, timeout: float | None = None) -> Iterator[OutputChunk]:
        """Run code and yield its chunks as they are produced (NDJSON where the server
        announces ``stream``; otherwise the chunks of a plain run, after it).

        Leaving the loop early interrupts the run where the server offers ``interrupt``.
        """
        limit = self._run_timeout(timeout)
        if not self._capabilities().has(P.STREAM):
            yield from self.run(code, timeout=limit).chunks
            return
        state = P.StreamState()
        try:
            yield from self._stream_chunks(code, limit, state)
        except GeneratorExit:
            if not state.done and self._capabilities().has(P.INTERRUPT):
                self._interrupt_quietly()
            raise
        state.result()

    async def astream(
        self, code: str, *, timeout: float | None = None
    ) -> AsyncIterator[OutputChunk]:
        """Async version of `stream`."""
        limit = self._run_timeout(timeout)
        if not (await self._acapabilities()).has(P.STREAM):
            for chunk in (await self.arun(code, timeout=limit)).chunks:
                yield chunk
            return
        state = P.StreamState()
        try:
            async for chunk in self._astream_chunks(code, limit, state):
                yield chunk
        except GeneratorExit:
            if not state.done and (await self._acapabilities()).has(P.INTERRUPT):
                await self._ainterrupt_quietly()
            raise
        state.result()

    def _interrupt_quietly(self) -> None:
        try:
            self.interrupt()
        except CodeBoxError as exc:
            logger.warning("%r: could not interrupt the abandoned run: %s", self, exc)

    async def _ainterrupt_quietly(self) -> None:
        try:
            await self.ainterrupt()
        except CodeBoxError as exc:
            logger.warning("%r: could not interrupt the abandoned run: %s", self, exc)

    def interrupt(self) -> CodeBoxStatus:
        """Interrupt the session's running execution (extension ``interrupt``).

        Raises:
            CodeBoxError: The server does not support it.
        """
        P.require(self._capabilities(), P.INTERRUPT, "interrupt")
        return self._call(P.interrupt_request(self._sid()))

    async def ainterrupt(self) -> CodeBoxStatus:
        """Async version of `interrupt`."""
        P.require(await self._acapabilities(), P.INTERRUPT, "interrupt")
        return await self._acall(P.interrupt_request(await self._asid()))

    def restart(self) -> CodeBoxStatus:
        """Restart the session's kernel: variables are gone, files are kept."""
        return self._call(P.restart_request(self._sid()))

    async def arestart(self) -> CodeBoxStatus:
        """Async version of `restart`."""
        return await self._acall(P.restart_request(await self._asid()))

    def install(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Install packages with pip in the session (one request per package on a core-only
        server). ``timeout``: seconds per request (default: the box's ``timeout``).

        Raises:
            ValueError: No package names, or an empty one.
            CodeBoxError: The install failed.
        """
        names = P.check_package_names(package_names)
        reqs = P.install_requests(self._sid(), names, self._capabilities(), timeout)
        return P.join_statuses([self._call(req) for req in reqs])

    async def ainstall(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Async version of `install`."""
        names = P.check_package_names(package_names)
        reqs = P.install_requests(await self._asid(), names, await self._acapabilities(), timeout)
        return P.join_statuses([await self._acall(req) for req in reqs])

    # -- files ------------------------------------------------------------------------

    def upload(
        self, file_name: str, content: Content, *, timeout: float | None = None
    ) -> CodeBoxFile:
        """Upload ``content`` as the file ``file_name`` of the session; see `BaseBox.upload`.

        ``timeout``: seconds for the transfer (default: the box's ``timeout``).
        """
        name, data = P.prepare_upload(file_name, content)
        return self._call(P.upload_request(self._sid(), name, data, timeout))

    async def aupload(
        self, file_name: str, content: Content, *, timeout: float | None = None
    ) -> CodeBoxFile:
        """Async version of `upload`."""
        name, data = P.prepare_upload(file_name, content)
        return await self._acall(P.upload_request(await self._asid(), name, data, timeout))

    def download(self, file_name: str, *, timeout: float | None = None) -> CodeBoxFile:
        """Download the file ``file_name`` of the session; its name is the one the server's
        ``Content-Disposition`` gives, else ``file_name``.

        Raises:
            CodeBoxNotFoundError: There is no such file.
        """
        name = check_file_name(file_name)
        return self._call(P.download_request(self._sid(), name, timeout))

    async def adownload(self, file_name: str, *, timeout: float | None = None) -> CodeBoxFile:
        """Async version of `download`."""
        name = check_file_name(file_name)
        return await self._acall(P.download_request(await self._asid(), name, timeout))

    def list_files(self) -> list[CodeBoxFile]:
        """The files of the session, sorted by name (sizes where the server gives them)."""
        return self._call(P.files_request(self._sid()))

    async def alist_files(self) -> list[CodeBoxFile]:
        """Async version of `list_files`."""
        return await self._acall(P.files_request(await self._asid()))
