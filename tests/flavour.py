"""Drive a box through its sync methods or through their async twins, with one test body."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any


class Flavour:
    """Calls ``box.name(...)`` (sync) or runs ``box.aname(...)`` to completion on this
    flavour's own loop (async); streams come back as lists either way."""

    def __init__(self, box: Any, kind: str) -> None:
        self.box = box
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None

    def __getattr__(self, name: str) -> Any:
        if self.kind == "sync":
            return getattr(self.box, name)
        twin = getattr(self.box, "a" + name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = twin(*args, **kwargs)
            if inspect.isasyncgen(result):
                return self.wait(_collect(result))
            return self.wait(result)

        return call

    def wait(self, awaitable: Any) -> Any:
        assert self.loop is not None
        return self.loop.run_until_complete(awaitable)

    def stream(self, code: str, **kwargs: Any) -> list:
        if self.kind == "sync":
            return list(self.box.stream(code, **kwargs))
        return self.wait(_collect(self.box.astream(code, **kwargs)))

    def stream_shell(self, command: Any, **kwargs: Any) -> tuple[list, Any]:
        """The chunks of a streamed command and its result."""
        if self.kind == "sync":
            with self.box.stream_shell(command, **kwargs) as stream:
                chunks = list(stream)
            return chunks, stream.result

        async def collect() -> tuple[list, Any]:
            async with self.box.astream_shell(command, **kwargs) as stream:
                chunks = [chunk async for chunk in stream]
            return chunks, stream.result

        return self.wait(collect())

    def interrupted(self, name: str, *args: Any) -> Any:
        """Call ``name(*args)`` (``run`` or ``shell``) from another thread (sync) or task
        (async), interrupt the box once output has come, and return the result."""
        if self.kind == "sync":
            started, result = threading.Event(), {}

            def runner() -> None:
                result["out"] = getattr(self.box, name)(*args, on_output=lambda c: started.set())

            thread = threading.Thread(target=runner)
            thread.start()
            assert started.wait(30)
            assert self.box.interrupt() == "interrupted"
            thread.join(30)
            assert not thread.is_alive()
            return result["out"]

        async def main() -> Any:
            started = asyncio.Event()
            call = getattr(self.box, "a" + name)(*args, on_output=lambda c: started.set())
            task = asyncio.create_task(call)
            await asyncio.wait_for(started.wait(), 30)
            assert await self.box.ainterrupt() == "interrupted"
            return await asyncio.wait_for(task, 30)

        return self.wait(main())

    def close(self) -> None:
        self.stop()
        if self.loop is not None:
            self.loop.close()


async def _collect(agen: Any) -> list:
    return [item async for item in agen]
