"""A box is never wedged: a stream left open, threads or tasks racing the first call, an
interrupt with nothing to interrupt. Every backend, sync and async."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codebox import CodeBoxError, LocalBox

pytestmark = pytest.mark.integration

SLEEPER = "print('sleeping', flush=True)\nimport time\ntime.sleep(60)"
PID = "import os\nos.getpid()"


def _open_then_abandon(flavour):
    """Start a stream, read one chunk, then drop it unfinished and unclosed (still
    referenced). Returns the stream."""
    if flavour.kind == "sync":
        stream = flavour.box.stream(SLEEPER)
        assert next(stream).content == "sleeping\n"
        return stream

    async def main():
        stream = flavour.box.astream(SLEEPER)
        assert (await stream.__anext__()).content == "sleeping\n"
        return stream

    return flavour.wait(main())


def _next_chunk(flavour, stream):
    if flavour.kind == "sync":
        return next(stream)
    return flavour.wait(stream.__anext__())


def test_an_abandoned_stream_does_not_block_the_next_operation(box):
    stream = _open_then_abandon(box)
    # The sleeper would hold the kernel for a minute: this run closes the stream first.
    assert box.run("'next'", timeout=20).content == "'next'"
    with pytest.raises(CodeBoxError, match="another operation"):
        _next_chunk(box, stream)


def test_stop_works_with_an_abandoned_stream(fresh_box):
    fresh_box.start()
    stream = _open_then_abandon(fresh_box)
    assert fresh_box.stop() == "stopped"
    assert fresh_box.status() == "stopped"
    with pytest.raises(CodeBoxError, match="another operation"):
        _next_chunk(fresh_box, stream)


def test_interrupt_without_a_kernel_does_nothing(fresh_box):
    box = fresh_box.box
    assert fresh_box.interrupt() == "stopped" and fresh_box.status() == "stopped"
    assert (box.kernel_id if isinstance(box, LocalBox) else box.session_id) is None


def _sessions(box) -> int | None:
    """The server's session count (``None`` for a local box)."""
    if isinstance(box, LocalBox):
        return None
    root = box.settings.base_url.rsplit("/api/v1", 1)[0]
    return httpx.get(f"{root}/health", trust_env=False).json()["sessions"]


def test_callers_racing_the_first_call_start_one_kernel(fresh_box):
    before = _sessions(fresh_box.box)
    if fresh_box.kind == "sync":
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: fresh_box.box.run(PID, timeout=60), range(4)))
    else:
        async def main():
            return await asyncio.gather(*(fresh_box.box.arun(PID, timeout=60)
                                          for _ in range(4)))

        outs = fresh_box.wait(main())
    assert len({out.content for out in outs}) == 1, [out.content for out in outs]
    if before is not None:
        assert _sessions(fresh_box.box) == before + 1


STUBBORN = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('stubborn', flush=True)\ntime.sleep(120)")


@pytest.mark.parametrize("code", [SLEEPER, STUBBORN], ids=["interruptible", "stubborn"])
def test_stop_ends_a_run_in_progress_elsewhere(fresh_box, code, caplog):
    """stop() from another thread or task does not wait for a run that holds the box,
    even one that ignores interrupts."""
    caplog.set_level(logging.WARNING, logger="codebox")
    box = fresh_box.box
    fresh_box.start()
    if fresh_box.kind == "sync":
        started = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(box.run, code, on_output=lambda c: started.set())
            assert started.wait(30)
            assert box.stop() == "stopped"
            out = running.result(60)
    else:
        async def main():
            started = asyncio.Event()
            task = asyncio.create_task(box.arun(code, on_output=lambda c: started.set()))
            await asyncio.wait_for(started.wait(), 30)
            assert await box.astop() == "stopped"
            return await asyncio.wait_for(task, 60)

        out = fresh_box.wait(main())
    assert fresh_box.status() == "stopped"
    # The run answers, with what it printed and how it ended: interrupted by the stop, or
    # (ignoring the interrupt) stopped under it.
    assert out.stdout.startswith(code.split("'")[1]), out
    assert out.error is not None, out
    if code is STUBBORN:
        assert out.error.name == "KernelDiedError" and "stopped" in out.error.value, out.error
    else:
        assert out.error.name in ("KeyboardInterrupt", "KernelDiedError"), out.error
    # The run let go of the box by itself: the stop never had to take it (a CodeBox stops
    # its session beside the run, and the server ends the run at once).
    assert not [r.message for r in caplog.records if "did not let go" in r.message]


