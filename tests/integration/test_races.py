"""Races: threads (or tasks) that mix runs, streams read to the end or abandoned,
interrupts, restarts, file transfers and stops on one box, in seeded random schedules, on
a LocalBox and through ``codebox serve``.

Whatever the interleaving: every call returns within its deadline (no hang), a run's answer
is its own (each prints a token of its own and nobody else's), the box's lease is free once
the actors are done, and the box answers the next call. ``CODEBOX_RACE_SCHEDULES`` sets the
number of schedules per combination (default 15; docs/benchmarks.md says how many more ran).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from codebox import CodeBox, CodeBoxError, LocalBox
from codebox.errors import CodeBoxNotFoundError
from tests.server.harness import KEY, running_server

SCHEDULES = int(os.environ.get("CODEBOX_RACE_SCHEDULES", "15"))
# A schedule takes a second or two: more of them get the time they need.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(max(120, 5 * SCHEDULES))]
DEADLINE = 45.0
"""Seconds any one call may take, whatever else happens on the box (a stop ends a run in
about a second; a restart takes a second or two)."""

ACTIONS = ("run", "run", "slow", "stream", "abandon", "interrupt", "restart", "transfer",
           "stop")


def schedule(seed: int) -> list[list[tuple[str, float]]]:
    """Two or three actors, each with two to four actions and a kernel-side pause each."""
    rng = random.Random(seed)
    return [[(rng.choice(ACTIONS), rng.choice((0.0, 0.0, 0.02, 0.1)))
             for _ in range(rng.randint(2, 4))] for _ in range(rng.randint(2, 3))]


def _token() -> str:
    return "tok" + uuid.uuid4().hex[:12]


def _code(token: str, pause: float, prints: int = 1) -> str:
    return (f"import time\nfor _ in range({prints}):\n    print({token!r}, flush=True)\n"
            f"    time.sleep({pause})\n{token!r}")


def _own(texts: list[str], token: str) -> None:
    """Nothing in ``texts`` comes from another run: every token in them is ``token``."""
    for text in texts:
        for word in text.replace("'", " ").split():
            if word.startswith("tok") and len(word) == 15:
                assert word == token, f"a run got another run's output: {word} != {token}"


def _check_output(out: Any, token: str) -> None:
    _own([c.content for c in out.chunks], token)
    if out.error is None:
        assert token in out.stdout
    else:  # interrupted, stopped under it, or its kernel restarted under it
        assert out.error.name in ("KeyboardInterrupt", "KernelDiedError", "TimeoutError")


def sync_action(box: Any, action: str, pause: float, stops: bool) -> None:
    """One action of a thread, with its checks. A `CodeBoxError` is an allowed outcome
    where another actor may stop the box meanwhile."""
    token = _token()
    try:
        if action == "run":
            _check_output(box.run(_code(token, pause), timeout=DEADLINE), token)
        elif action == "slow":
            _check_output(box.run(_code(token, 0.05, prints=6), timeout=DEADLINE), token)
        elif action == "stream":
            with box.stream(_code(token, pause, prints=3), timeout=DEADLINE) as stream:
                chunks = list(stream)
            _own([c.content for c in chunks], token)
            assert stream.result is not None and chunks == stream.result.chunks
        elif action == "abandon":
            stream = box.stream(_code(token, 0.2, prints=5), timeout=DEADLINE)
            _own([next(stream).content], token)  # then left, unfinished and unclosed
        elif action == "interrupt":
            assert box.interrupt() in ("interrupted", "stopped")
        elif action == "restart":
            assert box.restart() == "restarted"
        elif action == "transfer":
            name, content = f"{token}.bin", os.urandom(4096)
            box.upload(name, content)
            try:
                assert box.download(name).content == content
            except CodeBoxNotFoundError:
                assert stops  # stopped in between: the download went to a fresh box
        elif action == "stop":
            assert box.stop() == "stopped"
    except CodeBoxError as exc:
        assert "stop" in str(exc) or "taken" in str(exc) or "died" in str(exc), exc


async def async_action(box: Any, action: str, pause: float, stops: bool) -> None:
    """`sync_action`, with the async twins."""
    token = _token()
    try:
        if action == "run":
            _check_output(await box.arun(_code(token, pause), timeout=DEADLINE), token)
        elif action == "slow":
            _check_output(await box.arun(_code(token, 0.05, prints=6), timeout=DEADLINE),
                          token)
        elif action == "stream":
            async with box.astream(_code(token, pause, prints=3), timeout=DEADLINE) as stream:
                chunks = [c async for c in stream]
            _own([c.content for c in chunks], token)
            assert stream.result is not None and chunks == stream.result.chunks
        elif action == "abandon":
            stream = box.astream(_code(token, 0.2, prints=5), timeout=DEADLINE)
            _own([(await stream.__anext__()).content], token)
        elif action == "interrupt":
            assert await box.ainterrupt() in ("interrupted", "stopped")
        elif action == "restart":
            assert await box.arestart() == "restarted"
        elif action == "transfer":
            name, content = f"{token}.bin", os.urandom(4096)
            await box.aupload(name, content)
            try:
                assert (await box.adownload(name)).content == content
            except CodeBoxNotFoundError:
                assert stops  # stopped in between: the download went to a fresh box
        elif action == "stop":
            assert await box.astop() == "stopped"
    except CodeBoxError as exc:
        assert "stop" in str(exc) or "taken" in str(exc) or "died" in str(exc), exc


def _stops(actors: list[list[tuple[str, float]]]) -> bool:
    return any(action == "stop" for actions in actors for action, _ in actions)


def play_threads(box: Any, actors: list[list[tuple[str, float]]]) -> None:
    start = threading.Barrier(len(actors))

    def actor(actions: list[tuple[str, float]]) -> None:
        start.wait(DEADLINE)
        for action, pause in actions:
            sync_action(box, action, pause, _stops(actors))

    with ThreadPoolExecutor(len(actors)) as pool:
        for done in [pool.submit(actor, a) for a in actors]:
            done.result(timeout=DEADLINE * 6)


async def play_tasks(box: Any, actors: list[list[tuple[str, float]]]) -> None:
    async def actor(actions: list[tuple[str, float]]) -> None:
        for action, pause in actions:
            await asyncio.wait_for(async_action(box, action, pause, _stops(actors)), DEADLINE)

    await asyncio.wait_for(asyncio.gather(*(actor(a) for a in actors)), DEADLINE * 6)


def _settled(box: Any, answer: Callable[[], Any]) -> None:
    """After the actors: the next call works (taking back streams left behind), and then
    nothing holds the box."""
    out = answer()
    assert out.error is None and out.content == "2", out
    assert box._lease.holder is None and not box._lease.stopping


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory, env={"CODEBOX_SERVER_API_KEYS": KEY}) as srv:
        yield srv


def _box(backend: str, request: pytest.FixtureRequest) -> Any:
    if backend == "local":
        return LocalBox()
    srv = request.getfixturevalue("server")
    return CodeBox(api_key=KEY, base_url=srv.base_url)


@pytest.mark.parametrize("backend", ["local", "server"])
def test_threads_racing_on_one_box(backend, request):
    box = _box(backend, request)
    try:
        for seed in range(SCHEDULES):
            play_threads(box, schedule(seed))
            _settled(box, lambda: box.run("1 + 1", timeout=DEADLINE))
    finally:
        box.stop()


@pytest.mark.parametrize("backend", ["local", "server"])
def test_tasks_racing_on_one_box(backend, request):
    box = _box(backend, request)

    async def main() -> None:
        try:
            for seed in range(SCHEDULES):
                await play_tasks(box, schedule(10_000 + seed))
                out = await asyncio.wait_for(box.arun("1 + 1", timeout=DEADLINE), DEADLINE)
                _settled(box, lambda out=out: out)
        finally:
            await box.astop()

    asyncio.run(main())
