"""When a request of the CodeBox REST API is sent again, and after how long: the one
place that decides it, for every route (streams included). Pure: the clock and the
randomness are the caller's to give.

A request is repeated only where a repeat cannot run code twice: after a connection
failure before anything was sent (any operation), and after 429/502/503/504 on the
operations that change nothing (`RETRY_STATUS_OPS`).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._replies import Reply, header

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses after which a request that cannot run code is sent again."""

RETRY_STATUS_OPS = frozenset(
    {"start", "status", "files", "download", "capabilities", "file_info", "sessions",
     "lifetime", "delete_snapshot"}
)
"""Operations sent again after one of `RETRY_STATUSES`. ``run``, ``install`` and ``upload``
are never sent twice; any operation is retried when the connection failed before sending."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date); ``None``
    when absent or unreadable; never negative. ``now``: the wall-clock time for dates."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again, and after how long.

    Attributes:
        max_retries: Most repeats of one request (0: none).
        base_delay: Seconds before the first retry, doubled each time (before jitter).
        max_delay: Most seconds of backoff between two attempts.
        max_retry_after: Most seconds a server's ``Retry-After`` makes us wait.
        deadline: Most seconds from a request's first attempt to the start of its last
            one: a retry that would start later is not made (``None``: no limit).
        rand: A source of numbers in [0, 1) for the jitter.
        clock: The wall-clock time, for ``Retry-After`` dates.
        monotonic: The clock of `deadline`.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    deadline: float | None = 120.0
    rand: Callable[[], float] = random.random
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (0-based): exponential, half of
        it random ("equal jitter"), at most ``max_delay``."""
        full = min(self.max_delay, self.base_delay * 2**attempt)
        return full / 2 + self.rand() * full / 2

    def after_reply(self, op: str, attempt: int, reply: Reply) -> float | None:
        """Seconds to wait before sending ``op`` again after ``reply``, or ``None`` to stop.

        Only `RETRY_STATUSES` on `RETRY_STATUS_OPS` are retried; ``Retry-After`` (seconds or
        an HTTP date) is honoured up to ``max_retry_after``, else exponential backoff.

        Args:
            op: The operation.
            attempt: How many attempts failed before this one (0 for the first).
            reply: The reply of this attempt.
        """
        if attempt >= self.max_retries:
            return None
        if reply.status not in RETRY_STATUSES or op not in RETRY_STATUS_OPS:
            return None
        after = parse_retry_after(header(reply.headers, "retry-after"), self.clock())
        if after is not None:
            return min(after, self.max_retry_after)
        return self.backoff(attempt)

    def after_failure(self, op: str, attempt: int, unsent: bool) -> float | None:
        """Seconds to wait before sending ``op`` again after a transport failure, or ``None``.

        Args:
            op: The operation (any operation is retried when nothing was sent).
            attempt: How many attempts failed before this one (0 for the first).
            unsent: The connection failed before the request was sent.
        """
        if attempt >= self.max_retries or not unsent:
            return None
        return self.backoff(attempt)

    def in_time(self, first_attempt: float, delay: float) -> bool:
        """Whether a retry after ``delay`` more seconds starts within `deadline` of the
        request's first attempt (at ``first_attempt`` on the `monotonic` clock)."""
        if self.deadline is None:
            return True
        return self.monotonic() + delay - first_attempt <= self.deadline
