"""A real `codebox serve`, started as a subprocess on 127.0.0.1 and a free port.

Each server carries its own marker in its environment (``CODEBOX_TEST_SERVER``), which its
gateway and kernels inherit, so a test can tell exactly which processes it left behind.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from tests.helpers import processes_with, wait_until

KEY = "key-one"
OTHER_KEY = "key-two"

START_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0


class ServerProcess:
    """``python -m codebox.cli serve --port 0 ARGS``, ready once it printed its address.

    Raises:
        AssertionError: It exited or said nothing within ``START_TIMEOUT`` seconds.
    """

    live: ClassVar[set[ServerProcess]] = set()  # for the log of a test that fails

    def __init__(self, *args: str, env: dict[str, str] | None = None, log_dir: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.log_path = log_dir / f"server-{self.marker[:8]}.log"
        full_env = {**os.environ, "CODEBOX_TEST_SERVER": self.marker, **(env or {})}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "codebox.cli", "serve", "--port", "0", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=full_env,
                text=True,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            line = self._lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None or "listening on http://" not in line:
            self.kill()
            raise AssertionError(f"codebox serve did not start: {line!r}\n{self.log()}")
        self.announce = line
        ServerProcess.live.add(self)
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.base_url = f"{self.url}/api/v1"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.base_url, headers=headers, trust_env=False,
                            timeout=60)

    def leftovers(self) -> list[tuple[int, str]]:
        """Processes of this server still alive (the server itself included)."""
        return processes_with("CODEBOX_TEST_SERVER", self.marker)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; returns its exit code."""
        ServerProcess.live.discard(self)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"codebox serve did not stop on {sig!r}\n{self.log()}") from None

    def kill(self) -> None:
        """Kill the server and everything it started (for failed tests)."""
        ServerProcess.live.discard(self)
        for pid, _ in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextlib.contextmanager
def running_server(tmp_path_factory, *args: str, env: dict[str, str] | None = None):
    """A server for the block; afterwards it must have stopped on SIGTERM with exit code 0
    and left no process behind."""
    server = ServerProcess(*args, env=env, log_dir=tmp_path_factory.mktemp("server"))
    try:
        yield server
    except BaseException:
        print(f"--- log of codebox serve ---\n{server.log()}")  # shown with the failure
        server.kill()
        raise
    code = server.stop()
    try:
        wait_until(lambda: not server.leftovers(), timeout=15)
    except AssertionError:
        left = server.leftovers()
        server.kill()
        pytest.fail(f"processes left behind by codebox serve: {left}")
    assert code == 0, server.log()
