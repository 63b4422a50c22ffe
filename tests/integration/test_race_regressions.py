"""The races that wedged a box before it had one lease, each replayed on purpose, on a
LocalBox and through ``codebox serve``: a stream read while another thread or task calls
the box; interrupts fired at short calls; a stop while another thread waits for the box;
an interrupt during a restart. (`test_races` mixes them all in random schedules.)"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from codebox import CodeBox, CodeBoxError, LocalBox
from tests.helpers import wait_until
from tests.server.harness import KEY, running_server

pytestmark = pytest.mark.integration

DEADLINE = 30.0
THREE_LINES = ("import time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n"
               "    time.sleep(0.2)\n'done'")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory, env={"CODEBOX_SERVER_API_KEYS": KEY}) as srv:
        yield srv


@pytest.fixture(params=["local", "server"])
def box(request):
    if request.param == "local":
        made: Any = LocalBox()
    else:
        made = CodeBox(api_key=KEY, base_url=request.getfixturevalue("server").base_url)
    made.start()
    yield made
    made.stop()


def test_a_stream_read_in_one_thread_while_another_calls_the_box(box):
    # Before: the other call returned at once, the stream stopped after its first chunk and
    # kept the box, and every later call but stop() hung.
    first, chunks = threading.Event(), []

    def reader() -> None:
        with box.stream(THREE_LINES) as stream:
            for chunk in stream:
                chunks.append(chunk.content)
                first.set()

    with ThreadPoolExecutor(2) as pool:
        reading = pool.submit(reader)
        assert first.wait(DEADLINE)
        other = pool.submit(box.run, "1 + 1")
        reading.result(DEADLINE)
        assert other.result(DEADLINE).content == "2"
    assert "".join(chunks).count("line") == 3 and "'done'" in chunks
    assert box.run("3 + 3", timeout=DEADLINE).content == "6"


def test_a_stream_read_in_one_task_while_another_calls_the_box(box):
    async def main() -> None:
        first, chunks = asyncio.Event(), []

        async def reader() -> None:
            async with box.astream(THREE_LINES) as stream:
                async for chunk in stream:
                    chunks.append(chunk.content)
                    first.set()

        reading = asyncio.create_task(reader())
        await asyncio.wait_for(first.wait(), DEADLINE)
        other = await asyncio.wait_for(box.arun("1 + 1"), DEADLINE)
        await asyncio.wait_for(reading, DEADLINE)
        assert other.content == "2"
        assert "".join(chunks).count("line") == 3 and "'done'" in chunks
        assert (await box.arun("3 + 3", timeout=DEADLINE)).content == "6"

    asyncio.run(main())


def test_interrupts_fired_at_short_calls_never_leave_one_waiting(box):
    # Before: 22 of 150 upload+download pairs and 6 of 150 short runs waited forever after
    # an interrupt from another thread.
    rng = random.Random(7)
    stop = threading.Event()

    def interrupter() -> int:
        sent = 0
        while not stop.is_set():
            box.interrupt()
            sent += 1
            stop.wait(rng.uniform(0.0, 0.03))
        return sent

    with ThreadPoolExecutor(1) as pool:
        firing = pool.submit(interrupter)
        try:
            for i in range(40):
                started = time.monotonic()
                out = box.run("x = 1\nx", timeout=DEADLINE)
                assert out.content == "1" or (out.error is not None
                                              and out.error.name == "KeyboardInterrupt"), out
                content = os.urandom(2048)
                box.upload(f"f{i}.bin", content)  # not runs: interrupts leave them alone
                assert box.download(f"f{i}.bin").content == content
                assert time.monotonic() - started < DEADLINE
        finally:
            stop.set()
        assert firing.result(DEADLINE) > 0
    assert box.run("x = 2\nx", timeout=DEADLINE).content == "2"


def test_stop_while_another_thread_waits_for_the_box_says_stopped(box):
    # Before: stop() returned "starting" when another thread was waiting (20 of 20).
    for _ in range(3):
        started = threading.Event()
        with ThreadPoolExecutor(2) as pool:
            long_run = pool.submit(box.run, "print('go', flush=True)\nimport time\n"
                                            "time.sleep(30)",
                                   on_output=lambda _, started=started: started.set())
            assert started.wait(DEADLINE)
            waiting = pool.submit(box.run, "1 + 1")
            wait_until(lambda: box._lease._queue, timeout=DEADLINE)  # waiting in line
            assert box.stop() == "stopped"
            assert box.status() == "stopped"
            out = long_run.result(DEADLINE)
            assert out.error is not None and out.error.name == "KernelDiedError"
            with pytest.raises(CodeBoxError, match="stopped"):
                waiting.result(DEADLINE)
        assert box.run("1 + 1", timeout=DEADLINE).content == "2"  # started again


def test_an_interrupt_during_a_restart_leaves_the_restart_whole(box):
    # Before: the gateway answered the interrupt with a 500, or restart() raised
    # KernelDiedError.
    stop = threading.Event()

    def interrupter() -> None:
        while not stop.is_set():
            box.interrupt()
            stop.wait(0.01)

    box.run("x = 1")
    with ThreadPoolExecutor(1) as pool:
        firing = pool.submit(interrupter)
        try:
            for _ in range(3):
                assert box.restart() == "restarted"
        finally:
            stop.set()
        firing.result(DEADLINE)
    out = box.run("'x' in dir()", timeout=DEADLINE)
    assert out.content == "False"
