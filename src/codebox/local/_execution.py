"""Code and commands a `LocalBox` runs in its kernel: `execute` (user code), `shell` (a
command the kernel starts) and `install`. Both kinds of run share one way of waiting:
`_collect` takes the kernel's messages until the run is done or its deadline passes, and
`_overtime` ends a run past its deadline — interrupt, and if that does not take, restart
the kernel — within `GRACE`. Pure: generators that yield requests and receive results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .._commands import CommandOutput
from .._engine import Emit, Op, Revoked
from ..errors import CodeBoxConnectionError, CodeBoxError, CodeBoxTimeoutError, GatewayError
from ..schema import CodeBoxOutput, CodeBoxStatus, CommandResult, ExecError, OutputChunk
from ._jupyter import Execution, Message
from ._kernel import (
    KernelConfig,
    KernelGone,
    KernelState,
    ReplyWait,
    call,
    check_finished,
    deadline_after,
    decode,
    healing,
    http,
    interrupt_quietly,
    kernel_lost,
    now,
)
from ._lifecycle import ensure_kernel, restart
from ._requests import Disconnect, Send

MAX_MESSAGE = 10 * 1024 * 1024
"""The largest websocket message a Jupyter server takes (tornado's default): a larger one
closes the kernel connection."""

GRACE = 5.0
"""Seconds past a run's deadline within which the run returns, whatever the kernel does:
the interrupt, and if it does not take, the restart, share them."""

DROPPED = ExecError(name="KeyboardInterrupt",
                    value="the kernel was interrupted as this code began, and dropped it: "
                          "it did not run")

Feed = Callable[[Message], Op[None]]
"""Takes one message of a run (and may emit what it carries)."""


def _collect(st: KernelState, ex: Execution, feed: Feed, deadline: float | None) -> Op[bool]:
    """Feed the kernel's messages until the run ``ex`` is done (True) or the deadline
    passes (False). A run the kernel went idle for but never answered ends as dropped
    (see `Execution.unanswered`) once `REPLY_GRACE` has passed.

    Raises:
        KernelGone: The kernel went away meanwhile.
    """
    wait = ReplyWait(deadline)
    while not ex.done:
        raw = yield from wait.recv(st, ex)
        if raw is None:
            if not wait.dropped:
                return False
            for chunk in ex.unanswered(DROPPED):
                yield Emit(chunk)
            return True
        yield from feed(decode(raw))
    return True


def _overtime(st: KernelState, cfg: KernelConfig, ex: Execution, feed: Feed) -> Op[str]:
    """The run is past its deadline: interrupt it; if it does not stop, restart the kernel.
    Returns ``"interrupted"``, ``"restarted"`` or ``"abandoned"`` (the restart did not
    finish either: the next call sets the kernel up again, or starts a new one)."""
    end = now() + GRACE - 0.5  # what is left for the answer to travel
    yield from interrupt_quietly(st, timeout=1.0)
    try:
        stopped = yield from _collect(st, ex, feed,
                                      deadline_after(min(cfg.interrupt_timeout, GRACE * 0.4)))
    except KernelGone:
        stopped = False
    if stopped and not ex.died:
        return "interrupted"
    try:
        left = max(0.1, end - now())
        yield from restart(st, replace(cfg, start_timeout=left), deadline=end)
        return "restarted"
    except (CodeBoxError, KernelGone):
        st.needs_setup = True
        yield Disconnect()
        return "abandoned"


def _died(value: str) -> ExecError:
    return ExecError(name="KernelDiedError", value=value)


def _ending(ex: Execution, error: ExecError) -> Op[CodeBoxOutput]:
    """End a run with ``error`` (a timeout, a death): its chunk is emitted last, as it is
    the result's last chunk."""
    yield Emit(OutputChunk(type="error", content=str(error)))
    return ex.output(error)


def execute(st: KernelState, cfg: KernelConfig, code: str, timeout: float | None
            ) -> Op[CodeBoxOutput]:
    """Run user code; emit each chunk as it arrives, the closing error included; return the
    `CodeBoxOutput`."""
    msg_id, frame = st.session.execute_request(code)
    if len(frame) > MAX_MESSAGE:
        raise CodeBoxError(f"the code is {len(code.encode('utf-8', 'replace'))} bytes long: "
                           f"a kernel takes messages of at most {MAX_MESSAGE} bytes; upload "
                           "large data as a file instead")
    ex = Execution(msg_id, output_limit=cfg.output_limit)
    try:
        yield from ensure_kernel(st, cfg)
        if not st.lost:
            try:
                yield Send(frame)
            except CodeBoxConnectionError:
                # Nothing was sent: reconnect, and send again only to the same kernel.
                yield from ensure_kernel(st, cfg)
                if not st.lost:
                    yield Send(frame)
    except Revoked:
        return (yield from _ending(ex, _died("the box was stopped before this code ran")))
    if st.lost:
        st.lost = False
        return (yield from _ending(ex, _died(
            "the box lost its kernel (the kernel or its gateway went away): its variables "
            "are gone; this code did not run, and a new kernel is ready")))
    if st.not_restored:
        notice = (f"codebox: this box was restored from snapshot {st.restored_from}; "
                  f"not restored: {', '.join(st.not_restored)}\n")
        st.not_restored = []
        chunk = ex.feed(Message("iopub", "stream", ex.msg_id, {"name": "stderr",
                                                                "text": notice}))
        ex.started = False  # (said by codebox, not by the code)
        if chunk is not None:
            yield Emit(chunk)
    return (yield from _run(st, cfg, ex, timeout))


def _run(st: KernelState, cfg: KernelConfig, ex: Execution, timeout: float | None
         ) -> Op[CodeBoxOutput]:
    def live(msg: Message) -> Op[None]:
        chunk = ex.feed(msg)
        if chunk is not None:
            yield Emit(chunk)

    def quiet(msg: Message) -> Op[None]:
        # Past the deadline the interrupt's own error is not the run's end: TimeoutError is.
        chunk = ex.feed(msg)
        if chunk is not None and chunk.type != "error":
            yield Emit(chunk)

    try:
        if (yield from _collect(st, ex, live, deadline_after(timeout))):
            return (yield from _finished(st, cfg, ex))
        outcome = yield from _overtime(st, cfg, ex, quiet)
    except KernelGone:
        st.lost = False  # said now, by this run
        when = "while running this code" if ex.started else "before this code ran"
        return (yield from _ending(ex, _died(
            f"the kernel went away {when} (deleted, culled, or its gateway restarted without "
            "it): its state is gone; the next run starts a new kernel")))
    except Revoked:
        return (yield from _ending(ex, _died("the box was stopped while this code ran")))
    except CodeBoxConnectionError as exc:
        return (yield from _broken(st, cfg, ex, exc))
    except BaseException:
        # Ctrl-C, task cancelled, stream abandoned: stop the code, not just our waiting.
        if not ex.done:
            yield from interrupt_quietly(st)
        raise
    value = f"the run exceeded its timeout of {timeout:g} s"
    value += {
        "interrupted": " and was interrupted",
        "restarted": (" and did not stop when interrupted; the kernel was restarted and its "
                      "variables are gone"),
        "abandoned": (" and did not stop when interrupted, nor did the kernel restart within "
                      "the grace, so codebox gave up waiting: the next call works on a "
                      "restarted or new kernel, without your variables"),
    }[outcome]
    # The kernel's traceback shows where the code was when it was interrupted; it ends, as a
    # traceback does, with the error the run ended with.
    interrupted = ex.error.traceback if ex.error is not None and ex.error.traceback else ""
    trace = (interrupted.rstrip("\n") + "\n\n" if interrupted else "") + f"TimeoutError: {value}\n"
    return (yield from _ending(ex, ExecError(name="TimeoutError", value=value,
                                             traceback=trace)))


def _finished(st: KernelState, cfg: KernelConfig, ex: Execution) -> Op[CodeBoxOutput]:
    if not ex.died:
        return ex.output()
    kernel_lost(st, ex.died)
    # Gateways may restart a kernel on new ports: reconnect rather than trust the old
    # connection's channels.
    yield Disconnect()
    started: bool | None = True if ex.started else None
    if ex.died == "restarting" and started is None:
        # Its output may have died with it: the restarted kernel says whether it began.
        try:
            yield from ensure_kernel(st, replace(cfg, start_timeout=GRACE))
            started = st.started == ex.msg_id
        except (CodeBoxError, KernelGone):
            pass  # the next call sets it up
    when = {True: "while running this code", False: "before this code started: it did not run",
            None: "after this code was sent (it may have started)"}[started]
    after = ("it was restarted and its variables are gone" if ex.died == "restarting"
             else "the next run starts a new one")
    return (yield from _ending(ex, _died(f"the kernel died {when}; {after}")))


def _broken(st: KernelState, cfg: KernelConfig, ex: Execution, exc: CodeBoxError
            ) -> Op[CodeBoxOutput]:
    """The kernel connection broke under the run: find out whether the kernel lives on."""
    try:
        yield Disconnect()
        if st.stopping():  # its kernel was taken away: no new one for a box being stopped
            return (yield from _ending(ex, _died("the box was stopped while this code ran")))
        yield from ensure_kernel(st, cfg)
    except Revoked:
        return (yield from _ending(ex, _died("the box was stopped while this code ran")))
    if st.lost:
        st.lost = False
        return (yield from _ending(ex, _died(
            f"the connection to the kernel broke ({exc}) and the kernel is gone; a new "
            "kernel is ready, without your variables")))
    return (yield from _ending(ex, _died(
        f"the connection to the kernel broke ({exc}); the kernel lives on, but this run's "
        "further output is lost")))


def shell(st: KernelState, cfg: KernelConfig, command: str | list[str],
          timeout: float | None, cwd: str | None, env: dict[str, str]) -> Op[CommandResult]:
    """Run a command in the box (the kernel starts it, see the dialect's ``shell``); emit
    each piece of its output as it arrives; return the `CommandResult`.

    The kernel ends the command at ``timeout``. Should the kernel not answer by then (plus
    ``interrupt_timeout``), it is interrupted, which ends the command too.
    """
    yield from ensure_kernel(st, cfg)
    assert st.root is not None
    msg_id, frame = st.session.execute_request(
        cfg.dialect.shell(st.root, command, cwd, env, timeout), silent=True)
    ex = Execution(msg_id)
    out = CommandOutput(cfg.output_limit)
    end: dict[str, Any] = {}
    data_type = cfg.dialect.data_msg_type

    def feed(msg: Message) -> Op[None]:
        if msg.parent_id != ex.msg_id or msg.msg_type != data_type:
            ex.feed(msg)
        elif "stream" in msg.content:
            for part in msg.buffers:
                chunk = out.feed(msg.content["stream"], part)
                if chunk is not None:
                    yield Emit(chunk)
        else:
            end.update(msg.content)

    yield Send(frame)
    late = None if timeout is None else timeout + cfg.interrupt_timeout
    try:
        finished = yield from _collect(st, ex, feed, deadline_after(late))
        outcome = "done" if finished else (yield from _overtime(st, cfg, ex, feed))
    except BaseException:
        # Ctrl-C, task cancelled, stream abandoned: the interrupt ends the command.
        if not ex.done:
            yield from interrupt_quietly(st)
        raise
    if outcome in ("restarted", "abandoned"):
        raise CodeBoxTimeoutError(f"shell: the kernel did not end the command within "
                                  f"{timeout:g} s; it was restarted and its variables are gone")
    yield from check_finished(st, ex, "shell")
    if "exit_code" not in end:
        raise CodeBoxError("shell: the kernel ended without the command's exit code")
    for chunk in out.flush():
        yield Emit(chunk)
    return out.result(end["exit_code"], end["timed_out"])


INSTALL_MARGIN = 30.0
"""Seconds past an installer's own deadline for the gateway to answer."""


def install(st: KernelState, cfg: KernelConfig, names: tuple[str, ...], timeout: float
            ) -> Op[CodeBoxStatus]:
    """Install packages into the box. A sandboxed box on codebox's own gateway gets them
    from an installer the gateway runs in a short-lived sandbox of its own, whose egress is
    the package index only (``POST /codebox/install``): the box itself needs no network.
    Elsewhere pip runs in the kernel's interpreter (in a sandbox, through the box's own
    network policy; its packages land inside the box)."""

    def once() -> Op[CodeBoxStatus]:
        yield from ensure_kernel(st, cfg)
        assert st.root is not None and st.address is not None
        if cfg.sandbox is not None and st.address.pool:
            body = yield from http(st, "install", "POST", "/codebox/install",
                                   {"kernel_id": st.kernel_id, "packages": list(names),
                                    "timeout": timeout}, timeout + INSTALL_MARGIN)
            if not isinstance(body, dict) or "returncode" not in body:
                raise GatewayError(f"install: the gateway answered {body!r:.200}")
            result = body
        else:
            if cfg.sandbox is not None and not cfg.sandbox.get("network"):
                raise CodeBoxError(
                    "install in a sandbox without network needs codebox's own gateway (a "
                    "LocalBox without gateway_url): another gateway has no installer sandbox")
            (message,) = yield from call(st, cfg, cfg.dialect.install(st.root, list(names)),
                                         timeout, "install")
            result = message.content
        if result["returncode"] != 0:
            raise CodeBoxError(f"pip could not install {', '.join(names)}:\n"
                               f"{str(result.get('output', '')).strip()}")
        st.installed += [name for name in names if name not in st.installed]
        return CodeBoxStatus(status=f"{', '.join(names)} installed")

    return (yield from healing(once))
