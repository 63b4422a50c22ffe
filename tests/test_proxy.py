"""The egress proxy, in this process: its unix socket, a real HTTP server on 127.0.0.1 as the
far side, and connect/resolve hooks that record every attempt. A public target is a name
the resolver hook maps to a public address, and the connect hook takes it to the local
server: nothing leaves the machine, and a refused target never reaches the connect hook."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat

import pytest

from codebox.local._egress import Policy
from codebox.local._proxy import EgressProxy, Limits
from codebox.local._proxy_protocol import REGISTER
from tests.helpers import EchoServer

PUBLIC = "203.0.113.80"
NAMES = {"pypi.example": [PUBLIC], "rebind.example": [PUBLIC, "127.0.0.1"],
         "private.example": ["10.0.0.5"], "dual.example": ["2001:db8::5", PUBLIC]}


@pytest.fixture(scope="module")
def far():
    """Answers with what it saw: the path and the Host header."""
    server = EchoServer()
    yield server.port
    server.close()


class Hooks:
    """The proxy's only ways out, recorded. Every connection goes to the far server."""

    def __init__(self, far_port: int) -> None:
        self.far_port = far_port
        self.connects: list[tuple[str, int]] = []
        self.resolved: list[str] = []

    async def connect(self, address: str, port: int) -> socket.socket:
        self.connects.append((address, port))
        sock = socket.create_connection(("127.0.0.1", self.far_port), timeout=5)
        sock.setblocking(False)
        return sock

    async def resolve(self, host: str, port: int) -> list[str]:
        self.resolved.append(host)
        if host not in NAMES:
            raise OSError(f"{host} is not known here")
        return NAMES[host]


def run(tmp_path, far_port, network, scenario, limits=None):
    """Run ``scenario(path, hooks)`` against a started proxy of ``network``; its result."""
    hooks = Hooks(far_port)

    async def main():
        proxy = EgressProxy(Policy(network), str(tmp_path / "proxy.sock"), box_id="box-1",
                            connect=hooks.connect, resolve=hooks.resolve, limits=limits)
        await proxy.start()
        try:
            return await asyncio.wait_for(scenario(str(tmp_path / "proxy.sock"), hooks), 30)
        finally:
            await proxy.stop()

    return asyncio.run(main()), hooks


async def exchange(path: str, data: bytes) -> bytes:
    """Send ``data`` over the proxy socket; everything it answers until it closes."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass  # it answered and hung up first (a refusal needs no more)
    try:
        return await reader.read()  # to EOF
    finally:
        writer.close()


def test_connect_to_a_listed_name_tunnels_to_its_checked_address(tmp_path, far):
    async def scenario(path, hooks):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"CONNECT pypi.example:443 HTTP/1.1\r\nHost: pypi.example:443\r\n\r\n")
        status = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"GET /simple/ HTTP/1.0\r\nHost: pypi.example\r\n\r\n")
        body = await reader.read()
        writer.close()
        return status, body

    (status, body), hooks = run(tmp_path, far, ["pypi.example:443"], scenario)
    assert status.startswith(b"HTTP/1.1 200")
    assert body.endswith(b"/simple/ Host=pypi.example")
    assert hooks.connects == [(PUBLIC, 443)]  # the address, never the name again


def test_absolute_form_goes_where_the_url_says_whatever_the_host_header(tmp_path, far):
    async def scenario(path, hooks):
        return await exchange(path, b"GET http://pypi.example/a?b=1 HTTP/1.1\r\n"
                                    b"Host: 169.254.169.254\r\nProxy-Connection: keep-alive"
                                    b"\r\nX-Kept: yes\r\n\r\n")

    body, hooks = run(tmp_path, far, True, scenario)
    assert body.startswith(b"HTTP/1.0 200") and body.endswith(b"/a?b=1 Host=pypi.example")
    assert hooks.connects == [(PUBLIC, 80)]


@pytest.mark.parametrize("target, says", [
    ("169.254.169.254:80", "link-local"),
    ("10.0.0.1:80", "private"),
    ("127.0.0.1:80", "never reachable by address"),
    ("[::1]:80", "never reachable by address"),
    ("[::ffff:127.0.0.1]:80", "never reachable by address"),
    ("0.0.0.0:80", "never reachable by address"),
    ("localhost:80", "box's own loopback"),
    ("rebind.example:443", "resolves to 127.0.0.1"),
    ("private.example:443", "resolves to 10.0.0.5"),
    ("host.codebox.internal:8080", "not listed"),
    ("unknown.example:443", "does not resolve"),
    ("2130706433:80", "not a host name"),
])
def test_refused_targets_never_reach_the_connect_hook(tmp_path, far, target, says):
    host, _, port = target.rpartition(":")

    async def scenario(path, hooks):
        connect = await exchange(path, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
        absolute = await exchange(path, f"GET http://{host}:{port}/ HTTP/1.1\r\n\r\n".encode())
        socks = await _socks(path, host.strip("[]"), int(port))
        return connect, absolute, socks

    (connect, absolute, socks), hooks = run(tmp_path, far, True, scenario)
    for answer in (connect, absolute):
        assert answer.startswith(b"HTTP/1.1 403 Forbidden"), answer
        assert b"network policy (network=True: public addresses only)" in answer
        assert says.encode() in answer, answer
    assert socks == 2  # "connection not allowed by ruleset"
    assert hooks.connects == []


def test_a_list_refuses_public_targets_it_does_not_name(tmp_path, far):
    async def scenario(path, hooks):
        return (await exchange(path, b"CONNECT pypi.example:80 HTTP/1.1\r\n\r\n"),
                await exchange(path, f"CONNECT {PUBLIC}:443 HTTP/1.1\r\n\r\n".encode()))

    answers, hooks = run(tmp_path, far, ["pypi.example:443"], scenario)
    assert all(a.startswith(b"HTTP/1.1 403") and b"not listed" in a for a in answers)
    assert hooks.connects == [] and hooks.resolved == []  # refused before any resolution


def test_what_is_not_a_proxy_request_is_refused(tmp_path, far):
    async def scenario(path, hooks):
        return [await exchange(path, data) for data in (
            b"GET /latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
            b"POST /policy HTTP/1.1\r\nHost: codebox\r\n\r\n{\"network\": true}",
            b"GET https://pypi.example/ HTTP/1.1\r\n\r\n",
            b"CONNECT pypi.example HTTP/1.1\r\n\r\n",
            b"hello\r\n\r\n",
            b"GET http://pypi.example/ HTTP/1.1\r\n bad\r\n\r\n",
        )]

    answers, hooks = run(tmp_path, far, True, scenario)
    assert all(a.startswith(b"HTTP/1.1 400") for a in answers), answers
    assert hooks.connects == []


def test_socks5_reaches_what_the_policy_allows(tmp_path, far):
    async def scenario(path, hooks):
        reader, writer = await asyncio.open_unix_connection(path)
        host = b"pypi.example"
        writer.write(b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(host)]) + host
                     + (80).to_bytes(2, "big"))
        greeting, reply = await reader.readexactly(2), await reader.readexactly(10)
        writer.write(b"GET /socks HTTP/1.0\r\n\r\n")
        body = await reader.read()
        writer.close()
        return greeting, reply, body

    (greeting, reply, body), hooks = run(tmp_path, far, ["*.example:80"], scenario)
    assert greeting == b"\x05\x00" and reply[:2] == b"\x05\x00"
    assert body.endswith(b"/socks Host=None") and hooks.connects == [(PUBLIC, 80)]


def test_connections_per_box_are_bounded_and_slow_heads_cut_off(tmp_path, far):
    async def scenario(path, hooks):
        held = [await asyncio.open_unix_connection(path) for _ in range(3)]
        over = await exchange(path, b"CONNECT pypi.example:443 HTTP/1.1\r\n\r\n")
        late = await asyncio.wait_for(held[0][0].read(), 10)  # its head never came
        for _, writer in held:
            writer.close()
        return over, late

    (over, late), hooks = run(tmp_path, far, True, scenario,
                              Limits(max_connections=3, head_timeout=0.5))
    assert over.startswith(b"HTTP/1.1 503") and b"the most it may" in over
    assert late.startswith(b"HTTP/1.1 408")
    assert hooks.connects == []


def test_an_oversized_head_is_refused(tmp_path, far):
    async def scenario(path, hooks):
        return await exchange(path, b"GET http://pypi.example/ HTTP/1.1\r\nX: "
                              + b"a" * 40_000 + b"\r\n\r\n")

    answer, hooks = run(tmp_path, far, True, scenario)
    assert answer.startswith(b"HTTP/1.1 431") and hooks.connects == []


def test_an_idle_tunnel_is_closed(tmp_path, far):
    async def scenario(path, hooks):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"CONNECT pypi.example:443 HTTP/1.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 10)  # we send nothing: it ends
        writer.close()
        return rest

    rest, hooks = run(tmp_path, far, True, scenario, Limits(idle_timeout=0.5))
    assert rest == b"" and hooks.connects == [(PUBLIC, 443)]


def test_the_box_hands_over_its_proxy_port_and_nothing_else(tmp_path, far):
    async def scenario(path, hooks):
        loop = asyncio.get_running_loop()
        good = socket.create_server(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        unbound = socket.socket()
        for fds in ([unbound.fileno(), udp.fileno()], [good.fileno()]):
            with socket.socket(socket.AF_UNIX) as s:
                await loop.sock_connect(s, path)
                socket.send_fds(s, [REGISTER], fds)
        port = good.getsockname()[1]
        for s in (good, udp, unbound):
            s.close()  # the proxy holds its own copy of what it took
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET http://pypi.example/port HTTP/1.1\r\n\r\n")
        body = await reader.read()
        writer.close()
        return body

    body, hooks = run(tmp_path, far, True, scenario)
    assert body.endswith(b"/port Host=pypi.example") and hooks.connects == [(PUBLIC, 80)]


def test_decisions_are_logged_with_the_box_id(tmp_path, far, caplog):
    async def scenario(path, hooks):
        await exchange(path, b"CONNECT 10.0.0.1:80 HTTP/1.1\r\n\r\n")

    with caplog.at_level(logging.DEBUG, logger="codebox.local._proxy"):
        run(tmp_path, far, True, scenario)
    assert any("box box-1" in r.message and "10.0.0.1:80 refused" in r.message
               for r in caplog.records)


def test_stop_ends_tunnels_and_removes_the_socket(tmp_path, far):
    async def scenario(path, hooks):
        proxy = EgressProxy(Policy(True), str(tmp_path / "other.sock"), box_id="b",
                            connect=hooks.connect, resolve=hooks.resolve)
        await proxy.start()
        reader, writer = await asyncio.open_unix_connection(proxy.path)
        writer.write(b"CONNECT pypi.example:443 HTTP/1.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await proxy.stop()
        rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return rest, (tmp_path / "other.sock").exists()

    (rest, exists), _ = run(tmp_path, far, True, scenario)
    assert rest == b"" and not exists


async def _socks(path: str, host: str, port: int) -> int:
    """A SOCKS5 CONNECT to ``host``; the reply code."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        ip = None
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                ip = (family, socket.inet_pton(family, host))
            except OSError:
                continue
        if ip is None:
            target = b"\x03" + bytes([len(host)]) + host.encode()
        else:
            target = (b"\x01" if ip[0] == socket.AF_INET else b"\x04") + ip[1]
        writer.write(b"\x05\x01\x00\x05\x01\x00" + target + port.to_bytes(2, "big"))
        await reader.readexactly(2)
        return (await reader.readexactly(10))[1]
    finally:
        writer.close()


def test_descriptors_that_come_after_the_first_wait_are_taken():
    """The hand-over may arrive after the proxy began waiting for it."""
    async def main():
        from codebox.local._proxy_protocol import Reader

        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        reader = Reader(ours, accept_fds=True)
        first = asyncio.ensure_future(reader.first())
        for _ in range(3):
            await asyncio.sleep(0)  # it is waiting now
        assert not first.done()
        listener = socket.create_server(("127.0.0.1", 0))
        socket.send_fds(theirs, [REGISTER], [listener.fileno()])
        data = await asyncio.wait_for(first, 10)
        fds = reader.take_fds()
        for sock in (ours, theirs, listener, *(socket.socket(fileno=fd) for fd in fds)):
            sock.close()
        return data, len(fds)

    assert asyncio.run(main()) == (REGISTER, 1)


def test_its_socket_appears_only_once_anyone_may_connect_and_it_listens(tmp_path, far,
                                                                           monkeypatch):
    """A kernel started ahead of its proxy polls for the socket, as another uid: the name
    must never show a socket closed to that uid (made by bind with our umask, opened by
    chmod) or one not yet listening."""
    path = tmp_path / "proxy.sock"
    seen: list[tuple[str, bool]] = []
    chmod, listen = os.chmod, socket.socket.listen

    def watched_chmod(target, mode, *args, **kwargs):
        seen.append(("chmod", path.exists()))
        return chmod(target, mode, *args, **kwargs)

    def watched_listen(self, *args):
        seen.append(("listen", path.exists()))
        return listen(self, *args)

    monkeypatch.setattr(os, "chmod", watched_chmod)
    monkeypatch.setattr(socket.socket, "listen", watched_listen)

    async def scenario(where, hooks):
        return stat.S_IMODE(os.stat(where).st_mode), await exchange(
            where, b"CONNECT 10.0.0.1:80 HTTP/1.1\r\n\r\n")

    (mode, answer), _ = run(tmp_path, far, ["pypi.example:443"], scenario)
    assert seen == [("chmod", False), ("listen", False)]
    assert mode == 0o666 and answer.startswith(b"HTTP/1.1 403")
