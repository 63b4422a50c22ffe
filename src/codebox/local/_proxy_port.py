"""Inside a sandbox: the box's proxy port, handed over to its egress proxy on the host; then
the box's program.

Run inside the box as ``python -I -S -c <this file's text> SOCKET PORT -- PROGRAM ARGS...``
(`_boxnet.wrap` does it: nothing of codebox is importable in there, so it is standard
library only and self-contained). It binds ``127.0.0.1:PORT`` and ``[::1]:PORT`` in the
box's network namespace, so the program's first connection never finds the port closed;
a process of its own hands those listening sockets to the proxy over the unix socket
SOCKET (bound into the box), and the program runs in this process's place. The proxy then
accepts the box's connections itself: nothing in the box relays a byte. The hand-over waits
a while for the proxy to listen: a kernel started ahead of the gateway (see `_head_start`)
may come before its proxy.
"""

from __future__ import annotations

import os
import socket
import sys
import time

REGISTER = b"codebox-listen\n"  # as `_proxy_protocol.REGISTER`
WAIT = 60.0  # seconds the hand-over waits for the proxy to listen


def _listen(port: int) -> list[socket.socket]:
    listeners = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.listen(128)
        except OSError:  # no IPv6 loopback here
            s.close()
            continue
        listeners.append(s)
    return listeners


def _hand_over(path: str, listeners: list[socket.socket]) -> None:
    end = time.monotonic() + WAIT
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                socket.send_fds(s, [REGISTER], [ln.fileno() for ln in listeners])
            return
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > end:
                return
            time.sleep(0.02)


def main(argv: list[str]) -> None:
    path, port, dashes, program = argv[0], int(argv[1]), argv[2], argv[3:]
    if dashes != "--" or not program:
        sys.exit("usage: SOCKET PORT -- PROGRAM [ARGS...]")
    listeners = _listen(port)
    if listeners:
        child = os.fork()
        if child == 0:
            try:  # a grandchild does it, adopted by the sandbox's init: no zombie is left
                if os.fork() == 0:  # to the program, which never waits for it
                    os.setsid()
                    _hand_over(path, listeners)
            finally:
                os._exit(0)
        os.waitpid(child, 0)
    for s in listeners:
        s.close()
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
