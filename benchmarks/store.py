"""Session stores under load: two `codebox serve` on one PostgreSQL database against one
`codebox serve` on its SQLite store (the reference), measured in the same run, on one stock
Kernel Gateway both use.

    python benchmarks/store.py [--sessions 20] [--runs 50] [--rounds 3] [--json store.json]

Each client starts a session and runs ``--runs`` small cells one after the other, all
clients at once. With two servers, a client starts its session on one and runs it on the
other (the servers share it through the store), clients alternating between them. Reports
runs/s, latency (p50, p99), errors and the CPU time per run of the servers, the gateway, its
kernels and the database. Goal: two servers on PostgreSQL reach >= 0.8x the throughput of
one server on SQLite, with no errors. 127.0.0.1 and a unix socket only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from load import (
    KEY,
    Connection,
    combine,
    cpu_seconds,
    run_sessions,
    start_sessions,
    stop_sessions,
    summary,
)


def start_server(*args: str, token: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_GATEWAY_TOKEN": token,
           "CODEBOX_SERVER_MAX_SESSIONS_PER_KEY": "100", "CODEBOX_SERVER_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "codebox.cli", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"codebox serve did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split()[0] + "/api/v1"


async def load(name: str, bases: list[str], pids: list[int], sessions: int,
               runs: int) -> dict[str, Any]:
    """``sessions`` clients: started on ``bases[i % n]``, run on ``bases[(i + 1) % n]``."""
    n = len(bases)
    starters = [Connection(bases[i % n]) for i in range(sessions)]
    runners = [Connection(bases[(i + 1) % n]) for i in range(sessions)]
    try:
        ids = await start_sessions(starters)
        cpu = sum(cpu_seconds(pid) for pid in pids)
        latencies, errors, wall = await run_sessions(runners, ids, runs)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
        await stop_sessions(starters, ids)
    finally:
        for conn in starters + runners:
            conn.close()
    return summary(name, latencies, errors, wall, (0.0, 0.0), cpu)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(60)


def sqlite_round(gateway: Any, sessions: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="codebox-bench-") as data_dir:
        proc, base = start_server("--gateway-url", gateway.url, "--data-dir", data_dir,
                                  token=gateway.token)
        try:
            return asyncio.run(load("one server, SQLite", [base],
                                    [proc.pid, gateway.proc.pid], sessions, runs))
        finally:
            _stop([proc])


def postgres_round(gateway: Any, cluster: Any, sessions: int, runs: int) -> dict[str, Any]:
    url = cluster.create_database()
    try:
        servers = [start_server("--gateway-url", gateway.url, "--store", url,
                                token=gateway.token) for _ in range(2)]
        try:
            pids = [p.pid for p, _ in servers] + [gateway.proc.pid, cluster.proc.pid]
            return asyncio.run(load("two servers, one PostgreSQL", [b for _, b in servers],
                                    pids, sessions, runs))
        finally:
            _stop([p for p, _ in servers])
    finally:
        cluster.drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50, help="runs per session and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the two sides alternate this many times, so that both meet the "
                        "same background load; figures are medians of the rounds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.gateways import running_gateway
    from tests.postgres import running_postgres

    sqlite, postgres, ratios = [], [], []
    with tempfile.TemporaryDirectory() as logs, \
            running_gateway("kernel-gateway", Path(logs)) as gateway, \
            running_postgres() as cluster:
        for _ in range(args.rounds):
            sqlite.append(sqlite_round(gateway, args.sessions, args.runs))
            postgres.append(postgres_round(gateway, cluster, args.sessions, args.runs))
            ratios.append(postgres[-1]["runs_per_s"] / sqlite[-1]["runs_per_s"])
    one, two = combine(sqlite), combine(postgres)
    ratio = statistics.median(ratios)
    passed = ratio >= 0.8 and two["errors"] == 0 and one["errors"] == 0
    print(f"{'':30} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'CPU ms/run':>10}")
    for row in (one, two):
        print(f"{row['name']:30} {row['runs_per_s']:8.1f} {row['p50_ms']:8.1f} "
              f"{row['p99_ms']:8.1f} {row['errors']:6d} {row['cpu_ms_per_run']:10.1f}")
    print(f"two servers on PostgreSQL / one on SQLite, per round: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; median {ratio:.2f} "
          f"(goal >= 0.8, no errors): {'pass' if passed else 'FAIL'}; "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sqlite": one, "postgresql": two, "ratios": ratios, "ratio": ratio,
                       "passed": passed, "load_average": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
    main()
