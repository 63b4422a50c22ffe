"""The box operations, carried out by the engine's sync and async runners over a scripted
kernel instead of real I/O (and the real Jupyter transports where they meet a socket).

They cover what real kernels produce only slowly or rarely: an interrupt that does not
take, a kernel that is dead for good, a connection that drops, a cancelled run.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

import pytest

from codebox import _engine as engine
from codebox.errors import (
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    GatewayError,
)
from codebox.local import _execution as execution
from codebox.local import _kernel as kernel_ops
from codebox.local import _lifecycle as lifecycle
from codebox.local._dialect import DATA_MSG_TYPE
from codebox.local._gateway import GatewayAddress
from codebox.local._jupyter import encode_frame
from codebox.local._requests import Connect, Disconnect, Gateway, Http, Recv, ReleaseGateway, Send
from codebox.local._transport import AsyncJupyterTransport, JupyterTransport


def frame(msg_type: str, content: dict, parent: str | None, channel: str = "iopub") -> bytes:
    header = {"msg_id": f"m-{msg_type}", "msg_type": msg_type}
    return encode_frame(channel, header, content,
                        parent_header={"msg_id": parent} if parent else {})


def finished(parent: str, **reply) -> list[bytes]:
    return [frame("execute_reply", {"status": "ok", "execution_count": 1, **reply}, parent,
                  "shell"),
            frame("status", {"execution_state": "idle"}, parent)]


class ScriptedKernel:
    """Answers an op's requests; ``on_run`` decides what a user execution produces."""

    def __init__(self, on_run=None, on_interrupt=None):
        self.requests: list = []
        self.inbox: deque = deque()
        self.on_run = on_run or (lambda msg_id: finished(msg_id))
        self.on_interrupt = on_interrupt or (list)
        self.kernels = 0
        self.last_run: str | None = None

    def answer(self, req):
        self.requests.append(req)
        if isinstance(req, Gateway):
            return GatewayAddress("http://gateway.test", "t", 1)
        if isinstance(req, Http):
            if req.path == "/api/kernels":
                self.kernels += 1
                return 201, {"id": f"k{self.kernels}"}
            if req.path.endswith("/interrupt"):
                self.inbox.extend(self.on_interrupt())
                return 204, None
            return 200, {}
        if isinstance(req, Send):
            header = json.loads(_part(req.frame, 1))
            content = json.loads(_part(req.frame, 4))
            msg_id = header["msg_id"]
            if content["silent"]:  # a codebox snippet: answer as the kernel would
                self.inbox.append(frame(DATA_MSG_TYPE, {"root": "/box"}, msg_id))
                self.inbox.extend(finished(msg_id))
            else:
                self.last_run = msg_id
                self.inbox.extend(self.on_run(msg_id))
            return None
        if isinstance(req, Recv):
            item = self.inbox.popleft() if self.inbox else None  # empty: the wait times out
            if isinstance(item, BaseException):
                raise item
            return item
        return None

    def drive(self, op, throw_at_recv: BaseException | None = None, flavour: str = "sync",
              on_output=None):
        """Carry ``op`` out with the engine's runner of ``flavour``, its I/O answered here."""

        def do(req):
            nonlocal throw_at_recv
            if throw_at_recv is not None and isinstance(req, Recv) and self.last_run:
                exc, throw_at_recv = throw_at_recv, None
                raise exc
            return self.answer(req)

        if flavour == "sync":
            return engine.run(op, engine.ScriptedTransport(do), on_output)

        async def main():
            return await engine.arun(op, engine.AsyncScriptedTransport(do), on_output)

        return asyncio.run(main())

    def paths(self) -> list[str]:
        """The REST calls that act on a kernel, in order (``GET``s, the checks whether a
        kernel still exists, left out: a box asks whenever its kernel sat unused a while)."""
        return [r.path for r in self.requests if isinstance(r, Http) and r.method != "GET"]

    def kinds(self) -> list[str]:
        """The kinds of requests, in order (``GET`` checks left out, as in `paths`)."""
        return [type(r).__name__ for r in self.requests
                if not (isinstance(r, Http) and r.method == "GET")]


def _part(raw: bytes, index: int) -> bytes:
    offsets = [int.from_bytes(raw[8 * i: 8 * i + 8], "little")
               for i in range(1, int.from_bytes(raw[:8], "little") + 1)]
    return raw[offsets[index]:offsets[index + 1]]


CFG = kernel_ops.KernelConfig(interrupt_timeout=0.01)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_run_that_will_not_stop_gets_its_kernel_restarted(flavour):
    kernel = ScriptedKernel(on_run=lambda msg_id: [
        frame("stream", {"name": "stdout", "text": "partial\n"}, msg_id)])  # never finishes
    st = kernel_ops.KernelState()
    out = kernel.drive(execution.execute(st, CFG, "while True: pass", timeout=0.01),
                       flavour=flavour)
    assert out.error.name == "TimeoutError" and "restarted" in out.error.value
    assert out.stdout == "partial\n"
    assert kernel.paths()[-2:] == ["/api/kernels/k1/interrupt", "/api/kernels/k1/restart"]
    assert st.status == "running" and not st.needs_setup  # set up again after the restart


def test_an_interrupt_that_takes_keeps_the_kernel():
    runs = []
    kernel = ScriptedKernel(
        on_run=lambda msg_id: runs.append(msg_id) or [
            frame("stream", {"name": "stdout", "text": "x\n"}, msg_id)],
        on_interrupt=lambda: [
            frame("error", {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []},
                  runs[-1]),
            *finished(runs[-1], status="error", ename="KeyboardInterrupt", evalue=""),
        ])
    out = kernel.drive(execution.execute(kernel_ops.KernelState(), CFG, "slow()", timeout=0.01))
    assert out.error.name == "TimeoutError" and "restarted" not in out.error.value
    assert [c.type for c in out.chunks] == ["stdout", "error"]  # the interrupt's error replaced
    assert not any(p.endswith("/restart") for p in kernel.paths())


def test_a_kernel_dead_for_good_is_replaced_on_the_next_run():
    kernel = ScriptedKernel(on_run=lambda msg_id: [
        frame("status", {"execution_state": "dead"}, None)])
    st = kernel_ops.KernelState()
    out = kernel.drive(execution.execute(st, CFG, "boom()", timeout=None))
    assert out.error.name == "KernelDiedError" and "new one" in out.error.value
    assert st.kernel_id is None
    kernel.on_run = lambda msg_id: [frame("execute_result", {"data": {"text/plain": "2"}},
                                          msg_id), *finished(msg_id)]
    assert kernel.drive(execution.execute(st, CFG, "1+1", timeout=None)).content == "2"
    assert st.kernel_id == "k2" and kernel.paths().count("/api/kernels") == 2


def test_a_dropped_connection_to_a_live_kernel_says_the_kernel_lives_on():
    kernel = ScriptedKernel(on_run=lambda msg_id: [CodeBoxConnectionError("closed")])
    st = kernel_ops.KernelState()
    out = kernel.drive(execution.execute(st, CFG, "x", timeout=None))
    assert out.error.name == "KernelDiedError" and "lives on" in out.error.value
    kinds = kernel.kinds()
    assert kinds[kinds.index("Disconnect"):][:2] == ["Disconnect", "Connect"]  # it checked
    assert st.kernel_id == "k1" and not st.lost


def test_a_dropped_connection_to_a_lost_kernel_starts_a_new_one_and_says_so():
    class Vanishing(ScriptedKernel):
        def answer(self, req):
            if isinstance(req, Connect) and self.last_run and req.kernel_id == "k1":
                self.requests.append(req)
                raise CodeBoxNotFoundError("kernel k1 is gone")
            return super().answer(req)

    kernel = Vanishing(on_run=lambda msg_id: [CodeBoxConnectionError("closed")])
    st = kernel_ops.KernelState()
    out = kernel.drive(execution.execute(st, CFG, "x", timeout=None))
    assert "kernel is gone" in out.error.value and "new kernel" in out.error.value
    assert st.kernel_id == "k2" and not st.lost  # told once, not again on the next run
    kernel.on_run = lambda msg_id: finished(msg_id)
    assert kernel.drive(execution.execute(st, CFG, "y", timeout=None)).error is None


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("exc", [asyncio.CancelledError(), KeyboardInterrupt()])
def test_a_cancelled_run_interrupts_the_kernel_and_reraises(exc, flavour):
    kernel = ScriptedKernel(on_run=lambda msg_id: [])
    with pytest.raises(type(exc)):
        kernel.drive(execution.execute(kernel_ops.KernelState(), CFG, "x", timeout=None),
                     throw_at_recv=exc, flavour=flavour)
    assert kernel.paths()[-1] == "/api/kernels/k1/interrupt"


def test_stop_releases_everything_even_for_a_kernel_already_gone():
    kernel = ScriptedKernel()
    st = kernel_ops.KernelState()
    kernel.drive(lifecycle.start(st, CFG))
    assert st.root == "/box" and st.status == "running"
    assert kernel.drive(lifecycle.stop(st, CFG)) == "stopped"  # CFG.remove_root is False
    assert any(isinstance(r, ReleaseGateway) for r in kernel.requests)
    assert kernel.paths()[-1] == "/api/kernels/k1" and st.kernel_id is None


def test_deadlines_follow_the_injected_clock(monkeypatch):
    monkeypatch.setattr(kernel_ops, "PROBE_INTERVAL", 60.0)  # no probe of the gateway between
    now = [100.0]
    monkeypatch.setattr(kernel_ops, "clock", lambda: now[0])
    waits: list = []

    class Slow(ScriptedKernel):
        def answer(self, req):
            if isinstance(req, Recv) and self.last_run:
                waits.append(req.timeout)
                now[0] += 4.0  # each message takes 4 s of the run's 10
            return super().answer(req)

    kernel = Slow(on_run=lambda msg_id: [
        *(frame("stream", {"name": "stdout", "text": f"{i}\n"}, msg_id) for i in range(2)),
        *finished(msg_id)])
    out = kernel.drive(execution.execute(kernel_ops.KernelState(), CFG, "x", timeout=10))
    # Each wait is what is left of the run's 10 s on that clock, never below zero.
    assert waits == [10.0, 6.0, 2.0, 0.0]
    assert out.stdout == "0\n1\n"


def test_code_too_large_for_a_kernel_message_is_refused_before_any_request():
    kernel = ScriptedKernel()
    with pytest.raises(CodeBoxError, match="at most 10485760 bytes"):
        kernel.drive(execution.execute(kernel_ops.KernelState(), CFG,
                                       "#" * execution.MAX_MESSAGE, timeout=None))
    assert kernel.requests == []


def test_a_silent_kernel_that_the_gateway_no_longer_has_ends_the_run_and_is_forgotten(
        monkeypatch):
    class Deleted(ScriptedKernel):
        def answer(self, req):
            if isinstance(req, Http) and req.method == "GET":
                self.requests.append(req)
                return 404, {"message": "Kernel does not exist"}
            return super().answer(req)

    kernel = Deleted(on_run=lambda msg_id: [])  # sent, and never a word back
    st = kernel_ops.KernelState()
    monkeypatch.setattr(kernel_ops, "PROBE_INTERVAL", 0.0)
    out = kernel.drive(execution.execute(st, CFG, "x", timeout=None))
    assert out.error.name == "KernelDiedError" and "state is gone" in out.error.value
    assert st.kernel_id is None and not st.lost  # said now; the next run starts afresh


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_silent_set_up_is_asked_again_on_a_new_connection(flavour, monkeypatch):
    # A stock gateway that restarts a dead kernel on new ports leaves a websocket that
    # connected meanwhile open and silent: the setup is asked again on a fresh connection.
    class Stranded(ScriptedKernel):
        stranded = True

        def answer(self, req):
            if isinstance(req, Disconnect):
                self.stranded = False
            if self.stranded and isinstance(req, Send):
                self.requests.append(req)
                return None  # swallowed by the stranded connection
            return super().answer(req)

    monkeypatch.setattr(lifecycle, "SETUP_PATIENCE", 0.2)
    kernel = Stranded()
    st = kernel_ops.KernelState()
    out = kernel.drive(execution.execute(st, CFG, "1 + 1", timeout=None), flavour=flavour)
    assert out.error is None and st.status == "running" and not st.needs_setup
    kinds = kernel.kinds()
    assert kinds.count("Send") == 3  # the lost setup, the setup again, the run
    assert kinds.index("Disconnect") < len(kinds) - 1 - kinds[::-1].index("Connect")


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_set_up_answered_without_its_data_is_asked_again_on_a_new_connection(flavour):
    # A stock gateway that restarted the kernel: the shell reply comes, its IOPub data not.
    class Lossy(ScriptedKernel):
        lost = 1

        def answer(self, req):
            if isinstance(req, Send) and self.lost and json.loads(_part(req.frame, 4))["silent"]:
                self.requests.append(req)
                self.lost -= 1
                self.inbox.extend(finished(json.loads(_part(req.frame, 1))["msg_id"]))
                return None
            return super().answer(req)

    kernel = Lossy()
    st = kernel_ops.KernelState()
    out = kernel.drive(execution.execute(st, CFG, "1", timeout=None), flavour=flavour)
    assert out.error is None and st.root == "/box"
    kinds = kernel.kinds()
    assert kinds.count("Connect") == 2 and "Disconnect" in kinds  # asked again, anew


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_peer_that_resets_the_handshake_is_a_connection_error(flavour):
    # What a box meets when another process took its dead gateway's port.
    import socket
    import struct
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def reset_one() -> None:
        conn, _ = listener.accept()
        with conn:  # reset at once, as a ZMQ socket does to a peer that speaks HTTP
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = threading.Thread(target=reset_one, daemon=True)
    server.start()
    req = Connect(GatewayAddress(f"http://127.0.0.1:{port}", "t"), "k1", 10)
    with listener, pytest.raises(CodeBoxConnectionError, match="cannot connect to kernel k1"):
        if flavour == "sync":
            JupyterTransport(lambda _: req.address, lambda: None).handle(req)
        else:
            async def connect() -> None:
                await AsyncJupyterTransport(lambda _: req.address, lambda: None).handle(req)

            asyncio.run(connect())
    server.join(10)


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("req", [Recv(1.0), Send(b"frame")], ids=["recv", "send"])
def test_a_websocket_closed_under_an_op_is_a_dropped_connection(flavour, req):
    # `stop` from another thread, or an abandoned stream, may close it between two steps.
    address = GatewayAddress("http://127.0.0.1:9", "t")
    with pytest.raises(CodeBoxConnectionError, match="connection was closed"):
        if flavour == "sync":
            JupyterTransport(lambda _: address, lambda: None).handle(req)
        else:
            async def do() -> None:
                await AsyncJupyterTransport(lambda _: address, lambda: None).handle(req)

            asyncio.run(do())


class Dying(ScriptedKernel):
    """Its own gateway (``pool``), killed after k1 started: connections to it are refused,
    and the box is handed its address once more before it can be reaped."""

    def __init__(self, pool: bool = True, replaced: bool = True):
        super().__init__()
        self.pool = pool
        self.replaced = replaced  # whether a refusal finds it refusing (and replaces it)
        self.dead = False

    def answer(self, req):
        if isinstance(req, Gateway):
            self.requests.append(req)
            generation = 2 if req.refused is not None and self.replaced else 1
            return GatewayAddress(f"http://gateway-{generation}.test", "t", generation,
                                  pool=self.pool)
        if self.dead and getattr(req, "address", None) is not None \
                and req.address.generation == 1:
            self.requests.append(req)
            raise CodeBoxConnectionError("cannot reach the gateway: connection refused")
        if isinstance(req, Http) and req.path == "/codebox/pool":
            self.requests.append(req)  # a warm kernel from the new gateway only
            return (200, {"id": "k2"}) if req.address.generation == 2 else (204, None)
        return super().answer(req)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_dying_gateway_that_refuses_is_replaced_and_the_run_says_state_is_gone(flavour):
    kernel = Dying()
    st = kernel_ops.KernelState()
    kernel.drive(execution.execute(st, CFG, "state = 1", timeout=None), flavour=flavour)
    assert st.kernel_id == "k1"
    kernel.dead = True
    out = kernel.drive(execution.execute(st, CFG, "state", timeout=None), flavour=flavour)
    assert out.error.name == "KernelDiedError" and "did not run" in out.error.value
    asked = [r.refused for r in kernel.requests if isinstance(r, Gateway)]
    assert asked[-1] is not None and asked[-1].generation == 1  # replace that one
    assert st.kernel_id == "k2" and st.address.generation == 2
    assert kernel.drive(execution.execute(st, CFG, "1", timeout=None),
                        flavour=flavour).error is None


def _run_after_its_gateway_died(kernel: Dying) -> None:
    """A run on a live gateway, then one after it died: that one must raise (and the box,
    which was running, keeps its hold on the gateway until it is stopped)."""
    st = kernel_ops.KernelState()
    kernel.drive(execution.execute(st, CFG, "x = 1", timeout=None))
    kernel.dead = True
    with pytest.raises(CodeBoxConnectionError, match="cannot reach the gateway"):
        kernel.drive(execution.execute(st, CFG, "x", timeout=None))
    assert "ReleaseGateway" not in kernel.kinds()


class RefusedPooled(ScriptedKernel):
    """Our gateway hands out a pooled kernel, then refuses the websocket of the first
    ``refusals`` kernels the box connects to (HTTP 500: the kernel never came alive)."""

    def __init__(self, refusals: int):
        super().__init__()
        self.refusals = refusals

    def answer(self, req):
        if isinstance(req, Gateway):
            self.requests.append(req)
            return GatewayAddress("http://gateway.test", "t", 1, pool=True)
        if isinstance(req, Http) and req.path == "/codebox/pool":
            self.requests.append(req)
            return 200, {"id": "pooled"}
        if isinstance(req, Connect) and self.refusals:
            self.requests.append(req)
            self.refusals -= 1
            raise GatewayError("the kernel websocket was refused", http_status=500)
        return super().answer(req)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_pooled_kernel_whose_websocket_is_refused_is_replaced_by_a_new_one(flavour):
    kernel = RefusedPooled(refusals=1)
    st = kernel_ops.KernelState()
    out = kernel.drive(execution.execute(st, CFG, "1", timeout=None), flavour=flavour)
    assert out.error is None and st.kernel_id == "k1" and st.status == "running"
    # the refused one deleted, a kernel started for the box (not another pooled one)
    assert kernel.paths()[:3] == ["/codebox/pool", "/api/kernels/pooled", "/api/kernels"]


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_start_that_fails_holds_no_kernel_and_no_gateway(flavour):
    kernel = RefusedPooled(refusals=2)
    st = kernel_ops.KernelState()
    with pytest.raises(GatewayError, match="refused"):
        kernel.drive(lifecycle.start(st, CFG), flavour=flavour)
    assert st.status == "stopped" and st.kernel_id is None
    assert kernel.paths() == ["/codebox/pool", "/api/kernels/pooled", "/api/kernels",
                              "/api/kernels/k1"]
    assert kernel.kinds()[-2:] == ["Disconnect", "ReleaseGateway"]
    kernel.refusals = 0  # and the box can start again
    kernel.drive(lifecycle.start(st, CFG), flavour=flavour)
    assert st.status == "running"


def test_a_gateway_given_by_url_that_refuses_is_an_error_not_a_replacement():
    kernel = Dying(pool=False)
    _run_after_its_gateway_died(kernel)
    assert all(r.refused is None for r in kernel.requests if isinstance(r, Gateway))


def test_a_gateway_that_is_kept_after_a_failed_start_is_not_asked_twice():
    # A reset connection to a live gateway: it is kept, and the start is not repeated on it
    # (the first request may have started a kernel already).
    kernel = Dying(replaced=False)
    _run_after_its_gateway_died(kernel)
    pools = [r for r in kernel.requests if isinstance(r, Http) and r.path == "/codebox/pool"]
    assert len(pools) == 2  # the first run's, and one for the second run: not retried


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_kernel_deleted_while_the_box_sat_idle_is_replaced_and_the_run_says_so(flavour):
    # The gateway deleted (or culled) the kernel and left its websocket open: the box's next
    # run asks the gateway first, and says once, as its output, that the state is gone.
    class Deleted(ScriptedKernel):
        deleted = False

        def answer(self, req):
            if self.deleted and isinstance(req, Http) and req.path == "/api/kernels/k1":
                self.requests.append(req)
                return 404, {"message": "Kernel does not exist"}
            return super().answer(req)

    kernel = Deleted()
    st = kernel_ops.KernelState()
    kernel.drive(execution.execute(st, CFG, "x = 1", timeout=None), flavour=flavour)
    st.last_used = kernel_ops.clock() - 2 * CFG.check_after  # the box sat unused
    kernel.deleted = True
    out = kernel.drive(execution.execute(st, CFG, "x", timeout=None), flavour=flavour)
    assert out.error.name == "KernelDiedError" and "did not run" in out.error.value
    assert st.kernel_id == "k2" and not st.lost  # told now, and only now
    assert kernel.drive(execution.execute(st, CFG, "1", timeout=None),
                        flavour=flavour).error is None
