"""The REST client's core without a server process: the real `CodeBox` twins and transports
over an in-memory server (``httpx.MockTransport``), and its operations over the engine's
scripted transport, in both flavours.

Covers what lives between the pure protocol and the wire: one session however many
threads or tasks race the first call, retries (streams included) bounded by a deadline
on an injected clock, streams that fail mid-run, and streams left open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codebox import CodeBox, CodeBoxError, CodeBoxSettings, LocalBox, _core
from codebox import _engine as engine
from codebox.errors import CodeBoxNotFoundError, CodeBoxServerError
from codebox.remote import _ops, _transport
from codebox.remote._replies import Reply
from codebox.remote._requests import start_request
from codebox.remote._retry import RetryPolicy
from codebox.schema import OutputChunk

BASE = "https://api.test/v1"
KEY = "sk-core"
CAPS = {"version": "1", "extensions": ["rich-run", "stream", "interrupt", "file-sizes"]}


def line(item: dict) -> bytes:
    return json.dumps(item).encode() + b"\n"


END = {"type": "end", "output": {"type": "text", "content": "", "chunks": [
    {"type": "stdout", "content": "a\n"}, {"type": "stdout", "content": "b\n"}]}}


class FakeServer:
    """A CodeBox server in memory: counts what it is asked; ``stream_lines`` is what
    ``run/stream`` answers (an endless stream when ``None``)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.starts = 0
        self.stream_lines: list[dict] | None = [
            {"type": "stdout", "content": "a\n"}, {"type": "stdout", "content": "b\n"}, END]
        self.stream_failures = 0  # connection failures before run/stream is sent
        self.start_gate: threading.Event | None = None
        self.start_status = 200
        self.start_headers: dict[str, str] = {}
        self.streams_closed = 0

    def count(self, request: httpx.Request) -> str:
        path = request.url.path.removeprefix("/v1")
        self.calls.append(f"{request.method} {path}")
        return path

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = self.count(request)
        if path == "/codebox/capabilities":
            return httpx.Response(200, json=CAPS)
        if path == "/codebox/start":
            self.starts += 1
            if self.start_status != 200:
                return httpx.Response(self.start_status, headers=self.start_headers,
                                      json={"detail": "busy"})
            return httpx.Response(200, json={"id": self.starts})
        if path.endswith("/run"):
            return httpx.Response(200, json={"type": "text", "content": "2", "chunks": [
                {"type": "text", "content": "2"}]})
        if path.endswith("/files"):
            return httpx.Response(200, json={"files": []})
        if path.endswith(("/interrupt", "/stop")):
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(404, json={"detail": "no such route"})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/start") and self.start_gate is not None:
            # Hold the first start until a second one arrives (or a short deadline passes):
            # racing callers without a start lock all get here.
            self.start_gate.wait(0.5) if self.starts == 0 else self.start_gate.set()
        if request.url.path.endswith("/run/stream"):
            return self.stream(request)
        return self.answer(request)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/start"):
            for _ in range(20):  # let every racing task reach this point
                await asyncio.sleep(0)
        if request.url.path.endswith("/run/stream"):
            return self.stream(request)
        return self.answer(request)

    def stream(self, request: httpx.Request) -> httpx.Response:
        if self.stream_failures:
            self.stream_failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        self.count(request)
        return httpx.Response(200, stream=Lines(self, self.stream_lines))


class Lines(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An NDJSON answer (endless without items) that counts its closing."""

    def __init__(self, server: FakeServer, items: list[dict] | None) -> None:
        self.server, self.items = server, items

    def __iter__(self):
        if self.items is None:
            while True:
                yield line({"type": "stdout", "content": "tick\n"})
        for item in self.items:
            yield line(item)

    async def __aiter__(self):
        for chunk in self:
            yield chunk

    def close(self) -> None:
        self.server.streams_closed += 1

    async def aclose(self) -> None:
        self.close()


class Transport(httpx.MockTransport):
    """Sync requests to ``handle``, async ones to ``ahandle``."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__(server.handle)
        self.server = server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await self.server.ahandle(request)


@pytest.fixture
def server():
    return FakeServer()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """Retry waits are recorded, never waited."""
    delays: list[float] = []

    async def asleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(_transport, "_sleep", delays.append)
    monkeypatch.setattr(_transport, "_asleep", asleep)
    return delays


@pytest.fixture(params=["sync", "async"])
def flavour(request):
    return request.param


def make_box(server: FakeServer, **kwargs) -> CodeBox:
    box = CodeBox(api_key=KEY, base_url=BASE, settings=CodeBoxSettings(max_retries=3), **kwargs)
    assert isinstance(box, CodeBox)
    box._http_transport = Transport(server)
    return box


def call(box, flavour, name, *args, **kwargs):
    if flavour == "sync":
        return getattr(box, name)(*args, **kwargs)
    return asyncio.run(getattr(box, "a" + name)(*args, **kwargs))


def collect(box, flavour, code):
    if flavour == "sync":
        with box.stream(code) as stream:
            return list(stream)

    async def main():
        async with box.astream(code) as stream:
            return [chunk async for chunk in stream]

    return asyncio.run(main())


# -- one session, however many callers race the first call ------------------------------


def test_threads_racing_the_first_call_start_one_session(server):
    server.start_gate = threading.Event()
    box = make_box(server)
    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda _: box.run("1 + 1"), range(6)))
    assert server.starts == 1 and box.session_id == "1"
    assert all(out.content == "2" for out in outs)


def test_tasks_racing_the_first_call_start_one_session(server):
    box = make_box(server)

    async def main():
        return await asyncio.gather(*(box.arun("1 + 1") for _ in range(6)))

    outs = asyncio.run(main())
    assert server.starts == 1 and box.session_id == "1"
    assert all(out.content == "2" for out in outs)


# -- retries: one path for every route, bounded by a deadline ---------------------------


def test_retries_stop_at_the_deadline_on_the_injected_clock(server, sleeps, flavour):
    now = [0.0]

    def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        now[0] += delay

    async def fake_asleep(delay: float) -> None:
        fake_sleep(delay)

    server.start_status, server.start_headers = 503, {"Retry-After": "6"}
    box = make_box(server)
    box._state.retry = RetryPolicy(max_retries=10, deadline=10.0, monotonic=lambda: now[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_transport, "_sleep", fake_sleep)
        mp.setattr(_transport, "_asleep", fake_asleep)
        with pytest.raises(CodeBoxServerError, match="busy"):
            call(box, flavour, "start")
    # Retry 1 starts at 6 s; retry 2 would start at 12 s, past the 10 s deadline.
    assert sleeps == [6.0] and server.starts == 2


def test_a_stream_is_retried_when_the_connection_failed_before_sending(server, sleeps,
                                                                        flavour):
    server.stream_failures = 1
    box = make_box(server, session_id=7)
    chunks = collect(box, flavour, "print('a'); print('b')")
    assert [c.content for c in chunks] == ["a\n", "b\n"]
    assert len(sleeps) == 1 and server.calls.count("POST /codebox/7/run/stream") == 1


def run_op(op, handler, flavour):
    """Carry ``op`` out with the engine's runner of ``flavour``, ``handler`` answering."""
    if flavour == "sync":
        return engine.run(op, engine.ScriptedTransport(handler))

    async def main():
        return await engine.arun(op, engine.AsyncScriptedTransport(handler))

    return asyncio.run(main())


def test_a_stream_is_not_resent_once_sent(flavour):
    state = _ops.ClientState(started=True, session_id="7",
                             retry=RetryPolicy(max_retries=3, rand=lambda: 0.0))

    requests = []

    def handler(req):
        requests.append(req)
        if isinstance(req, _ops.Send):  # capabilities
            return Reply(200, {}, json.dumps(CAPS).encode())
        if isinstance(req, _ops.Open):
            assert req.request.stream and req.request.path == "/codebox/7/run/stream"
            raise _ops.SendFailed(CodeBoxServerError("read failed"), unsent=False)
        return None

    with pytest.raises(CodeBoxServerError, match="read failed"):
        run_op(_ops.run(state, "x", None, streaming=True), handler, flavour)
    kinds = [type(r).__name__ for r in requests]
    assert kinds == ["Send", "Open"]  # one attempt: no Sleep, no second Open
    assert state.session_id == "7"


def test_the_retry_loop_is_the_same_for_every_request(flavour):
    state = _ops.ClientState(retry=RetryPolicy(max_retries=1, rand=lambda: 0.0))

    requests = []

    def handler(req):
        requests.append(req)
        if isinstance(req, _ops.Send):
            raise _ops.SendFailed(CodeBoxError("refused"), unsent=True)
        return None

    with pytest.raises(CodeBoxError, match="refused"):
        run_op(_ops.call(state, start_request()), handler, flavour)
    assert [type(r).__name__ for r in requests] == ["Send", "Sleep", "Send"]
    assert requests[1] == _ops.Sleep(0.25) and requests[0] == requests[2]


# -- streams that fail mid-run -----------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [(503, CodeBoxServerError),
                                              (404, CodeBoxNotFoundError)])
def test_a_failure_mid_stream_raises_the_routes_error_with_the_chunks(server, flavour,
                                                                      status, kind):
    server.stream_lines = [{"type": "stdout", "content": "a\n"},
                           {"type": "end", "error": {"status": status, "detail": "gone"}}]
    box = make_box(server, session_id=7)
    with pytest.raises(kind, match="gone") as caught:
        collect(box, flavour, "print('a')")
    assert caught.value.http_status == status
    assert caught.value.chunks == [OutputChunk(type="stdout", content="a\n")]
    # run(on_output=...) streams too, and fails the same way.
    seen = []
    with pytest.raises(kind, match="gone") as caught:
        call(box, flavour, "run", "print('a')", on_output=seen.append)
    assert seen == caught.value.chunks == [OutputChunk(type="stdout", content="a\n")]
    assert "POST /codebox/7/interrupt" not in server.calls  # the run was over already


# -- streams left open -----------------------------------------------------------------


def test_an_abandoned_stream_is_closed_by_the_next_operation(server):
    server.stream_lines = None  # a run that never ends
    box = make_box(server, session_id=7)
    stream = box.stream("while True: print('tick')")
    assert next(stream).content == "tick\n"
    assert box.list_files() == []  # does not wait for the stream
    assert server.streams_closed == 1 and "POST /codebox/7/interrupt" in server.calls
    with pytest.raises(CodeBoxError, match="another operation"):
        next(stream)
    stream.close()  # idempotent


def test_an_abandoned_async_stream_is_closed_by_the_next_operation(server):
    server.stream_lines = None
    box = make_box(server, session_id=7)

    async def main():
        stream = box.astream("while True: print('tick')")
        assert (await stream.__anext__()).content == "tick\n"
        assert await box.alist_files() == []
        with pytest.raises(CodeBoxError, match="another operation"):
            await stream.__anext__()
        await stream.aclose()

    asyncio.run(main())
    assert server.streams_closed == 1 and "POST /codebox/7/interrupt" in server.calls


def test_leaving_a_with_block_closes_the_stream_and_interrupts(server, flavour):
    server.stream_lines = None
    box = make_box(server, session_id=7)
    if flavour == "sync":
        with box.stream("loop") as stream:
            next(stream)
    else:
        async def main():
            async with box.astream("loop") as stream:
                await stream.__anext__()

        asyncio.run(main())
    assert server.streams_closed == 1
    assert server.calls[-1] == "POST /codebox/7/interrupt"


@pytest.fixture
def quick_stop(monkeypatch):
    """`stop` gives an operation that does not let go a fraction of a second, not 20 s."""
    monkeypatch.setattr(_core, "STOP_DEADLINE", 0.2)
    monkeypatch.setattr(CodeBox, "_stop_grace", lambda self: 0.2)


def test_stop_settles_an_abandoned_stream(server, quick_stop):
    server.stream_lines = None
    box = make_box(server, session_id=7)
    stream = box.stream("loop")
    next(stream)
    assert box.stop() == "stopped"
    assert server.calls[-2:] == ["POST /codebox/7/interrupt", "POST /codebox/7/stop"]


def test_stop_closes_its_callers_unread_stream_at_once(server, quick_stop, caplog):
    server.stream_lines = None
    box = make_box(server, session_id=7)
    stream = box.stream("loop")
    next(stream)
    with caplog.at_level(logging.WARNING, logger="codebox._core"):
        assert box.stop() == "stopped"
    assert "did not let go" not in caplog.text  # the stream was closed, not overrun
    assert server.streams_closed == 1  # the answer is closed when stop returns


# -- what a key imports, what no key gives ------------------------------------------------


def test_a_key_never_imports_the_local_machinery():
    script = """
import asyncio, sys, httpx
from codebox import CodeBox

def handle(request):
    path = request.url.path
    if path.endswith("/capabilities"):
        return httpx.Response(404)
    if path.endswith("/start"):
        return httpx.Response(200, json={"id": 1})
    return httpx.Response(200, json={"type": "text", "content": "2"})

box = CodeBox(api_key="k", base_url="http://api.test")
box._http_transport = httpx.MockTransport(handle)
assert box.run("1 + 1").content == "2"
assert list(box.stream("1 + 1"))[0].content == "2"
assert asyncio.run(box.arun("1 + 1")).content == "2"
loaded = [m for m in sys.modules if m.startswith(("websockets", "codebox.local", "jupyter"))]
assert not loaded, loaded
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEBOX_API")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.stdout.strip() == "ok", done.stderr


def test_no_key_gives_a_local_box_that_closes():
    box = CodeBox()
    assert isinstance(box, LocalBox)
    box.close()  # never started: nothing to stop, nothing spawned
    asyncio.run(box.aclose())
    assert box.status() == "stopped" and box.interrupt() == "stopped"
