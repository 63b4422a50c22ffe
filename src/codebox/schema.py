"""The data codebox hands back: statuses, outputs, files (pydantic v2 models)."""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    ``"application/json"``, ...): the richest part of the display, whose text is ``content``.
    A display or a result also keeps its whole MIME bundle in ``data`` (the ``text/plain``
    alt text of a plot beside its PNG), and the id it can be updated by in ``display_id``.

    While a run streams, a chunk of type ``"clear_output"`` (`CLEAR_OUTPUT`) says the code
    cleared its output; `fold_chunks` turns live chunks into what a notebook shows.
    """

    model_config = ConfigDict(frozen=True)

    type: str
    content: str
    data: dict[str, Any] | None = None
    """The whole MIME bundle of a display or a result (``{mime: value}``), else None."""
    display_id: str | None = None
    """The id of the display this chunk shows; a later chunk with the same id replaces it."""

    def __str__(self) -> str:
        return self.content

    def __repr__(self) -> str:
        extra = f", data={sorted(self.data)!r}" if self.data else ""
        if self.display_id is not None:
            extra += f", display_id={self.display_id!r}"
        return f"OutputChunk(type={self.type!r}, content={_short(self.content)!r}{extra})"

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> dict[str, Any]:
        """The chunk for Jupyter: its whole bundle if it has one, else its own MIME type
        (base64 for PNG); ``text/plain`` in either case."""
        bundle: dict[str, Any] = {"text/plain": self.content if _is_text(self.type) else repr(self)}
        if self.data:
            bundle.update(self.data)
        elif self.type == "application/json":
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


CLEAR_OUTPUT = "clear_output"
"""The ``type`` of a live chunk that clears the output before it (``data["wait"]``: only
when the next output arrives, as Jupyter's ``clear_output(wait=True)``)."""


class ChunkFold:
    """Live chunks folded one by one into what a notebook shows: a ``"clear_output"``
    chunk clears what came before it (with ``data["wait"]``, at the next output), and a
    chunk whose ``display_id`` is already shown replaces that display where it stands.

    `fold_chunks` folds a whole list; a stream consumer that renders as chunks arrive can
    keep one of these and read `chunks` at any time. ``cost`` is bookkeeping for whoever
    bounds what is kept: the fold sums the costs of the chunks it holds.
    """

    def __init__(self) -> None:
        self.chunks: list[OutputChunk] = []
        self.cost = 0
        self.pending_clear = False
        self._costs: list[int] = []
        self._where: dict[str, list[int]] = {}  # display_id -> its places in `chunks`

    def freed_by(self, display_id: str | None) -> int:
        """The cost a new output with ``display_id`` would free (what it replaces or, after
        a waiting clear, everything)."""
        if display_id is not None and display_id in self._where:
            return sum(self._costs[i] for i in self._where[display_id])
        return self.cost if self.pending_clear else 0

    def shows(self, display_id: str) -> bool:
        """Whether a chunk of this display is shown."""
        return display_id in self._where

    def add(self, chunk: OutputChunk, cost: int = 0) -> None:
        """Fold in one live chunk."""
        if chunk.type == CLEAR_OUTPUT:
            if chunk.data and chunk.data.get("wait"):
                self.pending_clear = True
            else:
                self._clear()
            return
        places = self._where.get(chunk.display_id) if chunk.display_id is not None else None
        if places:
            # An update: every chunk of that display now shows the new one, in place.
            for i in places:
                self.cost += cost - self._costs[i]
                self.chunks[i], self._costs[i] = chunk, cost
            return
        if self.pending_clear:
            self._clear()
        if chunk.display_id is not None:
            self._where[chunk.display_id] = [len(self.chunks)]
        self.chunks.append(chunk)
        self._costs.append(cost)
        self.cost += cost

    def _clear(self) -> None:
        self.chunks, self._costs, self.cost, self.pending_clear = [], [], 0, False
        self._where = {}


def fold_chunks(chunks: Iterable[OutputChunk]) -> list[OutputChunk]:
    """What a notebook shows at the end of these live chunks (see `ChunkFold`).

    ``run`` computes its result's ``chunks`` this way from the chunks ``stream`` yields, so
    ``fold_chunks(list(box.stream(code))) == box.run(code).chunks``; for code that neither
    clears nor updates a display, the fold changes nothing.
    """
    fold = ChunkFold()
    for chunk in chunks:
        fold.add(chunk)
    return fold.chunks


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



def _utc(moment: datetime | None) -> datetime | None:
    # A naive datetime is taken as UTC; an aware one is converted to it.
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class BoxInfo(BaseModel):
    """One box as `LocalBox.list` / `CodeBox.list` show it. Datetimes are timezone-aware,
    in UTC.

    Attributes:
        session_id: The box's session id (`from_id` takes it).
        status: ``"running"``, ``"starting"``, ``"stopping"`` (its lifetime ran out),
            ``"paused"``, ...
        created: When it was started.
        last_used: When a call last used it.
        template: The template it started from, if any.
        expires: When it stops by itself unless used again (None: never).
    """

    model_config = ConfigDict(frozen=True)

    session_id: str
    status: str
    created: datetime
    last_used: datetime
    template: str | None = None
    expires: datetime | None = None

    @field_validator("created", "last_used", "expires")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class Snapshot(BaseModel):
    """A box's state at one moment (`BaseBox.snapshot`): its files, the packages installed
    into it and its variables; ``LocalBox(snapshot=...)``, ``CodeBox(snapshot=...)`` and
    `BaseBox.fork` start a box from it.

    Attributes:
        id: The snapshot's id (for `LocalBox.delete_snapshot`, ``snapshot=``).
        created: When it was taken (UTC).
        size: Bytes it takes.
        unpicklable: The names of the variables that could not be saved (a restored box
            does not have them).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    created: datetime
    size: int
    unpicklable: list[str] = Field(default_factory=list)

    @field_validator("created")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        utc = _utc(value)
        assert utc is not None
        return utc
