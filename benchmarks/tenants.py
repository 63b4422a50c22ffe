"""codebox with a hostile tenant: what one box can cost the others, through a sandboxed
`codebox serve` on 127.0.0.1 (two API keys), each figure beside its reference.

    python benchmarks/tenants.py [--only memory,neighbours,stop] [--scale 1.0] [--json PATH]

- memory: the peak growth of the server's and the gateway's RSS while a box prints 512 MiB
  of text, 128 MiB as an image, as HTML and as an exception message, through ``run`` and
  ``run/stream`` (the client reads as fast as it can). Reference: the bytes printed. Goal:
  at most 64 MiB each.
- neighbours: a neighbour's ``1+1`` median while another tenant's box hogs two cores, and
  while it floods output, against the neighbour's quiet median in the same run. Goal: at
  most 2x. For information, the same for a neighbour whose run needs the CPU itself.
- stop: the longest pause in a neighbour's streamed output (a line every 10 ms) while
  another tenant's box holding 100,000 files is stopped. Goal: at most 0.1 s.

``--scale`` shrinks the sizes and counts (for a quick look on a busy machine);
``--box-memory MIB`` gives each box more memory than the server's default (a box of 2 GiB
cannot make a 128 MiB message without a kernel that bounds its output: it dies of it first).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

KEYS = ("tenant-benchmark-one", "tenant-benchmark-two")
MIB = 1024 * 1024

# What a box prints: (name, megabytes at scale 1, code making that much of it).
FLOODS = (
    ("text", 512, "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range({mb}):\n"
                  "    sys.stdout.write(chunk)\n    sys.stdout.flush()"),
    ("image", 128, "from IPython.display import display\n"
                   "display({{'image/png': 'A' * ({mb} << 20)}}, raw=True)"),
    ("html", 128, "from IPython.display import display\n"
                  "display({{'text/html': 'x' * ({mb} << 20)}}, raw=True)"),
    ("exception", 128, "raise ValueError('x' * ({mb} << 20))"),
    # Under the limits (16 MiB a run), so passed on whole: the most a run costs.
    ("image, under the limit", -15, "from IPython.display import display\n"
                                    "display({{'image/png': 'A' * ({mb} << 20)}}, raw=True)"),
    ("text, under the limit", -15, "print('x' * ({mb} << 20))"),
)


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(x for x in f if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


class PeakSampler:
    """Samples the RSS of some processes every few milliseconds, keeping the peak."""

    def __init__(self, pids: dict[str, int], every: float = 0.01) -> None:
        self.pids, self.every = pids, every
        self.base = {name: rss_mib(pid) for name, pid in pids.items()}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mib(pid))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[str, float]:
        return {name: self.peak[name] - self.base[name] for name in self.pids}


@contextmanager
def sandboxed_server(**env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    settings = {
        "CODEBOX_SERVER_API_KEYS": ",".join(KEYS), "CODEBOX_SERVER_LOG_LEVEL": "warning",
        "CODEBOX_SERVER_RUN_TIMEOUT": "600", "CODEBOX_SERVER_SANDBOX": "true", **env}
    proc = subprocess.Popen([sys.executable, "-m", "codebox.cli", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={**os.environ, **settings}, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        if "listening on " not in line:
            raise SystemExit(f"codebox serve did not start: {line!r}")
        yield proc, line.split("listening on ", 1)[1].split()[0] + "/api/v1"
    finally:
        proc.terminate()
        proc.wait(60)


def client(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                        trust_env=False, timeout=900)


def gateway_of(server: int) -> int:
    for pid in children(server):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"_gateway_app" in f.read():
                return pid
    raise SystemExit("the server has no gateway")


def _drain(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send the request and read the answer in pieces: its status and size, how it ends,
    and whether the output said it was truncated."""
    size, tail = 0, b""
    with api.stream("POST", path, json=body) as response:
        for part in response.iter_bytes():
            size += len(part)
            tail = (tail + part)[-4096:]
    return {"status": response.status_code, "answer_mib": round(size / MIB, 1),
            "truncated": b'"truncated":true' in tail.replace(b" ", b""),
            "ends": tail[-160:].decode(errors="replace")}


BOX_MEMORY: dict[str, str] = {}


def memory(scale: float) -> list[dict[str, Any]]:
    rows = []
    with sandboxed_server(**BOX_MEMORY) as (proc, base), client(base, KEYS[0]) as api:
        gateway = gateway_of(proc.pid)
        for name, mb, code in FLOODS:
            size = -mb if mb < 0 else max(1, round(mb * scale))  # negative: not scaled
            for route in ("run", "run/stream"):
                sid = api.get("/codebox/start").json()["id"]
                api.post(f"/codebox/{sid}/run", json={"code": "1"})
                time.sleep(0.5)  # let the start's allocations settle before the baseline
                with PeakSampler({"server": proc.pid, "gateway": gateway}) as sampler:
                    started = time.perf_counter()
                    answer = _drain(api, f"/codebox/{sid}/{route}",
                                    {"code": code.format(mb=size)})
                    took = time.perf_counter() - started
                api.post(f"/codebox/{sid}/stop")
                grew = sampler.growth()
                rows.append({"output": f"{size} MiB of {name}", "route": route,
                             "server_mib": round(grew["server"], 1),
                             "gateway_mib": round(grew["gateway"], 1), **answer,
                             "seconds": round(took, 2),
                             "pass": max(grew.values()) <= 64 and answer["status"] == 200})
                print(json.dumps(rows[-1]), flush=True)
    return rows


BUSY = "sum(i * i for i in range(2_000_000)) > 0"


def _median_1p1(api: httpx.Client, sid: int, n: int, code: str = "1+1") -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        out = api.post(f"/codebox/{sid}/run", json={"code": code}).json()
        samples.append(time.perf_counter() - started)
        assert out["content"] in ("2", "True"), out
    return statistics.median(samples) * 1000


HOG = ("import multiprocessing as mp\n"
       "def spin():\n    while True: pass\n"
       "procs = [mp.Process(target=spin, daemon=True) for _ in range(2)]\n"
       "[p.start() for p in procs]\nspin()")
FLOOD = "import sys\nwhile True:\n    sys.stdout.write('x' * 4096 + '\\n')"


def neighbours(scale: float) -> list[dict[str, Any]]:
    n = max(20, round(200 * scale))
    rows = []
    with sandboxed_server() as (_, base), client(base, KEYS[0]) as noisy, \
            client(base, KEYS[1]) as quiet:
        sid = quiet.get("/codebox/start").json()["id"]
        for what, code in (("hogs two cores", HOG), ("floods output", FLOOD)):
            _median_1p1(quiet, sid, 20)  # warm
            alone = _median_1p1(quiet, sid, n)
            busy_alone = _median_1p1(quiet, sid, 7, BUSY)
            other = noisy.get("/codebox/start").json()["id"]
            hog = threading.Thread(target=lambda o=other, c=code: _ignore(
                lambda: noisy.post(f"/codebox/{o}/run", json={"code": c, "timeout": 600})))
            hog.start()
            time.sleep(2)  # under way
            loaded = _median_1p1(quiet, sid, n)
            busy_loaded = _median_1p1(quiet, sid, 7, BUSY)
            with client(base, KEYS[0]) as stopper:
                stopper.post(f"/codebox/{other}/stop")
            hog.join(60)
            rows.append({"neighbour": what, "quiet_ms": round(alone, 2),
                         "loaded_ms": round(loaded, 2), "ratio": round(loaded / alone, 2),
                         "pass": loaded <= 2 * alone,
                         # For information: a neighbour that needs the CPU itself.
                         "busy_quiet_ms": round(busy_alone, 1),
                         "busy_loaded_ms": round(busy_loaded, 1),
                         "busy_ratio": round(busy_loaded / busy_alone, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _ignore(call: Callable[[], Any]) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass


TICKER = "import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.01)"
FILES = ("import os\nfor d in range({dirs}):\n    os.makedirs(f'd{{d}}', exist_ok=True)\n"
         "    for f in range(1000):\n        open(f'd{{d}}/f{{f}}', 'w').close()")


def stop(scale: float) -> list[dict[str, Any]]:
    dirs = max(1, round(100 * scale))
    with sandboxed_server() as (_, base), client(base, KEYS[0]) as heavy, \
            client(base, KEYS[1]) as ticker:
        big = heavy.get("/codebox/start").json()["id"]
        heavy.post(f"/codebox/{big}/run", json={"code": FILES.format(dirs=dirs)})
        sid = ticker.get("/codebox/start").json()["id"]
        arrivals: list[float] = []

        def follow() -> None:
            with ticker.stream("POST", f"/codebox/{sid}/run/stream",
                               json={"code": TICKER.format(n=600)}) as response:
                for _ in response.iter_lines():
                    arrivals.append(time.perf_counter())

        reader = threading.Thread(target=follow)
        reader.start()
        while len(arrivals) < 100:
            time.sleep(0.01)
        started = time.perf_counter()
        heavy.post(f"/codebox/{big}/stop")
        stopped = time.perf_counter()
        reader.join(120)
    during = [b - a for a, b in itertools.pairwise(arrivals)
              if b >= started and a <= stopped + 1]
    worst = max(during) if during else 0.0
    row = {"files": dirs * 1000, "stop_s": round(stopped - started, 2),
           "longest_pause_s": round(worst, 3), "pass": worst <= 0.1}
    print(json.dumps(row), flush=True)
    return [row]


PARTS: dict[str, Callable[[float], list[dict[str, Any]]]] = {
    "memory": memory, "neighbours": neighbours, "stop": stop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--box-memory", type=int, help="memory of each box, MiB")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.box_memory:
        BOX_MEMORY["CODEBOX_SERVER_SANDBOX_MEMORY_MB"] = str(args.box_memory)
    results = {"load_average": os.getloadavg()}
    for part in args.only.split(","):
        results[part] = PARTS[part](args.scale)
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
