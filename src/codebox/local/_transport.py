"""The transport of a `LocalBox`: the gateway's REST API (httpx) and the kernel websocket
(websockets), with blocking I/O (`JupyterTransport`) or on an event loop
(`AsyncJupyterTransport`). Each carries out the requests of `_requests` for the engine, and
converts every failure of its libraries into a `CodeBoxError` here, in one place."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as aconnect
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sconnect

from .._tls import verify_for
from ..errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxTimeoutError,
    GatewayError,
)
from ._gateway import GatewayAddress
from ._jupyter import WS_SUBPROTOCOL
from ._requests import Connect, Disconnect, Disk, Gateway, Http, Recv, ReleaseGateway, Send

GatewaySource = Callable[[GatewayAddress | None], GatewayAddress]
"""The gateway's address, given the one that just refused a connection (if any)."""

# websockets >= 17 asks direct (non context-manager) callers of the sync connect() to say so.
_SYNC_CONNECT_OPTIONS: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(sconnect).parameters else {}
)


# Linux only; elsewhere the stock gateways' ~40 ms per execution stays (see `_ack_now`).
# A gateway holds a websocket's opening until the kernel answers kernel_info, for at most
# its kernel_info_timeout (60 s on stock gateways) and then goes on: wait at least past that.
_OPENING_GRACE = 65.0
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _ack_now(sock: Any) -> None:
    """Acknowledge what has arrived on ``sock`` at once, and the next segment on arrival.

    Stock gateways (Kernel Gateway, Enterprise Gateway) never set TCP_NODELAY on the kernel
    websocket, so Nagle's algorithm holds each small frame of theirs until the previous one
    is acknowledged, while Linux delays that ACK by up to 40 ms: ~40 ms per execution. A
    client cannot change the server's socket, but it can stop delaying its ACKs. Linux
    drops TCP_QUICKACK again on its own, so it is re-armed around every read.
    """
    if _TCP_QUICKACK is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


class _QuickAckSocket(socket.socket):
    """A socket that acknowledges promptly (`_ack_now`) around every read websockets'
    reader thread makes."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        _ack_now(self)
        data = super().recv(bufsize, flags)
        _ack_now(self)
        return data


class _QuickAckConnection(AsyncConnection):
    """The asyncio websocket, acknowledging promptly (`_ack_now`) after every read."""

    def data_received(self, data: bytes) -> None:
        _ack_now(self.transport.get_extra_info("socket"))
        super().data_received(data)


def _headers(address: GatewayAddress) -> dict[str, str]:
    return {"Authorization": f"token {address.token}"} if address.token else {}


def _ws_url(address: GatewayAddress, kernel_id: str) -> str:
    parts = urlsplit(address.url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/api/kernels/{kernel_id}/channels"


def _ws_options(address: GatewayAddress) -> dict[str, Any]:
    return {
        "subprotocols": [WS_SUBPROTOCOL],
        "additional_headers": _headers(address),
        "max_size": None,  # outputs and file chunks are large; the kernel is ours
        "compression": None,  # deflating megabytes of output costs more than it saves
        "proxy": None,  # a *_PROXY variable must not route loopback traffic
        "close_timeout": 2.0,
    }


# What a failed websocket handshake raises. ConnectionClosed too: a peer that is no gateway
# (another process took a dead gateway's port) resets the connection mid-handshake.
_HANDSHAKE_FAILURES = (OSError, websockets.InvalidHandshake, websockets.InvalidURI,
                       websockets.ConnectionClosed)


_W = TypeVar("_W")


def _open(ws: _W | None) -> _W:
    """The kernel websocket; gone (closed from another thread or task, by `stop` or an
    abandoned stream) is a dropped connection, which the op handles, not a crash."""
    if ws is None:
        raise CodeBoxConnectionError("the kernel connection was closed")
    return ws


def _handshake_error(exc: Exception, kernel_id: str) -> CodeBoxError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 404:
        return CodeBoxNotFoundError(f"kernel {kernel_id} is gone", http_status=404)
    if status in (401, 403):
        return CodeBoxAuthError("the gateway refused the token", http_status=status)
    if status is not None:
        return GatewayError("the kernel websocket was refused", http_status=status)
    return CodeBoxConnectionError(f"cannot connect to kernel {kernel_id}: {exc}")


def _http_error(exc: httpx.HTTPError, req: Http) -> CodeBoxError:
    if isinstance(exc, httpx.TimeoutException):
        return CodeBoxTimeoutError(f"{req.method} {req.path}: no answer within {req.timeout:g} s")
    return CodeBoxConnectionError(f"{req.method} {req.path}: cannot reach the gateway: {exc}")


def _parse(response: httpx.Response) -> tuple[int, Any]:
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    return response.status_code, body


def _protocol_error() -> GatewayError:
    return GatewayError(
        f"the gateway does not speak the {WS_SUBPROTOCOL} websocket protocol "
        "(jupyter_server >= 2 is needed)"
    )




def _closed(exc: websockets.ConnectionClosed) -> CodeBoxConnectionError:
    return CodeBoxConnectionError(f"the kernel connection closed: {exc}")


class JupyterTransport:
    """Carries out a box's requests with blocking I/O: one httpx client per gateway, one
    websocket (to the box's current kernel). Thread-safe where it must be: `abort` and
    `close` may come from another thread."""

    def __init__(self, gateway: GatewaySource, release: Callable[[], None]) -> None:
        self._gateway = gateway
        self._release = release
        self._client: httpx.Client | None = None
        self._client_url: str | None = None
        self._ws: SyncConnection | None = None
        self._ws_key: tuple[str, str] | None = None

    def handle(self, req: Any) -> Any:
        if isinstance(req, Recv):
            ws = _open(self._ws)
            try:
                return ws.recv(timeout=req.timeout)
            except TimeoutError:
                return None
            except websockets.ConnectionClosed as exc:
                self._forget(ws)
                raise _closed(exc) from exc
        if isinstance(req, Send):
            ws = _open(self._ws)
            try:
                ws.send(req.frame)
                return None
            except websockets.ConnectionClosed as exc:
                self._forget(ws)
                raise _closed(exc) from exc
        if isinstance(req, Http):
            client = self._http(req.address)
            try:
                response = client.request(req.method, req.path, json=req.body,
                                          timeout=req.timeout)
            except httpx.HTTPError as exc:
                raise _http_error(exc, req) from exc
            return _parse(response)
        if isinstance(req, Connect):
            return self._connect(req)
        if isinstance(req, Disconnect):
            self._drop_ws()
            return None
        if isinstance(req, Gateway):
            return self._gateway(req.refused)
        if isinstance(req, ReleaseGateway):
            self._close_http()
            return self._release()
        if isinstance(req, Disk):
            return req.work()
        raise TypeError(f"unknown request {req!r}")

    def _http(self, address: GatewayAddress) -> httpx.Client:
        if self._client is None or self._client_url != address.url:
            self._close_http()
            self._client = httpx.Client(
                base_url=address.url, headers=_headers(address), trust_env=False,
                verify=verify_for(address.url),
            )
            self._client_url = address.url
        return self._client

    def _connect(self, req: Connect) -> None:
        key = (req.address.url, req.kernel_id)
        if self._ws is not None and self._ws_key == key:
            return
        self._drop_ws()
        url = _ws_url(req.address, req.kernel_id)
        parts = urlsplit(url)
        try:
            sock = socket.create_connection(
                (parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)),
                timeout=req.timeout,
            )
            # Small frames must not wait for delayed ACKs, ours (~40 ms per execution
            # otherwise) nor the gateway's.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if _TCP_QUICKACK is not None and parts.scheme == "ws":
                # TLS reads bypass a socket subclass: there the gateway's frames may wait.
                timeout = sock.gettimeout()  # the fd stays non-blocking: keep its timeout
                sock = _QuickAckSocket(fileno=sock.detach())
                sock.settimeout(timeout)
            options = {**_ws_options(req.address), **_SYNC_CONNECT_OPTIONS}
            ws = sconnect(url, sock=sock, open_timeout=max(req.timeout, _OPENING_GRACE), **options)
        except _HANDSHAKE_FAILURES as exc:
            raise _handshake_error(exc, req.kernel_id) from exc
        if ws.subprotocol != WS_SUBPROTOCOL:
            ws.close()
            raise _protocol_error()
        self._ws, self._ws_key = ws, key

    def _drop_ws(self) -> None:
        ws, self._ws, self._ws_key = self._ws, None, None
        if ws is not None:
            ws.close()

    def _forget(self, ws: SyncConnection) -> None:
        """Let go of ``ws``, which failed, unless another connection replaced it meanwhile
        (an operation cut off by `abort` may fail late, under the next one's)."""
        if self._ws is ws:
            self._ws, self._ws_key = None, None
        ws.close()

    def abort(self) -> None:
        """Cut the websocket at once (any thread): a `Recv` waiting on it fails."""
        ws, self._ws, self._ws_key = self._ws, None, None
        if ws is not None:
            with contextlib.suppress(OSError):
                ws.socket.shutdown(socket.SHUT_RDWR)

    def _close_http(self) -> None:
        client, self._client, self._client_url = self._client, None, None
        if client is not None:
            client.close()

    def close(self) -> None:
        self._drop_ws()
        self._close_http()


class AsyncJupyterTransport:
    """Carries out a box's requests on the event loop it was made on."""

    def __init__(self, gateway: GatewaySource, release: Callable[[], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self._gateway = gateway
        self._release = release
        self._client: httpx.AsyncClient | None = None
        self._client_url: str | None = None
        self._ws: AsyncConnection | None = None
        self._ws_key: tuple[str, str] | None = None

    async def handle(self, req: Any) -> Any:
        if isinstance(req, Recv):
            aws = _open(self._ws)
            try:
                if req.timeout is None:
                    return await aws.recv()
                return await asyncio.wait_for(aws.recv(), req.timeout)
            except TimeoutError:
                return None
            except websockets.ConnectionClosed as exc:
                self._forget(aws)
                raise _closed(exc) from exc
        if isinstance(req, Send):
            aws = _open(self._ws)
            try:
                await aws.send(req.frame)
                return None
            except websockets.ConnectionClosed as exc:
                self._forget(aws)
                raise _closed(exc) from exc
        if isinstance(req, Http):
            client = self._http(req.address)
            try:
                response = await client.request(req.method, req.path, json=req.body,
                                                timeout=req.timeout)
            except httpx.HTTPError as exc:
                raise _http_error(exc, req) from exc
            return _parse(response)
        if isinstance(req, Connect):
            return await self._connect(req)
        if isinstance(req, Disconnect):
            await self._drop_ws()
            return None
        if isinstance(req, Gateway):
            return await asyncio.to_thread(self._gateway, req.refused)
        if isinstance(req, ReleaseGateway):
            await self._close_http()
            return await asyncio.to_thread(self._release)
        if isinstance(req, Disk):
            return await asyncio.to_thread(req.work)
        raise TypeError(f"unknown request {req!r}")

    def _http(self, address: GatewayAddress) -> httpx.AsyncClient:
        if self._client is None or self._client_url != address.url:
            old = self._client
            if old is not None:
                self.loop.create_task(old.aclose())
            self._client = httpx.AsyncClient(
                base_url=address.url, headers=_headers(address), trust_env=False,
                verify=verify_for(address.url),
            )
            self._client_url = address.url
        return self._client

    async def _connect(self, req: Connect) -> None:
        key = (req.address.url, req.kernel_id)
        if self._ws is not None and self._ws_key == key:
            return
        await self._drop_ws()
        try:
            ws = await aconnect(
                _ws_url(req.address, req.kernel_id),
                open_timeout=max(req.timeout, _OPENING_GRACE),
                create_connection=_QuickAckConnection,
                **_ws_options(req.address),
            )
        except (TimeoutError, *_HANDSHAKE_FAILURES) as exc:
            raise _handshake_error(exc, req.kernel_id) from exc
        if ws.subprotocol != WS_SUBPROTOCOL:
            await ws.close()
            raise _protocol_error()
        self._ws, self._ws_key = ws, key

    async def _drop_ws(self) -> None:
        ws, self._ws, self._ws_key = self._ws, None, None
        if ws is not None:
            await ws.close()

    def _forget(self, ws: AsyncConnection) -> None:
        """Let go of ``ws``, which failed, unless another connection replaced it meanwhile
        (an operation cut off by `abort` may fail late, under the next one's)."""
        if self._ws is ws:
            self._ws, self._ws_key = None, None
        if ws.transport is not None:
            ws.transport.abort()

    def abort(self) -> None:
        """Drop the websocket without waiting, from any thread (on its loop's thread when
        that loop runs elsewhere)."""
        ws, self._ws, self._ws_key = self._ws, None, None
        if ws is None or ws.transport is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop.is_running() and running is not self.loop:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(ws.transport.abort)
            return
        with contextlib.suppress(RuntimeError):
            ws.transport.abort()  # its loop is idle (or closed: the socket went with it)

    async def _close_http(self) -> None:
        client, self._client, self._client_url = self._client, None, None
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        await self._drop_ws()
        await self._close_http()
