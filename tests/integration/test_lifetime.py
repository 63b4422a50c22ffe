"""`LocalBox` lifetimes and `LocalBox.list` on real kernels: a box stops by itself its
lifetime after its last use, every call extends it, a call in progress keeps it, and the
list shows this process's boxes with when they expire."""

from __future__ import annotations

import asyncio
import time

import pytest

from codebox import BoxInfo, CodeBox, LocalBox
from tests.helpers import wait_until


def _listed(box) -> BoxInfo | None:
    return next((i for i in LocalBox.list() if i.session_id == box.session_id), None)


def test_a_box_stops_its_lifetime_after_its_last_use_and_calls_extend_it():
    timed, kept = LocalBox(lifetime=2), LocalBox()
    try:
        assert _listed(timed) is None  # never started: nothing to list
        timed.run("x = 1")
        kept.run("1")
        info = _listed(timed)
        assert info is not None and info.status == "running"
        assert info.expires.timestamp() == pytest.approx(info.last_used.timestamp() + 2,
                                                         abs=0.01)
        assert info.created <= info.last_used and info.created.tzinfo is not None
        assert _listed(kept).expires is None
        # Used now and then for longer than its lifetime: it stays, and keeps its state.
        until = time.monotonic() + 4
        while time.monotonic() < until:
            assert timed.run("x").content == "1"
            time.sleep(0.5)  # a caller that comes back now and then, not a wait
        left = time.monotonic()
        wait_until(lambda: timed.status() == "stopped", timeout=15)
        assert time.monotonic() - left >= 1.5
        assert _listed(timed) is None and _listed(kept) is not None
        assert kept.status() == "running"
        # A stopped box starts again on its next call, as after stop().
        assert timed.run("'x' in dir()").content == "False"
    finally:
        timed.stop()
        kept.stop()


def test_a_call_longer_than_the_lifetime_is_not_cut():
    with LocalBox(lifetime=1) as box:
        out = box.run("import time\ntime.sleep(3)\n'done'")
        assert out.content == "'done'" and out.error is None
        assert box.status() == "running"


def test_set_lifetime_from_now_and_none_for_never():
    with LocalBox() as box:
        assert box.set_lifetime(None) is None
        expires = box.set_lifetime(300)
        assert expires.timestamp() == pytest.approx(time.time() + 300, abs=2)
        for bad in (0, -1, float("nan"), float("inf"), "10", True):
            with pytest.raises(ValueError, match="lifetime"):
                box.set_lifetime(bad)
        assert box.set_lifetime(1) is not None
        wait_until(lambda: box.status() == "stopped", timeout=15)
    with pytest.raises(ValueError, match="lifetime"):
        LocalBox(lifetime=-5)


def test_async_twins_and_codebox_without_a_key():
    async def scenario():
        async with LocalBox() as box:
            expires = await box.aset_lifetime(60)
            listed = {i.session_id: i for i in await LocalBox.alist()}
            assert listed[box.session_id].expires == expires
            # Without an API key, CodeBox lists this process's boxes too.
            assert box.session_id in {i.session_id for i in await CodeBox.alist()}
            assert box.session_id in {i.session_id for i in CodeBox.list()}
            local = CodeBox(lifetime=30)
            assert isinstance(local, LocalBox)
            await local.arun("1")
            assert _listed(local).expires is not None
            await local.astop()

    asyncio.run(scenario())
