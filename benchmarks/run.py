"""codebox benchmarks: each figure beside its reference, measured in the same run.

    python benchmarks/run.py [--json results.json] [--quick]

References: a raw `jupyter_client` client talking to a kernel over ZMQ (the limit), and a
plain websocket client against a stock Kernel Gateway (what gateway-based libraries do).
Prints a table (figure, codebox, reference, ratio, goal, pass/fail) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
from dataclasses import asdict, dataclass
from typing import Any

from codebox import LocalBox


@dataclass
class Figure:
    name: str
    codebox: float
    reference: float | None
    unit: str
    goal: str
    passed: bool | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.reference in (None, 0):
            return None
        return self.codebox / self.reference


def report(figures: list[Figure], path: str, digits: str = ".2f") -> None:
    """Print ``figures`` as a table (numbers formatted by ``digits``) and write them, with
    the machine, as JSON to ``path``."""
    rows = [("figure", "codebox", "reference", "ratio", "goal", "result")]
    for f in figures:
        ref = f"{f.reference:{digits}} {f.unit}" if f.reference is not None else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        ok = {True: "pass", False: "FAIL", None: "-"}[f.passed]
        rows.append((f.name, f"{f.codebox:{digits}} {f.unit}", ref, ratio, f.goal, ok))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for f in figures:
        if f.note:
            print(f"- {f.name}: {f.note}")
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "platform": platform.platform(), "load": os.getloadavg()}
    with open(path, "w") as fh:
        json.dump({"machine": machine,
                   "figures": [asdict(f) | {"ratio": f.ratio} for f in figures]}, fh, indent=2)
    print(f"written to {path}")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


# -- references ----------------------------------------------------------------------------


def _wait_reply_and_idle(kc: Any, msg_id: str) -> None:
    got_reply = got_idle = False
    while not (got_reply and got_idle):
        if not got_idle:
            msg = kc.get_iopub_msg(timeout=10)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                got_idle = True
        if not got_reply:
            reply = kc.get_shell_msg(timeout=10)
            got_reply = reply["parent_header"].get("msg_id") == msg_id


def raw_jupyter_client_sync(n: int) -> list[float]:
    """`1+1` through a blocking jupyter_client over ZMQ: the floor."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            _wait_reply_and_idle(kc, kc.execute("1+1"))
            samples.append(time.perf_counter() - t)
        return samples
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


async def _raw_async_once(kc: Any) -> None:
    """One `1+1` through an async jupyter_client: until both the reply and idle arrived."""
    msg_id = kc.execute("1+1")
    got_reply = got_idle = False
    while not (got_reply and got_idle):
        if not got_idle:
            msg = await kc.get_iopub_msg(timeout=10)
            got_idle = (msg["parent_header"].get("msg_id") == msg_id
                        and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle")
        if not got_reply:
            reply = await kc.get_shell_msg(timeout=10)
            got_reply = reply["parent_header"].get("msg_id") == msg_id


async def raw_jupyter_client_async(n: int) -> list[float]:
    from jupyter_client.manager import start_new_async_kernel

    km, kc = await start_new_async_kernel(kernel_name="python3")
    try:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            await _raw_async_once(kc)
            samples.append(time.perf_counter() - t)
        return samples
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


FIRST_BOX = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    from codebox import LocalBox
    t = time.perf_counter()
    box = LocalBox()
    assert box.run("1+1").content == "2"
    print(t - t0, time.perf_counter() - t)
    box.stop()
""")

RAW_FIRST_REPLY = textwrap.dedent("""
    import time
    t = time.perf_counter()
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    reply = kc.execute_interactive("1+1", timeout=30, output_hook=lambda msg: None)
    assert reply["content"]["status"] == "ok"
    print(time.perf_counter() - t)
    kc.stop_channels()
    km.shutdown_kernel(now=True)
""")


def in_fresh_process(code: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return [float(x) for x in out.stdout.strip().splitlines()[-1].split()]


# -- figures ---------------------------------------------------------------------------------


def box_samples(box: Any, n: int) -> list[float]:
    """Seconds per `run("1+1")` on a started box, after one run to warm up."""
    box.run("1+1")
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        box.run("1+1")
        samples.append(time.perf_counter() - t)
    return samples


def roundtrip(n: int) -> list[Figure]:
    raw_sync = median_ms(raw_jupyter_client_sync(n))
    raw_async = median_ms(asyncio.run(raw_jupyter_client_async(n)))
    with LocalBox() as box:
        sync_ms = median_ms(box_samples(box, n))

        async def async_samples() -> list[float]:
            await box.arun("1+1")
            out = []
            for _ in range(n):
                t = time.perf_counter()
                await box.arun("1+1")
                out.append(time.perf_counter() - t)
            return out

        async_ms = median_ms(asyncio.run(async_samples()))
    return [
        Figure('run("1+1") median, sync', sync_ms, raw_sync, "ms", "<= 1.0x raw jupyter_client",
               sync_ms <= raw_sync),
        Figure('run("1+1") median, async', async_ms, raw_async, "ms",
               "<= 1.0x raw jupyter_client (async)", async_ms <= raw_async),
    ]


def first_box(repeat: int) -> list[Figure]:
    """Fresh processes taking turns: `import codebox; LocalBox().run("1+1")` end to end
    against a raw `jupyter_client` kernel start to its first reply (imports included)."""
    pairs = [(in_fresh_process(FIRST_BOX), in_fresh_process(RAW_FIRST_REPLY)[0])
             for _ in range(repeat)]
    ours = statistics.median(p[0][0] + p[0][1] for p in pairs)
    imports = statistics.median(p[0][0] for p in pairs)
    raw = statistics.median(p[1] for p in pairs)
    return [Figure("first box in a fresh process: `import codebox`, LocalBox() to first result",
                   ours, raw, "s", "<= 1.3x a raw kernel start", ours <= 1.3 * raw,
                   f"reference: a fresh process's `jupyter_client` start_new_kernel to the "
                   f"reply of `1+1`, imports included; medians of {repeat}, interleaved; "
                   f"`import codebox` in it: {imports:.2f} s")]


def further_box(n: int) -> list[Figure]:
    """With a box running and the pool warm: a new box, start to first result."""
    from codebox.local._gateway import shared_gateway

    samples = []
    with LocalBox() as first:
        first.run("1")
        for _ in range(n):
            _wait_for_warm_pool(shared_gateway)
            t = time.perf_counter()
            box = LocalBox()
            box.run("1+1")
            samples.append(time.perf_counter() - t)
            box.stop()
    ms = median_ms(samples)
    raw_start = statistics.median(_raw_kernel_start() for _ in range(3)) * 1000
    return [Figure("a further box in the same process: start to first result", ms, raw_start,
                   "ms", "<= 0.1x a raw kernel start", ms <= 0.1 * raw_start,
                   "with the pool's warm kernel ready; reference: jupyter_client "
                   "start_new_kernel until ready, median of 3")]


def _wait_for_warm_pool(gateway: Any, timeout: float = 60, pool: str | None = None) -> None:
    import httpx

    proc = gateway._process
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{proc.url}/codebox/pool", trust_env=False,
                          headers={"Authorization": f"token {proc.token}"}).json()
        pools = [p for p in state["pools"] if p["kernel_name"] == pool] if pool else [state]
        if any(p["warm"] for p in pools):
            return
        time.sleep(0.05)
    raise TimeoutError("the pool did not warm up")


async def _raw_async_kernels(k: int, seconds: float) -> float:
    from jupyter_client.manager import start_new_async_kernel

    pairs = await asyncio.gather(*(start_new_async_kernel(kernel_name="python3")
                                   for _ in range(k)))
    try:
        async def loop(kc: Any) -> int:
            done, end = 0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                await _raw_async_once(kc)
                done += 1
            return done

        t = time.perf_counter()
        total = sum(await asyncio.gather(*(loop(kc) for _, kc in pairs)))
        return total / (time.perf_counter() - t)
    finally:
        for _, kc in pairs:
            kc.stop_channels()
        await asyncio.gather(*(km.shutdown_kernel(now=True) for km, _ in pairs))


async def _codebox_boxes(k: int, seconds: float) -> float:
    from codebox.local._gateway import shared_gateway

    boxes = [LocalBox() for _ in range(k)]
    await asyncio.gather(*(b.astart() for b in boxes))
    for box in boxes:
        await box.arun("1")
    # Steady state: the pool's replacement kernel has booted (it takes a core meanwhile).
    await asyncio.to_thread(_wait_for_warm_pool, shared_gateway)
    try:
        async def loop(box: LocalBox) -> int:
            done, end = 0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                await box.arun("1+1")
                done += 1
            return done

        t = time.perf_counter()
        total = sum(await asyncio.gather(*(loop(b) for b in boxes)))
        return total / (time.perf_counter() - t)
    finally:
        await asyncio.gather(*(b.astop() for b in boxes))


def eight_boxes(seconds: float) -> list[Figure]:
    ref = asyncio.run(_raw_async_kernels(8, seconds))
    ours = asyncio.run(_codebox_boxes(8, seconds))
    return [Figure("8 boxes from one event loop, `1+1` in a loop", ours, ref, "exec/s",
                   ">= 0.8x raw jupyter_client async, 8 kernels", ours >= 0.8 * ref)]


def stock_websocket(n: int) -> list[Figure]:
    """What gateway-based libraries pay: a plain websocket client on a stock gateway."""
    ms = in_fresh_process(STOCK_ROUNDTRIP.replace("N_RUNS", str(n)))[0]
    with LocalBox() as box:
        ours = median_ms(box_samples(box, n))
    return [Figure('run("1+1") median vs a plain websocket client on a stock gateway', ours, ms,
                   "ms", "(status quo reference)", None)]


STOCK_ROUNDTRIP = textwrap.dedent("""
    import json, socket, statistics, subprocess, sys, time, uuid, httpx
    import websockets.sync.client as c
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "kernel_gateway",
        f"--KernelGatewayApp.port={port}", "--KernelGatewayApp.ip=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(url + "/api", trust_env=False).status_code == 200: break
            except httpx.HTTPError:
                time.sleep(0.05)
        kid = httpx.post(url + "/api/kernels", json={"name": "python3"},
                         trust_env=False).json()["id"]
        ws = c.connect(f"ws://127.0.0.1:{port}/api/kernels/{kid}/channels",
                       max_size=None, proxy=None)
        def run():
            mid = uuid.uuid4().hex
            ws.send(json.dumps({"header": {"msg_id": mid, "msg_type": "execute_request",
                "username": "", "session": "s", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": "1+1", "silent": False}}))
            idle = reply = False
            while not (idle and reply):
                m = json.loads(ws.recv())
                if m["parent_header"].get("msg_id") != mid: continue
                reply = reply or m["msg_type"] == "execute_reply"
                idle = idle or (m["msg_type"] == "status"
                                and m["content"]["execution_state"] == "idle")
        run()
        samples = []
        for _ in range(N_RUNS):
            t = time.perf_counter(); run(); samples.append(time.perf_counter() - t)
        print(statistics.median(samples) * 1000)
        ws.close()
    finally:
        proc.terminate(); proc.wait(10)
""")


def _interleaved(boxes: dict[str, Any], n: int) -> dict[str, float]:
    """Median ms of `run("1+1")` per box, the boxes taking turns so that the load of the
    machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in boxes}
    for box in boxes.values():
        box.run("1+1")
    for _ in range(n):
        for name, box in boxes.items():
            t = time.perf_counter()
            box.run("1+1")
            samples[name].append(time.perf_counter() - t)
    return {name: median_ms(s) for name, s in samples.items()}


def stock_enterprise_gateway(n: int) -> list[Figure]:
    """`LocalBox(gateway_url=...)` on a stock Enterprise Gateway, beside the spawned gateway."""
    import tempfile
    from pathlib import Path

    from codebox import CodeBoxSettings
    from codebox.local import _transport as _drivers

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.gateways import running_gateway

    settings = CodeBoxSettings(kernel_username="codebox-bench")
    with tempfile.TemporaryDirectory() as logs, \
            running_gateway("enterprise-gateway", Path(logs)) as eg:
        def remote() -> LocalBox:
            return LocalBox(gateway_url=eg.url, gateway_token=eg.token, settings=settings)

        with LocalBox() as spawned, remote() as fixed:
            ms = _interleaved({"spawned": spawned, "eg": fixed}, n)
        quickack = _drivers._TCP_QUICKACK
        _drivers._TCP_QUICKACK = None  # what the client did before: delayed ACKs
        try:
            with remote() as plain:
                ms |= _interleaved({"plain": plain}, max(20, n // 5))
        finally:
            _drivers._TCP_QUICKACK = quickack
    return [Figure('run("1+1") median through a stock Enterprise Gateway', ms["eg"],
                   ms["spawned"], "ms", "<= 1.5x the spawned gateway",
                   ms["eg"] <= 1.5 * ms["spawned"],
                   f"reference: LocalBox on its spawned gateway, same run; without prompt "
                   f"ACKs the stock gateway takes {ms['plain']:.1f} ms")]


def _serve(*env: tuple[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """A `codebox serve` on loopback: the process, its API base URL and its key."""
    import secrets

    key = secrets.token_hex(8)
    proc = subprocess.Popen([sys.executable, "-m", "codebox.cli", "serve", "--port", "0",
                             "--api-key", key, "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **dict(env)})
    assert proc.stdout is not None
    line = ""
    deadline = time.monotonic() + 60
    while "listening on http://" not in line:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"codebox serve did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split()[0].rstrip("/") + "/api/v1", key


def through_server(n: int) -> list[Figure]:
    """`CodeBox` against `codebox serve` on loopback, beside a `LocalBox` in the same run."""
    from codebox import CodeBox

    proc, url, key = _serve()
    try:
        remote = CodeBox(api_key=key, base_url=url)
        with remote:
            served = median_ms(box_samples(remote, n))
    finally:
        proc.terminate()
        proc.wait(30)
    with LocalBox() as box:
        local = median_ms(box_samples(box, n))
    return [Figure('CodeBox through `codebox serve` on loopback, run("1+1") median', served,
                   local, "ms", "<= the LocalBox median + 3 ms", served <= local + 3,
                   "reference: LocalBox in the same run")]


def _rss_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def server_download(sizes_mb: tuple[int, ...]) -> list[Figure]:
    """Peak memory growth of `codebox serve` while a client downloads a large file from a
    session (the file streams from the kernel), for files of several sizes, beside the size
    of the file (what holding it would cost at least)."""
    import httpx

    from codebox import CodeBox

    proc, url, key = _serve()
    figures = []
    try:
        remote = CodeBox(api_key=key, base_url=url, timeout=300)
        with remote, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                  timeout=300) as client:
            for size_mb in sizes_mb:
                remote.run(f"open('big.bin', 'wb').write(b'x' * {size_mb << 20})")
                base = _rss_mb(proc.pid, "VmRSS")
                with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
                    f.write("5")  # reset the peak (VmHWM) to the current RSS
                got, t = 0, time.perf_counter()
                with client.stream("GET", f"/codebox/{remote.session_id}/download",
                                   params={"file_name": "big.bin"}) as r:
                    for part in r.iter_bytes():
                        got += len(part)
                took = time.perf_counter() - t
                growth = _rss_mb(proc.pid, "VmHWM") - base
                whole = got == size_mb << 20
                figures.append(Figure(
                    f"`codebox serve`: peak memory growth serving a {size_mb} MB download",
                    growth, float(size_mb), "MB", "<= 16 MB whatever the size",
                    whole and growth <= 16,
                    f"{'whole' if whole else f'got {got} bytes'}, {size_mb / took:.0f} MB/s; "
                    "reference: the file's size"))
    finally:
        proc.terminate()
        proc.wait(30)
    return figures


FIRST_SANDBOXED_BOX = FIRST_BOX.replace("LocalBox()", "LocalBox(sandbox=True)")


def _raw_kernel_start() -> float:
    """Seconds for a raw ``jupyter_client`` kernel start until it answers."""
    from jupyter_client.manager import start_new_kernel

    t = time.perf_counter()
    km, kc = start_new_kernel(kernel_name="python3")
    took = time.perf_counter() - t
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return took


def sandboxed(n: int, repeat: int) -> list[Figure]:
    """A sandboxed box beside a plain one, measured in the same run."""
    from codebox.local._gateway import shared_gateway

    with LocalBox() as plain, LocalBox(sandbox=True) as boxed:
        # Both pools warm (no kernel booting beside the runs), then the two boxes take turns.
        _wait_for_warm_pool(shared_gateway)
        _wait_for_warm_pool(shared_gateway, pool="codebox-sandbox")
        pairs = [(box_samples(plain, 1)[0], box_samples(boxed, 1)[0]) for _ in range(n)]
        plain_ms = median_ms([p[0] for p in pairs])
        boxed_ms = median_ms([p[1] for p in pairs])
        samples = []
        for _ in range(repeat * 5):
            _wait_for_warm_pool(shared_gateway, pool="codebox-sandbox")
            t = time.perf_counter()
            box = LocalBox(sandbox=True)
            box.run("1+1")
            samples.append(time.perf_counter() - t)
            box.stop()
    further = median_ms(samples)
    raw_start = statistics.median(_raw_kernel_start() for _ in range(repeat)) * 1000
    firsts = [(in_fresh_process(FIRST_BOX)[1], in_fresh_process(FIRST_SANDBOXED_BOX)[1])
              for _ in range(repeat)]
    first_plain = statistics.median(f[0] for f in firsts)
    first_boxed = statistics.median(f[1] for f in firsts)
    return [
        Figure('sandboxed run("1+1") median', boxed_ms, plain_ms, "ms", "<= 1.15x a plain box",
               boxed_ms <= 1.15 * plain_ms, "reference: a plain LocalBox in the same run"),
        Figure("a further sandboxed box: start to first result", further, raw_start, "ms",
               "<= 0.1x a raw kernel start", further <= 0.1 * raw_start,
               "reference: jupyter_client start_new_kernel until ready; the pool's warm "
               "sandboxed kernel ready"),
        Figure("first sandboxed box in a fresh process: LocalBox(sandbox=True) to first result",
               first_boxed, first_plain, "s", "<= plain + 0.2 s",
               first_boxed <= first_plain + 0.2,
               "reference: a plain first box, in fresh processes taking turns"),
    ]


def big_print() -> list[Figure]:
    with LocalBox() as box:
        box.run("1")
        t = time.perf_counter()
        out = box.run("print('x' * 10_000_000)")
        took = time.perf_counter() - t
    whole = len(out.stdout) == 10_000_001
    return [Figure("a 10 MB print", took, None, "s", "whole, <= 0.5 s", whole and took <= 0.5,
                   "arrived whole" if whole else f"got {len(out.stdout)} chars")]


def transfer(size_mb: int) -> list[Figure]:
    payload = os.urandom(size_mb * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    with LocalBox() as box:
        box.run("1")
        tracemalloc.start()
        t = time.perf_counter()
        box.upload("big.bin", payload)
        up = time.perf_counter() - t
        _, up_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t = time.perf_counter()
        got = box.download("big.bin")
        down = time.perf_counter() - t
        _, down_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    same = hashlib.sha256(got.content).hexdigest() == digest
    mb = 1024 * 1024
    up_growth, down_growth = up_peak / mb, (down_peak - len(payload)) / mb
    memory_ok = up_growth <= 64 and down_growth <= 64
    note = (f"SHA-256 {'equal' if same else 'DIFFERENT'}; peak memory growth (tracemalloc) "
            f"{up_growth:.0f} MB during the upload, {down_growth:.0f} MB beyond the "
            "downloaded content during the download")
    return [
        Figure(f"upload {size_mb} MB", size_mb / up, None, "MB/s",
               ">= 100 MB/s, <= 64 MB growth", same and memory_ok and size_mb / up >= 100,
               note),
        Figure(f"download {size_mb} MB", size_mb / down, None, "MB/s",
               ">= 100 MB/s, <= 64 MB growth", same and memory_ok and size_mb / down >= 100),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results.json")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--only", help="run only these figure groups (comma-separated, e.g. "
                        "server_download)")
    args = parser.parse_args()
    n = 50 if args.quick else 300
    groups = {
        "roundtrip": lambda: roundtrip(n),
        "stock_websocket": lambda: stock_websocket(50 if args.quick else 100),
        "first_box": lambda: first_box(3 if args.quick else 5),
        "further_box": lambda: further_box(5 if args.quick else 15),
        "eight_boxes": lambda: eight_boxes(2.0 if args.quick else 5.0),
        "big_print": big_print,
        "transfer": lambda: transfer(100),
        "through_server": lambda: through_server(50 if args.quick else 300),
        "server_download": lambda: server_download((50, 200)),
        "stock_enterprise_gateway": lambda: stock_enterprise_gateway(50 if args.quick else 200),
        "sandbox": lambda: sandboxed(n, 1 if args.quick else 3),
    }
    chosen = args.only.split(",") if args.only else list(groups)
    figures = [figure for name in chosen for figure in groups[name]()]
    report(figures, args.json)


if __name__ == "__main__":
    main()
