"""What a `LocalBox` does, written once for its sync and async twins: pure, no I/O.

Each operation is a generator that *yields I/O requests* (`Http`, `Connect`, `Send`, `Recv`,
...) and receives their results, so its logic — kernel lifecycle, timeouts, interrupts,
deaths, file transfers — lives in one place. `codebox.transport` holds the two drivers
that carry the requests out, one blocking and one on asyncio. A driver throws I/O failures
and cancellations (``KeyboardInterrupt``, ``asyncio.CancelledError``) into the generator at
the request that was under way, so the operation can react (interrupt the kernel) and
re-raise.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from .._commands import CommandOutput, check_command, check_cwd, check_env
from .._paths import check_file_name
from ..errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxTimeoutError,
    GatewayError,
    KernelDiedError,
)
from ..schema import CodeBoxFile, CodeBoxStatus, ExecError, OutputChunk
from . import _jupyter as jupyter
from ._gateway import GatewayAddress
from ._jupyter import Execution, Message, decode_frame
from ._sandbox import KERNEL_NAME as SANDBOX_KERNEL
from ._sandbox import POLICY_ENV as SANDBOX_POLICY_ENV
from ._snippets import DATA_MSG_TYPE, partial_name, snippet

OnProgress = Callable[[int, int], Any]
"""Called with ``(done_bytes, total_bytes)`` as a transfer goes on."""

# -- the I/O requests --------------------------------------------------------------------


@dataclass(frozen=True)
class Gateway:
    """Get the gateway's address (spawning or replacing a gateway if the box owns one).
    ``refused``: the address that could not be reached just now; a gateway the box owns is
    replaced if it refuses connections, even if its process has not exited yet."""

    refused: GatewayAddress | None = None


@dataclass(frozen=True)
class ReleaseGateway:
    """The box no longer needs the gateway it acquired."""


@dataclass(frozen=True)
class Http:
    """A REST call to the gateway; the result is ``(status_code, parsed JSON or None)``."""

    address: GatewayAddress
    method: str
    path: str
    body: dict[str, Any] | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class Connect:
    """Open the kernel websocket (no-op when it is open to that kernel already). Raises
    `CodeBoxNotFoundError` if the kernel is gone, `CodeBoxConnectionError` if unreachable."""

    address: GatewayAddress
    kernel_id: str
    timeout: float = 60.0


@dataclass(frozen=True)
class Disconnect:
    """Close the kernel websocket, if open."""


@dataclass(frozen=True)
class Send:
    """Send one frame on the kernel websocket."""

    frame: bytes


@dataclass(frozen=True)
class Recv:
    """Receive one frame; the result is ``None`` when ``timeout`` seconds pass first."""

    timeout: float | None


@dataclass(frozen=True)
class Emit:
    """Hand one item to the caller (``on_output``, or the stream's consumer): an output
    chunk, or a data message of a snippet whose data is streamed (see `read`)."""

    chunk: OutputChunk | Message


Request = Gateway | ReleaseGateway | Http | Connect | Disconnect | Send | Recv | Emit
Op = Generator[Request, Any, Any]


class StreamAbandoned(Exception):
    """Thrown into a streaming run whose consumer stopped reading: the run is interrupted."""


class KernelGone(KernelDiedError):
    """The gateway no longer has the box's kernel (deleted, culled, or the gateway restarted
    without it): nothing will ever answer on its websocket. The box has let go of it when
    this is raised; operations that can be repeated are, on a fresh kernel."""


PROBE_INTERVAL = 3.0
"""Seconds of silence from the kernel after which the box asks the gateway whether the
kernel still exists: a deleted kernel's websocket may stay open and say nothing, forever."""

MAX_MESSAGE = 10 * 1024 * 1024
"""The largest websocket message a Jupyter server takes (tornado's default): a larger one
closes the kernel connection."""

GRACE = 5.0
"""Seconds past a run's timeout within which the run returns, whatever the kernel does:
the interrupt, and if it does not take, the restart, share them."""

SETUP_PATIENCE = 10.0
"""Seconds of silence after which setting a kernel up is asked again on a new connection."""


# -- the state of one box's kernel ---------------------------------------------------------


@dataclass
class KernelConfig:
    """What a box asks of its kernel."""

    kernel_name: str = "python3"
    root: str | None = None  # the working directory; None: the kernel makes a temporary one
    timeout: float = 60.0
    start_timeout: float = 60.0
    interrupt_timeout: float = 5.0
    output_limit: int | None = None
    chunk_size: int = 8 * 1024 * 1024
    env: dict[str, str] = field(default_factory=dict)  # set in the kernel at every setup
    # Sent as the kernel start's "env": gateways then replace the kernel's environment with
    # theirs plus these (KERNEL_* names and what the operator allows), so None sends none.
    gateway_env: dict[str, str] | None = None
    sandbox: dict[str, Any] | None = None  # the policy of a sandboxed kernel (see _sandbox)


@dataclass
class KernelState:
    """The box's kernel as far as the box knows it."""

    status: str = "stopped"
    address: GatewayAddress | None = None
    kernel_id: str | None = None
    root: str | None = None
    needs_setup: bool = False
    lost: bool = False  # the kernel was replaced and the user has not been told yet
    stopping: bool = False  # stop() is taking the kernel from a run in another thread or task
    session: jupyter.Session = field(default_factory=jupyter.Session)


# -- building blocks -------------------------------------------------------------------------


clock = time.monotonic
"""The clock of every deadline here, looked up at call time (tests put a fake one here)."""


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else clock() + timeout


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - clock())


def http(st: KernelState, what: str, method: str, path: str, body: Any = None,
         timeout: float = 60.0) -> Op:
    """A gateway REST call that must succeed; returns the parsed body."""
    assert st.address is not None
    status, payload = yield Http(st.address, method, path, body, timeout)
    if status < 300:
        return payload
    detail = payload.get("message") or payload.get("reason") if isinstance(payload, dict) else None
    message = f"{what}: the gateway answered HTTP {status}" + (f" ({detail})" if detail else "")
    kind = {401: CodeBoxAuthError, 403: CodeBoxAuthError, 404: CodeBoxNotFoundError}
    raise kind.get(status, GatewayError)(message, http_status=status, json_body=payload)


def ensure_kernel(st: KernelState, cfg: KernelConfig) -> Op:
    """Make sure the box has a live kernel, connected and set up; start one if needed."""
    if st.stopping:
        raise CodeBoxError("the box is being stopped")
    if st.kernel_id is not None and st.address is not None:
        try:
            yield Connect(st.address, st.kernel_id, cfg.start_timeout)
        except (CodeBoxNotFoundError, CodeBoxConnectionError):
            st.kernel_id = None  # the kernel, or its gateway, is gone: start afresh
            st.lost = True
    if st.kernel_id is None:
        st.status = "starting"
        st.address = yield Gateway()
        try:
            st.kernel_id = yield from _new_kernel(st, cfg)
        except CodeBoxConnectionError:
            if not st.address.pool:
                raise  # a gateway given by URL: not ours to replace
            # Ours may be exiting: a killed gateway closes its socket before the last of its
            # threads ends, and only then can it be reaped. Ask again (it is replaced if it
            # refuses connections); on a new one, try once more.
            refused, st.address = st.address, (yield Gateway(refused=st.address))
            if st.address.generation == refused.generation:
                raise
            st.kernel_id = yield from _new_kernel(st, cfg)
        st.needs_setup = True
        yield Connect(st.address, st.kernel_id, cfg.start_timeout)
    if st.needs_setup:
        # A kernel restarted or replaced keeps the box's root, even one the kernel made.
        root = cfg.root if cfg.root is not None else st.root
        code = snippet("setup", root=root, env=cfg.env)
        try:
            data = yield from _set_up(st, cfg, code)
        except KernelGone:
            return (yield from ensure_kernel(st, cfg))
        st.root = data[0].content["root"]
        st.needs_setup = False
    st.status = "running"


def _set_up(st: KernelState, cfg: KernelConfig, code: str) -> Op:
    """Run the setup snippet, asking again on a fresh connection while the kernel is silent.

    A stock gateway that restarts a dead kernel on new ports strands a websocket that
    connected meanwhile: it stays open and silent. Setup is idempotent, so silence for
    `SETUP_PATIENCE` seconds means reconnect and ask again, all within ``start_timeout``.
    """
    end = clock() + (cfg.start_timeout or 60.0)
    while True:
        wait = min(SETUP_PATIENCE, max(0.1, end - clock()))
        try:
            return (yield from call(st, code, wait, "set up"))
        except CodeBoxTimeoutError as exc:
            if clock() + 0.1 >= end:
                raise CodeBoxTimeoutError(
                    f"set up: no answer from the kernel within {cfg.start_timeout:g} s"
                ) from exc
        assert st.address is not None and st.kernel_id is not None
        yield Disconnect()
        yield Connect(st.address, st.kernel_id, max(0.1, end - clock()))


def _new_kernel(st: KernelState, cfg: KernelConfig) -> Op:
    """A kernel for the box: a warm one from the pool, else one started now."""
    kernel_id = yield from _pooled_kernel(st, cfg)
    if kernel_id is None:
        body = yield from http(st, "start a kernel", "POST", "/api/kernels",
                               _kernel_request(cfg), cfg.start_timeout)
        kernel_id = body["id"]
    return kernel_id


def _pooled_kernel(st: KernelState, cfg: KernelConfig) -> Op:
    """A warm kernel from the gateway's pool, if it has one (ours do), else None."""
    assert st.address is not None
    if not st.address.pool:
        return None
    status, body = yield Http(st.address, "POST", "/codebox/pool",
                              {"name": cfg.kernel_name, "sandbox": cfg.sandbox}, cfg.timeout)
    return body["id"] if status == 200 and isinstance(body, dict) else None


def _kernel_request(cfg: KernelConfig) -> dict[str, Any]:
    """The body of ``POST /api/kernels``: a sandbox is the ``codebox-sandbox`` kernelspec,
    its policy in the env (gateways pass ``KERNEL_*`` variables to the provisioner); a
    gateway given by URL also gets `KernelConfig.gateway_env`."""
    if cfg.sandbox is None:
        request: dict[str, Any] = {"name": cfg.kernel_name}
        if cfg.gateway_env is not None:
            request["env"] = cfg.gateway_env
        return request
    policy = json.dumps(cfg.sandbox, sort_keys=True)
    return {"name": SANDBOX_KERNEL,
            "env": {**(cfg.gateway_env or {}), SANDBOX_POLICY_ENV: policy}}


def call(st: KernelState, code: str, timeout: float | None, what: str,
         buffers: tuple[bytes | memoryview, ...] = (),
         on_data: Callable[[Message], None] | None = None) -> Op:
    """Run a codebox snippet silently; return its ``codebox_data`` messages (or hand each to
    ``on_data``). A failure of the snippet raises `CodeBoxError`."""
    calls: dict[str, _Call] = {}
    msg_id = yield from submit(st, calls, code, buffers, on_data)
    return (yield from finish(st, calls, msg_id, timeout, what))


class _Call:
    """A snippet execution in flight: its state and the data it answered with."""

    __slots__ = ("data", "emit", "execution", "on_data")

    def __init__(self, msg_id: str, on_data: Callable[[Message], None] | None,
                 emit: bool = False) -> None:
        self.execution = Execution(msg_id)
        self.data: list[Message] = []
        self.on_data = on_data
        self.emit = emit  # hand each data message to the caller as it comes (`Emit`)


def submit(st: KernelState, calls: dict[str, _Call], code: str,
           buffers: tuple[bytes | memoryview, ...] = (),
           on_data: Callable[[Message], None] | None = None, emit: bool = False) -> Op:
    """Send a snippet without waiting for it; it joins ``calls`` (the ones in flight).

    Snippets in flight stop the kernel's queue on error, so a failed step is the last one
    that runs.
    """
    msg_id, frame = st.session.execute_request(code, silent=True, buffers=buffers,
                                               stop_on_error=True)
    calls[msg_id] = _Call(msg_id, on_data, emit)
    yield Send(frame)
    return msg_id


def finish(st: KernelState, calls: dict[str, _Call], msg_id: str, timeout: float | None,
           what: str) -> Op:
    """Wait for the call ``msg_id`` (routing the messages of the others in ``calls``)."""
    deadline = _deadline(timeout)
    ex = calls[msg_id].execution
    while not ex.done:
        raw = yield from _recv(st, deadline)
        if raw is None:
            yield from interrupt_quietly(st)
            raise CodeBoxTimeoutError(f"{what}: no answer from the kernel within {timeout:g} s")
        msg = decode_frame(raw)
        owner = calls.get(msg.parent_id) if msg.parent_id is not None else None
        if owner is not None and msg.msg_type == DATA_MSG_TYPE:
            if owner.emit:
                yield Emit(msg)
            elif owner.on_data is not None:
                owner.on_data(msg)
            else:
                owner.data.append(msg)
        elif owner is not None:
            owner.execution.feed(msg)
        elif msg.parent_id is None:
            for other in calls.values():  # a parentless restart concerns every call
                other.execution.feed(msg)
    done = calls.pop(msg_id)
    yield from _check_finished(st, ex, what)
    return done.data


def _check_finished(st: KernelState, ex: Execution, what: str) -> Op:
    """Raise the `CodeBoxError` for a snippet that died with its kernel or failed."""
    if ex.died:
        _kernel_lost(st, ex.died)
        yield Disconnect()  # as in `execute`: the restarted kernel may listen elsewhere
        raise KernelDiedError(f"{what}: the kernel died ({ex.died}); its state is gone")
    if ex.error is not None:
        err = ex.error
        kind = CodeBoxNotFoundError if err.name == "FileNotFoundError" else CodeBoxError
        raise kind(f"{what}: {err.name}: {err.value}")


def _kernel_lost(st: KernelState, how: str) -> None:
    """The kernel restarted under us (state gone, set it up again) or is dead for good."""
    st.needs_setup = True
    if how == "dead":
        st.kernel_id = None


def interrupt_quietly(st: KernelState, timeout: float = 5.0) -> Op:
    """Interrupt the kernel, ignoring failures (used while unwinding)."""
    if st.kernel_id is None or st.address is None:
        return
    try:
        yield Http(st.address, "POST", f"/api/kernels/{st.kernel_id}/interrupt", None, timeout)
    except CodeBoxError:
        pass


def _recv(st: KernelState, deadline: float | None) -> Op:
    """The next frame from the kernel, or None once ``deadline`` passed. Each
    `PROBE_INTERVAL` of silence, asks the gateway whether the kernel still exists.

    Raises:
        KernelGone: It does not.
    """
    while True:
        left = _remaining(deadline)
        raw = yield Recv(PROBE_INTERVAL if left is None else min(left, PROBE_INTERVAL))
        if raw is not None or (left is not None and left <= PROBE_INTERVAL):
            return raw
        if (yield from _kernel_gone(st)):
            kernel_id = st.kernel_id
            yield from forget_kernel(st)
            raise KernelGone(f"the kernel went away ({kernel_id} is no longer on its "
                             "gateway: deleted, culled, or the gateway restarted); its state "
                             "is gone, and the next call starts a new kernel")


def _kernel_gone(st: KernelState) -> Op:
    """Whether the gateway says the kernel is gone (unreachable counts as gone: a gateway
    that went away took its kernels with it)."""
    if st.kernel_id is None or st.address is None:
        return True
    try:
        status, _ = yield Http(st.address, "GET", f"/api/kernels/{st.kernel_id}", None,
                               PROBE_INTERVAL)
    except CodeBoxConnectionError:
        return True
    except CodeBoxError:
        return False  # no answer in time: busy, not known to be gone
    return status == 404


def forget_kernel(st: KernelState, *, lost: bool = True) -> Op:
    """Let go of a kernel that is gone: the next operation starts a fresh one, and the next
    run says (once, if ``lost``) that the state went with it."""
    st.kernel_id = None
    st.needs_setup = True
    st.lost = lost
    yield Disconnect()


def _healing(st: KernelState, cfg: KernelConfig, make: Callable[[], Op]) -> Op:
    """Carry out the op ``make()`` makes; if the kernel turns out to be gone, once more on
    a fresh kernel (file operations and installs are safe to repeat; the box's files are
    kept). The next run reports the lost state."""
    try:
        return (yield from make())
    except KernelGone:
        pass  # let go of already
    return (yield from make())


# -- the operations --------------------------------------------------------------------------


def start(st: KernelState, cfg: KernelConfig) -> Op:
    yield from ensure_kernel(st, cfg)
    return CodeBoxStatus(status="started")


def stop(st: KernelState, cfg: KernelConfig, *, remove_root: bool) -> Op:
    """Delete the kernel (after removing its temporary directory, when the kernel made it),
    close the websocket and release the gateway. Never raises for a kernel already gone."""
    if st.kernel_id is not None and st.address is not None:
        if remove_root and st.root is not None and not st.needs_setup:
            try:
                # The box may hold no connection (one that took over a running kernel).
                yield Connect(st.address, st.kernel_id, 5.0)
                yield from call(st, snippet("cleanup", root=st.root), 5.0, "clean up")
            except CodeBoxError:
                pass
        try:
            yield Http(st.address, "DELETE", f"/api/kernels/{st.kernel_id}", None, cfg.timeout)
        except CodeBoxError:
            pass
    yield Disconnect()
    yield ReleaseGateway()
    st.kernel_id = None
    st.root = None
    st.status = "stopped"
    return CodeBoxStatus(status="stopped")


def execute(st: KernelState, cfg: KernelConfig, code: str, timeout: float | None) -> Op:
    """Run user code; emit each chunk as it arrives; return the `CodeBoxOutput`."""
    msg_id, frame = st.session.execute_request(code)
    if len(frame) > MAX_MESSAGE:
        raise CodeBoxError(f"the code is {len(code.encode('utf-8', 'replace'))} bytes long: "
                           f"a kernel takes messages of at most {MAX_MESSAGE} bytes; upload "
                           "large data as a file instead")
    yield from ensure_kernel(st, cfg)
    ex = Execution(msg_id, output_limit=cfg.output_limit)
    if not st.lost:
        try:
            yield Send(frame)
        except CodeBoxConnectionError:
            # Nothing was sent: reconnect, and send again only to the same kernel.
            yield from ensure_kernel(st, cfg)
            if not st.lost:
                yield Send(frame)
    if st.lost:
        st.lost = False
        return ex.output(_died("the box lost its kernel (the kernel or its gateway went "
                               "away); this code did not run, and a new kernel is ready"))
    try:
        finished = yield from _collect(st, ex, _deadline(timeout))
    except KernelGone:
        st.lost = False  # said now, by this run
        when = "while running this code" if ex.started else "before this code ran"
        return ex.output(_died(f"the kernel went away {when} (deleted, culled, or its gateway "
                               "restarted without it): its state is gone; the next run "
                               "starts a new kernel"))
    except CodeBoxConnectionError as exc:
        yield Disconnect()
        if st.stopping:  # its kernel was taken away: no new one for a box being stopped
            return ex.output(_died("the box was stopped while this code ran"))
        # Find out now whether the kernel survived, so this run can say which it was.
        yield from ensure_kernel(st, cfg)
        if st.lost:
            st.lost = False
            return ex.output(_died(f"the connection to the kernel broke ({exc}) and the "
                                   "kernel is gone; a new kernel is ready, without your "
                                   "variables"))
        return ex.output(_died(f"the connection to the kernel broke ({exc}); the kernel "
                               "lives on, but this run's further output is lost"))
    except BaseException:
        # Ctrl-C, task cancelled, stream abandoned: stop the code, not just our waiting.
        if not ex.done:
            yield from interrupt_quietly(st)
        raise
    if finished:
        if ex.died:
            _kernel_lost(st, ex.died)
            # Gateways may restart a kernel on new ports: reconnect rather than trust the
            # old connection's channels.
            yield Disconnect()
            when = ("while running this code" if ex.started else
                    "before this code started (it may not have run)")
            after = ("it was restarted and its variables are gone" if ex.died == "restarting"
                     else "the next run starts a new one")
            return ex.output(_died(f"the kernel died {when}; {after}"))
        return ex.output()
    return (yield from _time_out(st, cfg, ex, timeout))


def _died(value: str) -> ExecError:
    return ExecError(name="KernelDiedError", value=value)


def _collect(st: KernelState, ex: Execution, deadline: float | None) -> Op:
    """Feed messages to ``ex`` until it is done (True) or the deadline passes (False).

    Raises:
        KernelGone: The kernel went away meanwhile.
    """
    while not ex.done:
        raw = yield from _recv(st, deadline)
        if raw is None:
            return False
        chunk = ex.feed(decode_frame(raw))
        if chunk is not None:
            yield Emit(chunk)
    return True


def _time_out(st: KernelState, cfg: KernelConfig, ex: Execution, timeout: float | None) -> Op:
    """The run took too long: interrupt it and keep its output; if it will not stop,
    restart the kernel; if that does not finish either, give up. All within `GRACE`."""
    end = clock() + GRACE - 0.5  # what is left for the answer to travel
    yield from interrupt_quietly(st, timeout=1.0)
    try:
        stopped = yield from _collect(st, ex, _deadline(min(cfg.interrupt_timeout, GRACE * 0.4)))
    except KernelGone:
        stopped = False
    if stopped and not ex.died:
        value = f"the run exceeded its timeout of {timeout:g} s and was interrupted"
        return ex.output(ExecError(name="TimeoutError", value=value))
    value = (f"the run exceeded its timeout of {timeout:g} s and did not stop when "
             "interrupted; ")
    left = max(0.1, end - clock())
    try:
        yield from restart(st, replace(cfg, start_timeout=left), deadline=end)
        value += "the kernel was restarted and its variables are gone"
    except (CodeBoxError, KernelGone):
        # The gateway goes on restarting it, or it is gone: the next call sets up again,
        # or starts a fresh kernel.
        st.needs_setup = True
        yield Disconnect()
        value += (f"the kernel did not restart within {left:.1f} s either, so codebox "
                  "gave up waiting: the next call works on a restarted or new kernel, "
                  "without your variables")
    return ex.output(ExecError(name="TimeoutError", value=value))


def interrupt(st: KernelState, cfg: KernelConfig) -> Op:
    if st.kernel_id is None:
        yield from ensure_kernel(st, cfg)
    try:
        yield from http(st, "interrupt", "POST", f"/api/kernels/{st.kernel_id}/interrupt",
                        None, cfg.timeout)
    except (CodeBoxNotFoundError, GatewayError):
        if not (yield from _kernel_gone(st)):
            raise
        yield from forget_kernel(st)  # nothing runs on a kernel that is gone
    return CodeBoxStatus(status="interrupted")


def restart(st: KernelState, cfg: KernelConfig, deadline: float | None = None) -> Op:
    """A real kernel restart: variables gone, files kept (the same root)."""
    yield from ensure_kernel(st, cfg)
    st.needs_setup = True
    try:
        yield from http(st, "restart", "POST", f"/api/kernels/{st.kernel_id}/restart", {},
                        cfg.start_timeout)
    except (CodeBoxNotFoundError, GatewayError):
        # (A gateway answers 500 to the restart of a kernel it deleted.) Gone already: a
        # fresh kernel is what a restart gives, and the caller expects the variables gone.
        if not (yield from _kernel_gone(st)):
            raise
        yield from forget_kernel(st, lost=False)
    # On the old websocket the restarted kernel's IOPub may not be subscribed yet, and the
    # set-up's idle status is lost (a 60 s wait, ~1 restart in 4). A new websocket is
    # nudged by the gateway until IOPub is live.
    yield Disconnect()
    if deadline is not None:
        cfg = replace(cfg, start_timeout=max(0.1, deadline - clock()))
    yield from ensure_kernel(st, cfg)
    return CodeBoxStatus(status="restarted")


def install(st: KernelState, cfg: KernelConfig, names: tuple[str, ...],
            timeout: float | None) -> Op:
    return (yield from _healing(st, cfg, lambda: _install(st, cfg, names, timeout)))


def _install(st: KernelState, cfg: KernelConfig, names: tuple[str, ...],
            timeout: float | None) -> Op:
    for name in names:
        if not isinstance(name, str) or not name.strip() or name.startswith("-"):
            raise ValueError(f"not a package name: {name!r}")
    if not names:
        raise ValueError("install() needs at least one package name")
    if cfg.sandbox is not None and not cfg.sandbox.get("network"):
        raise CodeBoxError("install needs the network, and this box's sandbox has none: use "
                           "Sandbox(network=True) to let pip download packages")
    yield from ensure_kernel(st, cfg)
    (result,) = yield from call(st, snippet("install", root=st.root, packages=list(names)),
                                timeout, "install")
    if result.content["returncode"] != 0:
        raise CodeBoxError(f"pip could not install {', '.join(names)}:\n"
                           f"{result.content['output'].strip()}")
    return CodeBoxStatus(status=f"{', '.join(names)} installed")


def upload(st: KernelState, cfg: KernelConfig, file_name: str, content: Any,
           timeout: float | None, on_progress: OnProgress | None = None) -> Op:
    return (yield from _healing(st, cfg, lambda: _upload(st, cfg, file_name, content, timeout,
                                                         on_progress)))


def _upload(st: KernelState, cfg: KernelConfig, file_name: str, content: Any,
            timeout: float | None, on_progress: OnProgress | None = None) -> Op:
    name = check_file_name(file_name)
    if isinstance(content, str):
        content = content.encode()
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise ValueError(  # a wrong call is a ValueError throughout the API
            f"content must be bytes or str, not {type(content).__name__}")
    data = memoryview(content).cast("B")
    yield from ensure_kernel(st, cfg)
    size, step = len(data), cfg.chunk_size
    offsets = range(0, size, step) if size else [0]
    what = f"upload {name!r}"
    part = partial_name(name.rsplit("/", 1)[-1])
    calls: dict[str, _Call] = {}
    sizes: dict[str, int] = {}
    done = 0

    def written() -> Op:  # the oldest chunk in flight is on disk
        nonlocal done
        msg_id = next(iter(calls))
        yield from finish(st, calls, msg_id, timeout, what)
        done += sizes.pop(msg_id)
        if on_progress is not None:
            on_progress(done, size)

    if on_progress is not None:
        on_progress(0, size)
    try:
        # Two chunks in flight: the next one travels while the kernel writes this one.
        for offset in offsets:
            code = snippet("write", root=st.root, name=name, part=part, first=offset == 0,
                           last=offset + step >= size)
            chunk = data[offset:offset + step]
            sizes[(yield from submit(st, calls, code, (chunk,) if size else ()))] = len(chunk)
            if len(calls) == 2:
                yield from written()
        while calls:
            yield from written()
    except BaseException:
        if st.kernel_id is not None:  # (a kernel that went away cleans up nothing)
            try:
                yield from call(st, snippet("abort_write", root=st.root, name=name, part=part),
                                5.0, "clean up")
            except CodeBoxError:
                pass
        raise
    return CodeBoxFile(name=name, size=size)


def download(st: KernelState, cfg: KernelConfig, file_name: str, timeout: float | None,
             on_progress: OnProgress | None = None) -> Op:
    return (yield from _healing(st, cfg, lambda: _download(st, cfg, file_name, timeout,
                                                           on_progress)))


def _download(st: KernelState, cfg: KernelConfig, file_name: str, timeout: float | None,
              on_progress: OnProgress | None = None) -> Op:
    name = check_file_name(file_name)
    yield from ensure_kernel(st, cfg)
    # BytesIO hands its buffer over in getvalue() without a copy (a bytearray would need
    # one more copy of the whole file to become bytes).
    buf = io.BytesIO()
    total = 0

    def on_data(msg: Message) -> None:
        nonlocal total
        if "size" in msg.content:
            total = msg.content["size"]
        for part in msg.buffers:
            buf.write(part)
        if on_progress is not None and (msg.buffers or "size" in msg.content):
            on_progress(buf.tell(), max(total, buf.tell()))

    code = snippet("read", root=st.root, name=name, chunk_size=cfg.chunk_size)
    yield from call(st, code, timeout, f"download {name!r}", on_data=on_data)
    content = buf.getvalue()
    buf.close()
    return CodeBoxFile(name=name, size=len(content), content=content)


READ_CHUNK_SIZE = 1024 * 1024
"""Bytes per message of a streamed read: a few of them in flight is all its reader holds."""


def read(st: KernelState, cfg: KernelConfig, file_name: str, timeout: float | None) -> Op:
    """Emit the file's data messages as the kernel sends them (the size first, then the
    content in chunks of at most `READ_CHUNK_SIZE`), never holding the whole file."""
    name = check_file_name(file_name)
    yield from ensure_kernel(st, cfg)
    code = snippet("read", root=st.root, name=name,
                   chunk_size=min(cfg.chunk_size, READ_CHUNK_SIZE))
    calls: dict[str, _Call] = {}
    msg_id = yield from submit(st, calls, code, emit=True)
    yield from finish(st, calls, msg_id, timeout, f"download {name!r}")


def list_files(st: KernelState, cfg: KernelConfig) -> Op:
    return (yield from _healing(st, cfg, lambda: _list_files(st, cfg)))


def _list_files(st: KernelState, cfg: KernelConfig) -> Op:
    yield from ensure_kernel(st, cfg)
    (result,) = yield from call(st, snippet("list", root=st.root), cfg.timeout, "list files")
    files = [CodeBoxFile(name=n, size=s) for n, s in result.content["files"]]
    return sorted(files, key=lambda f: f.name)


def status(st: KernelState) -> CodeBoxStatus:
    return CodeBoxStatus(status=st.status)


# -- shell commands --------------------------------------------------------------------------


def shell(st: KernelState, cfg: KernelConfig, command: Any, *, timeout: float | None,
          cwd: str | None, env: Any) -> Op:
    """Run a command in the box (the kernel starts it, see the ``shell`` snippet); emit each
    piece of its output as it arrives; return the `CommandResult`.

    The kernel ends the command at ``timeout``. Should the kernel not answer by then (plus
    ``interrupt_timeout``), it is interrupted, which ends the command too.
    """
    args = {"command": check_command(command), "cwd": check_cwd(cwd), "env": check_env(env),
            "timeout": timeout}
    yield from ensure_kernel(st, cfg)
    code = snippet("shell", root=st.root, **args)
    msg_id, frame = st.session.execute_request(code, silent=True)
    ex = Execution(msg_id)
    out = CommandOutput(cfg.output_limit)
    end: dict[str, Any] = {}
    yield Send(frame)
    late = None if timeout is None else timeout + cfg.interrupt_timeout
    try:
        finished = yield from _collect_command(st, ex, out, end, _deadline(late))
        if not finished:
            yield from interrupt_quietly(st)
            finished = yield from _collect_command(st, ex, out, end,
                                                   _deadline(cfg.interrupt_timeout))
    except BaseException:
        # Ctrl-C, task cancelled, stream abandoned: the interrupt ends the command.
        if not ex.done:
            yield from interrupt_quietly(st)
        raise
    if not finished:
        yield from restart(st, cfg)
        raise CodeBoxTimeoutError(f"shell: the kernel did not end the command within "
                                  f"{timeout:g} s; it was restarted and its variables are gone")
    yield from _check_finished(st, ex, "shell")
    if "exit_code" not in end:
        raise CodeBoxError("shell: the kernel ended without the command's exit code")
    for chunk in out.flush():
        yield Emit(chunk)
    return out.result(end["exit_code"], end["timed_out"])


def _collect_command(st: KernelState, ex: Execution, out: CommandOutput,
                     end: dict[str, Any], deadline: float | None) -> Op:
    """Take the messages of a command until its snippet is done (True) or the deadline
    passes (False): output pieces are emitted, the final data goes to ``end``."""
    while not ex.done:
        raw = yield from _recv(st, deadline)
        if raw is None:
            return False
        msg = decode_frame(raw)
        if msg.parent_id != ex.msg_id or msg.msg_type != DATA_MSG_TYPE:
            ex.feed(msg)
        elif "stream" in msg.content:
            for part in msg.buffers:
                chunk = out.feed(msg.content["stream"], part)
                if chunk is not None:
                    yield Emit(chunk)
        else:
            end.update(msg.content)
    return True


# -- file operations -------------------------------------------------------------------------


def _file_op(st: KernelState, cfg: KernelConfig, op: str, name: str, what: str,
             **args: Any) -> Op:
    """Run the file snippet ``op`` on the checked ``name``; return its answer."""
    return (yield from _healing(st, cfg, lambda: _file_op_once(st, cfg, op, name, what,
                                                               **args)))


def _file_op_once(st: KernelState, cfg: KernelConfig, op: str, name: str, what: str,
                  **args: Any) -> Op:
    yield from ensure_kernel(st, cfg)
    (result,) = yield from call(st, snippet(op, root=st.root, name=name, **args),
                                cfg.timeout, f"{what} {name!r}")
    return result.content


def _described(name: str, info: dict[str, Any]) -> CodeBoxFile:
    modified = info.get("modified")
    return CodeBoxFile(
        name=name, size=info.get("size"), is_dir=bool(info.get("is_dir")),
        modified=None if modified is None else datetime.fromtimestamp(modified, timezone.utc),
    )


def remove(st: KernelState, cfg: KernelConfig, path: str) -> Op:
    name = check_file_name(path)
    yield from _file_op(st, cfg, "remove", name, "remove")
    return CodeBoxStatus(status=f"{name} removed")


def rename(st: KernelState, cfg: KernelConfig, source: str, destination: str) -> Op:
    name, new = check_file_name(source), check_file_name(destination)
    answer = yield from _file_op(st, cfg, "rename", name, "rename", destination=new)
    return _described(new, answer["info"])


def make_dir(st: KernelState, cfg: KernelConfig, path: str) -> Op:
    name = check_file_name(path)
    answer = yield from _file_op(st, cfg, "make_dir", name, "make directory")
    return _described(name, answer["info"])


def exists(st: KernelState, cfg: KernelConfig, path: str) -> Op:
    name = check_file_name(path)
    answer = yield from _file_op(st, cfg, "exists", name, "check")
    return bool(answer["exists"])


def file_info(st: KernelState, cfg: KernelConfig, path: str) -> Op:
    name = check_file_name(path)
    answer = yield from _file_op(st, cfg, "file_info", name, "describe")
    return _described(name, answer["info"])

