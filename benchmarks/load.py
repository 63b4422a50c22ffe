"""codebox under load: concurrent sessions through `codebox serve` against the same number
of `LocalBox`es in one process (the reference), measured in the same run.

    python benchmarks/load.py [--sessions 20] [--runs 50] [--json load.json]

Each session (or box) runs ``--runs`` small cells one after the other, all sessions at
once. Reports runs/s, per-run latency (p50, p99), errors, and the RSS of the server (or of
this process) before and after. Goal: the server reaches >= 0.8x the LocalBox throughput,
with no errors. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from codebox import LocalBox

KEY = "load-benchmark"
CODE = "total = sum(i * i for i in range(2000))\ntotal"
EXPECTED = str(sum(i * i for i in range(2000)))


def log_error(what: str) -> None:
    print(f"error: {what}", file=sys.stderr)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, latencies: list[float], errors: int, wall: float,
            rss: tuple[float, float]) -> dict[str, Any]:
    return {
        "name": name,
        "runs": len(latencies),
        "errors": errors,
        "runs_per_s": len(latencies) / wall if wall else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else None,
        "rss_before_mib": rss[0],
        "rss_after_mib": rss[1],
    }


async def local_load(sessions: int, runs: int) -> dict[str, Any]:
    boxes = [LocalBox() for _ in range(sessions)]
    await asyncio.gather(*(box.astart() for box in boxes))
    await asyncio.gather(*(box.arun("1") for box in boxes))  # warm, like the server's
    before = rss_mib(os.getpid())
    latencies: list[float] = []
    errors = 0

    async def worker(box: LocalBox) -> None:
        nonlocal errors
        for _ in range(runs):
            started = time.perf_counter()
            try:
                out = await box.arun(CODE)
                ok = out.content == EXPECTED
                if not ok:
                    log_error(f"{out.error or out.content!r}")
            except Exception as exc:  # noqa: BLE001 - counted
                ok = False
                log_error(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker(box) for box in boxes))
    wall = time.perf_counter() - started
    await asyncio.gather(*(box.astop() for box in boxes))
    return summary(f"{sessions} LocalBoxes, one process", latencies, errors, wall,
                   (before, rss_mib(os.getpid())))


def start_server() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "CODEBOX_SERVER_API_KEYS": KEY,
           "CODEBOX_SERVER_MAX_SESSIONS_PER_KEY": "100", "CODEBOX_SERVER_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "codebox.cli", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"codebox serve did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split()[0] + "/api/v1"


async def server_load(sessions: int, runs: int) -> dict[str, Any]:
    proc, base = start_server()
    try:
        limits = httpx.Limits(max_connections=sessions + 5)
        async with httpx.AsyncClient(base_url=base, timeout=120, trust_env=False, limits=limits,
                                     headers={"Authorization": f"Bearer {KEY}"}) as client:
            ids = []
            for _ in range(sessions):
                r = await client.get("/codebox/start")
                if r.status_code != 200:
                    raise SystemExit(f"could not start a session: {r.status_code} {r.text}")
                ids.append(r.json()["id"])
            await asyncio.gather(*(client.post(f"/codebox/{i}/run", json={"code": "1"})
                                   for i in ids))
            before = rss_mib(proc.pid)
            latencies: list[float] = []
            errors = 0

            async def worker(sid: int) -> None:
                nonlocal errors
                for _ in range(runs):
                    started = time.perf_counter()
                    try:
                        r = await client.post(f"/codebox/{sid}/run", json={"code": CODE})
                        ok = r.status_code == 200 and r.json()["content"] == EXPECTED
                        if not ok:
                            log_error(f"{r.status_code} {r.text[:300]}")
                    except httpx.HTTPError as exc:
                        ok = False
                        log_error(f"{type(exc).__name__}: {exc}")
                    latencies.append(time.perf_counter() - started)
                    errors += not ok

            started = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in ids))
            wall = time.perf_counter() - started
            await asyncio.gather(*(client.post(f"/codebox/{i}/stop") for i in ids))
            after = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    return summary(f"{sessions} sessions through codebox serve", latencies, errors, wall,
                   (before, after))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    local = asyncio.run(local_load(args.sessions, args.runs))
    server = asyncio.run(server_load(args.sessions, args.runs))
    ratio = server["runs_per_s"] / local["runs_per_s"]
    passed = ratio >= 0.8 and server["errors"] == 0
    print(f"{'':38} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'RSS MiB before -> after':>24}")
    for row in (local, server):
        print(f"{row['name']:38} {row['runs_per_s']:8.1f} {row['p50_ms']:8.1f} "
              f"{row['p99_ms']:8.1f} {row['errors']:6d} "
              f"{row['rss_before_mib']:11.0f} -> {row['rss_after_mib']:.0f}")
    print(f"server / LocalBox throughput: {ratio:.2f} (goal >= 0.8, no errors): "
          f"{'pass' if passed else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"local": local, "server": server, "ratio": ratio, "passed": passed}, f,
                      indent=2)


if __name__ == "__main__":
    main()
