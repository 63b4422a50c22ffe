"""``Sandbox``: the policy of a sandboxed kernel (see docs/concepts/sandbox.md).

    from codebox import LocalBox, Sandbox

    LocalBox(sandbox=True)                                  # the default policy
    LocalBox(sandbox=Sandbox(network=True, memory_mb=4096))
    LocalBox(sandbox=Sandbox(network=["pypi.org", "*.example.com:443"]))
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Sandbox(BaseModel):
    """What a sandboxed box's code may use. A box's code sees the Python installation and
    system libraries read-only, its own working directory read-write, a private ``/tmp`` and
    its own processes; nothing else of the machine.

    Attributes:
        network: What the box may connect to, through codebox's proxy on the host (the box
            never joins the host's network: its own loopback is all it has). ``False``:
            nothing. ``True``: public addresses. A list: exactly the hosts (``*.`` matches
            subdomains), IPs or CIDRs it names, each with an optional ``:port`` (IPv6 with a
            port in brackets), and ``host.codebox.internal[:port]`` for the host's loopback.
            Private, link-local (cloud metadata) and multicast addresses are reachable only
            when an entry names them by IP or CIDR; the host's loopback never by IP.
            `install` needs none of it. See docs/concepts/sandbox.md.
        memory_mb: Most memory of the kernel, in MiB (None: no limit). Past it a run ends
            with a ``MemoryError`` (or the kernel dies, out of memory); the box lives on.
        max_processes: Most processes and threads in the box (None: no limit).
        disk_mb: Most MiB one file in the box may grow to, the size of its ``/tmp``, and,
            where codebox runs as root and made the box's directory, the size of its
            working directory, with at most 64 files per MiB (None: no limit). Past it
            writes fail with ``OSError``.
        env: Variables set in the kernel, beside a minimal ``PATH``, ``HOME``, ``LANG``.
        read_only_paths: Host paths the box may read (bound at the same place).
        output_limit: Most bytes of output one run sends out of the box, every kind
            together; a run's output past it, or one message past it, is cut and marked
            truncated (None: the gateway's limit, 16 MiB by default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: bool | list[str] = False
    memory_mb: int | None = Field(2048, gt=0)
    max_processes: int | None = Field(256, gt=0)
    disk_mb: int | None = Field(2048, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    read_only_paths: list[str] = Field(default_factory=list)
    output_limit: int | None = Field(None, gt=0)

    @field_validator("network")
    @classmethod
    def _check_network(cls, value: bool | list[str]) -> bool | list[str]:
        from .local._egress import Policy

        return Policy(value).value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key or "=" in key or "\0" in key + item:
                raise ValueError(f"invalid environment variable {key!r}")
        return value

    @field_validator("read_only_paths")
    @classmethod
    def _check_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or "\0" in path:
                raise ValueError(f"read_only_paths must be absolute paths, not {path!r}")
        return value

    def policy(self) -> dict[str, Any]:
        """The policy as the kernel provisioner reads it (JSON-ready)."""
        return self.model_dump()

    def __hash__(self) -> int:
        return hash(self.model_dump_json())


def parse_network(value: Any) -> Any:
    """A network policy as settings and command lines write it: ``true``/``false``, a JSON
    list, or entries separated by commas (``pypi.org,*.example.com:443``). Anything but a
    string is returned as it is, for the model to check."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off", ""):
        return False
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"network: not a JSON list ({exc})") from None
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def with_network(value: bool | Sandbox | None, network: bool | list[str] | None
                 ) -> bool | Sandbox | None:
    """The sandbox setting ``value`` with its network policy replaced by ``network`` (None:
    left as it is; no sandbox stays none)."""
    if network is None or value is None or value is False:
        return value
    base = Sandbox() if value is True else value
    return Sandbox(**{**base.model_dump(), "network": network})


def resolve(value: bool | Sandbox | None, default: bool | Sandbox | None) -> Sandbox | None:
    """The policy a box runs under: ``None`` takes ``default``; ``True`` is `Sandbox()`."""
    if value is None:
        value = default
    if value is None or value is False:
        return None
    if value is True:
        return Sandbox()
    if isinstance(value, Sandbox):
        return value
    raise TypeError(f"sandbox must be a bool or a Sandbox, not {type(value).__name__}")
