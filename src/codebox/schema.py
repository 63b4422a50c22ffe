"""The data codebox hands back: statuses, outputs, files (pydantic v2 models)."""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_REPR_LIMIT = 60


def _short(text: str, limit: int = _REPR_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…(+{len(text) - limit} chars)"


class CodeBoxStatus(BaseModel):
    """The status of a box or of an operation on it.

    ``str(status)`` is the status text, and a status compares equal to that text:
    ``box.status() == "running"``.
    """

    model_config = ConfigDict(frozen=True)

    status: str

    def __str__(self) -> str:
        return self.status

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.status == other
        if isinstance(other, CodeBoxStatus):
            return self.status == other.status
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.status)


class OutputChunk(BaseModel):
    """One piece of output, in the order the kernel produced it.

    ``type`` is ``"stdout"``, ``"stderr"``, ``"text"`` (an execute result's ``text/plain``),
    ``"error"`` (content ``"Name: value"``), or the MIME type of rich display data
    (``"image/png"`` as base64 without a data-URL prefix, ``"image/svg+xml"``, ``"text/html"``,
    ``"application/json"``, ...).
    """

    model_config = ConfigDict(frozen=True)

    type: str
    content: str

    def __str__(self) -> str:
        return self.content

    def __repr__(self) -> str:
        return f"OutputChunk(type={self.type!r}, content={_short(self.content)!r})"

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> dict[str, Any]:
        """The chunk for Jupyter: its own MIME type (base64 for PNG) and ``text/plain``."""
        bundle: dict[str, Any] = {"text/plain": self.content if _is_text(self.type) else repr(self)}
        if self.type == "application/json":
            try:
                bundle["application/json"] = json.loads(self.content)
            except ValueError:
                pass
        elif not _is_text(self.type):
            bundle[self.type] = self.content
        return _filter_bundle(bundle, include, exclude)

    def _repr_png_(self) -> bytes | None:
        """The PNG bytes of an ``image/png`` chunk (``None`` for other chunks)."""
        return _png_bytes(self.content) if self.type == "image/png" else None

    def _repr_html_(self) -> str:
        """The chunk as HTML: images inline, HTML as is, text in a ``<pre>`` block."""
        return _chunk_html(self)


class ExecError(BaseModel):
    """An exception raised by the user's code: its name, its value and the traceback as
    plain text (no ANSI colour codes)."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


class CodeBoxOutput(BaseModel):
    """The result of ``run``.

    ``type``/``content`` is the one-line summary older clients know: ``"error"`` with
    ``"Name: value"`` if the run failed; else ``"image/png"`` with the first PNG if one was
    produced; else ``"text"`` with all text output concatenated in order. ``chunks`` holds
    every output in order; ``stdout``, ``stderr``, ``images`` and ``error`` are views on it.
    """

    type: str = "text"
    content: str = ""
    chunks: list[OutputChunk] = Field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    images: list[str] = Field(default_factory=list)
    error: ExecError | None = None
    execution_count: int | None = None
    truncated: bool = False

    @classmethod
    def from_chunks(
        cls,
        chunks: list[OutputChunk],
        *,
        error: ExecError | None = None,
        execution_count: int | None = None,
        truncated: bool = False,
    ) -> CodeBoxOutput:
        """Build an output, its views and its summary from the chunks of one run."""
        stdout = "".join(c.content for c in chunks if c.type == "stdout")
        stderr = "".join(c.content for c in chunks if c.type == "stderr")
        images = [c.content for c in chunks if c.type == "image/png"]
        if error is not None:
            kind, content = "error", str(error)
        elif images:
            kind, content = "image/png", images[0]
        else:
            kind = "text"
            content = "".join(c.content for c in chunks if c.type in ("stdout", "stderr", "text"))
        return cls(
            type=kind,
            content=content,
            chunks=chunks,
            stdout=stdout,
            stderr=stderr,
            images=images,
            error=error,
            execution_count=execution_count,
            truncated=truncated,
        )

    def __str__(self) -> str:
        return self.content

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.content == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = f", error={self.error.name!r}" if self.error else ""
        return (
            f"CodeBoxOutput(type={self.type!r}, content={_short(self.content)!r}, "
            f"chunks={len(self.chunks)}{extra})"
        )

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> dict[str, Any]:
        """The whole output for Jupyter: every chunk in order as HTML (images inline,
        the error with its traceback), the first image as PNG, and plain text."""
        if self.type == "image/png":
            plain = repr(self)
        elif self.error is not None and self.error.traceback:
            plain = self.content + "\n" + self.error.traceback
        else:
            plain = self.content
        bundle: dict[str, Any] = {"text/plain": plain, "text/html": self._repr_html_()}
        if self.images:
            bundle["image/png"] = self.images[0]
        return _filter_bundle(bundle, include, exclude)

    def _repr_png_(self) -> bytes | None:
        """The first image as PNG bytes (``None`` if the run made none)."""
        return _png_bytes(self.images[0]) if self.images else None

    def _repr_html_(self) -> str:
        """Every chunk in order as HTML, then the error with its traceback."""
        parts = [_chunk_html(c) for c in self.chunks if c.type != "error" or self.error is None]
        if self.error is not None:
            text = self.error.traceback or str(self.error)
            parts.append(f'<pre style="{_ERROR_STYLE}">{html.escape(text)}</pre>')
        if self.truncated:
            parts.append("<p><em>(output truncated at the box's output limit)</em></p>")
        return "<div class=\"codebox-output\">" + "".join(parts) + "</div>"


_TEXT_TYPES = ("stdout", "stderr", "text", "error")
_PRE_STYLE = "margin:0;white-space:pre-wrap"
_ERROR_STYLE = _PRE_STYLE + ";color:#b00020"
_STDERR_STYLE = _PRE_STYLE + ";background:#fff0f0"


def _is_text(kind: str) -> bool:
    return kind in _TEXT_TYPES


def _png_bytes(data: str) -> bytes | None:
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return None


def _chunk_html(chunk: OutputChunk) -> str:
    kind, content = chunk.type, chunk.content
    if kind == "image/png":
        return f'<img src="data:image/png;base64,{html.escape(content)}" alt="image"/>'
    if kind in ("text/html", "image/svg+xml"):
        return content
    style = {"stderr": _STDERR_STYLE, "error": _ERROR_STYLE}.get(kind, _PRE_STYLE)
    return f'<pre style="{style}">{html.escape(content)}</pre>'


def _filter_bundle(bundle: dict[str, Any], include: Any, exclude: Any) -> dict[str, Any]:
    if include:
        bundle = {k: v for k, v in bundle.items() if k in include}
    if exclude:
        bundle = {k: v for k, v in bundle.items() if k not in exclude}
    return bundle


class CodeBoxFile(BaseModel):
    """A file or directory in a box: its name (a relative path), its size and, after a
    download, its content; from `file_info`, also whether it is a directory and when it was
    last modified. ``str(file)`` is the name."""

    name: str
    size: int | None = None
    content: bytes | None = None
    is_dir: bool = False
    modified: datetime | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], name: str | None = None) -> CodeBoxFile:
        """Read a local file; its box name is ``name`` or the file's base name."""
        p = Path(path)
        content = p.read_bytes()
        return cls(name=name or p.name, size=len(content), content=content)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the content to a local file and return its path.

        Raises:
            ValueError: The file has no content (it was listed, not downloaded).
        """
        if self.content is None:
            raise ValueError(f"{self.name!r} has no content: download it first")
        p = Path(path)
        p.write_bytes(self.content)
        return p

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        kind = ", is_dir=True" if self.is_dir else ""
        return f"CodeBoxFile(name={self.name!r}, size={self.size!r}{kind})"


class CommandResult(BaseModel):
    """The result of ``shell``: how the command ended and everything it printed.

    ``chunks`` holds the output in order as ``"stdout"``/``"stderr"`` chunks; ``stdout``
    and ``stderr`` are views on it. A non-zero ``exit_code`` is data, not an error; a
    command ended by a signal has the negative signal number (``-9`` after a timeout or an
    interrupt), as in `subprocess`.
    """

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    chunks: list[OutputChunk] = Field(default_factory=list)
    timed_out: bool = False
    truncated: bool = False

    @classmethod
    def from_chunks(
        cls, chunks: list[OutputChunk], *, exit_code: int, timed_out: bool = False,
        truncated: bool = False,
    ) -> CommandResult:
        """Build a result and its views from the chunks of one command."""
        return cls(
            exit_code=exit_code,
            stdout="".join(c.content for c in chunks if c.type == "stdout"),
            stderr="".join(c.content for c in chunks if c.type == "stderr"),
            chunks=chunks,
            timed_out=timed_out,
            truncated=truncated,
        )

    @property
    def ok(self) -> bool:
        """Whether the command exited with 0 (and did not time out)."""
        return self.exit_code == 0 and not self.timed_out

    def __str__(self) -> str:
        return "".join(c.content for c in self.chunks)

    def __repr__(self) -> str:
        extra = ", timed_out=True" if self.timed_out else ""
        return (f"CommandResult(exit_code={self.exit_code}, "
                f"stdout={_short(self.stdout)!r}, stderr={_short(self.stderr)!r}{extra})")

