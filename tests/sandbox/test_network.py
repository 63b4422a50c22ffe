"""A sandboxed box reaches what its network policy names, and never the host: tried from
inside boxes on a `LocalBox` and on a two-key ``codebox serve``.

The host runs servers on its loopback; the box's policy lists one of their ports as
``host.codebox.internal:PORT``, a name of /etc/hosts (``vm``, which is 127.0.0.1), a name a
hook resolves to 127.0.0.1 (``rebind.test``) and a wildcard. The gateways' proxies load
`egress_hooks`: every resolution and connection attempt is logged, and nothing but 127.0.0.1
is ever connected to. So a refusal is shown to happen before anything is sent: the connect
log holds the allowed targets only.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from codebox import CodeBox, LocalBox, Sandbox
from codebox.local._gateway import shared_gateway
from codebox.local._proxy import HOOKS_ENV
from tests.helpers import EchoServer, make_wheel, wait_until
from tests.sandbox.conftest import _end, probe
from tests.server.harness import KEY, OTHER_KEY, running_server

HOOKS = str(Path(__file__).with_name("egress_hooks.py"))
LOG_ENV = "CODEBOX_TEST_EGRESS_LOG"


class Host:
    """The host's services on its loopback: two HTTP servers (one listed, one not), a TCP
    listener on ::1 and a UDP socket, each recording what reaches it."""

    def __init__(self) -> None:
        self.servers = [EchoServer(), EchoServer()]
        self.listed, self.unlisted = (s.port for s in self.servers)
        self.v6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        self.v6.settimeout(0)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))

    @property
    def policy(self) -> list[str]:
        return [f"host.codebox.internal:{self.listed}", f"vm:{self.listed}", "rebind.test",
                "*.wild.test"]

    def seen(self, which: int = 0) -> list[tuple[str, str]]:
        return list(self.servers[which].seen)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.v6.close()
        self.udp.close()


@pytest.fixture(scope="module")
def host():
    made = Host()
    yield made
    made.close()


def _hooks_env(log: Path) -> dict[str, str]:
    log.touch()
    return {HOOKS_ENV: HOOKS, LOG_ENV: str(log)}


def _local(host: Host, log: Path):
    env = _hooks_env(log)
    shared_gateway.close()  # the next gateway carries the hooks
    os.environ.update(env)
    box = LocalBox(sandbox=Sandbox(network=host.policy))
    try:
        box.start()
        yield box
    finally:
        _end(box)
        shared_gateway.close()
        for key in env:
            del os.environ[key]


def _server(host: Host, log: Path, tmp_path_factory):
    env = {"CODEBOX_SERVER_API_KEYS": f"{KEY},{OTHER_KEY}",
           "CODEBOX_SERVER_DATA_DIR": str(tmp_path_factory.mktemp("data")),
           "CODEBOX_SERVER_SANDBOX_NETWORK": json.dumps(host.policy), **_hooks_env(log)}
    with running_server(tmp_path_factory, env=env) as srv:
        box = CodeBox(api_key=KEY, base_url=srv.base_url)
        try:
            box.start()
            yield box
        finally:
            _end(box)


def test_a_client_cannot_ask_the_server_for_another_policy(host, tmp_path_factory):
    """What a client sends becomes its kernel's environment, never its sandbox's policy."""
    log = tmp_path_factory.mktemp("egress") / "egress.log"
    env = {"CODEBOX_SERVER_API_KEYS": KEY,
           "CODEBOX_SERVER_SANDBOX_NETWORK": json.dumps(host.policy), **_hooks_env(log)}
    policy = json.dumps({"network": True, "read_only_paths": ["/"]})
    with running_server(tmp_path_factory, env=env) as srv, CodeBox(
            api_key=KEY, base_url=srv.base_url, env={"KERNEL_CODEBOX_SANDBOX": policy}) as box:
        got = _urls(box, ["http://public.test/"], via_proxy=True)["http://public.test/"]
        assert " 403 " in got and "not listed" in got, got
        assert probe(box, "import os; print(os.path.exists('/root/.bashrc'))") == "False\n"
    assert _attempts(log, "connect") == []


@pytest.fixture(scope="module", params=["local", "server"])
def site(request, host, tmp_path_factory):
    """A sandboxed box with ``host.policy``, and the log of its gateway's egress hooks."""
    log = tmp_path_factory.mktemp("egress") / "egress.log"
    made = _local(host, log) if request.param == "local" else _server(host, log, tmp_path_factory)
    box = next(made)
    yield box, log
    # Run on to its end (close() would throw into it: a server killed, not stopped).
    next(made, None)


def _attempts(log: Path, kind: str) -> list[list]:
    return [e for e in map(json.loads, log.read_text().splitlines()) if e[0] == kind]


RAW = """
import socket
def attempt(family, kind, address):
    s = socket.socket(family, kind)
    s.settimeout(5)
    try:
        if kind == socket.SOCK_DGRAM:
            s.sendto(b'x', address)
            print('SENT', address[0])
        else:
            s.connect(address)
            print('CONNECTED', address[0])
    except OSError as e:
        print('FAILED', address[0], e.errno)
    finally:
        s.close()
for address in [('127.0.0.1', {listed}), ('10.0.0.1', 80), ('169.254.169.254', 80),
                ('203.0.113.80', 443)]:
    attempt(socket.AF_INET, socket.SOCK_STREAM, address)
    attempt(socket.AF_INET, socket.SOCK_DGRAM, address)
attempt(socket.AF_INET, socket.SOCK_DGRAM, ('127.0.0.1', {udp}))
attempt(socket.AF_INET6, socket.SOCK_STREAM, ('::1', {v6}))
try:
    print('RESOLVED', socket.getaddrinfo('pypi.org', 443))
except OSError as e:
    print('NO RESOLVER', type(e).__name__)
print('HOSTS', open('/etc/hosts').read().split())
"""


def test_raw_sockets_reach_nothing_but_the_boxs_own_loopback(site, host):
    box, _ = site
    out = probe(box, RAW.format(listed=host.listed, udp=host.udp.getsockname()[1],
                                v6=host.v6.getsockname()[1]))
    assert "CONNECTED" not in out and "RESOLVED" not in out and "NO RESOLVER" in out, out
    assert f"FAILED 127.0.0.1 {111}" in out  # the box's own loopback: nobody listens there
    for outside in ("10.0.0.1", "169.254.169.254", "203.0.113.80"):
        assert f"FAILED {outside} 101" in out, out  # ENETUNREACH: no route at all
    assert "FAILED ::1 111" in out
    assert "'codebox'" in out and "127.0.0.1" in out and "vm" not in out.split("HOSTS")[1]
    # Whatever a datagram to the host's loopback did, it did not arrive: one sent by the
    # host now comes first.
    sentinel = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sentinel.sendto(b"sentinel", host.udp.getsockname())
    sentinel.close()
    host.udp.settimeout(10)
    assert host.udp.recvfrom(64)[0] == b"sentinel"
    with pytest.raises(BlockingIOError):
        host.v6.accept()


URLLIB = """
import os, urllib.request, urllib.error
saved = dict(os.environ)
if {via_proxy!r}:  # as a program that ignores NO_PROXY
    os.environ.pop('no_proxy'); os.environ.pop('NO_PROXY')
try:
    for url in {urls!r}:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                print('OK', url, r.read().decode())
        except urllib.error.HTTPError as e:
            print('REFUSED', url, e.code, e.read().decode().strip())
        except OSError as e:
            print('FAILED', url, e)
finally:
    os.environ.clear(); os.environ.update(saved)
"""


def _urls(box, urls: list[str], via_proxy: bool = False) -> dict[str, str]:
    """Each URL fetched by urllib in the box: its outcome line. ``via_proxy``: through the
    proxy even where NO_PROXY says not to (as a program that ignores it would)."""
    out = probe(box, URLLIB.format(via_proxy=via_proxy, urls=urls))
    lines = {line.split()[1]: line for line in out.splitlines() if line.split()[1:]}
    assert set(lines) == set(urls), out
    return lines


def test_the_host_is_reached_as_host_codebox_internal_on_its_listed_port_only(site, host):
    box, _ = site
    before = len(host.seen(1))
    got = _urls(box, [f"http://host.codebox.internal:{host.listed}/listed",
                      f"http://HOST.codebox.internal.:{host.listed}/case",
                      f"http://host.codebox.internal:{host.unlisted}/unlisted"])
    assert got[f"http://host.codebox.internal:{host.listed}/listed"].startswith(
        f"OK http://host.codebox.internal:{host.listed}/listed /listed "
        f"Host=host.codebox.internal:{host.listed}")
    assert "OK" in got[f"http://HOST.codebox.internal.:{host.listed}/case"]
    refused = got[f"http://host.codebox.internal:{host.unlisted}/unlisted"]
    assert refused.startswith("REFUSED") and " 403 " in refused, refused
    assert "refused by this box's network policy" in refused and "not listed" in refused
    assert len(host.seen(1)) == before  # the unlisted server heard nothing


def test_loopback_names_and_private_targets_are_never_the_hosts(site, host):
    box, _ = site
    listed = host.listed
    direct = _urls(box, [f"http://localhost:{listed}/a", f"http://127.0.0.1:{listed}/b",
                         f"http://[::1]:{listed}/c"])
    for url in (f"http://localhost:{listed}/a", f"http://127.0.0.1:{listed}/b"):
        assert direct[url].startswith("FAILED") and "Connection refused" in direct[url]
    # urllib's NO_PROXY does not match [::1] (httpx fails on a "[::1]" entry): proxied, and
    # refused there.
    assert not direct[f"http://[::1]:{listed}/c"].startswith("OK")
    proxied = _urls(box, [
        f"http://localhost:{listed}/d", f"http://127.0.0.1:{listed}/e",
        f"http://[::1]:{listed}/f", f"http://[::ffff:127.0.0.1]:{listed}/g",
        f"http://0.0.0.0:{listed}/h", "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/i", "http://192.168.0.1/j", f"http://vm:{listed}/k",
        "http://rebind.test/l", "http://x.wild.test/m", "http://2130706433/n",
        "https://169.254.169.254/o",
    ], via_proxy=True)
    for url, line in proxied.items():
        if url.startswith("https"):  # the tunnel is refused: urllib says no more than that
            assert line.startswith("FAILED") and "403" in line, line
        else:
            assert line.startswith("REFUSED") and " 403 " in line, line
    reasons = {
        f"http://localhost:{listed}/d": "the box's own loopback",
        f"http://127.0.0.1:{listed}/e": "never reachable by address",
        f"http://[::1]:{listed}/f": "never reachable by address",
        "http://169.254.169.254/latest/meta-data/": "a link-local address",
        "http://10.0.0.1/i": "a private address",
        f"http://vm:{listed}/k": "vm resolves to 127.0.0.1",
        "http://rebind.test/l": "rebind.test resolves to 127.0.0.1",
        "http://x.wild.test/m": "does not resolve",
    }
    for url, reason in reasons.items():
        assert reason in proxied[url], proxied[url]
    reached = {path for path, _ in host.seen()}
    assert not reached & {f"/{c}" for c in "abcdefghijklmno"}, reached


PROXY_SOCKET = """
import os, socket
path = os.path.join(os.path.dirname(os.environ['HOME']), 'net', 'proxy.sock')
for request in {requests!r}:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    s.sendall(request.encode())
    answer = b''
    while chunk := s.recv(65536):
        answer += chunk
    s.close()
    print(' | '.join(answer.decode(errors='replace').splitlines()))
try:
    os.unlink(path)
    print('REPLACED')
except OSError as e:
    print('KEPT', e.errno)
"""


def test_requests_straight_to_the_proxy_socket_are_decided_the_same(site, host):
    box, _ = site
    listed = host.listed
    out = probe(box, PROXY_SOCKET.format(requests=[
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
        "GET http://10.0.0.1/ HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n",
        f"GET http://host.codebox.internal:{listed}/trick HTTP/1.1\r\n"
        "Host: 169.254.169.254\r\n\r\n",
        "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        f"GET http://169.254.169.254@host.codebox.internal:{listed}/at HTTP/1.1\r\n\r\n",
        f"GET http://host.codebox.internal:{listed}@169.254.169.254/at2 HTTP/1.1\r\n\r\n",
    ])).splitlines()
    assert out[0].startswith("HTTP/1.1 403") and "link-local" in out[0]
    assert out[1].startswith("HTTP/1.1 403") and "private" in out[1]
    assert "200 OK" in out[2] and out[2].endswith(f"/trick Host=host.codebox.internal:{listed}")
    assert out[3].startswith("HTTP/1.1 400")
    assert "200 OK" in out[4] and out[4].endswith(f"/at Host=host.codebox.internal:{listed}")
    assert out[5].startswith("HTTP/1.1 403") and "link-local" in out[5]
    assert out[6].startswith("KEPT")  # the box cannot replace the proxy's socket
    assert ("/trick", f"host.codebox.internal:{listed}") in host.seen()


CLIENTS = """
import subprocess, threading, http.server, urllib.request, httpx, requests
class Own(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '3'); self.end_headers()
        self.wfile.write(b'own')
    def log_message(self, *a): pass
own = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Own)
threading.Thread(target=own.serve_forever, daemon=True).start()
port = own.server_address[1]
print('OWN', urllib.request.urlopen(f'http://localhost:{{port}}/', timeout=30).read(),
      httpx.get(f'http://127.0.0.1:{{port}}/').text, requests.get(f'http://localhost:{{port}}').text)
host = 'http://host.codebox.internal:{listed}'
print('REQUESTS', requests.get(host + '/requests', timeout=30).status_code)
print('HTTPX', httpx.get(host + '/httpx', timeout=30).status_code)
curl = subprocess.run(['curl', '-sS', '-m', '30', host + '/curl'], capture_output=True, text=True)
print('CURL', curl.stdout)
socks = subprocess.run(['curl', '-sS', '-m', '30', '--socks5-hostname', '127.0.0.1:3128',
                        host + '/socks'], capture_output=True, text=True)
print('SOCKS', socks.stdout)
git = subprocess.run(['git', 'ls-remote', 'https://169.254.169.254/x.git'],
                     capture_output=True, text=True, timeout=60)
print('GIT', git.returncode, git.stderr.strip().splitlines()[-1:])
own.shutdown()
"""


def test_usual_clients_work_unchanged_and_the_boxs_own_server_too(site, host):
    box, _ = site
    out = probe(box, CLIENTS.format(listed=host.listed))
    assert "OWN b'own' own own" in out
    assert "REQUESTS 200" in out and "HTTPX 200" in out
    assert f"CURL /curl Host=host.codebox.internal:{host.listed}" in out
    assert f"SOCKS /socks Host=host.codebox.internal:{host.listed}" in out
    assert "GIT 128" in out and "403" in out, out


def test_nothing_refused_ever_reached_the_connect_step(site, host):
    """The log of every connection the proxy opened, after all of the above (and a refusal
    and an allowed request of its own): the listed port on 127.0.0.1, nothing else."""
    box, log = site
    _urls(box, [f"http://host.codebox.internal:{host.listed}/last"])
    _urls(box, ["http://169.254.169.254/", "http://rebind.test/"], via_proxy=True)
    connects = _attempts(log, "connect")
    assert connects and all(c[1:] == ["127.0.0.1", host.listed] for c in connects), connects
    resolved = {entry[1] for entry in _attempts(log, "resolve")}
    assert resolved <= {"vm", "rebind.test", "x.wild.test"}, resolved


def test_a_restart_keeps_the_network_and_its_limits(site, host):
    box, _ = site
    box.restart()
    got = _urls(box, [f"http://host.codebox.internal:{host.listed}/after-restart",
                      f"http://host.codebox.internal:{host.unlisted}/after-restart"])
    assert sorted(line.split()[0] for line in got.values()) == ["OK", "REFUSED"], got


NO_NETWORK = """
import os, socket
print('PROXY VARS', sorted(k for k in os.environ if 'proxy' in k.lower()))
print('NET DIR', os.path.exists(os.path.join(os.path.dirname(os.environ['HOME']), 'net')))
for address in [('127.0.0.1', 3128), ('203.0.113.80', 443)]:
    try:
        socket.create_connection(address, timeout=5)
        print('CONNECTED', address)
    except OSError as e:
        print('FAILED', address[0], e.errno)
"""


def _install_and_check(box, tmp_path) -> None:
    wheel = make_wheel(tmp_path, "codebox_offline_pkg")
    box.upload(wheel.name, wheel.read_bytes())
    assert str(box.install(f"./{wheel.name}")) == f"./{wheel.name} installed"
    assert probe(box, "import codebox_offline_pkg as m; print(m.ANSWER)") == "42\n"
    out = probe(box, NO_NETWORK)
    assert "PROXY VARS []" in out and "NET DIR False" in out, out
    assert "FAILED 127.0.0.1 111" in out and "FAILED 203.0.113.80 101" in out, out


def test_install_without_network_and_still_no_network_after_it(tmp_path):
    with LocalBox(sandbox=Sandbox(network=False)) as box:
        _install_and_check(box, tmp_path)


def test_install_without_network_through_the_server(sandbox_server, tmp_path):
    with CodeBox(api_key=KEY, base_url=sandbox_server.base_url) as box:
        _install_and_check(box, tmp_path)


def test_network_true_reaches_public_addresses_through_the_checked_address(tmp_path, host):
    log = tmp_path / "egress.log"
    env = _hooks_env(log)
    shared_gateway.close()
    os.environ.update(env)
    try:
        with LocalBox(sandbox=Sandbox(network=True)) as box:
            got = _urls(box, ["http://public.test/", f"http://host.codebox.internal:"
                              f"{host.listed}/", "http://private.test/"])
    finally:
        shared_gateway.close()
        for key in env:
            del os.environ[key]
    # Allowed, and opened to the address the name resolved to; the hook (127.0.0.1 only)
    # refuses it, and the box hears why.
    assert got["http://public.test/"].startswith("REFUSED http://public.test/ 502")
    assert "cannot connect to public.test:80" in got["http://public.test/"]
    assert " 403 " in got[f"http://host.codebox.internal:{host.listed}/"]
    assert "private.test resolves to 10.1.2.3" in got["http://private.test/"]
    assert _attempts(log, "connect") == [["connect", "203.0.113.7", 80]]


def test_a_box_with_no_network_starts_no_proxy():
    with LocalBox(sandbox=True) as box:
        box_dir = Path(probe(box, "import os; print(os.path.dirname(os.environ['HOME']))")
                       .strip())
        assert not (box_dir / "net" / "proxy.sock").exists()
    wait_until(lambda: not box_dir.exists(), timeout=15)
