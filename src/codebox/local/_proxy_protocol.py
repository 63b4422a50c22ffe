"""What the egress proxy (`_proxy`) reads and answers: HTTP/1 request heads, SOCKS5
requests, the box's hand-over of its proxy port, and the proxy's own answers.

Standard library only. `parse_head` is pure; `Reader` reads a non-blocking socket on the
running event loop, with every read bounded.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

HEAD_LIMIT = 16 * 1024
"""The most bytes of a request line and its headers."""
REGISTER = b"codebox-listen\n"
"""What the box sends, with its listening sockets, to hand its proxy port over."""
_HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authorization",
               "proxy-authenticate", "te", "trailer", "upgrade", "host"}
_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 502: "Bad Gateway",
            503: "Service Unavailable"}


class Refused(Exception):
    """A request the proxy answers itself: an HTTP status, and the SOCKS5 reply code."""

    def __init__(self, status: int, message: str, socks: int = 1) -> None:
        super().__init__(message)
        self.status, self.socks = status, socks

    @property
    def socks_reply(self) -> bytes:
        if self.socks == 255:  # no method we take: the greeting's own reply
            return b"\x05\xff"
        return bytes([5, self.socks, 0, 1, 0, 0, 0, 0, 0, 0])


def answer(status: int, message: str) -> bytes:
    """The proxy's own HTTP answer (a refusal, or why it could not connect)."""
    body = (message + "\n").encode()
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; "
            f"charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            "X-Codebox-Egress: refused\r\n\r\n").encode() + body


async def ready(sock: socket.socket, write: bool) -> None:
    """Wait until ``sock`` can be read (or written) without blocking."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    fd = sock.fileno()
    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await done
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


class Reader:
    """Buffered reads of one connection. Only its first read may carry descriptors (and
    only where ``accept_fds``): the box's hand-over of its proxy port."""

    def __init__(self, sock: socket.socket, *, accept_fds: bool = False) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []
        self._accept_fds = accept_fds

    async def _more(self) -> None:
        while True:
            try:
                if self._accept_fds:
                    data, fds, _, _ = socket.recv_fds(self.sock, HEAD_LIMIT, 2)
                    self._accept_fds = False
                    self.fds += fds
                else:
                    data = self.sock.recv(HEAD_LIMIT)
                break
            except BlockingIOError:
                await ready(self.sock, write=False)
        if not data:
            raise EOFError("the connection ended")
        self.buffer += data

    async def first(self) -> bytes:
        """What the first read brought (kept in the buffer)."""
        await self._more()
        return bytes(self.buffer)

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds

    async def head(self) -> tuple[bytes, bytes]:
        """The request head (up to its blank line) and what was read past it."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > HEAD_LIMIT:
                raise Refused(431, f"codebox: a request head over {HEAD_LIMIT} bytes")
            await self._more()
        if end > HEAD_LIMIT:
            raise Refused(431, f"codebox: a request head over {HEAD_LIMIT} bytes")
        head, rest = bytes(self.buffer[:end]), bytes(self.buffer[end + 4:])
        self.buffer.clear()
        return head, rest

    async def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._more()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


def parse_head(head: bytes) -> tuple[str, str, int, bytes | None]:
    """``(method, host, port, request)`` of an HTTP/1 request head; ``request`` is what to
    send the far side (the request in origin form, its Host the URL's), None for CONNECT.

    Raises:
        Refused: Not a CONNECT or an absolute-form ``http://`` request.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise Refused(400, "codebox: not an HTTP/1 request")
    method, target, version = parts
    if method == "CONNECT":
        host, port = _authority(target)
        return method, host, port, None
    if not target.lower().startswith("http://"):
        raise Refused(400, "codebox: this is a box's egress proxy, with nothing of its own to "
                      "serve: send CONNECT host:port, or a request in absolute form "
                      "(GET http://host/path); https goes through CONNECT")
    try:
        url = urlsplit(target)
        host, port = url.hostname or "", url.port or 80
    except ValueError as exc:
        raise Refused(400, f"codebox: bad URL {target!r}: {exc}") from None
    if not host:
        raise Refused(400, f"codebox: no host in {target!r}")
    # The target is the URL's authority, whatever a Host header says: that is where the
    # request goes, and the Host the far side sees.
    authority = url.netloc.rpartition("@")[2]
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    dropped = set(_HOP_BY_HOP)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise Refused(400, "codebox: a malformed header line")
        if name.lower() == "connection":
            dropped.update(t.strip().lower() for t in value.split(","))
        headers.append((name, value))
    kept = [f"{n}:{v}" for n, v in headers if n.lower() not in dropped]
    request = "\r\n".join([f"{method} {path} {version}", f"Host: {authority}", *kept,
                           "Connection: close", "", ""])
    return method, host, port, request.encode("latin-1")


def _authority(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) of a CONNECT."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise Refused(400, f"codebox: CONNECT needs host:port, not {text!r}")
    if host.startswith("[") != host.endswith("]"):
        raise Refused(400, f"codebox: bad CONNECT target {text!r}")
    return host.strip("[]"), int(port)


async def socks_request(reader: Reader) -> tuple[str, int]:
    """The target of a SOCKS5 ``CONNECT`` (no authentication); the greeting is answered."""
    version, count = await reader.exactly(2)
    if version != 5 or 0 not in await reader.exactly(count):
        raise Refused(400, "no SOCKS5 method codebox takes", socks=255)
    await asyncio.get_running_loop().sock_sendall(reader.sock, b"\x05\x00")
    version, command, _, kind = await reader.exactly(4)
    if kind == 1:
        host = socket.inet_ntop(socket.AF_INET, await reader.exactly(4))
    elif kind == 4:
        host = socket.inet_ntop(socket.AF_INET6, await reader.exactly(16))
    elif kind == 3:
        (size,) = await reader.exactly(1)
        host = (await reader.exactly(size)).decode("ascii", "replace")
    else:
        raise Refused(400, "unknown SOCKS5 address type", socks=8)
    port = int.from_bytes(await reader.exactly(2), "big")
    if version != 5 or command != 1:
        raise Refused(400, "SOCKS5 CONNECT only", socks=7)
    return host, port
