"""Escapes tried from inside a sandboxed box, on a `LocalBox` and on a two-key ``codebox
serve``: each one fails, and the attacker, its victim, the gateway and the server keep
working. The last test runs the same probes on plain kernels, where they succeed: the
probes can tell."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from codebox import CodeBoxError, LocalBox, Sandbox
from codebox.local._gateway import shared_gateway
from tests.helpers import alive, wait_until
from tests.sandbox.conftest import pool_state, probe

READ_FILE = """
import os
for path in {paths!r}:
    try:
        if os.path.isdir(path):
            print('LISTED', sorted(os.listdir(path)))
        else:
            print('READ', open(path).read())
    except OSError as e:
        print('DENIED', type(e).__name__)
"""


def _healthy(site):
    assert probe(site.attacker, "print(6 * 7)") == "42\n"
    assert probe(site.victim, "print(6 * 7)") == "42\n"
    assert alive(site.gateway_pid)
    if site.server_pid is not None:
        assert alive(site.server_pid)


def test_another_box_files_are_out_of_reach(site):
    site.victim.upload("secret.txt", b"the victim's secret")
    victim_dir = probe(site.victim, "import os; print(os.getcwd())").strip()
    out = probe(site.attacker, READ_FILE.format(paths=[
        victim_dir, os.path.join(victim_dir, "secret.txt"), os.path.dirname(victim_dir)]))
    assert "the victim's secret" not in out and "secret.txt" not in out
    assert os.path.basename(victim_dir) not in out
    assert out.count("DENIED") >= 2, out
    _healthy(site)


def test_other_kernels_connection_files_and_the_runtime_dir_are_out_of_reach(site):
    on_host = glob.glob(os.path.join(site.runtime_dir, "kernel-*.json"))
    assert len(on_host) >= 2  # the attacker's and the victim's, at least
    out = probe(site.attacker, f"""
import os
print('ENV', sorted(k for k in os.environ if 'JUPYTER' in k or 'JPY' in k))
print('SEEN', sum(os.path.exists(p) for p in {on_host!r}))
print('OWN', sorted(os.listdir('/run/codebox')))
try:  # a server keeps its boxes elsewhere: then nothing of the runtime dir exists inside
    print('LISTED', sorted(os.listdir({site.runtime_dir!r})))
except FileNotFoundError:
    print('LISTED nothing: absent')
""")
    assert "ENV []" in out
    # Its own connection file is bound in alone, at a path of the sandbox's own.
    assert "SEEN 0" in out and "OWN ['kernel.json']" in out, out
    listed = out.split("LISTED ", 1)[1]
    assert "cookie" not in listed and listed.count("kernel-") == 0, out
    _healthy(site)


def test_an_import_path_holding_the_runtime_dir_does_not_bring_it_in(monkeypatch):
    # A PYTHONPATH that holds the runtime dir (here the temp dir, where the gateway makes
    # it) is the caller's, never bound in: nothing of the others' kernels shows.
    from codebox.local._gateway import GatewayProcess

    monkeypatch.setenv("PYTHONPATH", os.path.realpath(tempfile.gettempdir()))
    gateway = GatewayProcess(pool_size=0)  # of its own: the changed PYTHONPATH ends with it
    try:
        args = {"gateway_url": gateway.url, "gateway_token": gateway.token, "sandbox": True}
        with LocalBox(**args) as box, LocalBox(**args) as other:
            other.run("1")
            runtime_dir = gateway._runtime_dir
            on_host = sorted(os.listdir(runtime_dir))
            assert len([n for n in on_host if n.startswith("kernel-")]) >= 2
            boxes = os.path.join(runtime_dir, "codebox-boxes")
            out = probe(box, f"import os\nprint(sorted(os.listdir({runtime_dir!r})), "
                             f"len(os.listdir({boxes!r})))")
    finally:
        gateway.close()
    # Only the path to its own directory: nothing of the others', no connection file.
    assert out == "['codebox-boxes'] 1\n", on_host


def test_the_gateway_can_be_neither_read_nor_signalled(site):
    gw = site.gateway_pid
    out = probe(site.attacker, READ_FILE.format(
        paths=[f"/proc/{gw}/mem", f"/proc/{gw}/environ", f"/proc/{gw}/cmdline"]) + f"""
import signal
try:
    os.kill({gw}, signal.SIGKILL)
    print('SIGNALLED')
except OSError as e:
    print('DENIED', type(e).__name__)
""")
    assert "READ" not in out and "SIGNALLED" not in out and out.count("DENIED") == 4, out
    _healthy(site)


def test_no_secret_of_the_host_is_readable_in_any_process(site):
    secrets = site.server_secrets or (shared_gateway._process.token,)
    out = probe(site.attacker, """
import os
texts = []
for pid in os.listdir('/proc'):
    for name in ('cmdline', 'environ'):
        try:
            texts.append(open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1'))
        except OSError:
            pass
print('\\n'.join(texts))
print('ENVIRON', dict(os.environ))
""" + (READ_FILE.format(paths=[f"/proc/{site.server_pid}/cmdline",
                               f"/proc/{site.server_pid}/environ"])
       if site.server_pid else ""))
    for secret in secrets:
        assert secret not in out
    if site.server_pid:
        assert out.count("DENIED") == 2
    _healthy(site)


def test_only_its_own_processes_are_visible(site):
    out = probe(site.attacker, """
import os
for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):
    try:
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()
        print(pid, cmd.replace('\\n', ' '))
    except OSError:
        pass
""")
    pids = [int(line.split()[0]) for line in out.splitlines()]
    assert 1 <= len(pids) <= 3 and max(pids) < 10, out  # bwrap's init, the kernel: its own
    for word in ("_gateway_app", "codebox.cli", "pytest "):
        assert word not in out
    _healthy(site)


def test_killing_everything_it_sees_harms_only_itself(site):
    pids = [site.gateway_pid] + ([site.server_pid] if site.server_pid else [])
    try:
        site.attacker.run(f"""
import os, signal
for pid in {pids!r}:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
os.kill(-1, signal.SIGKILL)
""", timeout=30)
    except CodeBoxError:
        pass  # its own kernel died under the run: that is all it could kill
    out = site.attacker.run("print('back')", timeout=60)
    if out.error is not None:
        assert out.error.name == "KernelDiedError"
    _healthy(site)


def test_services_on_the_host_loopback_are_unreachable(site, listener):
    out = probe(site.attacker, CONNECT.format(port=listener))
    assert "CONNECTED" not in out and "FAILED" in out
    _healthy(site)


def test_the_callers_home_is_out_of_reach(site):
    marker = Path.home() / f".codebox-sandbox-test-{uuid.uuid4().hex}"
    marker.write_text("the caller's secret")
    try:
        out = probe(site.attacker, READ_FILE.format(paths=[str(marker), str(Path.home())])
                    + "\nprint('HOME', os.environ.get('HOME'))")
    finally:
        marker.unlink()
    assert "the caller's secret" not in out and marker.name not in out
    assert f"HOME {Path.home()}\n" not in out
    _healthy(site)


def test_the_warm_pool_kernel_cannot_be_reached_before_it_is_handed_out(site):
    if site.kind != "local":
        return  # the server's sandboxed sessions start their own kernels: no pool
    def warm():
        for pool in pool_state()["pools"]:
            if pool["kernel_name"] == "codebox-sandbox" and pool["warm"]:
                return pool["warm"][0]
        return None
    pooled = wait_until(warm, timeout=60)
    # The attack that works on plain kernels: find their connection files, connect, plant.
    out = probe(site.attacker, f"""
import glob, json, os
found = [p for p in glob.glob({site.runtime_dir!r} + '/**/kernel-*.json', recursive=True)
         + glob.glob('/tmp/**/kernel-*.json', recursive=True)
         if os.path.realpath(p) != os.path.realpath(get_ipython().kernel.config['IPKernelApp']
                                                    .get('connection_file', ''))]
planted = 0
for path in found:
    from jupyter_client import BlockingKernelClient
    client = BlockingKernelClient(connection_file=path)
    client.load_connection_file()
    client.start_channels()
    try:
        client.execute_interactive("import builtins; builtins.planted = True", timeout=5)
        planted += 1
    except Exception:
        pass
    client.stop_channels()
print('FOUND', found, 'PLANTED', planted)
print('POOLED', os.path.exists({site.runtime_dir!r} + '/kernel-{pooled}.json'),
      os.path.exists({site.runtime_dir!r} + '/codebox-boxes/{pooled}'))
""")
    assert "PLANTED 0" in out and "POOLED False False" in out, out
    tenant = LocalBox(sandbox=True)
    try:
        tenant.start()
        assert tenant.kernel_id == pooled  # the next tenant got that very kernel
        assert probe(tenant, "import builtins; print(hasattr(builtins, 'planted'))") == "False\n"
    finally:
        tenant.stop()
    _healthy(site)


CONNECT = """
import socket
s = socket.socket()
s.settimeout(5)
try:
    s.connect(('127.0.0.1', {port}))
    print('CONNECTED', s.recv(16))
except OSError as e:
    print('FAILED', type(e).__name__)
"""


@pytest.fixture(scope="module")
def listener():
    """A service on the host's 127.0.0.1 that greets whoever connects."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"hello")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


THROUGH_THE_PROXY = """
import socket
s = socket.create_connection(('127.0.0.1', 3128), timeout=5)
s.sendall(b'CONNECT host.codebox.internal:{port} HTTP/1.1\\r\\n\\r\\n')
head = b''
while b'\\r\\n\\r\\n' not in head:
    head += s.recv(1)
print('CONNECTED', s.recv(16))
"""


def test_the_probes_succeed_where_nothing_stops_them(listener, tmp_path):
    """The controls: the same probes on plain kernels (and, through its proxy, a sandbox
    whose policy names the host's port) do get through — so the tests above can fail."""
    networked_policy = Sandbox(network=[f"host.codebox.internal:{listener}"])
    with LocalBox(sandbox=False) as attacker, LocalBox(sandbox=False) as victim, \
            LocalBox(sandbox=networked_policy) as networked:
        victim.upload("secret.txt", b"the victim's secret")
        secret = os.path.join(victim.working_dir, "secret.txt")
        assert "READ the victim's secret" in probe(attacker, READ_FILE.format(paths=[secret]))
        gateway = shared_gateway.pid
        assert "READ" in probe(attacker, READ_FILE.format(paths=[f"/proc/{gateway}/cmdline"]))
        assert "CONNECTED b'hello'" in probe(attacker, CONNECT.format(port=listener))
        assert "CONNECTED b'hello'" in probe(networked, THROUGH_THE_PROXY.format(port=listener))
