"""The data codebox hands back: statuses, outputs, files (pydantic v2 models)."""

from __future__ import annotations

import os
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

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self.type in ("stdout", "stderr", "text", "error"):
            return {"text/plain": self.content}
        return {self.type: self.content, "text/plain": repr(self)}


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

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": self.content if self.type != "image/png" else ""}
        if self.images:
            bundle["image/png"] = self.images[0]
        for chunk in self.chunks:
            if chunk.type in ("text/html", "image/svg+xml") and chunk.type not in bundle:
                bundle[chunk.type] = chunk.content
        return bundle


class CodeBoxFile(BaseModel):
    """A file in a box: its name (a relative path), its size and, after a download, its
    content. ``str(file)`` is the name."""

    name: str
    size: int | None = None
    content: bytes | None = None

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
        return f"CodeBoxFile(name={self.name!r}, size={self.size!r})"

