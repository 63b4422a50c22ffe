"""Stock gateways for the tests and benchmarks: a Jupyter Kernel Gateway and a Jupyter
Enterprise Gateway, each started as it ships, on 127.0.0.1 and a free port.

Enterprise Gateway 3.3 pins jupyter-client 6 and jupyter-server 1, so it cannot share our
venv: it gets one of its own, built once under ``$XDG_CACHE_HOME/codebox-tests`` (default
``~/.cache/codebox-tests``) by the first test run that needs it, or ahead of time with
``python3 -m tests.gateways`` (any Python 3.10+, no packages needed).

Both gateways take their token from the environment (not the command line, where ``ps``
shows it) and hand ``CODEBOX_TEST_RUN`` on to their kernels, so the tests' last check also
finds kernels a gateway left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx  # imported where used: building the venv needs the standard library only

# matplotlib: the conformance suite draws in the kernels, which run in this venv.
EG_REQUIREMENTS = ("jupyter-enterprise-gateway==3.3.0", "ipykernel<6.30", "matplotlib")
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
BUILD_TIMEOUT = 900.0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = Path(base) / "codebox-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def enterprise_gateway_python() -> Path:
    """The Python of a venv holding Enterprise Gateway; built if missing (a few minutes:
    pip downloads its packages), under a lock so that parallel runs build it once."""
    digest = hashlib.sha256(" ".join(EG_REQUIREMENTS).encode()).hexdigest()[:12]
    target = cache_dir() / f"enterprise-gateway-{digest}"
    python = target / "bin" / "python"
    if python.exists():
        return python
    with open(cache_dir() / ".enterprise-gateway.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists():
            return python
        # Built aside and renamed into place: a half-built venv is never taken for a whole one.
        # Its scripts name the temporary path, so it is only ever run as `python -m`.
        building = Path(tempfile.mkdtemp(prefix="building-", dir=cache_dir()))
        try:
            subprocess.run([sys.executable, "-m", "venv", str(building)], check=True,
                           timeout=BUILD_TIMEOUT)
            pip = [str(building / "bin" / "python"), "-m", "pip"]
            subprocess.run([*pip, "install", "-q", *EG_REQUIREMENTS], check=True,
                           timeout=BUILD_TIMEOUT)
            subprocess.run([*pip, "check"], check=True, timeout=BUILD_TIMEOUT)
            building.rename(target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return python


@dataclass
class Gateway:
    """A running stock gateway."""

    kind: str  # "kernel-gateway" or "enterprise-gateway"
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        import httpx

        return httpx.Client(base_url=self.url, trust_env=False, timeout=30,
                            headers={"Authorization": f"token {self.token}"})

    def kernel_ids(self) -> list[str]:
        with self.client() as client:
            response = client.get("/api/kernels")
            response.raise_for_status()
            return [k["id"] for k in response.json()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(kind: str, port: int) -> tuple[list[str], str]:
    """The gateway's command line and the variable it reads its token from."""
    if kind == "enterprise-gateway":
        return [str(enterprise_gateway_python()), "-m", "enterprise_gateway",
                "--ip=127.0.0.1", f"--port={port}", "--port_retries=0",
                "--EnterpriseGatewayApp.list_kernels=True",
                "--EnterpriseGatewayApp.inherited_envs=CODEBOX_TEST_RUN"], "EG_AUTH_TOKEN"
    return [sys.executable, "-m", "kernel_gateway",
            "--KernelGatewayApp.ip=127.0.0.1", f"--KernelGatewayApp.port={port}",
            "--KernelGatewayApp.port_retries=0",
            "--JupyterWebsocketPersonality.list_kernels=True",
            # What docs/deployment.md asks of an operator: else large outputs are replaced
            # by a notice (Enterprise Gateway on jupyter_server 1 does not limit by default).
            "--ZMQChannelsWebsocketConnection.limit_rate=False",
            "--KernelGatewayApp.env_process_whitelist=CODEBOX_TEST_RUN"], "KG_AUTH_TOKEN"


def _start(kind: str, log_dir: Path, runtime_dir: str, extra: tuple[str, ...] = ()) -> Gateway:
    import httpx

    token = secrets.token_urlsafe(16)
    for _ in range(3):  # another process may take the free port first
        port = _free_port()
        argv, token_var = _command(kind, port)
        argv = [*argv, *extra]
        log_path = log_dir / f"{kind}-{port}.log"
        env = {**os.environ, token_var: token, "JUPYTER_RUNTIME_DIR": runtime_dir}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, cwd=runtime_dir)
        gateway = Gateway(kind, f"http://127.0.0.1:{port}", token, proc, log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with gateway.client() as client:
                    if client.get("/api").status_code == 200:
                        return gateway
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling the gateway's REST API until it answers
        if proc.poll() is None:
            _stop(gateway)
            raise AssertionError(f"{kind} did not answer within {START_TIMEOUT} s\n"
                                 f"{gateway.log()}")
    raise AssertionError(f"{kind} exited at start:\n{gateway.log()}")


def _stop(gateway: Gateway) -> None:
    if gateway.proc.poll() is None:
        gateway.proc.send_signal(signal.SIGTERM)  # it shuts its kernels down, then exits
    try:
        gateway.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        gateway.proc.kill()
        gateway.proc.wait(10)
        raise AssertionError(
            f"{gateway.kind} did not stop on SIGTERM\n{gateway.log()}") from None


@contextlib.contextmanager
def running_gateway(kind: str, log_dir: Path, *extra: str) -> Iterator[Gateway]:
    """A stock gateway of ``kind`` for the block, stopped (with its kernels) afterwards;
    ``extra``: more options of its command line."""
    runtime_dir = tempfile.mkdtemp(prefix=f"codebox-test-{kind}-")
    try:
        gateway = _start(kind, log_dir, runtime_dir, extra)
        try:
            yield gateway
        finally:
            _stop(gateway)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


if __name__ == "__main__":
    print(enterprise_gateway_python())
