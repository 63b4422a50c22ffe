"""Different boxes run in parallel; runs on one box are serialised."""

from __future__ import annotations

import asyncio
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


def test_two_boxes_run_at_the_same_time(make_box, tmp_path):
    a, b = make_box(), make_box()
    a.run("me = 'a'")
    b.run("me = 'b'")
    flag = tmp_path / "b-was-here"
    # `a` can only finish if `b` runs while `a` is still running.
    wait = ("import os, time\ndeadline = time.monotonic() + 20\n"
            f"while not os.path.exists({str(flag)!r}) and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            f"print(me, os.path.exists({str(flag)!r}))")
    touch = f"open({str(flag)!r}, 'w').close()\nprint(me)"
    out_a, out_b = _together(a, [(a, wait), (b, touch)])
    assert (out_a.stdout, out_b.stdout) == ("a True\n", "b\n")


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
