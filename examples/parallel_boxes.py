"""Ten boxes at once with asyncio.gather: each its own kernel, its own state.

    python examples/parallel_boxes.py

Each box estimates pi by Monte Carlo with its own seed; the estimates are combined here.
Boxes run in parallel, so ten take about as long as the slowest one, not ten times one.
"""

from __future__ import annotations

import asyncio
import time

from codebox import CodeBox

BOXES = 10
SAMPLES = 200_000

ESTIMATE = """
import random
rng = random.Random({seed})
inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range({samples}))
4 * inside / {samples}
"""


async def estimate(seed: int) -> float:
    async with CodeBox() as box:  # starts a kernel; stops it at the end of the block
        out = await box.arun(ESTIMATE.format(seed=seed, samples=SAMPLES))
        if out.error:
            raise RuntimeError(f"box {seed} failed: {out.error}")
        print(f"box {seed}: {box.session_id[:8]}... pi ~ {out.content}")
        return float(out.content)


async def main() -> None:
    started = time.perf_counter()
    estimates = await asyncio.gather(*(estimate(seed) for seed in range(BOXES)))
    elapsed = time.perf_counter() - started
    pi = sum(estimates) / len(estimates)
    print(f"{BOXES} boxes, {BOXES * SAMPLES} samples: pi ~ {pi:.4f} in {elapsed:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
