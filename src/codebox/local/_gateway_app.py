"""The program a `LocalBox` spawns: a Jupyter Kernel Gateway, configured for codebox.

Run as a script (``python path/to/_gateway_app.py``), not with ``-m``: that would import
the codebox package first, ~0.3 s the gateway does not need. So it imports nothing of
codebox, and drops its own directory from ``sys.path``, where codebox's modules would
shadow top-level ones (``jupyter``, ``paths``, ...). The parent writes one JSON line of settings to
our stdin (so the token shows neither in ``ps`` nor in the environment) and keeps the pipe
open: when it closes — the parent stopped us, exited or was killed, even with SIGKILL — we
shut the gateway and its kernels down. We bind the listening socket ourselves and report
the port on stdout (``codebox-gateway-ready <port>``), so the port is the one we really got.

Changes against a stock gateway, each for a measured reason:
- the IOPub rate limit is off: it replaces output above ~1 MB/s with a one-line notice;
- the kernel websocket sets TCP_NODELAY: without it every execution waits ~40 ms on
  delayed ACKs;
- the optional ``rfc3987_syntax`` import of jsonschema is blocked: it builds a grammar at
  import time and costs ~1.2 s of start-up, for a format check the gateway never needs;
  so are its other optional format checkers (~0.1 s more);
- no activity watching of kernels (see `UnwatchedKernelManager`);
- every run's output is bounded, per message and per run, before it is sent on, and the
  websocket applies backpressure (see `_gateway_output`); the limits are the settings'
  ``output_limit``/``message_limit``, tightened by a sandbox policy's ``output_limit``;
- a pool of warm kernels (``POST /codebox/pool`` hands one out and starts a replacement),
  since the gateway's own prespawned kernels are never handed out by ``POST /api/kernels``.
  The first one is launched before the gateway's own imports (see `_head_start`), so the
  first box of a process does not wait for a kernel start after the gateway's. Kernels
  left unused in the pool for ``pool_idle_timeout`` seconds are shut down; the pool dies
  with the gateway;
- ``POST /codebox/install`` ``{"kernel_id", "packages", "timeout"}`` installs packages into a
  sandboxed kernel's box, in an installer sandbox of its own (its provisioner's `install`):
  a box without network can install, and package builds never run unsandboxed.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import shutil
import sys
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import Any

READY = "codebox-gateway-ready"
# Optional format checkers of jsonschema, imported only by its ``_format`` (each under
# ``suppress(ImportError)``): the gateway validates no formats. With arrow (via
# isoduration) they cost ~0.1 s of the gateway's start.
_SLOW_IMPORTS = ("rfc3987_syntax", "rfc3986_validator", "rfc3339_validator", "uri_template",
                 "isoduration", "webcolors", "fqdn")


class _BlockSlowImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.split(".")[0] in _SLOW_IMPORTS:
            raise ImportError(f"{name} is not needed by the codebox gateway")


BACKOFF = (1.0, 60.0)
"""Seconds a pool waits before it launches again after a failed launch: the first, then
doubled at each failure in a row, up to the second."""


class _PoolEntry:
    __slots__ = ("kernel_id", "since", "warm", "warming")

    def __init__(self) -> None:
        self.kernel_id: str | None = None  # known once launched
        self.warm = False  # it has answered and run a first cell
        self.since = time.monotonic()
        self.warming: Any = None  # the task warming it up


class KernelPool:
    """Warm kernels of one kernelspec, started ahead of demand.

    A kernel is handed out as soon as it is launched (the box's websocket waits for it to
    answer), warm ones first. Warming runs a first, silent cell: IPython's first cell costs
    ~10 ms more than the next ones. A template's kernel (``template`` set) is handed out
    only once warm: it has answered, so it has run its preload, which it runs as it starts.
    """

    def __init__(self, km: Any, kernel_name: str, size: int, idle_timeout: float, log: Any,
                 env: dict[str, str] | None = None, template: str | None = None):
        self.km = km
        self.kernel_name = kernel_name
        self.size = size
        self.idle_timeout = idle_timeout
        self.log = log
        self.env = env  # a sandbox's policy travels in the kernel's env (KERNEL_CODEBOX_SANDBOX)
        self.template = template
        self.entries: list[_PoolEntry] = []
        self._tasks: set[Any] = set()  # the loop keeps only weak references to tasks
        self.failures = 0  # launches that failed in a row
        self.resume_at = 0.0  # no launch before (after failures)

    def _spawn(self, work: Any) -> Any:
        import asyncio

        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start_one(self, kernel_id: str | None = None) -> None:
        await self._launch(self._reserve(), kernel_id)

    def _reserve(self) -> _PoolEntry:
        # Counted from now on, before its launch even begins: requests that come meanwhile
        # must not start more kernels than the pool holds.
        entry = _PoolEntry()
        self.entries.append(entry)
        return entry

    async def _launch(self, entry: _PoolEntry, kernel_id: str | None = None) -> None:
        try:
            extra: dict[str, Any] = {} if self.env is None else {"env": dict(self.env)}
            if kernel_id is not None:
                extra["kernel_id"] = kernel_id
            entry.kernel_id = await self.km.start_kernel(kernel_name=self.kernel_name, **extra)
        except Exception as exc:  # noqa: BLE001 - a pool that cannot fill hands out nothing
            self._failed(entry, f"could not start a kernel: {exc}")
            return
        entry.warming = self._spawn(self._warm(entry))

    def _failed(self, entry: _PoolEntry, why: str) -> None:
        """A launch failed: forget it, and wait before the next (1 s, 2 s, ... 60 s)."""
        if entry in self.entries:
            self.entries.remove(entry)
        self.failures += 1
        wait = min(BACKOFF[1], BACKOFF[0] * 2 ** (self.failures - 1))
        self.resume_at = time.monotonic() + wait
        self.log.error("codebox pool (%s): %s; next launch in %g s", self.kernel_name, why,
                       wait)

    async def _warm(self, entry: _PoolEntry) -> None:
        import asyncio

        kernel = self.km.get_kernel(entry.kernel_id)
        # The kernel manager's context: its bounds on what a socket reads and queues hold
        # for this client too.
        client = kernel.client(context=self.km.context)
        # A session of its own: sharing the kernel manager's would share its digest history.
        client.session = type(client.session)(config=kernel.session.config,
                                              key=kernel.session.key)
        client.start_channels()
        failed = False
        try:
            await client.wait_for_ready(timeout=60)
            msg_id = client.execute("import os, tempfile", silent=True, store_history=False)
            while (await client.get_shell_msg(timeout=30))["parent_header"].get("msg_id") != msg_id:
                pass
            entry.warm, entry.since = True, time.monotonic()
            self.failures = 0
        except asyncio.CancelledError:
            pass  # handed out cold: it is its box's now, and this client must not read it
        except Exception:  # noqa: BLE001 - it died or hangs: not one to hand out
            failed = True
        finally:
            client.stop_channels()
        if failed:
            self._failed(entry, f"kernel {entry.kernel_id} did not warm up")
            if entry.kernel_id in self.km:
                await self.km.shutdown_kernel(entry.kernel_id, now=True)

    def fill(self) -> None:
        if time.monotonic() < self.resume_at:
            return  # backing off after failed launches
        for _ in range(self.size - len(self.entries)):
            self._spawn(self._launch(self._reserve()))

    def take(self) -> str | None:
        kernel_id = None
        for entry in sorted(self.entries, key=lambda e: not e.warm):
            if entry.kernel_id is not None and (entry.warm or self.template is None):
                self.entries.remove(entry)
                if entry.warming is not None and not entry.warming.done():
                    entry.warming.cancel()  # its client would read the box's output too
                if entry.kernel_id in self.km:  # it may have died meanwhile
                    kernel_id = entry.kernel_id
                    break
        self.fill()
        return kernel_id

    def describe(self) -> dict[str, Any]:
        warm = [e.kernel_id for e in self.entries if e.warm]
        return {"kernel_name": self.kernel_name, "size": self.size, "warm": warm,
                "starting": len(self.entries) - len(warm), "template": self.template}

    @property
    def idle(self) -> bool:
        return not self.entries

    async def cull(self) -> None:
        now = time.monotonic()
        stale = [e for e in self.entries if e.warm and now - e.since > self.idle_timeout]
        for entry in stale:
            self.entries.remove(entry)
            if entry.kernel_id in self.km:
                await self.km.shutdown_kernel(entry.kernel_id, now=True)


def template_of(kernel_name: str, sandbox: dict[str, Any] | None) -> str | None:
    """The template a pool request is for (imported late: see `_bare_packages`)."""
    from codebox._template_kernel import template_of as find

    return find(kernel_name, sandbox)


SANDBOX_KERNEL = "codebox-sandbox"  # the kernelspec `_gateway.GatewayProcess` writes
_POLICY_ENV = "KERNEL_CODEBOX_SANDBOX"


class Pools:
    """A pool per kernelspec and sandbox policy (so per template too): a kernel is handed
    out only to a box that asks for exactly its kernelspec and policy. A pool is made on
    the first request for its key (that request gets none) and kept while used. A
    template's pool holds ``template_sizes[id]`` kernels, others ``size``."""

    def __init__(self, km: Any, size: int, idle_timeout: float, log: Any,
                 template_sizes: dict[str, int] | None = None) -> None:
        self.km, self.size, self.idle_timeout, self.log = km, size, idle_timeout, log
        self.template_sizes = template_sizes or {}
        self.pools: dict[str, KernelPool] = {}
        self.first = ""  # the key of the pool made at start: kept even when idle

    @staticmethod
    def key(kernel_name: str, sandbox: dict[str, Any] | None) -> str:
        return json.dumps([kernel_name, sandbox], sort_keys=True)

    def get(self, kernel_name: str, sandbox: dict[str, Any] | None) -> KernelPool:
        key = self.key(kernel_name, sandbox)
        pool = self.pools.get(key)
        if pool is None:
            env = None
            template = template_of(kernel_name, sandbox)
            if sandbox is not None:
                kernel_name = SANDBOX_KERNEL
                env = {_POLICY_ENV: json.dumps(sandbox, sort_keys=True)}
            pool = self.pools[key] = KernelPool(self.km, kernel_name, self.size_of(template),
                                                self.idle_timeout, self.log, env, template)
        return pool

    def size_of(self, template: str | None) -> int:
        return self.template_sizes.get(template, self.size) if template else self.size

    def take(self, kernel_name: str, sandbox: dict[str, Any] | None) -> str | None:
        if (not self.size_of(template_of(kernel_name, sandbox))
                or (sandbox is not None and sandbox.get("work_dir"))):
            return None  # a kernel bound to one directory serves one box: no pool
        fresh = self.key(kernel_name, sandbox) not in self.pools
        pool = self.get(kernel_name, sandbox)
        if fresh:
            pool.fill()
            return None
        return pool.take()

    def describe(self) -> dict[str, Any]:
        pools = list(self.pools.values())
        first = pools[0].describe() if pools else {"warm": [], "starting": 0}
        return {**first, "size": self.size, "pools": [p.describe() for p in pools]}

    async def cull(self) -> None:
        for key, pool in list(self.pools.items()):
            await pool.cull()
            if pool.idle and key != self.first:
                del self.pools[key]


INTERRUPT_WAIT = 1.0
"""Most seconds an interrupt request waits for a message-mode kernel to take it."""
_interrupting: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""Kernel manager -> the lock of its interrupts."""


async def _interrupt_by_message(km: Any) -> None:
    """Send ``interrupt_request`` on the control channel and answer once the kernel replied
    (or after `INTERRUPT_WAIT` s). jupyter_client answers as soon as it has sent it, so an
    interrupt meant for a run that is ending could be taken after the next run began, and
    stop that one instead. A kernel that replied has taken it. One at a time per kernel:
    each waits for its own reply on the shared control socket."""
    import asyncio

    import zmq

    async with _interrupting.setdefault(km, asyncio.Lock()):
        msg = km.session.msg("interrupt_request", content={})
        km._connect_control_socket()
        socket = km._control_socket
        km.session.send(socket, msg)
        loop = asyncio.get_running_loop()
        end = loop.time() + INTERRUPT_WAIT
        while (left := end - loop.time()) > 0:
            try:
                if not await socket.poll(left * 1000):
                    return
                _, parts = km.session.feed_identities(await socket.recv_multipart())
                reply = km.session.deserialize(parts, content=False)
            except ValueError:
                continue  # not a message of this session
            except (asyncio.CancelledError, zmq.ZMQError):
                if socket.closed:
                    return  # the kernel was restarted or shut down meanwhile
                raise
            # Replies nobody read (to earlier shutdown requests) are skipped.
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return


def _unread(parts: list[Any]) -> bool:
    """An IOPub message codebox clients never read: ``execute_input``, or a ``busy`` status
    of a request (parentless statuses — starting, restarting, dead — always pass)."""
    header = json.loads(bytes(parts[0]))
    kind = header.get("msg_type")
    if kind == "execute_input":
        return True
    return kind == "status" and len(parts[1]) > 2 and b'"busy"' in bytes(parts[3])


def _build_app(settings: dict[str, Any], head: Any = None) -> Any:
    """The gateway app; ``head`` is the `_head_start.HeadStart` of the first pool kernel."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.utils import ensure_async
    from jupyter_server.services.kernels.connection.channels import (
        ZMQChannelsWebsocketConnection,
    )
    from kernel_gateway.gatewayapp import KernelGatewayApp
    from kernel_gateway.mixins import JSONErrorsMixin, TokenAuthorizationMixin
    from kernel_gateway.services.kernels.manager import SeedingMappingKernelManager
    from tornado import ioloop, netutil, web
    from traitlets.config import Config

    from codebox import _limits
    from codebox._template_kernel import KERNEL_NAME_PREFIX, site_of
    from codebox.local._gateway_output import (
        RECEIVE_QUEUE,
        BoundedOutput,
        Limits,
        max_message_size,
    )
    from codebox.local._head_start import IPYKERNEL_ARGUMENTS, kernel_dirs

    pools: Pools = None  # type: ignore[assignment]  # made with the kernel manager
    limits = Limits(settings.get("output_limit") or _limits.OUTPUT_LIMIT,
                    settings.get("message_limit") or _limits.MESSAGE_LIMIT)

    class PoolHandler(TokenAuthorizationMixin, web.RequestHandler):
        def get(self) -> None:
            self.finish({**pools.describe(), "head_start": head and head.outcome})

        def post(self) -> None:
            body = json.loads(self.request.body or b"{}")
            kernel_id = pools.take(body.get("name") or "python3", body.get("sandbox"))
            if kernel_id is None:
                self.set_status(204)
            else:
                self.finish({"id": kernel_id})

    class InstallHandler(TokenAuthorizationMixin, JSONErrorsMixin, web.RequestHandler):
        async def post(self) -> None:
            try:
                body = json.loads(self.request.body or b"{}")
                kernel = self.settings["kernel_manager"].get_kernel(str(body["kernel_id"]))
                timeout = float(body.get("timeout") or 600.0)
                if not 0 < timeout < 86400:
                    raise ValueError(f"timeout {timeout} s")
            except (ValueError, KeyError, TypeError) as exc:
                raise web.HTTPError(404 if isinstance(exc, KeyError) else 400,
                                    f"codebox install: {exc!r}".replace("%", "%%")) from None
            install = getattr(kernel.provisioner, "install", None)
            if install is None:
                raise web.HTTPError(400, "codebox install: not a codebox-sandbox kernel")
            import asyncio

            self._install = asyncio.ensure_future(install(body.get("packages"), timeout))
            try:
                returncode, output = await self._install
            except ValueError as exc:
                raise web.HTTPError(400, f"codebox install: {exc}".replace("%", "%%")) from None
            except asyncio.CancelledError:  # its installer sandbox was killed
                if self._gone:
                    return  # the box let go
                raise web.HTTPError(409, "codebox install: the kernel was shut down") from None
            self.finish({"returncode": returncode, "output": output})

        _gone = False

        def on_connection_close(self) -> None:
            self._gone = True
            install = getattr(self, "_install", None)
            if install is not None:
                install.cancel()

    class NoDelayConnection(BoundedOutput, ZMQChannelsWebsocketConnection):
        """Kernel websocket with TCP_NODELAY, without the IOPub rate limit, and without the
        two IOPub messages of every execution that codebox never reads (the echo of the
        code and the ``busy`` status): two of five frames of a small run. Output bounded,
        with backpressure (`BoundedOutput`)."""

        def connect(self) -> Any:
            self.websocket_handler.set_nodelay(True)
            return super().connect()

        def _on_zmq_reply(self, stream: Any, msg_list: Any) -> None:
            if getattr(stream, "channel", None) == "iopub" and _unread(msg_list):
                return
            super()._on_zmq_reply(stream, msg_list)

    class UnwatchedKernelManager(SeedingMappingKernelManager):
        """No activity watching: it subscribes to every kernel's IOPub a second time and
        parses each message in full (a quarter of the gateway's CPU under load), to feed an
        idle culler codebox does not use."""

        async def start_kernel(self, *args: Any, **kwargs: Any) -> Any:
            # IPython kernels keep their input history in memory: the shared history file
            # would let one box read another's code (`%history -g`), and with many kernels
            # writing it, SQLite's "database is locked" reaches the user's output.
            name = kwargs.get("kernel_name") or self.default_kernel_name
            try:
                argv = self.kernel_spec_manager.get_kernel_spec(name).argv
            except Exception:  # noqa: BLE001 - unknown: the start reports it
                argv = []
            if any("ipykernel" in part for part in argv):
                kwargs.setdefault("extra_arguments", list(IPYKERNEL_ARGUMENTS))
            kernel_id = await super().start_kernel(*args, **kwargs)
            limits.note(kernel_id, kwargs.get("env"), _POLICY_ENV)
            return kernel_id

        def pre_start_kernel(self, kernel_name: str | None, kwargs: Any) -> Any:
            km, name, kernel_id = super().pre_start_kernel(kernel_name, kwargs)
            if head is not None and kernel_id == head.kernel_id:
                head.arm(km)
            return km, name, kernel_id

        async def shutdown_kernel(self, kernel_id: str, now: bool = False,
                                  restart: bool = False) -> None:
            # A template's plain kernel keeps the packages a box installed beside its
            # connection file (see codebox._template_kernel): they go with the kernel.
            connection_file = getattr(self._kernels.get(kernel_id), "connection_file", "")
            await super().shutdown_kernel(kernel_id, now=now, restart=restart)
            if connection_file and not restart:
                shutil.rmtree(site_of(connection_file), ignore_errors=True)

        async def interrupt_kernel(self, kernel_id: str) -> None:
            km = self.get_kernel(kernel_id)
            spec = km.kernel_spec
            if spec is None or spec.interrupt_mode != "message" or not km.ready.done():
                return await ensure_async(super().interrupt_kernel(kernel_id))
            await _interrupt_by_message(km)

        def start_watching_activity(self, kernel_id: str) -> None:
            kernel = self._kernels[kernel_id]
            kernel.reason = ""
            kernel.last_activity = datetime.now(UTC)
            kernel.execution_state = "idle"
            kernel._activity_stream = None

    class LightKernelSpecManager(KernelSpecManager):
        def _kernel_dirs_default(self) -> list[str]:
            return kernel_dirs()  # the same, without importing IPython

        def _find_spec_directory(self, kernel_name: str) -> str | None:
            # A template's kernelspec is in the template cache of a box that uses it.
            if kernel_name.startswith(KERNEL_NAME_PREFIX) and settings.get("template_roots"):
                with open(settings["template_roots"]) as f:
                    for root in f.read().splitlines():
                        path = os.path.join(root, "kernels", kernel_name)
                        if os.path.isfile(os.path.join(path, "kernel.json")):
                            return path
            found: str | None = super()._find_spec_directory(kernel_name)
            return found

    class CodeBoxGatewayApp(KernelGatewayApp):
        def init_configurables(self) -> None:
            super().init_configurables()
            import zmq

            # No message from a kernel larger than the gateway ever passes is read at all,
            # and few wait in ZMQ's queue while a connection does not read (backpressure).
            context = self.kernel_manager.context
            context.setsockopt(zmq.MAXMSGSIZE, max_message_size(limits.message_limit))
            context.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
            nonlocal pools
            pools = Pools(self.kernel_manager, settings.get("pool_size", 1),
                          settings.get("pool_idle_timeout", 300.0), self.log,
                          settings.get("template_pool_sizes"))
            # The first box's kind of kernel is pooled from the start, and for good.
            first = pools.get(settings.get("kernel_name", "python3"), settings.get("sandbox"))
            pools.first = pools.key(settings.get("kernel_name", "python3"),
                                    settings.get("sandbox"))
            if pools.size:
                # Start the first warm kernel now (adopting the head start's process): it
                # boots while the gateway finishes.
                kernel_id = head.kernel_id if head is not None else None
                self.io_loop.run_sync(lambda: first.start_one(kernel_id))
            if head is not None:
                head.settle()

        def init_webapp(self) -> None:
            super().init_webapp()
            self.web_app.add_handlers(".*$", [(r"/codebox/pool", PoolHandler),
                                              (r"/codebox/install", InstallHandler)])

        def start_app(self) -> None:
            super().start_app()
            if pools.size:
                for pool in pools.pools.values():
                    pool.fill()
                period = max(1.0, min(pools.idle_timeout / 4, 30.0)) * 1000
                ioloop.PeriodicCallback(pools.cull, period).start()
            sys.stdout.write(f"{READY} {self.port}\n")
            sys.stdout.flush()

        def init_http_server(self) -> None:
            from tornado import httpserver

            self.http_server = httpserver.HTTPServer(self.web_app)
            sockets = netutil.bind_sockets(0, self.ip)
            self.http_server.add_sockets(sockets)
            self.port = sockets[0].getsockname()[1]

    config = Config()
    config.KernelGatewayApp.ip = "127.0.0.1"
    config.KernelGatewayApp.port_retries = 0
    config.KernelGatewayApp.auth_token = settings["token"]
    NoDelayConnection.limits = limits
    config.KernelGatewayApp.kernel_websocket_connection_class = NoDelayConnection
    config.KernelGatewayApp.kernel_manager_class = UnwatchedKernelManager
    config.KernelGatewayApp.log_level = "DEBUG" if settings.get("debug") else "WARN"
    config.KernelGatewayApp.kernel_spec_manager_class = LightKernelSpecManager
    config.JupyterWebsocketPersonality.list_kernels = True
    config.ZMQChannelsWebsocketConnection.limit_rate = False
    # A kernel that dies in its first 10 s is otherwise restarted on new ports, which
    # strands every open websocket to it: its messages go to the old ports, forever.
    config.KernelRestarter.random_ports_until_alive = False
    # A kernel that does not exit when asked (stopped, stuck in C code) is killed after 1 s
    # rather than 5: a run's deadline includes restarting such a kernel.
    config.KernelManager.shutdown_wait_time = 1.0
    # A kernel_info reply that never comes holds a websocket's opening this long, then the
    # connection goes on without it: the default, 60 s, is a box's own deadline for the
    # opening, so the box gave up first.
    config.MappingKernelManager.kernel_info_timeout = 10.0
    app = CodeBoxGatewayApp(config=config)
    app.initialize(argv=[])
    return app


def _watch_parent(app: Any) -> None:
    """Stop the gateway when our stdin closes, i.e. when the parent is gone."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    app.io_loop.add_callback(app.stop)
    # If a graceful stop hangs, do not outlive the parent anyway.
    timer = threading.Timer(10.0, os._exit, args=(1,))
    timer.daemon = True
    timer.start()


def _bare_packages(here: str) -> None:
    """Register ``codebox`` and ``codebox.local`` as bare packages. The kernel manager loads
    the sandbox provisioner (``codebox.local._provisioner``, standard library and
    jupyter_client only) from there; the package's ``__init__`` (pydantic, httpx, ...: ~0.3 s
    before the first sandboxed kernel) is not needed here."""
    import types

    for name, path in (("codebox", os.path.dirname(here)), ("codebox.local", here)):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.meta_path.insert(0, _BlockSlowImports())
    _bare_packages(here)
    from codebox.local import _head_start

    line = sys.stdin.buffer.readline()
    if not line:
        sys.exit("codebox gateway: no settings on stdin")
    settings = json.loads(line)
    head = _head_start.launch(settings)  # first, so the kernel boots during our imports
    try:
        app = _build_app(settings, head)
        threading.Thread(target=_watch_parent, args=(app,), daemon=True).start()
        app.start()
    finally:
        if head is not None:
            head.discard()


if __name__ == "__main__":
    main()
