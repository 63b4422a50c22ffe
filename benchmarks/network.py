"""codebox benchmarks for a sandbox's network: each figure beside its reference, same run.

    python benchmarks/network.py [--json results-network.json] [--quick]

- A 100 MB download from an HTTP server on the host's loopback, by urllib in a sandboxed box
  (``host.codebox.internal:PORT``, through the box's forwarder and its proxy on the host)
  against the same code run by the host directly: goal at least 0.8x the host's speed.
- Connection set-up through the proxy: from a box, connect to the proxy, ``CONNECT``, and get
  the far side's first byte, against the host connecting to the same server directly (the
  difference of the medians): goal at most 5 ms added.
- ``install("six")`` in a ``network=False`` box (an installer sandbox of its own, its proxy,
  the index) against ``pip install six --target <fresh dir>`` run by the host: goal at most
  1.5x.

Samples of each figure and its reference are taken in turns, so both see the same load.
All traffic is to 127.0.0.1, except the installs', which reach the index the host's pip
configuration names.
"""

from __future__ import annotations

import argparse
import http.server
import os
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from run import Figure, report

from codebox import LocalBox, Sandbox

MB = 1024 * 1024
_PAYLOAD = b"x" * MB


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/N`` answers N MiB; anything else one byte."""

    def do_GET(self) -> None:
        size = int(self.path.strip("/") or 0)
        self.send_response(200)
        self.send_header("Content-Length", str(size * MB or 1))
        self.end_headers()
        try:
            self.wfile.write(b"x" if not size else b"")
            for _ in range(size):
                self.wfile.write(_PAYLOAD)
        except ConnectionError:
            pass  # the set-up figure hangs up after the first byte

    def log_message(self, *args: Any) -> None:
        pass


def _serve() -> tuple[_Server, int]:
    server = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


DOWNLOAD = """
import time, urllib.request
t = time.perf_counter()
n = 0
with urllib.request.urlopen({url!r}, timeout=120) as r:
    while chunk := r.read(1 << 20):
        n += len(chunk)
print(n, time.perf_counter() - t)
"""

SETUP = """
import socket, statistics, time
samples = []
for _ in range({n}):
    t = time.perf_counter()
    s = socket.create_connection({address!r})
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if {connect!r}:
        s.sendall({connect!r}.encode())
        head = b''
        while b'\\r\\n\\r\\n' not in head:
            head += s.recv(4096)
        assert head.startswith(b'HTTP/1.1 200'), head
    s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
    assert s.recv(1)
    samples.append(time.perf_counter() - t)
    s.close()
print(statistics.median(samples))
"""


def _host(code: str) -> str:
    """``code`` run by the host's Python directly (no proxy variables)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env).stdout


def _boxed(box: Any, code: str) -> str:
    out = box.run(code, timeout=300)
    assert out.error is None, out.error
    return str(out.stdout)


def download(box: Any, port: int, size_mb: int, n: int) -> list[Figure]:
    boxed, host = [], []
    for _ in range(n):
        got, secs = _boxed(box, DOWNLOAD.format(
            url=f"http://host.codebox.internal:{port}/{size_mb}")).split()
        assert int(got) == size_mb * MB
        boxed.append(size_mb / float(secs))
        got, secs = _host(DOWNLOAD.format(url=f"http://127.0.0.1:{port}/{size_mb}")).split()
        host.append(size_mb / float(secs))
    b, h = statistics.median(boxed), statistics.median(host)
    return [Figure(f"download {size_mb} MB from the host's loopback, in a box (MB/s)", b, h,
                   "MB/s", ">= 0.8x", b / h >= 0.8,
                   "reference: the same urllib code run by the host directly")]


def setup(box: Any, port: int, n: int) -> list[Figure]:
    boxed, host = [], []
    for _ in range(5):
        boxed.append(float(_boxed(box, SETUP.format(
            n=n, address=("127.0.0.1", 3128),
            connect=f"CONNECT host.codebox.internal:{port} HTTP/1.1\r\n\r\n"))))
        host.append(float(_host(SETUP.format(n=n, address=("127.0.0.1", port), connect=""))))
    b, h = statistics.median(boxed) * 1000, statistics.median(host) * 1000
    return [Figure("connection set-up through the proxy, to the first byte (ms)", b, h, "ms",
                   "<= 5 ms added", b - h <= 5.0,
                   f"added {b - h:.2f} ms; reference: the host connecting directly")]


def install(n: int) -> list[Figure]:
    with LocalBox(sandbox=Sandbox(network=False)) as box:
        box.install("six")  # the first one also loads the installer in the gateway
    boxed, host = [], []
    for _ in range(n):
        with LocalBox(sandbox=Sandbox(network=False)) as box:
            box.run("1")
            t = time.perf_counter()
            box.install("six")
            boxed.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as target:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "six", "--target",
                            target], check=True, capture_output=True)
            host.append(time.perf_counter() - t)
    b, h = statistics.median(boxed), statistics.median(host)
    return [Figure('install("six") in a network=False box (s)', b, h, "s", "<= 1.5x",
                   b / h <= 1.5, "reference: pip install six --target <fresh dir>, by the host")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="benchmarks/results-network.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", default=["download", "setup", "install"],
                        choices=["download", "setup", "install"])
    args = parser.parse_args()
    server, port = _serve()
    figures: list[Figure] = []
    try:
        with LocalBox(sandbox=Sandbox(network=[f"host.codebox.internal:{port}"])) as box:
            _boxed(box, "1")
            if "download" in args.only:
                figures += download(box, port, 100, 3 if args.quick else 9)
            if "setup" in args.only:
                figures += setup(box, port, 50 if args.quick else 200)
        if "install" in args.only:
            figures += install(2 if args.quick else 9)
    finally:
        server.shutdown()
    report(figures, args.json)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
