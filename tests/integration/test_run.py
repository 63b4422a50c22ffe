"""Running code on a real kernel: outputs, streaming, timeouts, interrupts, deaths."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import threading
import time

import pytest

from codebox import LocalBox
from codebox.settings import CodeBoxSettings


def test_result_state_and_streams(box):
    assert box.run("x = 40").content == ""
    out = box.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nx + 2")
    assert out.stdout == "out\n"
    assert out.stderr == "err\n"
    assert out.chunks[-1].type == "text" and out.chunks[-1].content == "42"
    assert out.type == "text" and "42" in out.content
    assert out.error is None and out.execution_count is not None


def test_error_is_data_with_a_plain_traceback(box):
    out = box.run("def f():\n    raise ValueError('bad input')\nprint('before')\nf()")
    assert out.type == "error" and out.content == "ValueError: bad input"
    assert out.stdout == "before\n"
    assert out.error.name == "ValueError" and out.error.value == "bad input"
    assert "raise ValueError" in out.error.traceback and "\x1b[" not in out.error.traceback
    assert box.run("1 + 1").content == "2"  # the box goes on


def test_plots_come_as_png_between_text(box):
    code = (
        "import matplotlib.pyplot as plt\n"
        "print('before')\n"
        "plt.plot([1, 3, 2]); plt.show()\n"
        "plt.plot([2, 1]); plt.show()\n"
        "print('after')"
    )
    out = box.run(code)
    assert [c.type for c in out.chunks] == ["stdout", "image/png", "image/png", "stdout"]
    assert len(out.images) == 2 and out.type == "image/png" and out.content == out.images[0]
    assert base64.b64decode(out.images[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_rich_display_keeps_its_mime_type(box):
    out = box.run("from IPython.display import HTML, display\ndisplay(HTML('<i>hi</i>'))")
    assert [(c.type, c.content) for c in out.chunks] == [("text/html", "<i>hi</i>")]


def test_run_file_path_and_wrong_calls(box, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("print('from a file')")
    assert box.run(file_path=script).stdout == "from a file\n"
    with pytest.raises(ValueError):
        box.run("1", file_path=script)
    with pytest.raises(ValueError):
        box.run()


def test_ten_megabyte_print_arrives_whole(box):
    out = box.run("print('x' * 10_000_000)")
    assert len(out.stdout) == 10_000_001 and set(out.stdout.strip()) == {"x"}
    assert not out.truncated


def test_output_limit_truncates_and_says_so():
    with LocalBox(settings=CodeBoxSettings(output_limit=1000)) as box:
        out = box.run("print('y' * 5000)")
    assert out.truncated
    assert out.stdout.startswith("y" * 1000) and "truncated after 1000 characters" in out.stdout


def test_stream_yields_chunks_while_the_code_runs(box, tmp_path):
    flag = tmp_path / "go"
    code = (
        "import os, time\n"
        "print('first', flush=True)\n"
        "deadline = time.monotonic() + 30\n"
        f"while not os.path.exists({str(flag)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print('second')"
    )
    seen = []

    def on_output(chunk):
        seen.append(chunk)
        flag.touch()  # the code only finishes once we have seen its first line

    out = box.run(code, on_output=on_output, timeout=20)
    assert seen[0].content.startswith("first") and out.error is None  # may come in pieces
    assert out.stdout == "first\nsecond\n"
    flag.unlink()
    chunks = box.stream("for i in range(3):\n    print(i, flush=True)\n1/0")
    assert "".join(c.content for c in chunks if c.type == "stdout") == "0\n1\n2\n"
    assert chunks[-1].type == "error"


def test_timeout_interrupts_keeps_output_and_state(box):
    box.run("kept = 'yes'")
    started = time.monotonic()
    out = box.run("print('working', flush=True)\nwhile True:\n    pass", timeout=1)
    assert time.monotonic() - started < 10
    assert out.error.name == "TimeoutError" and "interrupted" in out.error.value
    assert out.stdout == "working\n"
    assert box.run("kept").content == "'yes'"


def test_timeout_restarts_a_kernel_that_ignores_interrupts(fresh_box):
    fresh_box.box.settings = CodeBoxSettings(interrupt_timeout=1)
    fresh_box.run("lost = 1")
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    out = fresh_box.run(code, timeout=1)
    assert out.error.name == "TimeoutError" and "restarted" in out.error.value
    assert fresh_box.run("'lost' in dir()").content == "False"
    assert fresh_box.run("print('alive')").stdout == "alive\n"


def test_kernel_death_is_an_error_and_the_next_run_works(fresh_box):
    fresh_box.run("gone = 1")
    out = fresh_box.run("import os\nos._exit(1)", timeout=30)
    assert out.error.name == "KernelDiedError" and "died" in out.error.value
    assert fresh_box.run("'gone' in dir()").content == "False"
    assert fresh_box.run("print('fresh')").stdout == "fresh\n"
    # The fresh kernel runs in the box's directory again.
    fresh_box.upload("marker.txt", b"m")
    assert fresh_box.run("open('marker.txt').read()").content == "'m'"


def test_restart_loses_variables_keeps_files(fresh_box):
    fresh_box.run("v = 1")
    fresh_box.upload("keep.txt", b"kept")
    assert fresh_box.restart() == "restarted"
    assert fresh_box.run("'v' in dir()").content == "False"
    assert fresh_box.run("open('keep.txt').read()").content == "'kept'"


def test_interrupt_from_another_thread_ends_the_run():
    with LocalBox() as box:
        box.run("state = 7")
        started = threading.Event()
        box_thread_result = {}

        def runner():
            box_thread_result["out"] = box.run(
                "print('sleeping', flush=True)\nimport time\ntime.sleep(60)",
                on_output=lambda c: started.set(),
            )

        t = threading.Thread(target=runner)
        t.start()
        assert started.wait(20)
        assert box.interrupt() == "interrupted"
        t.join(20)
        assert not t.is_alive()
        out = box_thread_result["out"]
        assert out.error.name == "KeyboardInterrupt" and out.stdout == "sleeping\n"
        assert box.run("state").content == "7"


def test_ainterrupt_from_another_task_ends_the_run():
    async def main():
        async with LocalBox() as box:
            started = asyncio.Event()
            task = asyncio.create_task(box.arun(
                "print('sleeping', flush=True)\nimport time\ntime.sleep(60)",
                on_output=lambda c: started.set(),
            ))
            await asyncio.wait_for(started.wait(), 20)
            await box.ainterrupt()
            out = await asyncio.wait_for(task, 20)
            assert out.error.name == "KeyboardInterrupt"
            assert (await box.arun("1 + 1")).content == "2"

    asyncio.run(main())


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


def test_leaving_a_stream_early_interrupts_the_run():
    with LocalBox() as box:
        for chunk in box.stream("print('go', flush=True)\nimport time\ntime.sleep(60)"):
            assert chunk.content.startswith("go")
            break
        assert box.run("'next'", timeout=10).content == "'next'"


def test_sync_and_async_on_one_box():
    with LocalBox() as box:
        box.run("a = 1")
        assert asyncio.run(box.arun("a + 1")).content == "2"
        assert box.run("a + 2").content == "3"
        assert asyncio.run(box.arun("a + 3")).content == "4"  # a new loop: reconnects
