"""Interrupts of sandboxed kernels. They arrive as messages, which the kernel takes a little
after the gateway answered the request: one sent with nothing running, or a second one for a
run already stopped, would stop the next run. Here the kernel takes them 0.3 s late (its
control handler is slowed down), so that any such interrupt surely lands in the next run.
"""

from __future__ import annotations

import httpx
import pytest

from codebox import LocalBox
from codebox.local._gateway import shared_gateway

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


def test_the_spawned_gateway_answers_an_interrupt_once_the_kernel_took_it():
    # Straight to the gateway (a box sends none with nothing running): had it answered
    # before the kernel took the message, the kernel would take it during the next run.
    with LocalBox(sandbox=True) as box:
        assert box.run(SLOW_INTERRUPTS).error is None
        proc = shared_gateway._process
        assert proc is not None
        answer = httpx.post(f"{proc.url}/api/kernels/{box.kernel_id}/interrupt",
                            headers={"Authorization": f"token {proc.token}"},
                            trust_env=False, timeout=10)
        assert answer.status_code == 204
        out = box.run(BUSY)
        assert (out.content, out.error) == ("'done'", None)
