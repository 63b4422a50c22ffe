"""Loaded by the egress proxies of the gateways the network tests spawn (named by
``CODEBOX_EGRESS_HOOKS``, a file path: the gateway imports no test package). Every resolution
and connection attempt is appended to the file ``CODEBOX_TEST_EGRESS_LOG`` names, and only
127.0.0.1 is ever connected to: a test sends nothing off this machine. Names resolve from
the table below, or from the host's /etc/hosts for the ones it has (no DNS query leaves)."""

from __future__ import annotations

import json
import os
import socket

from codebox.local._proxy import connect_direct, resolve_on_host

NAMES = {"public.test": ["203.0.113.7"], "rebind.test": ["127.0.0.1"],
         "private.test": ["10.1.2.3"]}
ETC_HOSTS = ("vm", "runsc")


def _log(*entry: object) -> None:
    with open(os.environ["CODEBOX_TEST_EGRESS_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")


async def resolve(host: str, port: int) -> list[str]:
    _log("resolve", host, port)
    if host in NAMES:
        return NAMES[host]
    if host in ETC_HOSTS:
        return await resolve_on_host(host, port)
    raise OSError(f"{host}: only the tests' names resolve here")


async def connect(address: str, port: int) -> socket.socket:
    _log("connect", address, port)
    if address != "127.0.0.1":
        raise ConnectionRefusedError(f"the tests connect to 127.0.0.1 only, not {address}")
    return await connect_direct(address, port)
