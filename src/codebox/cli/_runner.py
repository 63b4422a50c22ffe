"""``codebox run FILE`` and ``codebox shell CMD``: run a script or a command in a fresh box,
streaming its output as it comes.

The box is a `LocalBox`, or a box on a CodeBox server when ``CODEBOX_API_KEY`` is set
(`CodeBox` decides). Files can be uploaded before and downloaded after (with a progress bar
when a transfer is big enough to wait for). Text goes to this process's stdout and stderr
as the box produces it; images are saved as PNG files in a folder; a failure of the script
prints its traceback and gives a non-zero exit code. This module is the commands' logic;
the command line itself (``codebox.cli``) only parses arguments and calls `run_script` or
`run_command`.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .._checks import Command, check_command
from ..base import BaseBox, OnProgress
from ..errors import CodeBoxError
from ..remote import CodeBox
from ..schema import CLEAR_OUTPUT, CodeBoxOutput, CommandResult, OutputChunk
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

EXIT_TIMED_OUT = 124
"""A command ran past its timeout (as coreutils' ``timeout`` says it)."""

DEFAULT_IMAGES_DIR = Path("codebox-images")

PROGRESS_MIN_BYTES = 4 * 1024 * 1024
"""Transfers from this size on show a progress bar (on a terminal)."""

Upload = tuple[Path, str]
"""A file to upload: its local path and its name in the box."""
Download = tuple[str, Path]
"""A file to download: its name in the box and its local path."""


def parse_upload(spec: str) -> Upload:
    """``LOCAL[:BOX]``: a local file and its name in the box (default: its base name).

    Raises:
        ValueError: ``LOCAL`` is empty.
    """
    local, sep, name = spec.rpartition(":")
    if not sep or not local or os.path.exists(spec):
        local, name = spec, ""
    if not local:
        raise ValueError(f"not LOCAL[:BOX]: {spec!r}")
    return Path(local), name or Path(local).name


def parse_download(spec: str) -> Download:
    """``BOX[:LOCAL]``: a file of the box and where it goes (default: its base name in the
    current directory).

    Raises:
        ValueError: ``BOX`` is empty.
    """
    name, _, local = spec.partition(":")
    if not name:
        raise ValueError(f"not BOX[:LOCAL]: {spec!r}")
    return name, Path(local or Path(name).name)


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
        elif kind in ("error", CLEAR_OUTPUT):
            pass  # the traceback is printed once the run is over; a terminal keeps its text
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


@contextmanager
def _progress(name: str, err: IO[str], show: bool | None) -> Iterator[OnProgress]:
    """An ``on_progress`` that draws a bar on ``err`` once the transfer proves big enough
    (``show``: always, never, or ``None`` for big transfers on a terminal)."""
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            big = total >= PROGRESS_MIN_BYTES and err.isatty()
            if not (show or (show is None and big)):
                return
            from tqdm import tqdm

            bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                       file=err, leave=True, dynamic_ncols=True)
        bar.total = max(bar.total or 0, total)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _in_fresh_box(
    work: Callable[[BaseBox], int],
    uploads: Sequence[Upload],
    downloads: Sequence[Download],
    settings: CodeBoxSettings | None,
    err: IO[str],
    progress: bool | None,
) -> int:
    """Upload, ``work(box)``, download, in a box that is stopped afterwards; the exit code."""
    box = CodeBox(settings=settings)
    try:
        try:
            for local, name in uploads:
                with _progress(f"upload {name}", err, progress) as on_progress:
                    box.upload(name, local.read_bytes(), on_progress=on_progress)
            code = work(box)
            for name, local in downloads:
                with _progress(f"download {name}", err, progress) as on_progress:
                    got = box.download(name, on_progress=on_progress)
                local.parent.mkdir(parents=True, exist_ok=True)
                got.save(local)
        except KeyboardInterrupt:
            err.write("codebox: interrupted\n")
            return EXIT_INTERRUPTED
        except CodeBoxError as exc:
            err.write(f"codebox: the box failed: {exc}\n")
            return EXIT_BOX_ERROR
        except OSError as exc:  # a local file to upload or to write
            err.write(f"codebox: {exc}\n")
            return EXIT_BOX_ERROR
        return code
    finally:
        try:
            box.stop()
        except CodeBoxError as exc:  # the result is known; a failed cleanup only warns
            logger.warning("stopping the box failed: %s", exc)


def run_script(
    source: str | Path,
    *,
    images_dir: str | Path = DEFAULT_IMAGES_DIR,
    timeout: float | None = None,
    settings: CodeBoxSettings | None = None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    uploads: Sequence[Upload] = (),
    downloads: Sequence[Download] = (),
    progress: bool | None = None,
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
        uploads: Files uploaded before the script runs.
        downloads: Files downloaded after it ran (whether or not it failed).
        progress: Progress bars on ``stderr``: always, never, or ``None`` for transfers of
            `PROGRESS_MIN_BYTES` or more on a terminal.

    Returns:
        The exit code: `EXIT_OK`; `EXIT_FAILED` if the script raised (a ``SystemExit``
        gives its own code); `EXIT_BOX_ERROR` if the script or an upload could not be read,
        a download is missing, or the box failed; `EXIT_INTERRUPTED` after Ctrl-C.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        code = read_source(source, stdin)
    except (OSError, UnicodeDecodeError) as exc:
        err.write(f"codebox: cannot read {source}: {exc}\n")
        return EXIT_BOX_ERROR
    printer = _Printer(out, err, Path(images_dir))

    def work(box: BaseBox) -> int:
        output = box.run(code, timeout=timeout, on_output=printer)
        if output.error is not None and output.error.name != "SystemExit":
            err.write((output.error.traceback or str(output.error)).rstrip("\n") + "\n")
        if output.truncated:
            err.write("codebox: the output was cut at the box's output limit\n")
        return exit_code(output)

    return _in_fresh_box(work, uploads, downloads, settings, err, progress)


def command_exit_code(result: CommandResult) -> int:
    """The exit code a finished command gives, as a shell would: its own, `EXIT_TIMED_OUT`
    after a timeout, 128 + N when signal N ended it."""
    if result.timed_out:
        return EXIT_TIMED_OUT
    return 128 - result.exit_code if result.exit_code < 0 else result.exit_code


def run_command(
    command: Command,
    *,
    timeout: float | None = None,
    cwd: str | None = None,
    settings: CodeBoxSettings | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    uploads: Sequence[Upload] = (),
    downloads: Sequence[Download] = (),
    progress: bool | None = None,
) -> int:
    """Run one shell command in a fresh box and stream its output; the box is stopped
    afterwards.

    Args:
        command: A ``str`` for ``/bin/sh -c``, or a list ``[program, *args]``.
        timeout: Seconds the command may run (default: no limit).
        cwd: The directory it starts in, relative to the box.
        settings: As for `run_script`.
        stdout: As for `run_script`.
        stderr: As for `run_script`.
        uploads: As for `run_script`.
        downloads: As for `run_script`.
        progress: As for `run_script`.

    Returns:
        The command's exit code (see `command_exit_code`); `EXIT_BOX_ERROR` when the box
        failed or a file could not be moved; `EXIT_INTERRUPTED` after Ctrl-C.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        command = check_command(command)
    except ValueError as exc:
        err.write(f"codebox: {exc}\n")
        return EXIT_BOX_ERROR
    printer = _Printer(out, err, DEFAULT_IMAGES_DIR)

    def work(box: BaseBox) -> int:
        result = box.shell(command, timeout=timeout, cwd=cwd, on_output=printer)
        if result.timed_out:
            err.write(f"codebox: the command ran past its timeout of {timeout:g} s\n")
        elif result.exit_code < 0:
            err.write(f"codebox: the command was ended by {_signal_name(-result.exit_code)}\n")
        return command_exit_code(result)

    return _in_fresh_box(work, uploads, downloads, settings, err, progress)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


__all__ = [
    "DEFAULT_IMAGES_DIR",
    "EXIT_BOX_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMED_OUT",
    "PROGRESS_MIN_BYTES",
    "command_exit_code",
    "exit_code",
    "parse_download",
    "parse_upload",
    "read_source",
    "run_command",
    "run_script",
]
