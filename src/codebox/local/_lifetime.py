"""A `LocalBox`'s life: when it was started and last used, its lifetime, and the one
thread per process that stops boxes whose lifetime ran out.

A box with a lifetime stops by itself that long after its last use; every call is a use (a
call in progress, or an open stream, keeps it alive: the box is busy then). The reaper
stops a box only when it can take the box's lease at once (`BaseBox._stop_if_idle`), so no
call is ever in flight when it stops one; a call that comes meanwhile waits for the stop,
then starts a fresh kernel, as after `stop()`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import datetime
from typing import Any, Protocol

from .._lifetimes import check_lifetime, utc
from ..schema import BoxInfo

logger = logging.getLogger(__name__)

_IDLE_EXIT = 30.0
"""Seconds the reaper thread waits with no box to watch before it ends."""


class _Box(Protocol):
    @property
    def session_id(self) -> str | None: ...

    def status(self) -> Any: ...

    def _stop_if_idle(self, still: Any) -> bool | None: ...


class Usage:
    """When one box was started and last used, and how long it may stay unused.

    Args:
        box: The box (held weakly: a box nobody holds is collected as before).
        lifetime: Seconds it may stay unused before it stops (None: forever).
    """

    def __init__(self, box: _Box, lifetime: float | None) -> None:
        self.lifetime = check_lifetime(lifetime)
        self.created: float | None = None
        self.last_used = time.time()
        self._box = weakref.ref(box)

    def expires(self) -> float | None:
        """When the box stops unless used again (wall-clock seconds; None: never)."""
        return None if self.lifetime is None else self.last_used + self.lifetime

    def touch(self) -> None:
        """The box is used now (a call begins or ends)."""
        self.last_used = time.time()
        if self.created is None:
            self.created = self.last_used
        if self.lifetime is not None:
            _reaper.watch(self)

    def set_lifetime(self, seconds: float | None) -> datetime | None:
        """Give the box a lifetime from now (None: none); when it expires."""
        self.lifetime = check_lifetime(seconds)
        self.touch()
        expires = self.expires()
        return None if expires is None else utc(expires)

    def stopped(self) -> None:
        """The box stopped: a later call starts it afresh."""
        self.created = None

    def info(self, box: _Box, template: str | None = None) -> BoxInfo:
        """What `LocalBox.list` shows of the box (``template``: its template's id)."""
        expires = self.expires()
        return BoxInfo(session_id=box.session_id or "", status=str(box.status()),
                       created=utc(self.created or self.last_used),
                       last_used=utc(self.last_used), template=template,
                       expires=None if expires is None else utc(expires))

    def _expired(self) -> bool:
        expires = self.expires()
        return expires is not None and time.time() >= expires

    def stop_if_expired(self) -> float | None:
        """Stop the box if its lifetime ran out and nothing uses it; when to look again
        (None: no need: it is gone, stopped or has no lifetime)."""
        box, expires = self._box(), self.expires()
        if box is None or expires is None or str(box.status()) == "stopped":
            return None
        if time.time() < expires:
            return expires
        stopped = box._stop_if_idle(self._expired)
        if stopped is None:  # busy: in use now, so used now
            self.last_used = time.time()
            return self.last_used + (self.lifetime or 0)
        if stopped:
            logger.info("box %s unused for %g s: stopped it", box.session_id, self.lifetime)
            return None
        return self.expires()  # used meanwhile


class _Reaper:
    """One daemon thread per process that stops the boxes whose lifetime ran out; it ends
    after `_IDLE_EXIT` seconds with nothing to watch."""

    def __init__(self) -> None:
        self._watched: set[Usage] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, usage: Usage) -> None:
        with self._wake:
            self._watched.add(usage)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="codebox-lifetimes",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def _round(self) -> float:
        """Look at every box once; when to look again."""
        with self._wake:
            watched = list(self._watched)
        due = time.time() + 1.0
        for usage in watched:
            try:
                again = usage.stop_if_expired()
            except Exception:  # the reaper must go on with the other boxes
                logger.exception("stopping a box after its lifetime failed")
                again = None
            if again is None:
                with self._wake:
                    self._watched.discard(usage)
            else:
                due = min(due, again)
        return due

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            due = self._round()
            with self._wake:
                if self._watched:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > _IDLE_EXIT:
                    self._thread = None
                    return
                self._wake.wait(min(max(due - time.time(), 0.05), 1.0))


_reaper = _Reaper()
