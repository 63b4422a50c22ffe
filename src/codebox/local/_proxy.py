"""The egress proxy of one box: the only way out of a sandbox's network namespace.

Standard library only (asyncio): it runs inside the Kernel Gateway, owned by the box's
sandbox provisioner, and in any process that runs an installer sandbox (`_installer`).

It listens on a unix socket in the box's own directory, bound into the box. At its start
the box binds its proxy port on its own loopback and hands that listening socket over
this unix socket (`_proxy_port`): the proxy then accepts the box's connections itself, in
the box's network namespace, and no process of the box relays anything. It speaks what
the standard proxy variables expect: HTTP ``CONNECT host:port`` (https, git, anything over
TLS), plain HTTP in absolute form (``GET http://host/path``), and SOCKS5 ``CONNECT``.

Every target is decided by the box's `_egress.Policy` before anything is sent: a name is
resolved here, on the host, each of its addresses checked, and the connection made to a
checked address, never to the name again. A refusal is an HTTP 403 whose body names the
policy and the rule (SOCKS5: "not allowed by ruleset"), logged at debug with the box's id.
Bytes then move between the two sockets inside the kernel (``splice`` through a pipe).

It has no controls: nothing a box sends changes its policy or its limits (the socket a box
hands over is checked to be a listening socket on its own loopback, at most two of them).
Bounded: so many connections at once per box, a deadline for a request's head, an idle
timeout for a tunnel, a pipe of fixed size per direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import importlib.util
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._egress import Decision, Policy
from ._proxy_protocol import (
    REGISTER,
    Reader,
    Refused,
    answer,
    parse_head,
    ready,
    socks_request,
)

log = logging.getLogger(__name__)

Connector = Callable[[str, int], Awaitable[socket.socket]]
"""Opens a TCP connection to a checked address and port (the proxy's only way out); the
socket it returns is the proxy's, non-blocking."""
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""The addresses a name resolves to, on the host."""

HOOKS_ENV = "CODEBOX_EGRESS_HOOKS"
"""A Python file whose ``connect`` and/or ``resolve`` coroutines replace the proxies' own in
this process (an upstream proxy, a resolver of your own, a test's recorder)."""
PIPE_SIZE = 256 * 1024  # the kernel buffer of one direction of one connection
# getaddrinfo blocks: a few threads of their own, so a box asking for many names cannot
# hold up the default executor of the process (the gateway's).
_DNS = ThreadPoolExecutor(4, thread_name_prefix="codebox-egress-dns")
_SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


@dataclass(frozen=True)
class Limits:
    """What one box may hold of its proxy."""

    max_connections: int = 64
    head_timeout: float = 10.0  # to send a request's head (or a SOCKS5 greeting)
    connect_timeout: float = 10.0  # to resolve a name, and to connect to one address
    idle_timeout: float = 300.0  # a tunnel with no byte either way is closed


async def resolve_on_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to here (TCP), in the resolver's order."""
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        _DNS, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM))
    return [str(info[4][0]) for info in infos]


async def connect_direct(address: str, port: int) -> socket.socket:
    """A TCP connection to ``address`` (an IP address, already checked)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


@functools.cache
def _env_hooks(path: str) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("codebox_egress_hooks", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{HOOKS_ENV}={path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in ("connect", "resolve")
            if callable(getattr(module, name, None))}


def hooks() -> dict[str, Any]:
    """The ``connect``/``resolve`` replacements named by `HOOKS_ENV` (none by default)."""
    path = os.environ.get(HOOKS_ENV)
    return _env_hooks(path) if path else {}


class EgressProxy:
    """The proxy of one box, on the unix socket ``path``.

    Args:
        policy: What the box may reach; `policy` may be replaced while it runs.
        path: The unix socket to listen on (its directory is bound into the box).
        box_id: The box's (kernel's) id, in every log line.
        connect: How to open a connection to a checked address (default: directly, or the
            `HOOKS_ENV` file's ``connect``). Nothing else ever opens one.
        resolve: How to resolve a name (default: the host's resolver, or the hooks').
    """

    def __init__(self, policy: Policy, path: str, *, box_id: str, limits: Limits | None = None,
                 connect: Connector | None = None, resolve: Resolver | None = None,
                 logger: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> None:
        self.policy = policy
        self.path = path
        self.box_id = box_id
        self.limits = limits or Limits()
        given = hooks()
        self._connect: Connector = connect or given.get("connect") or connect_direct
        self._resolve: Resolver = resolve or given.get("resolve") or resolve_on_host
        self._log = logger or log
        self._unix: socket.socket | None = None
        self._listeners: dict[socket.socket, asyncio.Task[None]] = {}  # ours and the box's
        self._tasks: set[asyncio.Task[None]] = set()  # one per connection
        self._refusing: set[asyncio.Task[None]] = set()  # answering connections over the limit

    async def start(self) -> None:
        # Made under another name, then renamed into place once it listens and anyone may
        # connect: a box that polls for it (a kernel started ahead of its proxy) never
        # finds it closed to its user, or not yet listening. (A name no longer than ours.)
        staging = os.path.join(os.path.dirname(self.path), ".s")
        for path in (self.path, staging):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.bind(staging)
            # The box's processes may run as another uid than ours: the directory guards it.
            os.chmod(staging, 0o666)
            unix.listen(64)
            unix.setblocking(False)
            os.rename(staging, self.path)
        except BaseException:
            unix.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
            raise
        self._unix = unix
        self._listen(unix)

    async def stop(self) -> None:
        """Stop listening and end every connection. Idempotent."""
        tasks = [*self._listeners.values(), *self._tasks, *self._refusing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        if self._unix is not None:
            self._unix = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    @property
    def running(self) -> bool:
        return self._unix is not None

    def _listen(self, listener: socket.socket) -> None:
        self._listeners[listener] = asyncio.ensure_future(self._accept(listener))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await asyncio.sleep(0.1)  # out of descriptors: let connections end first
                    continue
                return  # the box's socket is gone (its sandbox ended)
            conn.setblocking(False)
            if len(self._tasks) >= self.limits.max_connections:
                if len(self._refusing) < 16:  # else not even an answer: just closed
                    self._spawn(self._refusing, _refuse(conn, answer(
                        503, f"codebox: this box has {len(self._tasks)} connections through "
                             "its proxy open, the most it may")))
                else:
                    conn.close()
                continue
            self._spawn(self._tasks, self._serve(conn, listener is self._unix))

    @staticmethod
    def _spawn(tasks: set[asyncio.Task[None]], work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _serve(self, conn: socket.socket, over_unix: bool) -> None:
        try:
            await self._handle(conn, over_unix)
        except (TimeoutError, OSError, EOFError):
            pass  # the box hung up, or was too slow: nothing to answer
        finally:
            conn.close()

    async def _handle(self, conn: socket.socket, over_unix: bool) -> None:
        loop = asyncio.get_running_loop()
        reader = Reader(conn, accept_fds=over_unix)
        limits = self.limits
        try:
            first = await asyncio.wait_for(reader.first(), limits.head_timeout)
            if reader.fds or first.startswith(REGISTER):
                self._register(first, reader.take_fds())
                return
            if first[:1] == b"\x05":
                await self._socks(conn, reader)
                return
            head, rest = await asyncio.wait_for(reader.head(), limits.head_timeout)
            method, host, port, request = parse_head(head)
            decision = await self._decide(method, host, port)
            if not decision.allowed:
                raise Refused(403, f"codebox: {host}:{port} is refused by this box's network "
                              f"policy ({self.policy.describe()}): {decision.reason}")
            up = await self._open(decision, host, port)
        except TimeoutError:
            await _refuse(conn, answer(408, "codebox: the request's head took too long"))
            return
        except Refused as exc:
            await _refuse(conn, answer(exc.status, str(exc)))
            return
        try:
            if request is None:  # CONNECT: a tunnel from now on
                await loop.sock_sendall(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                await loop.sock_sendall(up, request)
            if rest:
                await loop.sock_sendall(up, rest)
            await self._relay(conn, up)
        finally:
            up.close()

    def _register(self, message: bytes, fds: list[int]) -> None:
        """Take the box's listening sockets (its proxy port) instead of the ones it handed
        over before: a restarted kernel brings new ones."""
        taken: list[socket.socket] = []
        for fd in fds:
            sock = socket.socket(fileno=fd)
            if message == REGISTER and len(taken) < 2 and _loopback_listener(sock):
                taken.append(sock)
            else:
                sock.close()
        if not taken:
            return
        for old in [s for s in self._listeners if s is not self._unix]:
            task = self._listeners.pop(old)
            task.cancel()  # closed once its wait is undone: no descriptor is reused under it
            task.add_done_callback(functools.partial(_close, old))
        for sock in taken:
            sock.setblocking(False)
            self._listen(sock)
        self._log.debug("codebox egress, box %s: proxy port %s", self.box_id,
                        [s.getsockname() for s in taken])

    async def _decide(self, kind: str, host: str, port: int) -> Decision:
        decision = self.policy.decide(host, port)
        if decision.resolve:
            try:
                addresses = await asyncio.wait_for(self._resolve(host, port),
                                                   self.limits.connect_timeout)
            except (TimeoutError, OSError) as exc:
                decision = Decision(False, f"{host} does not resolve ({exc or 'no answer'})")
            else:
                decision = self.policy.decide_resolved(host, port, addresses)
        self._log.debug("codebox egress, box %s: %s %s:%s %s: %s", self.box_id, kind, host,
                        port, "allowed" if decision.allowed else "refused", decision.reason)
        return decision

    async def _open(self, decision: Decision, host: str, port: int) -> socket.socket:
        """A connection to the first checked address that answers."""
        error: BaseException | None = None
        for address in decision.addresses:
            try:
                return await asyncio.wait_for(self._connect(address, port),
                                              self.limits.connect_timeout)
            except (TimeoutError, OSError) as exc:
                error = exc
        raise Refused(502, f"codebox: cannot connect to {host}:{port}: "
                      f"{error or 'no address'}", socks=5)

    async def _relay(self, box: socket.socket, far: socket.socket) -> None:
        """Move bytes both ways until the far side is done, or nothing moved for the idle
        time. The box closing its side half-closes the far one (a reply may still come)."""
        loop = asyncio.get_running_loop()
        last = [loop.time()]
        down = asyncio.ensure_future(_move(far, box, last))
        up = asyncio.ensure_future(_move(box, far, last, half_close=True))
        try:
            while not down.done():
                pending = {down} if up.done() else {down, up}
                await asyncio.wait(pending, timeout=self.limits.idle_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
                if loop.time() - last[0] >= self.limits.idle_timeout:
                    break
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)

    async def _socks(self, conn: socket.socket, reader: Reader) -> None:
        try:
            host, port = await asyncio.wait_for(socks_request(reader),
                                                self.limits.head_timeout)
            decision = await self._decide("SOCKS5", host, port)
            if not decision.allowed:
                raise Refused(403, decision.reason, socks=2)
            up = await self._open(decision, host, port)
        except Refused as exc:
            await _refuse(conn, exc.socks_reply)
            return
        try:
            await _send(conn, bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
            await self._relay(conn, up)
        finally:
            up.close()


def _close(sock: socket.socket, _: object) -> None:
    sock.close()


def _loopback_listener(sock: socket.socket) -> bool:
    """Whether ``sock`` is a listening TCP socket on a loopback address (of the box's own
    network namespace: the box has no other)."""
    try:
        return (sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                and sock.getsockname()[0] in ("127.0.0.1", "::1"))
    except OSError:
        return False


async def _send(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(conn, data), 5.0)


async def _refuse(conn: socket.socket, data: bytes) -> None:
    """Answer ``data`` and close, reading (a little of) what the box still sends first:
    closing with unread bytes resets the connection, and the box would never read why."""
    loop = asyncio.get_running_loop()
    try:
        await _send(conn, data)
        conn.shutdown(socket.SHUT_WR)
        end, got = loop.time() + 1.0, 0
        while got < 64 * 1024 and (left := end - loop.time()) > 0:
            chunk = await asyncio.wait_for(loop.sock_recv(conn, 16 * 1024), left)
            if not chunk:
                break
            got += len(chunk)
    except (TimeoutError, OSError):
        pass
    finally:
        conn.close()


async def _move(src: socket.socket, dst: socket.socket, last: list[float],
                half_close: bool = False) -> None:
    """Move what ``src`` receives to ``dst`` until its end, through a pipe: the bytes stay
    in the kernel. ``last`` is set to the time of each move."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # the user's pipe budget may be spent
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        size = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        held, ended, since_yield = 0, False, 0
        while not ended or held:
            moved = False
            if not ended and held < size:
                try:
                    n = os.splice(src.fileno(), w, size - held, flags=_SPLICE)
                except BlockingIOError:
                    n = -1
                ended = n == 0
                if n > 0:
                    held, moved = held + n, True
            if held:
                try:
                    n = os.splice(r, dst.fileno(), held, flags=_SPLICE)
                except BlockingIOError:
                    n = 0
                if n:
                    held, moved = held - n, True
            if moved:
                last[0] = loop.time()
                since_yield += 1
                if since_yield >= 8:  # a fast sender must not keep the loop to itself
                    since_yield = 0
                    await asyncio.sleep(0)
            elif held:
                await ready(dst, write=True)
            elif not ended:
                await ready(src, write=False)
        if half_close:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
    finally:
        os.close(r)
        os.close(w)
