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


async def raw_jupyter_client_async(n: int) -> list[float]:
    from jupyter_client.manager import start_new_async_kernel

    km, kc = await start_new_async_kernel(kernel_name="python3")
    try:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
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
            samples.append(time.perf_counter() - t)
        return samples
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


FIRST_BOX = textwrap.dedent("""
    import time
    t = time.perf_counter()
    from codebox import LocalBox
    box = LocalBox()
    assert box.run("1+1").content == "2"
    print(time.perf_counter() - t)
    box.stop()
""")

STOCK_GATEWAY_START = textwrap.dedent("""
    import os, socket, subprocess, sys, time, httpx
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "kernel_gateway",
        f"--KernelGatewayApp.port={port}", "--KernelGatewayApp.ip=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/api", trust_env=False).status_code == 200: break
        except httpx.HTTPError:
            time.sleep(0.02)
    kid = httpx.post(url + "/api/kernels", json={"name": "python3"}, trust_env=False).json()["id"]
    import websockets.sync.client as c
    ws = c.connect(f"ws://127.0.0.1:{port}/api/kernels/{kid}/channels", max_size=None, proxy=None)
    print(time.perf_counter() - t)
    ws.close(); proc.terminate(); proc.wait(10)
""")


def in_fresh_process(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# -- figures ---------------------------------------------------------------------------------


def roundtrip(n: int) -> list[Figure]:
    raw_sync = median_ms(raw_jupyter_client_sync(n))
    raw_async = median_ms(asyncio.run(raw_jupyter_client_async(n)))
    with LocalBox() as box:
        box.run("1+1")
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            box.run("1+1")
            samples.append(time.perf_counter() - t)
        sync_ms = median_ms(samples)

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
        Figure('run("1+1") median, sync', sync_ms, raw_sync, "ms", "<= 1.25x raw jupyter_client",
               sync_ms <= 1.25 * raw_sync),
        Figure('run("1+1") median, async', async_ms, raw_async, "ms",
               "<= 1.25x raw jupyter_client (async)", async_ms <= 1.25 * raw_async),
    ]


def first_box(repeat: int) -> list[Figure]:
    ours = statistics.median(in_fresh_process(FIRST_BOX) for _ in range(repeat))
    stock = statistics.median(in_fresh_process(STOCK_GATEWAY_START) for _ in range(repeat))
    return [Figure("first box in a fresh process: start to first result", ours, stock, "s",
                   "<= 1.2 s", ours <= 1.2, "reference: stock gateway start + kernel ready")]


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
    note = f"SHA-256 {'equal' if same else 'DIFFERENT'}; peak traced memory up " \
           f"{up_peak / mb:.0f} MB, down {down_peak / mb:.0f} MB (incl. the result)"
    return [
        Figure(f"upload {size_mb} MB", size_mb / up, None, "MB/s", ">= 100 MB/s",
               same and size_mb / up >= 100, note),
        Figure(f"download {size_mb} MB", size_mb / down, None, "MB/s", ">= 100 MB/s",
               same and size_mb / down >= 100),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results.json")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    n = 50 if args.quick else 300
    figures = [*roundtrip(n), *first_box(1 if args.quick else 3), *big_print(),
               *transfer(100)]
    rows = [("figure", "codebox", "reference", "ratio", "goal", "result")]
    for f in figures:
        ref = f"{f.reference:.2f} {f.unit}" if f.reference is not None else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        ok = {True: "pass", False: "FAIL", None: "-"}[f.passed]
        rows.append((f.name, f"{f.codebox:.2f} {f.unit}", ref, ratio, f.goal, ok))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    for f in figures:
        if f.note:
            print(f"- {f.name}: {f.note}")
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "platform": platform.platform()}
    with open(args.json, "w") as fh:
        json.dump({"machine": machine,
                   "figures": [asdict(f) | {"ratio": f.ratio} for f in figures]}, fh, indent=2)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
