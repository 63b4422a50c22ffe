"""Bounds on what one run may produce, shared by every hop that enforces them: the kernel
side, the gateway codebox spawns (the first hop out of a box), the client's `Execution` and
the server. Standard library only: the gateway imports it, and a kernel loads it by path.

A hop that drops output replaces what it dropped with a short notice and marks the message
it passes on with ``metadata[TRUNCATED_KEY] = <bytes dropped>``, so every later hop (and the
user, through ``CodeBoxOutput.truncated``) knows the output is not whole.
"""

from __future__ import annotations

OUTPUT_LIMIT = 16 * 1024 * 1024
"""Default most bytes of output kept per run, every kind together (text, results, displays
of any MIME type, errors and tracebacks): a 10 MB print still arrives whole."""

MESSAGE_LIMIT = OUTPUT_LIMIT
"""Default most bytes of one output message; a larger one is replaced by a notice."""

TRUNCATED_KEY = "codebox_truncated"
"""Metadata key of a message a hop cut: the number of bytes it dropped."""


def notice(what: str, dropped: int) -> str:
    """The text that stands in for output a hop dropped (``what``: its kind)."""
    return f"\n[codebox: {dropped} bytes of {what} dropped: the output limit was reached]\n"


NOTICE_PATTERN = (r"\n\[codebox: (\d+) bytes of ([^\n\]]+) dropped: "
                  r"the output limit was reached\]\n")
"""A regular expression matching one `notice` (groups: the bytes, the kind), so that a
later hop can read what an earlier one dropped."""
