"""Different boxes run in parallel; runs on one box are serialised."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.integration


def _together(flavour, calls):
    """Run ``calls`` (pairs of box flavour and code) at the same time; their outputs."""
    if flavour.kind == "sync":
        with ThreadPoolExecutor(len(calls)) as pool:
            futures = [pool.submit(box.box.run, code, timeout=30) for box, code in calls]
            return [f.result() for f in futures]

    async def main():
        return await asyncio.gather(*(box.box.arun(code, timeout=30) for box, code in calls))

    return flavour.wait(main())


def test_two_boxes_run_at_the_same_time(make_box):
    a, b = make_box(), make_box()
    a.run("me = 'a'")
    b.run("me = 'b'")
    # `a` runs until it is interrupted; `b` runs to its end meanwhile, then `a` is
    # interrupted (sandboxed boxes share no files and no network: an interrupt reaches all).
    # (The print is inside the try: the interrupt may land while its flush still waits.)
    wait = ("import time\ntry:\n    print(me, 'waits', flush=True)\n    time.sleep(20)\n"
            "    print(me, False)\nexcept KeyboardInterrupt:\n    print(me, True)")
    touch = "print(me)"
    if a.kind == "sync":
        started = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(a.box.run, wait, timeout=30,
                                  on_output=lambda chunk: started.set())
            assert started.wait(30)
            out_b = b.box.run(touch)
            a.box.interrupt()
            out_a = running.result()
    else:
        async def main():
            started = asyncio.Event()
            running = asyncio.ensure_future(
                a.box.arun(wait, timeout=30, on_output=lambda chunk: started.set()))
            await asyncio.wait_for(started.wait(), 30)
            out_b = await b.box.arun(touch)
            await a.box.ainterrupt()
            return await running, out_b

        out_a, out_b = a.wait(main())
    assert (out_a.stdout, out_b.stdout) == ("a waits\na True\n", "b\n")


def test_runs_on_one_box_are_serialised(make_box):
    box = make_box()
    box.run("log = []")
    step = "import time\nlog.append('start {0}')\ntime.sleep(0.2)\nlog.append('end {0}')"
    outs = _together(box, [(box, step.format(i)) for i in range(3)])
    assert all(o.error is None for o in outs)
    log = eval(box.run("log").content)
    assert len(log) == 6
    for i in range(0, 6, 2):  # each run ends before the next one starts
        assert log[i].startswith("start") and log[i + 1] == "end" + log[i][len("start"):]
