"""The requests a `LocalBox` operation makes of its Jupyter transport (`_transport`): the
gateway's REST API and the kernel websocket. Pure data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._engine import Interrupting
from ._gateway import GatewayAddress


@dataclass(frozen=True)
class Gateway:
    """Get the gateway's address (spawning or replacing a gateway if the box owns one).
    ``refused``: the address that could not be reached just now; a gateway the box owns is
    replaced if it refuses connections, even if its process has not exited yet."""

    refused: GatewayAddress | None = None


@dataclass(frozen=True)
class ReleaseGateway:
    """The box no longer needs the gateway it acquired."""


@dataclass(frozen=True)
class Http:
    """A REST call to the gateway; the result is ``(status_code, parsed JSON or None)``."""

    address: GatewayAddress
    method: str
    path: str
    body: dict[str, Any] | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class InterruptKernel(Interrupting, Http):
    """``POST /api/kernels/{id}/interrupt`` (see `Interrupting`: not sent twice in a row)."""


@dataclass(frozen=True)
class Connect:
    """Open the kernel websocket (no-op when it is open to that kernel already). Raises
    `CodeBoxNotFoundError` if the kernel is gone, `CodeBoxConnectionError` if unreachable."""

    address: GatewayAddress
    kernel_id: str
    timeout: float = 60.0


@dataclass(frozen=True)
class Disconnect:
    """Close the kernel websocket, if open."""


@dataclass(frozen=True)
class Send:
    """Send one frame on the kernel websocket."""

    frame: bytes


@dataclass(frozen=True)
class Recv:
    """Receive one frame; the result is ``None`` when ``timeout`` seconds pass first."""

    timeout: float | None


@dataclass(frozen=True)
class Disk:
    """Blocking work on this machine's disk (a snapshot's streams): the result is
    ``work()``'s, run off the event loop by the async transport."""

    work: Callable[[], Any]
