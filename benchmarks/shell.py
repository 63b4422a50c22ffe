"""codebox benchmarks for shell commands: each figure beside its reference, in the same run.

    python benchmarks/shell.py [--json results-shell.json] [--quick]

- `shell("true")` round trip against `run("1+1")` on the same box (samples interleaved, so
  both see the same load): goal at most 2x.
- A command writing 5 MB to stdout, through the box, against the same command run by
  `subprocess` in this process (the floor): goal at most 0.5 s, and the output whole.
- The same two through `codebox serve` on loopback (a `CodeBox`), for information.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

from run import Figure, median_ms, report

from codebox import CodeBox, LocalBox

FIVE_MB = "head -c 5000000 /dev/zero | tr '\\0' x"


def interleaved(box: Any, n: int) -> tuple[list[float], list[float]]:
    """``n`` samples each of ``run("1+1")`` and ``shell("true")``, taken in turns."""
    for _ in range(5):
        box.run("1+1")
        box.shell("true")
    runs, shells = [], []
    for _ in range(n):
        t = time.perf_counter()
        box.run("1+1")
        runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        box.shell("true")
        shells.append(time.perf_counter() - t)
    return runs, shells


def five_mb(box: Any, n: int) -> tuple[float, bool]:
    """The median seconds of the 5 MB command, and whether every run arrived whole."""
    samples, whole = [], True
    for _ in range(n):
        t = time.perf_counter()
        out = box.shell(FIVE_MB)
        samples.append(time.perf_counter() - t)
        whole = whole and out.exit_code == 0 and out.stdout == "x" * 5_000_000
    return statistics.median(samples), whole


def floor_five_mb(n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(FIVE_MB, shell=True, capture_output=True, check=True)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def figures_for(label: str, box: Any, n: int, n_big: int, floor: float) -> list[Figure]:
    runs, shells = interleaved(box, n)
    run_ms, shell_ms = median_ms(runs), median_ms(shells)
    big, whole = five_mb(box, n_big)
    local = label == "LocalBox"
    return [
        Figure(f'{label}: shell("true") median', shell_ms, run_ms, "ms",
               "<= 2x run(\"1+1\")" if local else "-",
               shell_ms <= 2 * run_ms if local else None,
               f'reference: run("1+1") on the same box, interleaved ({n} each)'),
        Figure(f"{label}: a command writing 5 MB to stdout", big, floor, "s",
               "whole, <= 0.5 s" if local else "whole",
               (whole and big <= 0.5) if local else whole,
               f"reference: the same command by subprocess in this process; "
               f"{'arrived whole' if whole else 'NOT WHOLE'} ({n_big} runs)"),
    ]


def through_server(n: int, n_big: int, floor: float) -> list[Figure]:
    key = secrets.token_hex(8)
    proc = subprocess.Popen([sys.executable, "-m", "codebox.cli", "serve", "--port", "0",
                             "--api-key", key, "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line, deadline = "", time.monotonic() + 60
        while "listening on http://" not in line:
            line = proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"codebox serve did not start: {line!r}")
        url = line.split("listening on ", 1)[1].split()[0].rstrip("/") + "/api/v1"
        with CodeBox(api_key=key, base_url=url) as box:
            return figures_for("CodeBox through codebox serve", box, n, n_big, floor)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results-shell.json")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    n, n_big = (30, 3) if args.quick else (200, 10)
    floor = floor_five_mb(n_big)
    with LocalBox() as box:
        figures = figures_for("LocalBox", box, n, n_big, floor)
    figures += through_server(n, n_big, floor)
    report(figures, args.json, ".3g")


if __name__ == "__main__":
    main()
