"""The NDJSON lines of a streamed run (``run/stream``), read without I/O.

Chunks come one JSON object per line as the code produces them (with ``data`` and
``display_id`` from a server with the ``bundles`` extension); the last line is
``{"type": "end", "output": ...}``, or ``{"type": "end", "error": {"status", "detail"}}``
when the server or the box failed mid-run: that becomes the `CodeBoxError` the same
failure raises on ``/run``, with the chunks received so far as its ``chunks``.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import CodeBoxConnectionError, CodeBoxError
from ..schema import CodeBoxOutput, CommandResult, OutputChunk, fold_chunks
from ._replies import detail_of, error_class, parse_command, parse_run


def chunk_of(item: dict[str, Any]) -> OutputChunk:
    """The chunk of a stream line; a display's bundle and id where the server sends them
    (extension ``bundles``; ignored when malformed)."""
    data, display_id = item.get("data"), item.get("display_id")
    return OutputChunk(type=item["type"], content=str(item.get("content", "")),
                       data=data if isinstance(data, dict) else None,
                       display_id=display_id if isinstance(display_id, str) else None)


class StreamState:
    """Reads the lines of one stream: `feed` each line, then take `result`."""

    def __init__(self, what: str = "stream") -> None:
        self.what = what
        self.chunks: list[OutputChunk] = []
        self.output: CodeBoxOutput | None = None
        self.ended = False  # the final line arrived (with an output or an error)

    @property
    def done(self) -> bool:
        """Whether the final line has arrived."""
        return self.output is not None

    def feed(self, line: str) -> OutputChunk | None:
        """Take one line; return the chunk it carries, if any.

        Raises:
            CodeBoxError: The line is not a line of the stream, or it ends the stream with
                a failure (the subclass follows its status; ``chunks`` holds those so far).
        """
        line = line.strip()
        if not line or self.ended:
            return None
        try:
            item = json.loads(line)
        except ValueError:
            raise self._broken(f"a line is not JSON: {line!r:.200}") from None
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise self._broken(f"unexpected line {line!r:.200}")
        if item["type"] == "end":
            self.ended = True
            self.output = self._end(item)
            return None
        chunk = chunk_of(item)
        self.chunks.append(chunk)
        return chunk

    def _end(self, item: dict[str, Any]) -> CodeBoxOutput:
        error = item.get("error")
        if isinstance(error, dict):
            status = error.get("status")
            status = status if isinstance(status, int) and 400 <= status < 600 else 500
            body = {"detail": error.get("detail", "")}
            raise self._with_chunks(error_class(status)(
                f"CodeBox {self.what} failed: {detail_of(body, status)}",
                http_status=status,
                json_body=body,
            ))
        output = item.get("output")
        if isinstance(output, dict):
            return parse_run(output, rich=True, what=self.what)
        return CodeBoxOutput.from_chunks(fold_chunks(self.chunks))

    def _broken(self, problem: str) -> CodeBoxError:
        return self._with_chunks(CodeBoxError(f"CodeBox {self.what}: {problem}"))

    def _with_chunks(self, error: CodeBoxError) -> CodeBoxError:
        error.chunks = list(self.chunks)
        return error

    def result(self) -> CodeBoxOutput:
        """The output of the run once the stream is over.

        Raises:
            CodeBoxConnectionError: The stream ended before its final line.
        """
        if self.output is None:
            raise self._with_chunks(CodeBoxConnectionError(
                f"CodeBox {self.what}: the stream ended before the run's final line"
            ))
        return self.output


class CommandLines(StreamState):
    """Reads the lines of ``shell/stream``: chunks, then ``{"type": "end", "result": ...}``
    (or the same ``error`` end as a run's)."""

    def __init__(self, what: str = "shell stream") -> None:
        super().__init__(what)
        self.command: CommandResult | None = None

    def _end(self, item: dict[str, Any]) -> CodeBoxOutput:
        output = super()._end(item)  # raises for an error end
        self.command = parse_command(item.get("result"), what=self.what)
        return output

    def command_result(self) -> CommandResult:
        """The command's result once the stream is over.

        Raises:
            CodeBoxConnectionError: The stream ended before its final line.
        """
        self.result()
        assert self.command is not None
        return self.command
