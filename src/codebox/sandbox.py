"""``Sandbox``: the policy of a sandboxed kernel (see docs/concepts/sandbox.md).

    from codebox import LocalBox, Sandbox

    LocalBox(sandbox=True)                                  # the default policy
    LocalBox(sandbox=Sandbox(network=True, memory_mb=4096))
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Sandbox(BaseModel):
    """What a sandboxed box's code may use. A box's code sees the Python installation and
    system libraries read-only, its own working directory read-write, a private ``/tmp`` and
    its own processes; nothing else of the machine.

    Attributes:
        network: Share the host's network (needed by `install`). Without it the box has
            only a loopback of its own: nothing on the host's 127.0.0.1 is reachable.
        memory_mb: Most memory of the kernel, in MiB (None: no limit). Past it a run ends
            with a ``MemoryError`` (or the kernel dies, out of memory); the box lives on.
        max_processes: Most processes and threads in the box (None: no limit).
        disk_mb: Most MiB one file in the box may grow to, and the size of its ``/tmp``
            (None: no limit). Past it writes fail with ``OSError``.
        env: Variables set in the kernel, beside a minimal ``PATH``, ``HOME``, ``LANG``.
        read_only_paths: Host paths the box may read (bound at the same place).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: bool = False
    memory_mb: int | None = Field(2048, gt=0)
    max_processes: int | None = Field(256, gt=0)
    disk_mb: int | None = Field(2048, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    read_only_paths: list[str] = Field(default_factory=list)

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
