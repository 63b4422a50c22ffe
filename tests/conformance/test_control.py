"""Control of a run and of the kernel: timeouts, interrupts, leaving a stream, restarts,
kernel deaths, and the lifecycle of a box."""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import kernel_host_pid

pytestmark = pytest.mark.integration

SLEEPER = "print('sleeping', flush=True)\nimport time\ntime.sleep(60)"


def test_a_timeout_interrupts_keeps_output_and_state(box):
    box.run("kept = 'yes'")
    out = box.run("print('working', flush=True)\nwhile True:\n    pass", timeout=1)
    assert out.error.name == "TimeoutError" and "interrupted" in out.error.value
    assert out.stdout == "working\n" and out.type == "error"
    assert box.run("kept").content == "'yes'"


def test_interrupt_from_another_thread_or_task_ends_the_run(box):
    box.run("state = 7")
    out = box.interrupted("run", SLEEPER)
    assert out.error.name == "KeyboardInterrupt" and out.stdout == "sleeping\n"
    assert box.run("state", timeout=10).content == "7"


def test_leaving_a_stream_early_interrupts_the_run(box):
    if box.kind == "sync":
        stream = box.box.stream(SLEEPER)
        assert next(stream).content == "sleeping\n"
        stream.close()
    else:
        async def main():
            stream = box.box.astream(SLEEPER)
            first = await stream.__anext__()
            await stream.aclose()
            return first

        assert box.wait(main()).content == "sleeping\n"
    # Still sleeping, the kernel would make this run wait for a minute.
    assert box.run("'next'", timeout=10).content == "'next'"


def test_restart_loses_variables_keeps_files(fresh_box):
    fresh_box.run("v = 1")
    fresh_box.upload("keep.txt", b"kept")
    assert fresh_box.restart() == "restarted"
    assert fresh_box.run("'v' in dir()").content == "False"
    assert fresh_box.run("open('keep.txt').read()").content == "'kept'"


def _after_death(box):
    """The next run after a kernel death: on a fresh kernel, without the old variables.

    The first run after the death may itself report the death (``KernelDiedError``)."""
    out = box.run("print('fresh')\n'gone' in dir()", timeout=30)
    if out.error is not None:
        assert out.error.name == "KernelDiedError", out.error
        out = box.run("print('fresh')\n'gone' in dir()", timeout=30)
    assert out.error is None and out.stdout == "fresh\n" and out.chunks[-1].content == "False"


def test_a_kernel_that_dies_mid_run_is_an_error_and_the_next_run_works(fresh_box):
    fresh_box.run("gone = 1")
    out = fresh_box.run("print('bye', flush=True)\nimport os\nos._exit(1)", timeout=30)
    assert out.error.name == "KernelDiedError" and "died" in out.error.value
    _after_death(fresh_box)
    fresh_box.upload("marker.txt", b"m")  # the fresh kernel runs in the box's directory
    assert fresh_box.run("open('marker.txt').read()").content == "'m'"


def test_a_run_whose_kernel_dies_at_once_says_it_had_started(fresh_box):
    # The death takes the kernel's first output with it: the box finds out from the
    # restarted kernel, and the stream ends with the same closing chunk as the run.
    fresh_box.run("import os")
    out = fresh_box.run("os._exit(1)", timeout=30)
    assert out.error.name == "KernelDiedError", out.error
    assert "while running this code" in out.error.value, out.error
    fresh_box.run("import os")
    chunks = fresh_box.stream("os._exit(1)", timeout=30)
    assert chunks[-1].type == "error" and chunks[-1].content.startswith("KernelDiedError")
    assert "while running this code" in chunks[-1].content


def test_a_kernel_killed_between_runs_is_replaced(fresh_box):
    fresh_box.run("gone = 1")
    pid = kernel_host_pid(lambda code: fresh_box.run(code).content)
    os.kill(pid, signal.SIGKILL)
    _after_death(fresh_box)


def test_lifecycle(fresh_box):
    assert fresh_box.status() == "stopped"
    assert fresh_box.run("1 + 1").content == "2"  # started on first use
    assert fresh_box.status() == "running"
    sid = fresh_box.box.session_id
    assert isinstance(sid, str) and sid in repr(fresh_box.box)
    fresh_box.run("old = 1")
    assert fresh_box.stop() == "stopped" and fresh_box.stop() == "stopped"
    assert fresh_box.status() == "stopped"
    assert fresh_box.start() == "started" and fresh_box.start() == "started"
    assert fresh_box.run("'old' in dir()").content == "False"  # a fresh kernel
