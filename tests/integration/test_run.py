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
    assert out.stdout.startswith("y" * 1000) and "truncated after 1000 characters" in out.stdout


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


def test_a_cancelled_astop_leaves_the_box_usable():
    # astop() waits, in a thread, for a run that ignores interrupts to let go of the box;
    # cancelled meanwhile (a caller's deadline), the box must not stay locked forever.
    async def main():
        async with LocalBox() as box:
            started = asyncio.Event()
            run = asyncio.create_task(box.arun(
                "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('stubborn', flush=True)\ntime.sleep(60)",
                on_output=lambda c: started.set()))
            await asyncio.wait_for(started.wait(), 20)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(box.astop(), 0.2)
            out = await asyncio.wait_for(run, 30)  # its kernel was deleted under it
            assert "the box was stopped" in out.error.value
            # Not locked, not "being stopped": the next run says the kernel went, once.
            lost = await asyncio.wait_for(box.arun("1 + 1"), 60)
            assert lost.error.name == "KernelDiedError" and "did not run" in lost.error.value
            assert (await asyncio.wait_for(box.arun("1 + 1"), 60)).content == "2"

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
