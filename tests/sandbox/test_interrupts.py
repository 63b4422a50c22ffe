"""Interrupts of sandboxed kernels. They arrive as messages, which the kernel takes a little
after the gateway answered the request: one sent with nothing running, or a second one for a
run already stopped, would stop the next run. Here the kernel takes them 0.3 s late (its
control handler is slowed down), so that any such interrupt surely lands in the next run.
"""

from __future__ import annotations

import pytest

SLOW_INTERRUPTS = (
    "import time\n"
    "kernel = get_ipython().kernel\n"
    "take = kernel.control_handlers['interrupt_request']\n"
    "def late(*args):\n"
    "    time.sleep(0.3)\n"
    "    return take(*args)\n"
    "kernel.control_handlers['interrupt_request'] = late\n"
)
# Busy in Python for 1 s (a late interrupt lands in it), then a result.
BUSY = "import time\nt = time.time()\nwhile time.time() - t < 1: pass\n'done'"


@pytest.fixture
def box(site):
    box = site.attacker
    assert box.run(SLOW_INTERRUPTS).error is None
    yield box
    box.restart()  # the usual control handler again


def test_an_interrupt_with_nothing_running_does_not_reach_the_next_run(box):
    assert box.interrupt() == "interrupted"
    out = box.run(BUSY)
    assert (out.content, out.error) == ("'done'", None)


def test_a_run_after_a_stream_left_early_is_not_interrupted(box):
    # Through a server, the run is interrupted twice: by the server, which sees the client
    # leave, and by the client, to make sure. Either may come first.
    outs = []
    for _ in range(3):
        with box.stream("import time\nprint('x', flush=True)\ntime.sleep(30)") as stream:
            assert next(iter(stream)).content == "x\n"
        outs.append(box.run(BUSY))
    assert [(out.content, out.error) for out in outs] == [("'done'", None)] * 3


def test_an_interrupt_still_stops_a_run(box):
    out = box.run("import time\nprint('x', flush=True)\ntime.sleep(30)",
                  on_output=lambda chunk: box.interrupt())
    assert out.stdout == "x\n" and out.error.name == "KeyboardInterrupt"
