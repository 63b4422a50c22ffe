"""The building blocks of every `LocalBox` operation: the box's kernel as far as the box
knows it, REST calls that must succeed, waiting for frames (and noticing a kernel that went
away), and running a codebox snippet (see `_dialect`). Pure: generators that yield requests
(`_requests`) and receive their results."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._engine import Op
from .._limits import OUTPUT_LIMIT
from ..errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxTimeoutError,
    GatewayError,
    KernelDiedError,
)
from . import _jupyter as jupyter
from ._dialect import IPYTHON, KernelDialect
from ._gateway import GatewayAddress
from ._jupyter import Execution, Message, decode_frame
from ._requests import Disconnect, Http, InterruptKernel, Recv, Send

PROBE_INTERVAL = 3.0
"""Seconds of silence from the kernel after which the box asks the gateway whether the
kernel still exists: a deleted kernel's websocket may stay open and say nothing, forever."""

REPLY_GRACE = 2.0
"""Seconds a request may stay unanswered after its kernel went idle for it: the reply
comes within milliseconds, or the kernel dropped the request (IPython does when an
interrupt lands just as it begins one)."""


class KernelGone(KernelDiedError):
    """The gateway no longer has the box's kernel (deleted, culled, or the gateway restarted
    without it): nothing will ever answer on its websocket. The box has let go of it when
    this is raised; operations that can be repeated are, on a fresh kernel."""


@dataclass
class KernelConfig:
    """What a box asks of its kernel."""

    kernel_name: str = "python3"
    root: str | None = None  # the working directory; None: the kernel makes a temporary one
    timeout: float = 60.0
    start_timeout: float = 60.0
    interrupt_timeout: float = 5.0
    output_limit: int | None = OUTPUT_LIMIT
    chunk_size: int = 8 * 1024 * 1024
    env: dict[str, str] = field(default_factory=dict)  # set in the kernel at every setup
    # Sent as the kernel start's "env": gateways then replace the kernel's environment with
    # theirs plus these (KERNEL_* names and what the operator allows), so None sends none.
    gateway_env: dict[str, str] | None = None
    sandbox: dict[str, Any] | None = None  # the policy of a sandboxed kernel (see _sandbox)
    remove_root: bool = False  # the kernel made the root, and removes it when stopped
    # A sandboxed kernel's own directory on this machine, holding the box's files: a kernel
    # that replaces one lost (its gateway died) works there, so the files are kept.
    kept_root: str | None = None
    # Seconds unused after which a gateway given by URL is asked whether the kernel exists.
    check_after: float = 5.0
    dialect: KernelDialect = IPYTHON


@dataclass
class KernelState:
    """The box's kernel as far as the box knows it."""

    status: str = "stopped"
    address: GatewayAddress | None = None
    kernel_id: str | None = None
    root: str | None = None
    needs_setup: bool = False
    lost: bool = False  # the kernel was replaced and the user has not been told yet
    started: str | None = None  # the last run a died kernel of the box had begun (setup)
    # Said once, on stderr, by the next run: what a restore could not bring back, from which
    # snapshot. (A snapshot taken before it is said carries it on.)
    not_restored: list[str] = field(default_factory=list)
    restored_from: str = ""
    installed: list[str] = field(default_factory=list)  # requirements `install` was given
    # Run once a new kernel is set up (a restore from a snapshot), then forgotten.
    after_setup: Callable[[KernelState, KernelConfig], Op[None]] | None = None
    stopping: Callable[[], bool] = lambda: False  # a stop is taking the box
    last_used: float = 0.0  # monotonic time of the last operation's end
    session: jupyter.Session = field(default_factory=jupyter.Session)


clock = time.monotonic
"""The clock of every deadline of a box's operations (tests put a fake one here)."""


def now() -> float:
    """The time on `clock`, looked up at each call."""
    return clock()


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else now() + timeout


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - now())


def http(st: KernelState, what: str, method: str, path: str, body: Any = None,
         timeout: float = 60.0) -> Op[Any]:
    """A gateway REST call that must succeed; returns the parsed body."""
    assert st.address is not None
    status, payload = yield Http(st.address, method, path, body, timeout)
    if status < 300:
        return payload
    detail = payload.get("message") or payload.get("reason") if isinstance(payload, dict) else None
    message = f"{what}: the gateway answered HTTP {status}" + (f" ({detail})" if detail else "")
    kind = {401: CodeBoxAuthError, 403: CodeBoxAuthError, 404: CodeBoxNotFoundError}
    raise kind.get(status, GatewayError)(message, http_status=status, json_body=payload)


def interrupt_quietly(st: KernelState, timeout: float = 5.0) -> Op[None]:
    """Interrupt the kernel, ignoring failures (used while unwinding)."""
    if st.kernel_id is None or st.address is None:
        return
    try:
        yield InterruptKernel(st.address, "POST", f"/api/kernels/{st.kernel_id}/interrupt", None,
                              timeout)
    except CodeBoxError:
        pass


def recv(st: KernelState, deadline: float | None) -> Op[bytes | str | None]:
    """The next frame from the kernel, or None once ``deadline`` passed. Each
    `PROBE_INTERVAL` of silence, asks the gateway whether the kernel still exists.

    Raises:
        KernelGone: It does not.
    """
    while True:
        left = remaining(deadline)
        raw = yield Recv(PROBE_INTERVAL if left is None else min(left, PROBE_INTERVAL))
        if raw is not None or (left is not None and left <= PROBE_INTERVAL):
            return raw
        yield from check_alive(st)


def decode(raw: bytes | str) -> Message:
    """A frame from the kernel as a message.

    Raises:
        GatewayError: It is not a Jupyter message (a broken or hostile peer).
    """
    try:
        return decode_frame(raw)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise GatewayError(f"the kernel connection sent a malformed message: {exc}") from exc


def check_alive(st: KernelState) -> Op[None]:
    """Raise `KernelGone` (having let go of the kernel) if the gateway says it is gone."""
    if (yield from kernel_gone(st)):
        kernel_id = st.kernel_id
        yield from forget_kernel(st)
        raise KernelGone(f"the kernel went away ({kernel_id} is no longer on its gateway: "
                         "deleted, culled, or the gateway restarted); its state is gone, and "
                         "the next call starts a new kernel")


def kernel_gone(st: KernelState, *, unreachable: bool = True) -> Op[bool]:
    """Whether the gateway says the kernel is gone; an unreachable gateway counts as
    ``unreachable`` (by default gone: a gateway that went away took its kernels with it)."""
    if st.kernel_id is None or st.address is None:
        return True
    try:
        status, _ = yield Http(st.address, "GET", f"/api/kernels/{st.kernel_id}", None,
                               PROBE_INTERVAL)
    except CodeBoxConnectionError:
        return unreachable
    except CodeBoxError:
        return False  # no answer in time: busy, not known to be gone
    return status == 404


def forget_kernel(st: KernelState, *, lost: bool = True) -> Op[None]:
    """Let go of a kernel that is gone: the next operation starts a fresh one, and the next
    run says (once, if ``lost``) that the state went with it."""
    st.kernel_id = None
    st.needs_setup = True
    st.lost = lost
    yield Disconnect()


def kernel_lost(st: KernelState, how: str) -> None:
    """The kernel restarted under us (state gone, set it up again) or is dead for good."""
    st.needs_setup = True
    if how == "dead":
        st.kernel_id = None


def healing(make: Callable[[], Op[Any]]) -> Op[Any]:
    """Carry out the op ``make()`` makes; if the kernel turns out to be gone, once more on
    a fresh kernel (file operations and installs are safe to repeat; the box's files are
    kept). The next run reports the lost state."""
    try:
        return (yield from make())
    except KernelGone:
        pass  # let go of already
    return (yield from make())


# -- snippets: codebox's own code in the kernel ------------------------------------------------


class Call:
    """A snippet execution in flight: its state and the data it answered with."""

    __slots__ = ("data", "emit", "execution", "on_data")

    def __init__(self, msg_id: str, on_data: Callable[[Message], None] | None,
                 emit: Callable[[Message], list[Any]] | None = None) -> None:
        self.execution = Execution(msg_id)
        self.data: list[Message] = []
        self.on_data = on_data
        self.emit = emit  # the requests each data message makes (`Emit`s for a consumer)


def call(st: KernelState, cfg: KernelConfig, code: str, timeout: float | None, what: str,
         buffers: tuple[bytes | memoryview, ...] = (),
         on_data: Callable[[Message], None] | None = None) -> Op[list[Message]]:
    """Run a codebox snippet silently; return its data messages (or hand each to
    ``on_data``). A failure of the snippet raises `CodeBoxError`."""
    calls: dict[str, Call] = {}
    msg_id = yield from submit(st, calls, code, buffers, on_data)
    return (yield from finish(st, cfg, calls, msg_id, timeout, what))


def submit(st: KernelState, calls: dict[str, Call], code: str,
           buffers: tuple[bytes | memoryview, ...] = (),
           on_data: Callable[[Message], None] | None = None,
           emit: Callable[[Message], list[Any]] | None = None) -> Op[str]:
    """Send a snippet without waiting for it; it joins ``calls`` (the ones in flight).

    Snippets in flight stop the kernel's queue on error, so a failed step is the last one
    that runs.
    """
    msg_id, frame = st.session.execute_request(code, silent=True, buffers=buffers,
                                               stop_on_error=True)
    calls[msg_id] = Call(msg_id, on_data, emit)
    yield Send(frame)
    return msg_id


class ReplyWait:
    """The wait for the reply to one request: until ``deadline``, or until `REPLY_GRACE`
    after the kernel went idle for the request without answering it (``dropped``: an
    interrupt that landed as it began)."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.idle_since: float | None = None
        self.dropped = False

    def recv(self, st: KernelState, ex: Execution) -> Op[Any]:
        """The next message (raw), or None: the deadline passed, or the request was
        dropped."""
        if ex.idle and ex.reply is None and self.idle_since is None:
            self.idle_since = now()
        wait = self.deadline
        if self.idle_since is not None:
            wait = min(self.idle_since + REPLY_GRACE, self.deadline or float("inf"))
        raw = yield from recv(st, wait)
        self.dropped = raw is None and wait != self.deadline
        return raw


def finish(st: KernelState, cfg: KernelConfig, calls: dict[str, Call], msg_id: str,
           timeout: float | None, what: str) -> Op[list[Message]]:
    """Wait for the call ``msg_id`` (routing the messages of the others in ``calls``)."""
    ex = calls[msg_id].execution
    data_type = cfg.dialect.data_msg_type
    wait = ReplyWait(deadline_after(timeout))
    while not ex.done:
        raw = yield from wait.recv(st, ex)
        if raw is None:
            if wait.dropped:
                raise CodeBoxError(f"{what}: the kernel dropped the request (it went idle "
                                   "without answering: an interrupt as it began)")
            yield from interrupt_quietly(st)
            raise CodeBoxTimeoutError(f"{what}: no answer from the kernel within {timeout:g} s")
        msg = decode(raw)
        owner = calls.get(msg.parent_id) if msg.parent_id is not None else None
        if owner is not None and msg.msg_type == data_type:
            if owner.emit is not None:
                # (Not `yield from`: a list would be sent the requests' results.)
                for request in owner.emit(msg):  # noqa: UP028
                    yield request
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
    yield from check_finished(st, ex, what)
    return done.data


def check_finished(st: KernelState, ex: Execution, what: str) -> Op[None]:
    """Raise the `CodeBoxError` for a snippet that died with its kernel or failed."""
    if ex.died:
        kernel_lost(st, ex.died)
        yield Disconnect()  # the restarted kernel may listen elsewhere
        raise KernelDiedError(f"{what}: the kernel died ({ex.died}); its state is gone")
    if ex.error is not None:
        err = ex.error
        kind = CodeBoxNotFoundError if err.name == "FileNotFoundError" else CodeBoxError
        raise kind(f"{what}: {err.name}: {err.value}")
