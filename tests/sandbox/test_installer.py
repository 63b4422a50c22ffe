"""The installer sandbox, run for real: it writes only where it is told, reaches only its
policy's targets (by hooks that record every attempt and connect to 127.0.0.1 only), dies at
its deadline; and the gateway's ``POST /codebox/install`` runs it for a box's kernel."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import threading
from pathlib import Path

import httpx
import pytest

from codebox.local._gateway import GatewayProcess
from codebox.local._installer import OUTPUT_LIMIT, arun_sandboxed, run_sandboxed
from tests.helpers import EchoServer, make_wheel, our_processes, wait_until

PY = sys.executable


@pytest.fixture(scope="module")
def index():
    server = EchoServer(prefix="index ")
    yield server.port
    server.close()


def _hooks(port: int, connects: list):
    async def connect(address: str, port_: int) -> socket.socket:
        connects.append((address, port_))
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        return sock

    async def resolve(host: str, port_: int) -> list[str]:
        return {"index.test": ["203.0.113.9"]}[host]

    return {"connect": connect, "resolve": resolve}


FILES = """
import os
for path, text in [({site!r} + '/made.txt', 'ok'), ({work!r} + '/made.txt', 'no'),
                   ('/tmp/scratch.txt', 'ok'), (os.path.expanduser('~') + '/x', 'ok')]:
    try:
        open(path, 'w').write(text)
        print('WROTE', path)
    except OSError as e:
        print('DENIED', path, e.errno)
print('READ', open({work!r} + '/given.txt').read())
print('SEES SECRET', os.path.exists({secret!r}))
"""


def test_it_writes_only_where_it_is_told(tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    (work / "given.txt").write_text("from the box")
    secret = tmp_path / "secret.txt"  # beside what is bound, not bound itself
    secret.write_text("the host's")
    code, out = run_sandboxed(
        [PY, "-c", FILES.format(site=str(site), work=str(work), secret=str(secret))],
        writable=[str(site)], read_only=[str(work)], env={}, timeout=60, cwd=str(work),
        entries=[])
    assert code == 0, out
    assert f"WROTE {site}/made.txt" in out and f"DENIED {work}/made.txt 30" in out  # EROFS
    assert "WROTE /tmp/scratch.txt" in out and "WROTE /tmp/x" in out  # its HOME is its /tmp
    assert "READ from the box" in out and "SEES SECRET False" in out
    assert (site / "made.txt").read_text() == "ok" and not (work / "made.txt").exists()
    assert not Path("/tmp/scratch.txt").exists() or Path("/tmp/scratch.txt").read_text() != "ok"


NETWORK = """
import os, socket, urllib.request, urllib.error
for url in ['http://index.test:8080/simple/six/', 'http://other.test/', 'http://10.0.0.1/']:
    try:
        print('OK', urllib.request.urlopen(url, timeout=30).read().decode())
    except urllib.error.HTTPError as e:
        print('REFUSED', url, e.code)
for address in [('127.0.0.1', {index}), ('203.0.113.9', 8080)]:
    try:
        socket.create_connection(address, timeout=5)
        print('CONNECTED', address)
    except OSError as e:
        print('FAILED', address[0], e.errno)
print('PROXY', os.environ['HTTPS_PROXY'], 'PIP', os.environ['PIP_CONFIG_FILE'])
"""


def test_its_only_egress_is_its_policy(tmp_path, index):
    connects: list = []

    async def main():
        return await arun_sandboxed(
            [PY, "-c", NETWORK.format(index=index)], writable=[], read_only=[], env={},
            timeout=60, cwd="/tmp", entries=["index.test:8080"], **_hooks(index, connects))

    code, out = asyncio.run(main())
    assert code == 0, out
    assert "OK index /simple/six/" in out
    assert "REFUSED http://other.test/ 403" in out and "REFUSED http://10.0.0.1/ 403" in out
    assert "FAILED 127.0.0.1 111" in out and "FAILED 203.0.113.9 101" in out
    assert "PROXY http://127.0.0.1:3128 PIP /dev/null" in out
    assert connects == [("203.0.113.9", 8080)]


def test_it_is_killed_at_its_deadline_and_its_output_bounded(tmp_path):
    code, out = run_sandboxed([PY, "-c", "print('x' * 1000000, flush=True)\n"
                                         "import time; time.sleep(60)"],
                              writable=[], read_only=[], env={}, timeout=3, cwd="/tmp",
                              entries=[])
    assert code == -9 and out.endswith("killed after 3 s")
    assert OUTPUT_LIMIT <= len(out) <= OUTPUT_LIMIT + 100


@pytest.fixture(scope="module")
def gateway():
    proc = GatewayProcess(pool_size=0)
    yield proc
    proc.close()


def _kernel(gateway, client, name: str) -> str:
    body = {"name": name}
    if name == "codebox-sandbox":
        body["env"] = {"KERNEL_CODEBOX_SANDBOX": "{}"}
    response = client.post("/api/kernels", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_the_gateway_installs_into_a_sandboxed_kernels_box(gateway, tmp_path):
    headers = {"Authorization": f"token {gateway.token}"}
    with httpx.Client(base_url=gateway.url, headers=headers, trust_env=False,
                      timeout=300) as client:
        kernel = _kernel(gateway, client, "codebox-sandbox")
        box = Path(gateway._runtime_dir) / "codebox-boxes" / kernel
        wheel = make_wheel(tmp_path, "codebox_route_pkg")
        (box / "work" / wheel.name).write_bytes(wheel.read_bytes())
        reply = client.post("/codebox/install", json={"kernel_id": kernel,
                                                      "packages": [f"./{wheel.name}"]})
        assert reply.status_code == 200 and reply.json()["returncode"] == 0, reply.text
        assert (box / "home" / "site" / "codebox_route_pkg.py").exists()
        failed = client.post("/codebox/install", json={"kernel_id": kernel,
                                                       "packages": ["./nothing.whl"]})
        assert failed.status_code == 200 and failed.json()["returncode"] != 0
        assert "nothing.whl" in failed.json()["output"]
        bad = [({"kernel_id": "nope", "packages": ["six"]}, 404),
               ({"kernel_id": kernel, "packages": ["-r", "/etc/shadow"]}, 400),
               ({"kernel_id": kernel, "packages": "six"}, 400),
               ({"kernel_id": kernel, "packages": []}, 400),
               ({"kernel_id": kernel, "packages": ["six"], "timeout": -1}, 400),
               ({"packages": ["six"]}, 404),
               ({"kernel_id": _kernel(gateway, client, "python3"), "packages": ["six"]}, 400)]
        for body, status in bad:
            reply = client.post("/codebox/install", json=body)
            assert reply.status_code == status, (body, reply.text)
            assert reply.json()["message"], reply.text  # a JSON error that says why
    anonymous = httpx.post(f"{gateway.url}/codebox/install", trust_env=False,
                           json={"kernel_id": kernel, "packages": ["six"]})
    assert anonymous.status_code in (401, 403)


SLOW_BACKEND = '''
import time
def get_requires_for_build_wheel(config_settings=None):
    time.sleep(600)  # a build that never ends
    return []
'''


def _installers() -> list[int]:
    """Installer sandboxes this test process started (their command names their directory;
    another worker's are not ours to count)."""
    return [pid for pid, cmd in our_processes() if "codebox-installer-" in cmd]


def _slow_package(box: Path) -> None:
    slow = box / "work" / "slow"
    slow.mkdir()
    (slow / "pyproject.toml").write_text(
        '[project]\nname = "slow"\nversion = "1"\n[build-system]\nrequires = []\n'
        'build-backend = "slow_backend"\nbackend-path = ["."]\n')
    (slow / "slow_backend.py").write_text(SLOW_BACKEND)


def test_an_install_ends_with_its_request_or_its_kernel(gateway):
    headers = {"Authorization": f"token {gateway.token}"}
    with httpx.Client(base_url=gateway.url, headers=headers, trust_env=False,
                      timeout=60) as client:
        for ending in ("hang up", "shut the kernel down"):
            assert _installers() == []
            kernel = _kernel(gateway, client, "codebox-sandbox")
            _slow_package(Path(gateway._runtime_dir) / "codebox-boxes" / kernel)
            answer: dict = {}

            def install(kernel=kernel, answer=answer, ending=ending) -> None:
                wait = 3.0 if ending == "hang up" else 60.0
                try:
                    answer["reply"] = client.post(
                        "/codebox/install", json={"kernel_id": kernel, "packages": ["./slow"]},
                        timeout=wait)
                except httpx.TimeoutException:
                    answer["reply"] = None

            thread = threading.Thread(target=install)
            thread.start()
            wait_until(_installers, timeout=30)
            if ending == "shut the kernel down":
                assert client.delete(f"/api/kernels/{kernel}").status_code == 204
            thread.join(60)
            wait_until(lambda: not _installers(), timeout=15)
            if ending == "shut the kernel down":
                assert answer["reply"].status_code == 409, answer["reply"].text
                assert "shut down" in answer["reply"].json()["message"]
            else:
                assert answer["reply"] is None


PROBE_BACKEND = '''
import os
def get_requires_for_build_wheel(config_settings=None):
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    try:
        keys = "%r" % open("/proc/keys").read()
    except OSError as e:
        keys = type(e).__name__
    raise SystemExit("PROBE uid=%d seccomp=%s keys=%s app=%s" % (
        os.getuid(), status["Seccomp"].strip(), keys, os.path.exists({app!r})))
'''


def test_a_boxs_installer_runs_as_its_kernel_does(tmp_path, monkeypatch):
    """Its user, its seccomp filter, its masked /proc; never the caller's import path."""
    app = tmp_path / "app"
    app.mkdir()
    (app / ".env").write_text("CODEBOX_SERVER_API_KEYS=the-real-keys\n")
    monkeypatch.setenv("PYTHONPATH", str(app))
    gateway = GatewayProcess(pool_size=0)  # of its own: our changed PYTHONPATH ends with it
    try:
        with httpx.Client(base_url=gateway.url, trust_env=False, timeout=300,
                          headers={"Authorization": f"token {gateway.token}"}) as client:
            kernel = _kernel(gateway, client, "codebox-sandbox")
            work = Path(gateway._runtime_dir) / "codebox-boxes" / kernel / "work"
            (work / "probe").mkdir()
            (work / "probe" / "pyproject.toml").write_text(_PROBE_PROJECT)
            (work / "probe" / "probe_backend.py").write_text(PROBE_BACKEND.format(app=str(app)))
            reply = client.post("/codebox/install", json={"kernel_id": kernel,
                                                          "packages": ["./probe"]})
            uid = work.stat().st_uid  # the box's user: its kernel's
    finally:
        gateway.close()
    assert reply.status_code == 200 and reply.json()["returncode"] != 0, reply.text
    said = reply.json()["output"]
    # (/proc/keys: the empty /dev/null, or refused, as in a kernel's sandbox)
    assert re.search(rf"PROBE uid={uid} seccomp=2 keys=(''|PermissionError) app=False",
                     said), said
    assert uid != 0 or os.geteuid() != 0  # as root, the box's own user, never root


_PROBE_PROJECT = """[project]
name = "probe"
version = "1"
[build-system]
requires = []
build-backend = "probe_backend"
backend-path = ["."]
"""
