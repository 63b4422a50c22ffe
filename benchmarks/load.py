"""codebox under load: concurrent sessions through `codebox serve` against the same number
of `LocalBox`es in one process (the reference), measured in the same run.

    python benchmarks/load.py [--sessions 20] [--runs 50] [--rounds 3] [--json load.json]

Each session (or box) runs ``--runs`` small cells one after the other, all sessions at
once. Reports runs/s, per-run latency (p50, p99), errors, and the RSS of the server (or of
this process) before and after, and the CPU time each run costs in all the processes
involved (client, server, gateway, kernels), which says what the throughput will be on
a machine the run saturates. Goal: the server reaches >= 0.8x the LocalBox throughput,
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
from urllib.parse import urlsplit

from codebox import LocalBox

KEY = "load-benchmark"
CODE = "total = sum(i * i for i in range(2000))\ntotal"
EXPECTED = str(sum(i * i for i in range(2000)))


def log_error(what: str) -> None:
    print(f"error: {what}", file=sys.stderr)


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by ``root`` and every process under it."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def own_cpu_seconds() -> float:
    """CPU time used so far by this process alone (not its children)."""
    times = os.times()
    return times.user + times.system


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, latencies: list[float], errors: int, wall: float,
            rss: tuple[float, float], cpu: float) -> dict[str, Any]:
    return {
        "cpu_ms_per_run": cpu / len(latencies) * 1000 if latencies else None,
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
    for box in boxes:  # one after the other, as the server's sessions are started
        await box.astart()
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

    cpu = cpu_seconds(os.getpid())
    started = time.perf_counter()
    await asyncio.gather(*(worker(box) for box in boxes))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(os.getpid()) - cpu
    await asyncio.gather(*(box.astop() for box in boxes))
    return summary(f"{sessions} LocalBoxes, one process", latencies, errors, wall,
                   (before, rss_mib(os.getpid())), cpu)


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


class Connection:
    """A minimal HTTP/1.1 keep-alive client on one connection: the load generator must
    cost little CPU next to what it measures (an httpx.AsyncClient spends ~12 ms of CPU per
    request at 20 concurrent requests here, more than the server and the kernel together)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port, self.prefix = parts.hostname, parts.port, parts.path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        for _ in range(2):  # once more on a fresh connection if the server closed an idle one
            answer = await self._request(method, path, body)
            if answer is not None:
                return answer
            self.close()
        raise ConnectionError("the server closed the connection")

    async def _request(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n")
        self.writer.write(head.encode() + data)
        status_line = await self.reader.readline()
        if not status_line:
            return None
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), json.loads(payload) if payload else None

    def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()


async def start_sessions(connections: list[Connection]) -> list[int]:
    """A session started through each connection, one after the other."""
    ids = []
    for conn in connections:
        status, body = await conn.request("GET", "/codebox/start")
        if status != 200:
            raise SystemExit(f"could not start a session: {status} {body}")
        ids.append(body["id"])
    return ids


async def run_sessions(connections: list[Connection], ids: list[int],
                       runs: int) -> tuple[list[float], int, float]:
    """``runs`` cells on each session (through the connection beside its id), all sessions
    at once, after one warm-up run each: the latencies, the errors, the wall time."""
    pairs = list(zip(connections, ids, strict=True))
    await asyncio.gather(*(conn.request("POST", f"/codebox/{i}/run", {"code": "1"})
                           for conn, i in pairs))
    latencies: list[float] = []
    errors = 0

    async def worker(conn: Connection, sid: int) -> None:
        nonlocal errors
        for _ in range(runs):
            started = time.perf_counter()
            try:
                status, out = await conn.request("POST", f"/codebox/{sid}/run", {"code": CODE})
                ok = status == 200 and out["content"] == EXPECTED
                if not ok:
                    log_error(f"{status} {str(out)[:300]}")
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                ok = False
                log_error(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker(conn, i) for conn, i in pairs))
    return latencies, errors, time.perf_counter() - started


async def stop_sessions(connections: list[Connection], ids: list[int]) -> None:
    await asyncio.gather(*(conn.request("POST", f"/codebox/{i}/stop")
                           for conn, i in zip(connections, ids, strict=True)))


async def server_load(sessions: int, runs: int) -> dict[str, Any]:
    proc, base = start_server()
    connections = [Connection(base) for _ in range(sessions)]
    try:
        ids = await start_sessions(connections)
        before = rss_mib(proc.pid)
        # The server's tree (server, gateway, kernels) and this client, not the gateway the
        # LocalBox part left behind.
        cpu = cpu_seconds(proc.pid) + own_cpu_seconds()
        latencies, errors, wall = await run_sessions(connections, ids, runs)
        cpu = cpu_seconds(proc.pid) + own_cpu_seconds() - cpu
        await stop_sessions(connections, ids)
        after = rss_mib(proc.pid)
    finally:
        for conn in connections:
            conn.close()
        proc.terminate()
        proc.wait(60)
    return summary(f"{sessions} sessions through codebox serve", latencies, errors, wall,
                   (before, after), cpu)


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one side: medians of each figure, errors summed."""
    merged: dict[str, Any] = {"name": rounds[0]["name"], "rounds": rounds}
    for key in ("runs_per_s", "p50_ms", "p99_ms", "cpu_ms_per_run", "rss_before_mib",
                "rss_after_mib"):
        merged[key] = statistics.median(r[key] for r in rounds)
    merged["errors"] = sum(r["errors"] for r in rounds)
    merged["runs"] = sum(r["runs"] for r in rounds)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50, help="runs per session and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="LocalBox and server alternate this many times, so that both "
                        "meet the same background load; figures are medians of the rounds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    locals_, servers, ratios = [], [], []
    for _ in range(args.rounds):
        locals_.append(asyncio.run(local_load(args.sessions, args.runs)))
        servers.append(asyncio.run(server_load(args.sessions, args.runs)))
        ratios.append(servers[-1]["runs_per_s"] / locals_[-1]["runs_per_s"])
    local, server = combine(locals_), combine(servers)
    ratio = statistics.median(ratios)
    passed = ratio >= 0.8 and server["errors"] == 0
    print(f"{'':38} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'CPU ms/run':>10} {'RSS MiB before -> after':>24}")
    for row in (local, server):
        print(f"{row['name']:38} {row['runs_per_s']:8.1f} {row['p50_ms']:8.1f} "
              f"{row['p99_ms']:8.1f} {row['errors']:6d} {row['cpu_ms_per_run']:10.1f} "
              f"{row['rss_before_mib']:11.0f} -> {row['rss_after_mib']:.0f}")
    print(f"server / LocalBox throughput, per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {ratio:.2f} (goal >= 0.8, no errors): {'pass' if passed else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"local": local, "server": server, "ratios": ratios, "ratio": ratio,
                       "passed": passed}, f, indent=2)


if __name__ == "__main__":
    main()
