"""Different boxes run in parallel; runs on one box are serialised."""

from __future__ import annotations

import asyncio
import socket
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
    with socket.socket() as probe:  # a free port; sandboxed boxes share no files, only a network
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `a` can only finish if `b` runs while `a` is still running: `b` opens the port.
    wait = ("import socket, time\ndeadline = time.monotonic() + 20\nseen = False\n"
            "while not seen and time.monotonic() < deadline:\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "        seen = True\n"
            "    except OSError:\n"
            "        time.sleep(0.01)\n"
            "print(me, seen)")
    touch = f"import socket\n_door = socket.create_server(('127.0.0.1', {port}))\nprint(me)"
    out_a, out_b = _together(a, [(a, wait), (b, touch)])
    assert (out_a.stdout, out_b.stdout) == ("a True\n", "b\n")
    b.run("_door.close()")


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
