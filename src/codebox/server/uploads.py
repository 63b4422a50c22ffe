"""Receiving an upload: the multipart body is parsed as it arrives and the part named
``file`` is spooled to a private temporary file, never held whole in memory. Past the size
limit the transfer stops at once, and the spool file is removed whatever happens."""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from ..errors import CodeBoxError

FIELD = "file"
"""The name of the multipart part that carries the file (docs/protocol.md)."""

ENVELOPE = 64 * 1024
"""Bytes a multipart body may hold beyond its file: boundaries, part headers, names."""


class UploadTooLarge(CodeBoxError):
    """The uploaded file is larger than the server accepts."""


class BadUpload(CodeBoxError):
    """The request is not a multipart body with a ``file`` part that has a file name."""


@dataclass(frozen=True)
class SpooledUpload:
    """A received file: the name its part gave, where it is spooled, its size in bytes."""

    name: str
    path: Path
    size: int


# The HTML5 form encoding clients use in part headers: `"` and control characters are
# percent-escaped, nothing else is.
_FORM_ESCAPE = re.compile(r"%(22|[01][0-9A-Fa-f])")


def _unescape_form_name(value: str) -> str:
    return _FORM_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def _decode_header(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _FilePart:
    """Parser callbacks: write the data of the first ``file`` part to ``out``."""

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self.out = out
        self.limit = limit
        self.size = 0
        self.filename: str | None = None
        self.found = False
        self.complete = False
        self._capturing = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._capturing = [], False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._field.strip().lower(), self._value.strip()))
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        disposition = next((v for k, v in self._headers if k == b"content-disposition"), b"")
        _, params = parse_options_header(disposition)
        if self.found or _decode_header(params.get(b"name", b"")) != FIELD:
            return
        self.found = self._capturing = True
        raw = params.get(b"filename")
        self.filename = None if raw is None else _unescape_form_name(_decode_header(raw))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._capturing:
            return
        self.size += end - start
        if self.size > self.limit:
            raise UploadTooLarge(f"the file is larger than {self.limit} bytes, the most "
                                 "this server accepts")
        self.out.write(data[start:end])

    def _part_end(self) -> None:
        if self._capturing:
            self._capturing = False
            self.complete = True


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse a body whose ``Content-Length`` says it is too large, before reading it.

    Raises:
        UploadTooLarge: It is.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + ENVELOPE:
        raise UploadTooLarge(f"the upload is larger than {limit} bytes, the most this server "
                             "accepts")


@contextlib.asynccontextmanager
async def receive_upload(
    request: Request, *, limit: int, directory: Path
) -> AsyncIterator[SpooledUpload]:
    """Spool the ``file`` part of a multipart request; the spool file lives as long as the
    context.

    Raises:
        UploadTooLarge: The file is larger than ``limit`` bytes (read no further).
        BadUpload: The body is not a multipart form with a named ``file`` part.
    """
    check_declared_size(request, limit)
    kind, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise BadUpload(f"an upload is a multipart/form-data body with a part named {FIELD!r}")
    fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            part = _FilePart(out, limit)
            parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
            received = 0
            malformed: ParseError | None = None
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit + ENVELOPE:
                    raise UploadTooLarge(f"the upload is larger than {limit} bytes, the most "
                                         "this server accepts")
                if malformed is None:
                    try:
                        parser.write(chunk)
                    except ParseError as exc:
                        # Read the rest (it is bounded) and drop it, so that the connection
                        # can carry the client's next request.
                        malformed = exc
            if malformed is None:
                try:
                    parser.finalize()
                except ParseError as exc:
                    malformed = exc
            if malformed is not None:
                raise BadUpload(f"the body is not valid multipart/form-data: {malformed}")
        if not part.found or not part.complete:
            raise BadUpload(f"the multipart body has no complete part named {FIELD!r}")
        if not part.filename:
            raise BadUpload(f"the part {FIELD!r} has no filename: it names the file in the box")
        yield SpooledUpload(part.filename, path, part.size)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def mapped(upload: SpooledUpload) -> Iterator[memoryview | bytes]:
    """The spooled bytes, memory-mapped rather than read into memory."""
    if upload.size == 0:
        yield b""
        return
    with open(upload.path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            yield view
        finally:
            try:
                view.release()
                mm.close()
            except BufferError:  # a view of it is still referenced: the collector frees it
                pass
