"""The Jupyter Kernel Gateway a `LocalBox` spawns, and the one each process shares.

The gateway runs ``codebox/_gateway_app.py`` in a child process. It never outlives us: its
stdin is a pipe whose only write end we hold, and it shuts itself and its kernels down when
that pipe closes — on `GatewayProcess.close`, at interpreter exit, and when this process is
killed, SIGKILL included, since the kernel closes our end then.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GatewayError
from ..sandbox import resolve
from ..settings import CodeBoxSettings
from ..templates._store import Layout
from . import _boxdisk, _sandbox
from ._cgroups import remove_boxes
from ._gateway_app import READY
from ._kernel_output import escaped

log = logging.getLogger(__name__)

_GATEWAY_APP = str(Path(__file__).with_name("_gateway_app.py"))
LOG_LINE = 4096
"""Most bytes of one line of the gateway's log that are kept."""
# "The sandbox policy of the settings": the default of a user that does not name one.
_FROM_SETTINGS: Any = object()


@dataclass(frozen=True)
class GatewayAddress:
    """Where a gateway answers: its base URL and auth token. ``generation`` changes whenever
    a spawned gateway is replaced, so kernels of the old one are known to be gone."""

    url: str
    token: str | None
    generation: int = 0
    pool: bool = False  # it hands out warm kernels (POST /codebox/pool): ours do


class GatewayProcess:
    """One spawned gateway: 127.0.0.1, a random token, the port it really bound, a private
    runtime directory for its connection files, its log drained into `logging`.

    Raises:
        GatewayError: It exited or did not report ready within ``start_timeout`` seconds.
    """

    def __init__(
        self,
        *,
        start_timeout: float = 60.0,
        debug: bool = False,
        kernel_name: str = "python3",
        pool_size: int = 1,
        pool_idle_timeout: float = 300.0,
        sandbox: dict[str, Any] | None = None,
        template_pool_sizes: dict[str, int] | None = None,
        sandbox_dir: str = "",
        output_limit: int | None = None,
    ) -> None:
        self.token = secrets.token_urlsafe(32)
        self._runtime_dir = tempfile.mkdtemp(prefix="codebox-gateway-")
        self._sandbox_dir = sandbox_dir
        # The sandboxed kernelspec, found through JUPYTER_PATH; trusted: the policies it
        # gets come from this process (only we hold the token), host paths included.
        _sandbox.write_kernelspec(self._runtime_dir, trusted=True, base_dir=sandbox_dir)
        jupyter_path = os.pathsep.join(
            p for p in (self._runtime_dir, os.environ.get("JUPYTER_PATH")) if p)
        # Where the gateway finds templates' kernelspecs: the template cache of every box
        # that uses it (see `know_templates`), one per line.
        self._template_roots: set[str] = set()
        self._roots_file = os.path.join(self._runtime_dir, "codebox-template-roots")
        Path(self._roots_file).touch(mode=0o600)
        self._log_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._ready = threading.Event()
        self.port: int | None = None
        self.url = ""
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=self._runtime_dir, PYTHONUNBUFFERED="1",
                   JUPYTER_PATH=jupyter_path,
                   # Large messages pass through the gateway one after the other: with a
                   # fixed threshold glibc maps each and gives it back when freed, instead
                   # of keeping the largest burst of them in its heap for good.
                   MALLOC_MMAP_THRESHOLD_="131072")
        if output_limit:  # the bound a plain kernel applies to its own output
            env["CODEBOX_KERNEL_OUTPUT_LIMIT"] = str(output_limit)
        self._proc = subprocess.Popen(
            [sys.executable, _GATEWAY_APP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self._runtime_dir,
            env=env,
            # Its own session: a Ctrl-C meant for us must not kill the gateway under a run.
            start_new_session=True,
        )
        assert self._proc.stdin is not None
        options = {
            "token": self.token,
            "debug": debug,
            "kernel_name": kernel_name,
            "pool_size": pool_size,
            "pool_idle_timeout": pool_idle_timeout,
            "sandbox": sandbox,
            "template_pool_sizes": template_pool_sizes or {},
            "template_roots": self._roots_file,
            "output_limit": output_limit,
        }
        self._proc.stdin.write(json.dumps(options).encode() + b"\n")
        self._proc.stdin.flush()
        self._reader = threading.Thread(
            target=self._drain, name=f"codebox-gateway-log-{self._proc.pid}", daemon=True
        )
        self._reader.start()
        if not self._ready.wait(start_timeout) or self.port is None:
            exited = self._proc.poll()
            self.close()
            tail = "\n".join(self._log_tail)
            if exited is None:
                raise GatewayError(
                    f"the Kernel Gateway did not start within {start_timeout:g} s:\n{tail}"
                )
            raise GatewayError(f"the Kernel Gateway exited with code {exited}:\n{tail}")
        self.url = f"http://127.0.0.1:{self.port}"
        log.debug("gateway pid %s ready at %s", self._proc.pid, self.url)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def know_templates(self, root: str) -> None:
        """Let the gateway find the kernelspecs of the templates built under ``root``
        (a template cache: they are in its ``kernels``)."""
        if root not in self._template_roots:
            self._template_roots.add(root)
            with open(self._roots_file, "a") as f:
                f.write(root + "\n")

    def alive(self) -> bool:
        return self._proc.poll() is None

    def refuses(self) -> bool:
        """Whether its port refuses connections: it is exiting (a killed process closes its
        sockets before its last threads end and it can be reaped) or broken. A busy one
        still accepts."""
        assert self.port is not None
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            return False  # no answer in time: busy, not refusing
        return False

    def _drain(self) -> None:
        """Read the gateway's log (and what plain kernels write to their stdout and stderr,
        which they share with it): line by line, each cut to `LOG_LINE` bytes (the rest of
        a longer line is read and dropped), control characters escaped."""
        assert self._proc.stdout is not None
        continued = False  # in the middle of a line longer than LOG_LINE
        while raw := self._proc.stdout.readline(LOG_LINE):
            whole = raw.endswith(b"\n")
            if continued:
                continued = not whole
                continue
            continued = not whole
            line = escaped(raw.rstrip(b"\r\n"), LOG_LINE)
            if not self._ready.is_set() and line.startswith(READY):
                self.port = int(line.split()[1])
                self._ready.set()
                continue
            self._log_tail.append(line)
            log.debug("gateway: %s", line)
        self._ready.set()  # it exited: wake a start that is still waiting

    def _kernels_left(self) -> list[str]:
        """The kernels whose connection files are still here (not shut down), if this
        gateway keeps its boxes outside its runtime directory."""
        if not self._sandbox_dir:
            return []
        return [p.name[len("kernel-"):-len(".json")]
                for p in Path(self._runtime_dir).glob("kernel-*.json")]

    def close(self, timeout: float = 5.0) -> None:
        """Stop the gateway and its kernels: close its stdin (it shuts down by itself), then
        terminate and kill if it takes longer than ``timeout`` seconds. Idempotent."""
        proc = self._proc
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2.0)
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            # The rest of its log; orphaned kernels may hold the pipe open a while longer.
            self._reader.join(min(timeout, 1.0))
        if os.geteuid() == 0:  # what a killed gateway could not clean up of its boxes
            _boxdisk.detach_all(self._runtime_dir)
            for kernel_id in self._kernels_left():  # boxes kept elsewhere: unmounted only
                _boxdisk.detach_all(os.path.join(self._sandbox_dir, kernel_id))
            boxes = Path(self._runtime_dir, "codebox-boxes")
            if boxes.is_dir():
                remove_boxes([p.name for p in boxes.iterdir() if not p.name.startswith(".")])
        shutil.rmtree(self._runtime_dir, ignore_errors=True)


class SharedGateway:
    """The gateway boxes of this process share: spawned on first use, replaced when it died,
    closed when the last box releases it and at interpreter exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: GatewayProcess | None = None
        self._users = 0
        self._generation = 0
        atexit.register(self.close)

    def acquire(
        self, settings: CodeBoxSettings, sandbox: dict[str, Any] | None = _FROM_SETTINGS
    ) -> GatewayAddress:
        """Count one more user and return the gateway's address, spawning it if needed (with
        the settings of this first user; its kind of kernel — ``sandbox`` policy or a plain
        one — is the one pooled from the start)."""
        with self._lock:
            self._users += 1
            try:
                return self._address(settings, sandbox)
            except BaseException:
                self._users -= 1
                raise

    def current(
        self, settings: CodeBoxSettings, sandbox: dict[str, Any] | None = _FROM_SETTINGS,
        *, refused: GatewayAddress | None = None,
    ) -> GatewayAddress:
        """The address for a user that already holds the gateway (respawned if it died).
        ``refused``: an address that could not be reached; if it is the current gateway's
        and that gateway refuses connections, it is on its way out: it is closed and
        replaced."""
        with self._lock:
            proc = self._process
            if (proc is not None and refused is not None
                    and refused.generation == self._generation and proc.alive()
                    and proc.refuses()):
                log.warning("the Kernel Gateway (pid %s) refuses connections; replacing it",
                            proc.pid)
                proc.close(2.0)
                self._process = None
            return self._address(settings, sandbox)

    def _address(
        self, settings: CodeBoxSettings, sandbox: dict[str, Any] | None
    ) -> GatewayAddress:
        proc = self._process
        if proc is None or not proc.alive():
            if proc is not None:
                log.warning("the Kernel Gateway (pid %s) died; starting a new one", proc.pid)
                proc.close(0.1)
            if sandbox is _FROM_SETTINGS:
                policy = resolve(None, settings.sandbox)
                sandbox = policy.policy() if policy is not None else None
            started = time.monotonic()
            self._process = proc = GatewayProcess(
                start_timeout=settings.start_timeout,
                debug=settings.debug,
                kernel_name=settings.kernel_name,
                pool_size=settings.pool_size,
                pool_idle_timeout=settings.pool_idle_timeout,
                sandbox=sandbox,
                template_pool_sizes=dict(settings.template_pool_sizes),
                sandbox_dir=str(settings.sandbox_dir or ""),
                # (Not a box's output_limit: the gateway and its kernels serve every box
                # of the process; each box cuts to its own limits.)
            )
            self._generation += 1
            log.debug("gateway started in %.2f s", time.monotonic() - started)
        proc.know_templates(str(Layout.under(settings.cache_dir).root))
        return GatewayAddress(proc.url, proc.token, self._generation, pool=True)

    def release(self) -> None:
        """One user less; the last one out stops the gateway."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or self._process is None:
                return
            proc, self._process = self._process, None
        proc.close()

    def close(self) -> None:
        with self._lock:
            proc, self._process = self._process, None
            self._users = 0
        if proc is not None:
            proc.close()

    def live_generation(self) -> int | None:
        """The generation of the gateway if it runs, without waiting for the lock (a cheap
        check for callers on an event loop); None if it is gone or being replaced."""
        proc = self._process
        return self._generation if proc is not None and proc.alive() else None

    @property
    def pid(self) -> int | None:
        proc = self._process
        return proc.pid if proc is not None and proc.alive() else None


shared_gateway = SharedGateway()
