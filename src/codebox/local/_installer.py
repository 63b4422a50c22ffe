"""Installers that never run unsandboxed on the host: a short-lived sandbox of their own
whose only egress is the package index the host's configuration names.

Standard library only: the Kernel Gateway runs it for a box's `install` (`install_for_box`,
on the gateway's loop), and any process may call `run_sandboxed` (template builds do),
which starts the sandbox's proxy on a background thread's loop of its own.

The installer sandbox is a kernel's sandbox without the kernel, built and launched by the
same code (`_sandbox.bwrap_argv`, `_sandbox.launcher_command`): the system and the Python
installation read-only, a private ``/tmp`` (also its ``HOME``: caches die with it), the
paths the caller names (``writable`` and ``read_only``; for a box, its package directory
and its working directory), no user namespace of its own, no capabilities, the seccomp
filter, the box's limits and cgroups, the box's user (as root, see `_boxuser`), a network
namespace with only a loopback, and an `_proxy.EgressProxy` whose policy is
`index_entries`. The index configuration is read on the host (`index_config`: pip's
files and ``PIP_*``, uv's ``UV_*``) and handed to the installer as variables, so what runs
inside reads no configuration file of its own; local indexes and find-links directories
it names are bound in read-only.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import _boxnet, _egress, _proxy, _sandbox

OUTPUT_LIMIT = 64 * 1024
"""The most bytes of an installer's output kept (its end: where pip says what failed)."""
PYPI = "https://pypi.org/simple"
# pip options that say where packages come from and how to fetch them; passed on as PIP_*.
_PIP_KEYS = ("index-url", "extra-index-url", "find-links", "no-index", "trusted-host",
             "cert", "client-cert", "constraint", "timeout", "default-timeout", "retries",
             "prefer-binary", "only-binary", "no-binary", "pre", "no-build-isolation")
_PIP_URLS = ("index-url", "extra-index-url", "find-links")
_PIP_FILES = ("cert", "client-cert", "constraint")
_UV_URLS = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INDEX",
            "UV_FIND_LINKS")
_UV_KEYS = (*_UV_URLS, "UV_NO_INDEX", "UV_INSECURE_HOST", "UV_INDEX_STRATEGY")


@dataclass
class IndexConfig:
    """The host's package index configuration, as an installer sandbox takes it."""

    env: dict[str, str] = field(default_factory=dict)  # PIP_* and UV_* for inside
    entries: list[str] = field(default_factory=list)  # network entries: the index hosts
    read_only: list[str] = field(default_factory=list)  # local indexes, find-links, files


def _pip_config_files(environ: Mapping[str, str], prefix: str, etc: str) -> list[str]:
    """pip's configuration files, in the order it reads them (later ones win)."""
    named = environ.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    xdg = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [os.path.join(d, "pip", "pip.conf") for d in xdg.split(":") if d]
    files.append(os.path.join(etc, "pip.conf"))
    if not (named and os.path.exists(named)):
        home = environ.get("HOME") or os.path.expanduser("~")
        files.append(os.path.join(home, ".pip", "pip.conf"))
        config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        files.append(os.path.join(config_home, "pip", "pip.conf"))
    files.append(os.path.join(prefix, "pip.conf"))
    if named:
        files.append(named)
    return files


def _pip_options(environ: Mapping[str, str], prefix: str, etc: str) -> dict[str, str]:
    """The pip options of `_PIP_KEYS` an ``install`` would use here: files, then PIP_*."""
    options: dict[str, str] = {}
    for path in _pip_config_files(environ, prefix, etc):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue  # pip would refuse it too; the installer says so, not us
        for section in ("global", "install"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    options[key.replace("_", "-").lstrip("-")] = value
    for key, value in environ.items():
        if key.startswith("PIP_"):
            options[key[4:].lower().replace("_", "-")] = value
    return {k: " ".join(v.split()) for k, v in options.items() if k in _PIP_KEYS}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class _Collector:
    """Turns the URLs and paths of a configuration into entries, binds and rewritten URLs."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.read_only: list[str] = []

    def url(self, text: str, index: bool = False) -> str:
        """``text`` as the installer inside must see it (the host's loopback becomes
        ``host.codebox.internal``), noting what it needs. A local ``index`` is bound with
        its parent: a simple index's pages link to files beside it (``../files``)."""
        if "://" not in text:  # a local path (find-links)
            self.path(text)
            return text
        parts = urlsplit(text)
        if parts.scheme == "file":
            path = parts.path.rstrip("/")
            self.path(os.path.dirname(path) if index else path)
            return text
        host = (parts.hostname or "").lower()
        if not host:
            return text
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return text
        ip = _egress.address(host)
        if host == "localhost" or (ip is not None and _egress.classify(ip) == "loopback"):
            host = _egress.HOST
            netloc = parts.netloc.rpartition("@")
            text = urlunsplit(parts._replace(
                netloc=f"{netloc[0]}{netloc[1]}{host}:{port}"))
        entry = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._add(self.entries, entry)
        if host == "pypi.org":  # its files are served from another host
            self._add(self.entries, f"files.pythonhosted.org:{port}")
        return text

    def path(self, text: str) -> None:
        if text and os.path.isabs(text) and os.path.exists(text):
            self._add(self.read_only, text)

    @staticmethod
    def _add(items: list[str], item: str) -> None:
        if item not in items:
            items.append(item)


def index_config(environ: Mapping[str, str] | None = None, prefix: str = sys.prefix,
                 etc: str = "/etc") -> IndexConfig:
    """The host's index configuration (pip's files and ``PIP_*``; uv's ``UV_*``) as an
    installer sandbox needs it: variables, network entries, paths to bind read-only.
    ``prefix`` is the Python installation's (pip reads its ``pip.conf``), ``etc`` where pip
    reads ``pip.conf`` besides ``XDG_CONFIG_DIRS``."""
    environ = os.environ if environ is None else environ
    pip = _pip_options(environ, prefix, etc)
    seen = _Collector()
    env = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}
    if _truthy(pip.get("no-index")):  # pip reads no index then: none to reach
        pip.pop("index-url", None)
        pip.pop("extra-index-url", None)
    else:
        pip.setdefault("index-url", PYPI)
    for key, value in pip.items():
        if key in (*_PIP_URLS, *_PIP_FILES):
            value = " ".join(seen.url(v, index=key.endswith("index-url"))
                             for v in value.split())
        env["PIP_" + key.upper().replace("-", "_")] = value
    uv = {k: environ[k] for k in _UV_KEYS if environ.get(k)}
    if not any(k in uv for k in ("UV_DEFAULT_INDEX", "UV_INDEX_URL")) and "index-url" in pip:
        uv["UV_DEFAULT_INDEX"] = pip["index-url"]
    if not any(k in uv for k in ("UV_INDEX", "UV_EXTRA_INDEX_URL")) and pip.get(
            "extra-index-url"):
        uv["UV_INDEX"] = pip["extra-index-url"]
    if "UV_FIND_LINKS" not in uv and pip.get("find-links"):
        uv["UV_FIND_LINKS"] = ",".join(pip["find-links"].split())
    for key, value in uv.items():
        if key in _UV_URLS:
            sep = "," if key == "UV_FIND_LINKS" else " "
            value = sep.join(seen.url(_index_url(v), index=key != "UV_FIND_LINKS")
                             for v in value.replace(",", " ").split())
        env[key] = value
    return IndexConfig(env, seen.entries, seen.read_only)


def _index_url(text: str) -> str:
    """The URL of a ``UV_INDEX`` item, which may be ``name=URL``."""
    name, eq, url = text.partition("=")
    return url if eq and "://" not in name else text


def index_entries() -> list[str]:
    """The network policy entries of the host's package index configuration: what an
    installer sandbox may reach (``pypi.org:443`` and ``files.pythonhosted.org:443`` when
    nothing else is configured)."""
    return index_config().entries


# -- the sandbox --------------------------------------------------------------------------


async def arun_sandboxed(
    argv: Sequence[str], *, writable: Sequence[str], read_only: Sequence[str],
    env: Mapping[str, str], timeout: float, cwd: str, python: str = sys.executable,
    python_dirs: Sequence[str] | None = None, private: Sequence[str] = (),
    user: tuple[int, int] | None = None, limits: Mapping[str, Any] | None = None,
    entries: Sequence[str] | None = None,
    connect: _proxy.Connector | None = None, resolve: _proxy.Resolver | None = None,
    name: str = "installer",
) -> tuple[int, str]:
    """Run ``argv`` in an installer sandbox; its exit code and the end of its output
    (stdout and stderr together, at most `OUTPUT_LIMIT` bytes).

    Args:
        argv: The command, found on the sandbox's ``PATH`` (``python``'s directory first).
        writable: Host paths bound read-write at the same place (made if missing).
        read_only: Host paths bound read-only (besides the system and Python).
        env: Variables for the command, beside a minimal set, the index configuration's and
            the proxy's.
        timeout: Seconds before the sandbox and everything in it is killed (exit code -9).
        cwd: Where the command starts (inside one of the bound paths).
        python: The interpreter that hands the proxy port over (and first on ``PATH``).
        python_dirs: Its installation's directories (default: this Python's), less any
            that holds a directory of ``private`` (as a kernel's, see `_sandbox.bwrap_argv`).
        user: The uid and gid it runs as (a box's own, see `_boxuser`; None: ours).
        limits: ``memory_mb``, ``max_processes``, ``disk_mb`` as a `Sandbox` has them
            (default: a `Sandbox`'s defaults).
        entries: Its network policy (default: `index_entries`).
        connect, resolve: The proxy's hooks (see `_proxy.EgressProxy`).
        name: Named in the proxy's log lines.
    """
    config = index_config()
    policy = _egress.Policy(list(entries) if entries is not None else config.entries)
    limits = {**_sandbox.DEFAULTS, **(limits or {})}
    bwrap = _sandbox.check()
    for path in writable:
        os.makedirs(path, exist_ok=True)
    inside = {"PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
              "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
              "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "MALLOC_ARENA_MAX": "2",
              **config.env, **_boxnet.proxy_env(), **env}
    with tempfile.TemporaryDirectory(prefix="codebox-installer-") as tmp:
        net_dir = os.path.join(tmp, "net")
        os.mkdir(net_dir, 0o711)  # ``user`` passes through to the proxy's socket
        proxy = _proxy.EgressProxy(policy, _boxnet.socket_path(net_dir), box_id=name,
                                   connect=connect, resolve=resolve)
        seccomp = _sandbox.seccomp_filter()
        # As a kernel's sandbox (`_sandbox.bwrap_argv`), with the paths it is given in
        # place of the kernel's own directories.
        command = _sandbox.bwrap_argv(
            bwrap, limits, program=_boxnet.wrap(list(argv), net_dir, python=python), cwd=cwd,
            env=inside, writable=writable, read_only=[*config.read_only, *read_only],
            python=list(python_dirs) if python_dirs is not None else None,
            private=(tmp, *private), hosts_file=_boxnet.write_hosts(tmp), net_dir=net_dir,
            seccomp_fd=_sandbox.SECCOMP_FD if seccomp is not None else None)
        cgroups = _sandbox.Cgroups(f"codebox-installer-{uuid.uuid4()}", limits)
        try:
            cmd = _sandbox.launcher_command(command, state_dir=Path(tmp), seccomp=seccomp,
                                            cgroups=cgroups, user=user)
            await proxy.start()
            return await _run(cmd, timeout)
        finally:
            await proxy.stop()
            cgroups.kill_all()
            # Its last processes may still be exiting: their cgroups go once they have.
            await asyncio.to_thread(cgroups.remove, 2.0)


async def _run(cmd: list[str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=_sandbox.launcher_env())
    tail = bytearray()

    async def collect() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail.extend(chunk)
            del tail[:-OUTPUT_LIMIT]
        await proc.wait()

    note = ""
    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        note = f"\ncodebox: the installer sandbox was killed after {timeout:g} s"
    finally:
        if proc.returncode is None:  # timed out, or we were cancelled
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, tail.decode("utf-8", "replace") + note


class _Background:
    """An event loop on a daemon thread, for callers without one of their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="codebox-installer",
                                 daemon=True).start()
                self._loop = loop
            return self._loop


_background = _Background()


def run_sandboxed(argv: Sequence[str], *, writable: Sequence[str], read_only: Sequence[str],
                  env: Mapping[str, str], timeout: float, cwd: str,
                  **options: Any) -> tuple[int, str]:
    """Blocking version of `arun_sandboxed`; its proxy runs on a background thread's loop."""
    future = asyncio.run_coroutine_threadsafe(arun_sandboxed(
        argv, writable=writable, read_only=read_only, env=env, timeout=timeout, cwd=cwd,
        **options), _background.loop())
    try:
        return future.result(timeout + 30)
    finally:
        future.cancel()  # (interrupted, or past every deadline: the sandbox is killed)


# -- a box's install ----------------------------------------------------------------------


def check_packages(packages: Any) -> list[str]:
    """``packages`` if it is a list of package names (requirements, paths, URLs), never
    options: a `ValueError` otherwise."""
    if not isinstance(packages, list) or not packages or len(packages) > 256:
        raise ValueError("packages must be a list of 1 to 256 names")
    for name in packages:
        if not isinstance(name, str) or not name.strip() or name.startswith("-") or (
                "\0" in name):
            raise ValueError(f"not a package name: {name!r}")
    return packages


async def install_for_box(packages: list[str], *, python: str, dirs: Mapping[str, str],
                          policy: Mapping[str, Any], timeout: float,
                          python_dirs: Sequence[str] | None = None, private: Sequence[str] = (),
                          user: tuple[int, int] | None = None,
                          name: str = "installer") -> tuple[int, str]:
    """``pip install --target`` ``packages`` into a box's package directory (``site`` of
    `_sandbox.box_dirs`), in an installer sandbox that reads the box's working directory
    (so ``./pkg.whl`` is the box's) and writes nothing else. It runs as the box's kernel
    does: its ``python`` (with ``python_dirs``, less ``private``), its ``user``, its
    limits."""
    argv = [python, "-m", "pip", "install", "--target", dirs["site"], "--no-warn-script-location",
            *check_packages(packages)]
    return await arun_sandboxed(
        argv, writable=[dirs["site"]], read_only=[dirs["work"]], timeout=timeout,
        env={"PYTHONPATH": dirs["site"]}, cwd=dirs["work"], python=python,
        python_dirs=python_dirs, private=private, user=user, limits=policy, name=name)
