"""`Usage`, a LocalBox's lifetime bookkeeping, in memory: what is a use, and that a box is
stopped only when its lifetime ran out and it can be taken at once (nothing runs on it)."""

from __future__ import annotations

import time

import pytest

from codebox.local._lifetime import Usage


class FakeBox:
    """What `Usage` needs of a box: its status, and a stop that happens only when the box
    is free (``busy``: someone holds or waits for it)."""

    session_id = "fake"

    def __init__(self) -> None:
        self.state = "running"
        self.busy = False
        self.stops = 0

    def status(self) -> str:
        return self.state

    def _stop_if_idle(self, still):
        if self.busy:
            return None
        if not still():
            return False
        self.stops += 1
        self.state = "stopped"
        return True


def test_a_box_is_stopped_only_when_expired_and_free():
    box = FakeBox()
    usage = Usage(box, 5)
    usage.touch()
    assert usage.created is not None
    assert usage.stop_if_expired() == pytest.approx(usage.last_used + 5)  # not yet
    usage.last_used = time.time() - 10
    box.busy = True  # a call in progress or an open stream: in use, so used now
    again = usage.stop_if_expired()
    assert box.stops == 0 and again == pytest.approx(time.time() + 5, abs=1)
    box.busy = False
    usage.last_used = time.time() - 10
    assert usage.stop_if_expired() is None and box.stops == 1
    assert usage.stop_if_expired() is None and box.stops == 1  # stopped: nothing to do
    assert Usage(FakeBox(), None).stop_if_expired() is None  # no lifetime: never


def test_a_use_between_the_check_and_the_stop_keeps_the_box():
    box = FakeBox()
    usage = Usage(box, 5)
    usage.last_used = time.time() - 10
    real = box._stop_if_idle

    def used_meanwhile(still):
        usage.touch()  # a call came and went just before the box was taken
        return real(still)

    box._stop_if_idle = used_meanwhile
    assert usage.stop_if_expired() == pytest.approx(time.time() + 5, abs=1)
    assert box.stops == 0 and box.state == "running"


def test_set_lifetime_counts_as_a_use_and_says_when():
    usage = Usage(FakeBox(), None)
    before = time.time()
    expires = usage.set_lifetime(30)
    assert expires is not None and before + 29 < expires.timestamp() < time.time() + 31
    assert usage.set_lifetime(None) is None and usage.expires() is None
    with pytest.raises(ValueError):
        usage.set_lifetime(0)
