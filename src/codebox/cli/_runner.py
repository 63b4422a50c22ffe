"""``codebox run FILE``: run a script in a fresh box, streaming its output as it comes.

The box is a `LocalBox`, or a box on a CodeBox server when ``CODEBOX_API_KEY`` is set
(`CodeBox` decides). Text goes to this process's stdout and stderr as the kernel produces
it; images are saved as PNG files in a folder; a failure of the script prints its
traceback and gives a non-zero exit code. This module is the command's logic; the command
line itself (``codebox.cli``) only parses arguments and calls `run_script`.
"""

from __future__ import annotations

import base64
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import CodeBoxError
from ..remote import CodeBox
from ..schema import CodeBoxOutput, OutputChunk
from ..settings import CodeBoxSettings

logger = logging.getLogger(__name__)

EXIT_OK = 0
"""The script ran to its end."""
EXIT_FAILED = 1
"""The script raised an exception (or ran past its timeout)."""
EXIT_BOX_ERROR = 2
"""The script could not be read, or the box failed."""
EXIT_INTERRUPTED = 130
"""Interrupted with Ctrl-C (the kernel was interrupted too)."""

DEFAULT_IMAGES_DIR = Path("codebox-images")


@dataclass
class _Printer:
    """Writes each chunk where it belongs, as it arrives; saves images."""

    stdout: IO[str]
    stderr: IO[str]
    images_dir: Path
    saved: list[Path] = field(default_factory=list)

    def __call__(self, chunk: OutputChunk) -> None:
        kind, content = chunk.type, chunk.content
        if kind == "stdout":
            self._write(self.stdout, content)
        elif kind == "stderr":
            self._write(self.stderr, content)
        elif kind in ("text", "text/markdown", "text/latex"):
            self._write(self.stdout, content if content.endswith("\n") else content + "\n")
        elif kind == "application/json":
            self._write(self.stdout, content + "\n")
        elif kind == "image/png":
            path = self._save_image(content)
            self._write(self.stderr, f"[image saved: {path}]\n")
        elif kind == "error":
            pass  # the traceback is printed once the run is over
        else:
            self._write(self.stderr, f"[{kind} output not shown: {len(content)} characters]\n")

    @staticmethod
    def _write(stream: IO[str], text: str) -> None:
        stream.write(text)
        stream.flush()

    def _save_image(self, data: str) -> Path:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        n = len(self.saved) + 1
        path = self.images_dir / f"image-{n}.png"
        while path.exists():  # never overwrite images of an earlier run
            n += 1
            path = self.images_dir / f"image-{n}.png"
        path.write_bytes(base64.b64decode(data))
        self.saved.append(path)
        return path


def read_source(source: str | Path, stdin: IO[str] | None = None) -> str:
    """The code to run: the text of the file ``source``, or of stdin when it is ``"-"``.

    Raises:
        OSError: The file cannot be read.
    """
    if str(source) == "-":
        return (stdin or sys.stdin).read()
    return Path(source).read_text(encoding="utf-8")


def exit_code(output: CodeBoxOutput) -> int:
    """The exit code a finished run gives: 0, `EXIT_FAILED`, or the code of a
    ``SystemExit`` the script raised (``sys.exit(3)`` gives 3)."""
    if output.error is None:
        return EXIT_OK
    if output.error.name == "SystemExit":
        value = output.error.value.strip()
        if value in ("", "None"):
            return EXIT_OK
        try:
            return int(value)
        except ValueError:
            return EXIT_FAILED  # sys.exit("message") exits with 1, as Python does
    return EXIT_FAILED


def run_script(
    source: str | Path,
    *,
    images_dir: str | Path = DEFAULT_IMAGES_DIR,
    timeout: float | None = None,
    settings: CodeBoxSettings | None = None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run a script in a fresh box and stream its output; the box is stopped afterwards.

    Args:
        source: The script's path, or ``"-"`` to read it from ``stdin``.
        images_dir: Where images (plots) are saved, as ``image-1.png``, ``image-2.png``, ...
            (created when the first image arrives; existing files are not overwritten).
        timeout: Seconds the script may run (default: no limit); past it the run is
            interrupted and fails.
        settings: Settings of the box (default: from ``CODEBOX_*`` and ``.env``); with an
            API key the script runs on that CodeBox server.
        stdin: Read instead of ``sys.stdin`` when ``source`` is ``"-"``.
        stdout: Where the script's stdout and results go (default ``sys.stdout``).
        stderr: Where its stderr, the traceback and notes go (default ``sys.stderr``).

    Returns:
        The exit code: `EXIT_OK`; `EXIT_FAILED` if the script raised (a ``SystemExit``
        gives its own code); `EXIT_BOX_ERROR` if the script could not be read or the box
        failed; `EXIT_INTERRUPTED` after Ctrl-C.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        code = read_source(source, stdin)
    except (OSError, UnicodeDecodeError) as exc:
        err.write(f"codebox: cannot read {source}: {exc}\n")
        return EXIT_BOX_ERROR
    printer = _Printer(out, err, Path(images_dir))
    box = CodeBox(settings=settings)
    try:
        try:
            output = box.run(code, timeout=timeout, on_output=printer)
        except KeyboardInterrupt:
            err.write("codebox: interrupted\n")
            return EXIT_INTERRUPTED
        except CodeBoxError as exc:
            err.write(f"codebox: the box failed: {exc}\n")
            return EXIT_BOX_ERROR
        if output.error is not None and output.error.name != "SystemExit":
            err.write((output.error.traceback or str(output.error)).rstrip("\n") + "\n")
        if output.truncated:
            err.write("codebox: the output was cut at the box's output limit\n")
        return exit_code(output)
    finally:
        try:
            box.stop()
        except CodeBoxError as exc:  # the result is known; a failed cleanup only warns
            logger.warning("stopping the box failed: %s", exc)


__all__ = [
    "DEFAULT_IMAGES_DIR",
    "EXIT_BOX_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "exit_code",
    "read_source",
    "run_script",
]
