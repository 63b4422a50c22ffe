"""codebox benchmarks for snapshots: each figure beside its reference, in the same run.

    python benchmarks/snapshots.py [--json results-snapshots.json] [--quick]

- A snapshot of a `LocalBox` holding 100 MB of files (ten files of 10 MB) and 100 MB of
  variables (an 80 MB NumPy array, a dict of 400,000 strings): goal at most 2 s. Reference:
  `download` of the same 200 MB from the box (the transfer alone).
- A box started from that snapshot, to its first result: goal at most 2 s. Reference: a
  new box and `upload` of the same 200 MB.
- A paused session of `codebox serve --pause-idle` (sandboxed, warm pool), from the request
  to its first result: goal at most 1 s. Reference: a new session's start and first result.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from run import Figure, _serve, report

from codebox import CodeBoxSettings, LocalBox

MB = 1024 * 1024
FILES = 10
STATE = """
import numpy as np
arr = np.random.rand(10 * 1024 * 1024)
table = {i: ("value-%d-" % i) * 2 for i in range(400_000)}
"""


def _fill(box: LocalBox) -> None:
    for i in range(FILES):
        box.upload(f"data/part-{i}.bin", os.urandom(10 * MB))
    out = box.run(STATE)
    assert out.error is None, out.error


def snapshot_and_restore(repeat: int) -> list[Figure]:
    settings = CodeBoxSettings(snapshot_dir=Path(tempfile.mkdtemp(prefix="codebox-bench-")))
    taken, transfers, restores, uploads = [], [], [], []
    blob = os.urandom(100 * MB)
    with LocalBox(settings=settings) as box, LocalBox() as other:
        _fill(box)
        other.upload("a.bin", blob)
        other.upload("b.bin", blob)
        for _ in range(repeat):
            t = time.perf_counter()
            snapshot = box.snapshot()
            taken.append(time.perf_counter() - t)
            t = time.perf_counter()
            other.download("a.bin")
            other.download("b.bin")
            transfers.append(time.perf_counter() - t)
            t = time.perf_counter()
            with LocalBox(settings=settings, snapshot=snapshot) as restored:
                assert restored.run("print(len(arr), len(table))").stdout == (
                    f"{10 * MB} 400000\n")
                restores.append(time.perf_counter() - t)
            t = time.perf_counter()
            with LocalBox() as fresh:
                fresh.upload("a.bin", blob)
                fresh.upload("b.bin", blob)
                fresh.run("1")
                uploads.append(time.perf_counter() - t)
            LocalBox.delete_snapshot(snapshot.id, settings=settings)
    size = f"{snapshot.size / MB:.0f} MiB"
    take, restore = statistics.median(taken), statistics.median(restores)
    return [
        Figure(f"snapshot: 100 MB files + 100 MB variables ({size})", take,
               statistics.median(transfers), "s", "<= 2 s", take <= 2.0),
        Figure("start from that snapshot, to the first result", restore,
               statistics.median(uploads), "s", "<= 2 s", restore <= 2.0),
    ]


def resume(repeat: int) -> list[Figure]:
    data_dir = tempfile.mkdtemp(prefix="codebox-bench-data-")
    proc, base_url, key = _serve(("CODEBOX_SERVER_PAUSE_IDLE", "1"),
                                 ("CODEBOX_SERVER_DATA_DIR", data_dir))
    resumes, starts = [], []
    try:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                          trust_env=False, timeout=120) as api:
            for _ in range(repeat):
                sid = api.get("/codebox/start").json()["id"]
                api.post(f"/codebox/{sid}/run", json={"code": "x = list(range(100_000))"})
                deadline = time.monotonic() + 30
                while api.get(f"/codebox/{sid}/").json()["status"] != "paused":
                    assert time.monotonic() < deadline, "the session was not paused"
                    time.sleep(0.05)
                time.sleep(3)  # the pool refills after the pause freed a kernel
                t = time.perf_counter()
                out = api.post(f"/codebox/{sid}/run", json={"code": "print(len(x))"}).json()
                resumes.append(time.perf_counter() - t)
                assert out["stdout"] == "100000\n", out
                api.post(f"/codebox/{sid}/stop")
                time.sleep(3)
                t = time.perf_counter()
                other = api.get("/codebox/start").json()["id"]
                api.post(f"/codebox/{other}/run", json={"code": "print(1)"})
                starts.append(time.perf_counter() - t)
                api.post(f"/codebox/{other}/stop")
    finally:
        proc.terminate()
        proc.wait(30)
    took = statistics.median(resumes)
    return [Figure("resume a paused session (sandboxed, warm pool) to its first result",
                   took, statistics.median(starts), "s", "<= 1 s", took <= 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="results-snapshots.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    figures = snapshot_and_restore(repeat) + resume(repeat)
    print(f"load average: {os.getloadavg()}")
    report(figures, args.json, digits=".3f")


if __name__ == "__main__":
    main()
