"""Stream the output of a long run as it is produced, sync and async.

    python examples/streaming.py

``box.stream(code)`` yields each chunk of output the moment the kernel sends it; it is also
a context manager, and leaving its ``with`` block early interrupts the run.
``box.astream(code)`` is the async twin; ``box.run(code, on_output=callback)`` calls back
with each chunk and still returns the whole result.
"""

from __future__ import annotations

import asyncio
import time

from codebox import CodeBox

LONG_RUN = """
import time
for step in range(1, 6):
    print(f"step {step}/5 done", flush=True)
    time.sleep(0.4)          # stands for real work
print("finished")
"""


def sync_stream(box) -> None:
    started = time.perf_counter()
    first = None
    with box.stream(LONG_RUN) as stream:
        for chunk in stream:
            now = time.perf_counter() - started
            first = now if first is None else first
            print(f"  [{now:4.1f} s] {chunk.type}: {chunk.content.strip()}")
    total = time.perf_counter() - started
    print(f"sync: first output after {first:.2f} s, the run took {total:.2f} s")


async def async_stream(box) -> None:
    started = time.perf_counter()
    async with box.astream("for i in range(3):\n    print('async', i, flush=True)") as stream:
        async for chunk in stream:
            now = time.perf_counter() - started
            print(f"  [{now:4.1f} s] {chunk.type}: {chunk.content.strip()}")


def callback_run(box) -> None:
    seen = []
    out = box.run("print('a'); print('b')", on_output=seen.append)
    print(f"on_output saw {len(seen)} chunk(s); the result holds {out.stdout!r}")


def main() -> None:
    with CodeBox() as box:
        sync_stream(box)
        asyncio.run(async_stream(box))
        callback_run(box)


if __name__ == "__main__":
    main()
