"""A sandboxed kernel's own stdout and stderr (file descriptors 1 and 2, written by the box's
code directly, by the programs it starts, by the launcher and bwrap): a channel of the
kernel's own, never the gateway's log.

They go to a pipe that the gateway's event loop drains as it fills, keeping only the last
`TAIL` bytes (what a kernel that dies at launch said: bwrap's ``execvp ...: No such file or
directory``) and logging at debug level, each line escaped (no line breaks, no escape
sequences of its own: nothing the box writes can pass for a line of the log) and cut, at
most `LOGGED` bytes per kernel. Whatever else the box writes there is read and dropped: it
costs the gateway no memory.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

TAIL = 4096
"""Bytes of the kernel's last output kept, for the report of a launch that failed."""
LOGGED = 64 * 1024
"""Most bytes of one kernel's output that reach the gateway's debug log."""
_LINE = 300  # most characters of one logged line


def escaped(raw: bytes, limit: int = _LINE) -> str:
    """``raw`` as one printable line: control characters (line breaks, escape sequences)
    written as escapes, cut to ``limit`` characters."""
    text = raw.decode("utf-8", errors="replace")
    out = text.encode("unicode_escape").decode("ascii")
    return out if len(out) <= limit else out[:limit] + "..."


class KernelOutput:
    """Drains ``process.stdout`` (its stderr too) on the running loop."""

    def __init__(self, process: Any, name: str, log: logging.Logger | logging.LoggerAdapter[Any]):
        self.name, self.log = name, log
        self.tail = b""
        self._logged = 0
        self._partial = b""
        self._pipe = getattr(process, "stdout", None)
        self._fd: int | None = None
        self.closed = asyncio.get_running_loop().create_future()
        if self._pipe is None:
            self.closed.set_result(None)
            return
        self._fd = self._pipe.fileno()
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._read)

    def _read(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.tail = (self.tail + data)[-TAIL:]
        if self._logged < LOGGED:
            self._log(data)

    def _log(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[:_LINE * 4]
        for line in lines:
            if self._logged >= LOGGED:
                self.log.debug("kernel %s: (its further output is not logged)", self.name)
                return
            self._logged += len(line) + 1
            self.log.debug("kernel %s: %s", self.name, escaped(line))

    def said(self) -> str:
        """The kernel's last words, escaped: its last lines, at most `TAIL` bytes."""
        lines = [escaped(line, 1000) for line in self.tail.splitlines()[-5:] if line.strip()]
        return " / ".join(lines) or "(nothing)"

    async def wait_closed(self, timeout: float) -> None:
        """Wait until the pipe is drained to its end (the kernel and its children exited)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._fd)
            except RuntimeError:  # no loop running any more
                pass
            self._fd = None
        if self._pipe is not None:
            try:
                self._pipe.close()
            except OSError:
                pass
            self._pipe = None
        if not self.closed.done():
            self.closed.set_result(None)
