"""Lifetimes, as every box and the server take them: a number of seconds a box may stay
unused before it stops by itself, and the UTC datetimes that say when."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def check_lifetime(seconds: float | None) -> float | None:
    """``seconds`` as a lifetime (a positive, finite number of seconds), or None.

    Raises:
        ValueError: It is not one.
    """
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"lifetime must be a number of seconds or None, not {seconds!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"lifetime must be a positive, finite number of seconds, not "
                         f"{seconds!r}")
    return float(seconds)


def utc(seconds: float) -> datetime:
    """Wall-clock seconds as a timezone-aware datetime in UTC."""
    return datetime.fromtimestamp(seconds, tz=UTC)
