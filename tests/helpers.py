"""Helpers for the tests."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx


def processes_with(name: str, value: str) -> list[tuple[int, str]]:
    """Processes (pid, command line) whose environment holds ``name=value``, and their
    descendants (a sandboxed kernel's environment is rebuilt from nothing)."""
    needle = f"{name}={value}".encode()
    marked: set[int] = set()
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[pid] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                marked.add(pid)
        except (OSError, IndexError, ValueError):
            continue

    def descends(pid: int) -> bool:
        seen = set()
        while pid in parents and pid not in seen:
            if pid in marked:
                return True
            seen.add(pid)
            pid = parents[pid]
        return False

    return [(pid, cmd.strip()) for pid, cmd in commands.items()
            if cmd.strip() and descends(pid)]


def our_processes(marker: str | None = None) -> list[tuple[int, str]]:
    """Processes of this test run: their environment carries ``CODEBOX_TEST_RUN``. In an
    xdist worker, this worker's only (its children inherit ``PYTEST_XDIST_WORKER``): the
    other worker's boxes are not this one's to answer for."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if marker is None and worker:
        return processes_with("PYTEST_XDIST_WORKER", worker)
    return processes_with("CODEBOX_TEST_RUN", marker or os.environ["CODEBOX_TEST_RUN"])


def box_leftovers() -> set[str]:
    """What boxes leave on the host if they are not cleaned up: mounts (a sandboxed box's
    own filesystem, as root) and ``codebox-*`` cgroups under this process's cgroups."""
    left = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "codebox" in line.split()[4] or "/boxes/" in line.split()[4]}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            base = Path("/sys/fs/cgroup", controller, path.lstrip("/"))
            if base.is_dir():
                left.update(str(p) for p in base.glob("codebox-*"))
    return left


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kernel_host_pid(run) -> int:
    """The host pid of a kernel, found through a file it holds open: a sandboxed kernel
    knows only its pid inside its own pid namespace. ``run(code)`` returns the text result
    of running ``code`` in the box."""
    name = f"pid-marker-{os.urandom(6).hex()}"
    path = run(f"import os\n_pid_marker = open({name!r}, 'w')\nos.path.abspath({name!r})")
    path = path.strip("'")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == path:
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"no process holds {path} open")


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def make_wheel(tmp_path, name="codebox_probe_pkg"):
    """A minimal pure-Python wheel, so installs need no index."""
    path = tmp_path / f"{name}-1.0-py3-none-any.whl"
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": "ANSWER = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: codebox-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
        f"{dist}/RECORD": "",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
    path.write_bytes(buf.getvalue())
    return path


@contextlib.contextmanager
def stock_kernel_gateway(cwd: Path, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A Jupyter Kernel Gateway with stock settings, started by hand in ``cwd`` with ``env``
    added to ours, for the block: its URL and token."""
    token = secrets.token_hex(16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_gateway", f"--KernelGatewayApp.port={port}",
         "--KernelGatewayApp.ip=127.0.0.1", "--KernelGatewayApp.port_retries=0",
         f"--KernelGatewayApp.auth_token={token}"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, "the stock gateway exited"
        try:
            return httpx.get(f"{url}/api", headers={"Authorization": f"token {token}"},
                             trust_env=False, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, interval=0.1)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(15)


class EchoServer(http.server.ThreadingHTTPServer):
    """An HTTP server on the host's loopback (``port``) that answers every GET with what it
    saw, ``{prefix}{path} Host={Host header}``, and records ``(path, Host)`` in ``seen``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.seen: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Echo)
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class _Echo(http.server.BaseHTTPRequestHandler):
    server: EchoServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers["Host"]))
        body = f"{self.server.prefix}{self.path} Host={self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass
