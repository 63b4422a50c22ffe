"""The network of a sandbox, as its command line sees it: what is bound in, the program run
behind the hand-over of its proxy port (`_proxy_port`), and the proxy variables.

Standard library only (imported inside the Kernel Gateway). A sandbox always has a network
namespace of its own with only a loopback (bubblewrap's ``--unshare-all``; never
``--share-net``), and an ``/etc/hosts`` that names that loopback ``localhost``: no resolver,
no ``resolv.conf``. When its policy lets anything through, the directory of its proxy's unix
socket is bound in read-only, and the box's ``127.0.0.1:PROXY_PORT`` (and ``[::1]``), where
the standard proxy variables point, is a listening socket the proxy accepts on.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from . import _egress

PROXY_PORT = 3128
"""The port of the egress proxy on a box's own loopback."""
SOCKET_NAME = "proxy.sock"
"""The proxy's unix socket, in the directory `box_dirs` names ``net``."""
NO_PROXY = "localhost,127.0.0.1,::1"
_HOSTS = "127.0.0.1\tlocalhost codebox\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def proxy_env(port: int = PROXY_PORT) -> dict[str, str]:
    """The proxy variables of a box that may reach anything, upper and lower case (curl
    reads only ``http_proxy`` lower-case; httpx and requests read both)."""
    url = f"http://127.0.0.1:{port}"
    env = {"HTTP_PROXY": url, "HTTPS_PROXY": url, "ALL_PROXY": url, "NO_PROXY": NO_PROXY}
    return {**env, **{k.lower(): v for k, v in env.items()}}


def socket_path(net_dir: str) -> str:
    return os.path.join(net_dir, SOCKET_NAME)


def write_hosts(directory: str | os.PathLike[str]) -> str:
    """Write the box's ``/etc/hosts`` in ``directory``; return its path."""
    path = Path(directory) / "hosts"
    path.write_text(_HOSTS)
    return str(path)


def bwrap_args(hosts_file: str, net_dir: str | None) -> list[str]:
    """What a sandbox's command line binds for its network: its hosts file, and the proxy's
    directory (read-only: the box can connect to the socket, not replace it) if any."""
    args = ["--ro-bind", hosts_file, "/etc/hosts"]
    if net_dir is not None:
        args += ["--ro-bind", net_dir, net_dir]
    return args


@cache
def _proxy_port_code() -> str:
    """`_proxy_port`'s code, for ``python -c`` (its docstring left out of the box's argv)."""
    text = Path(__file__).with_name("_proxy_port.py").read_text()
    return text[text.index('"""', 3) + 3:].lstrip()


def wrap(argv: list[str], net_dir: str, python: str, port: int = PROXY_PORT) -> list[str]:
    """``argv`` (a program of the box, found on its ``PATH``) run once its proxy port is
    bound and on its way to the proxy in ``net_dir``; ``python`` (an interpreter inside the
    box) does that first."""
    return [python, "-I", "-S", "-c", _proxy_port_code(), socket_path(net_dir), str(port),
            "--", *argv]


def launch(network: Any, net_dir: str, argv: list[str]
           ) -> tuple[list[str], dict[str, str], str | None]:
    """For a kernel ``argv`` (its interpreter first) with the policy ``network``: the
    command to run, its proxy variables, and the proxy's directory (None: no egress)."""
    if not _egress.Policy(network).enabled:
        return argv, {}, None
    return wrap(argv, net_dir, python=argv[0]), proxy_env(), net_dir
