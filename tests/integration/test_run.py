"""Running code on a real kernel: outputs, streaming, timeouts, interrupts, deaths."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from codebox import LocalBox
from codebox.settings import CodeBoxSettings


def test_output_limit_truncates_and_says_so():
    with LocalBox(settings=CodeBoxSettings(output_limit=1000)) as box:
        out = box.run("print('y' * 5000)")
    assert out.truncated
    kept = len(out.stdout) - len(out.stdout.lstrip("y"))
    assert 500 < kept < 1000
    assert f"[codebox: {5001 - kept} bytes of stdout dropped: the output limit was reached]" in (
        out.stdout)


def test_output_limit_bounds_images_and_errors_too():
    code = ("from IPython.display import display\n"
            "display({'image/png': 'A' * 2_000_000, 'text/plain': '<big image>'}, raw=True)\n"
            "raise ValueError('v' * 2_000_000)")
    with LocalBox(settings=CodeBoxSettings(output_limit=100_000)) as box:
        out = box.run(code)
        assert box.run("1 + 1").content == "2"
    image, last = out.chunks
    assert out.truncated and not out.images
    assert image.content.startswith("<big image>\n[codebox: 2000009 bytes of image/png dropped")
    assert last.type == "error" and out.error.name == "ValueError" and len(out.error.value) < 30_000
    assert len(out.error.traceback) < 100_000 and "ValueError" in out.error.traceback


def test_timeout_restarts_a_kernel_that_ignores_interrupts(fresh_box):
    fresh_box.box.settings = CodeBoxSettings(interrupt_timeout=1)
    fresh_box.run("lost = 1")
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    out = fresh_box.run(code, timeout=1)
    assert out.error.name == "TimeoutError" and "restarted" in out.error.value
    assert fresh_box.run("'lost' in dir()").content == "False"
    assert fresh_box.run("print('alive')").stdout == "alive\n"


def test_cancelling_arun_interrupts_the_kernel():
    async def main():
        async with LocalBox() as box:
            await box.arun("n = 3")
            started = asyncio.Event()
            task = asyncio.create_task(box.arun(
                "print('busy', flush=True)\nimport time\ntime.sleep(60)",
                on_output=lambda c: started.set(),
            ))
            await asyncio.wait_for(started.wait(), 20)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Interrupted, not still sleeping: the next run answers at once, state kept.
            out = await asyncio.wait_for(box.arun("n"), 10)
            assert out.content == "3"

    asyncio.run(main())


def test_a_cancelled_astop_still_stops_the_box_and_leaves_it_usable():
    # A stop, once begun, ends the run in progress (here one that ignores interrupts);
    # the caller's deadline cancels its waiting, not the stop: the box is stopped, not
    # locked, and the next call starts it again.
    async def main():
        async with LocalBox() as box:
            started = asyncio.Event()
            run = asyncio.create_task(box.arun(
                "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('stubborn', flush=True)\ntime.sleep(60)",
                on_output=lambda c: started.set()))
            await asyncio.wait_for(started.wait(), 20)
            old_kernel = box.kernel_id
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(box.astop(), 0.2)
            out = await asyncio.wait_for(run, 30)
            assert out.error.name == "KernelDiedError"
            assert "the box was stopped" in out.error.value
            # Not locked: the next run waits for the stop, then starts a fresh kernel.
            fresh = await asyncio.wait_for(box.arun("1 + 1"), 60)
            assert fresh.content == "2" and box.kernel_id != old_kernel

    asyncio.run(main())


def test_ctrl_c_during_run_interrupts_the_kernel():
    with LocalBox() as box:
        box.run("n = 5")

        def press_ctrl_c(chunk):
            os.kill(os.getpid(), signal.SIGINT)

        with pytest.raises(KeyboardInterrupt):
            box.run("print('busy', flush=True)\nimport time\ntime.sleep(60)",
                    on_output=press_ctrl_c)
        started = time.monotonic()
        assert box.run("n", timeout=10).content == "5"
        assert time.monotonic() - started < 10


def test_sync_and_async_on_one_box():
    with LocalBox() as box:
        box.run("a = 1")
        assert asyncio.run(box.arun("a + 1")).content == "2"
        assert box.run("a + 2").content == "3"
        assert asyncio.run(box.arun("a + 3")).content == "4"  # a new loop: reconnects
