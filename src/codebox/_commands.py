"""The output of shell commands, as every backend collects it: pure, no I/O.

`CommandOutput` turns the bytes a command writes into `OutputChunk` objects and, at the
end, a `CommandResult`. (The arguments of ``shell`` are checked in `_checks`.)
"""

from __future__ import annotations

import codecs

from ._limits import OUTPUT_LIMIT
from ._output_caps import RunBudget
from .schema import CommandResult, OutputChunk

STREAMS = ("stdout", "stderr")


class CommandOutput:
    """What a command wrote, as chunks in the order it arrived.

    Bytes are decoded as UTF-8 per stream (a character split between two reads is kept
    whole; invalid bytes become U+FFFD). Adjacent pieces of one stream merge into one
    chunk of the result, while each piece is handed on as it comes.

    Output is bounded as a run's is (`codebox._output_caps`), each piece a ``stream``
    message: past ``output_limit`` bytes (each piece counting 128 more), the piece that
    crosses it is cut and ends with a notice of what it dropped, later pieces are dropped,
    and `flush` adds a notice of those; the result is then ``truncated``.

    Args:
        output_limit: Most bytes to keep (default 16 MiB; None: keep everything).
    """

    def __init__(self, output_limit: int | None = OUTPUT_LIMIT) -> None:
        self.output_limit = output_limit
        self._budget = RunBudget(output_limit, output_limit)
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}
        self._parts: list[tuple[str, list[str]]] = []

    @property
    def truncated(self) -> bool:
        """Whether the limit cut or dropped some of the output."""
        return self._budget.truncated

    def feed(self, stream: str, data: bytes | memoryview) -> OutputChunk | None:
        """Take bytes the command wrote to ``stream``; return the chunk to hand on, if any."""
        text = self._decoders[stream].decode(bytes(data))
        return self.add(OutputChunk(type=stream, content=text)) if text else None

    def flush(self) -> list[OutputChunk]:
        """The chunks left at the end: what was left in the decoders (an incomplete
        character at the very end), and the notice of what the limit dropped."""
        chunks = []
        for stream, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            chunk = self.add(OutputChunk(type=stream, content=text)) if text else None
            if chunk is not None:
                chunks.append(chunk)
        said, _ = self._budget.closing()
        if said:
            chunks.append(self._keep(OutputChunk(type="stderr", content=said)))
        return chunks

    def add(self, chunk: OutputChunk) -> OutputChunk | None:
        """Keep a decoded chunk (within the limit); return what was kept of it."""
        if chunk.type not in STREAMS:
            return None
        kept, dropped = self._budget.take("stream", {"name": chunk.type, "text": chunk.content})
        if kept is None:
            return None
        if dropped:
            chunk = OutputChunk(type=chunk.type, content=kept["text"])
        return self._keep(chunk)

    def _keep(self, chunk: OutputChunk) -> OutputChunk:
        if self._parts and self._parts[-1][0] == chunk.type:
            self._parts[-1][1].append(chunk.content)
        else:
            self._parts.append((chunk.type, [chunk.content]))
        return chunk

    def result(self, exit_code: int, timed_out: bool = False) -> CommandResult:
        """The result of the command."""
        chunks = [OutputChunk(type=t, content="".join(p)) for t, p in self._parts]
        return CommandResult.from_chunks(chunks, exit_code=exit_code, timed_out=timed_out,
                                         truncated=self.truncated)
