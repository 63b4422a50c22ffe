"""Configuration: ``CodeBoxSettings``, read from ``CODEBOX_*`` variables and a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ._limits import OUTPUT_LIMIT
from .sandbox import Sandbox, parse_network, with_network

DEFAULT_BASE_URL = "https://codeboxapi.com/api/v1"


class CodeBoxSettings(BaseSettings):
    """Settings of a box. Each field reads ``CODEBOX_<FIELD>`` from the environment or from a
    ``.env`` file in the current directory; arguments win over both.

    A box takes its own instance (``LocalBox(settings=...)``); nothing here is a global.
    """

    model_config = SettingsConfigDict(
        env_prefix="CODEBOX_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    api_key: str | None = Field(None, description="API key of the CodeBox REST API.")
    base_url: str = Field(DEFAULT_BASE_URL, description="Base URL of the CodeBox REST API.")
    timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds allowed for one operation of the box itself (HTTP request, file "
        "transfer step, kernel start); a run has no limit unless given one.",
    )
    run_timeout: float | None = Field(
        None, gt=0, description="Default `timeout` of `run`/`stream` in seconds (None: no limit)."
    )
    gateway_url: str | None = Field(
        None, description="URL of a running Kernel Gateway or Enterprise Gateway to use."
    )
    gateway_token: str | None = Field(None, description="Auth token of that gateway.")
    kernel_username: str | None = Field(
        None,
        description="`KERNEL_USERNAME` sent with each kernel start to a `gateway_url` gateway "
        "(default: the user running codebox). Enterprise Gateway starts kernels as, and "
        "counts them for, this user, and refuses the ones in its `unauthorized_users` "
        "(`root` unless configured otherwise).",
    )
    kernel_env: dict[str, str] = Field(
        default_factory=dict,
        description="More variables sent with each kernel start to a `gateway_url` gateway, "
        "such as Enterprise Gateway's `KERNEL_NAMESPACE` or `KERNEL_IMAGE` (a JSON object in "
        "`CODEBOX_KERNEL_ENV`). Gateways pass on `KERNEL_*` names, and others only when "
        "their operator allows them.",
    )
    kernel_name: str = Field("python3", description="Kernelspec of new kernels.")
    working_dir: Path | None = Field(
        None, description="Directory the kernel runs in (default: a fresh temporary one per box)."
    )
    debug: bool = Field(False, description="Log the gateway's output and every message.")
    start_timeout: float = Field(
        60.0, gt=0, description="Seconds allowed for the gateway and a kernel to start."
    )
    interrupt_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds an interrupted run may take to stop before its kernel is restarted.",
    )
    kernel_check_after: float = Field(
        5.0,
        ge=0,
        description="Seconds a box on a gateway given by URL may sit unused before its next "
        "operation asks the gateway whether its kernel still exists (a deleted or culled "
        "kernel leaves its websocket open and silent).",
    )
    output_limit: int | None = Field(
        OUTPUT_LIMIT,
        gt=0,
        description="Most bytes of output kept per run, every kind together (text, results, "
        "displays of any MIME type, errors and tracebacks; default 16 MiB, so a 10 MB print "
        "arrives whole); past it output is cut, a notice says what was dropped and the "
        "result is `truncated`. The same bounds one message, and a shell command's output. "
        "None keeps everything.",
    )
    chunk_size: int = Field(
        8 * 1024 * 1024,
        gt=0,
        le=8 * 1024 * 1024,
        description="Bytes per message of a file transfer (the gateway drops messages over "
        "10 MiB).",
    )
    pool_size: int = Field(
        1,
        ge=0,
        le=32,
        description="Warm kernels a spawned gateway keeps ready for the next box (0: none).",
    )
    pool_idle_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds a warm kernel may wait unused before it is shut down.",
    )
    template_pool_sizes: dict[str, int] = Field(
        default_factory=dict,
        description="Warm kernels kept per template, by template id (a JSON object); a "
        "template not named here gets `pool_size`.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_cache_dir("codebox")),
        description="Where built templates (and uv's cache for them) live; default the "
        "platform's cache directory (`~/.cache/codebox` on Linux).",
    )
    sandbox_dir: Path | None = Field(
        None,
        description="Where a spawned gateway keeps its sandboxed kernels' own directories "
        "(working directory, home), one per kernel (default: in its private runtime "
        "directory, removed with the gateway; `codebox serve` keeps them in its data "
        "directory, so a session's files outlive a gateway that died).",
    )
    snapshot_dir: Path | None = Field(
        None,
        description="Where `LocalBox` snapshots live, one directory each (default: "
        "`snapshots` in `cache_dir`; `codebox serve` keeps its sessions' in its data "
        "directory).",
    )
    sandbox: bool | Sandbox = Field(
        False,
        description="Run local kernels in a sandbox: true (the default policy), false, or a "
        'policy as JSON (`CODEBOX_SANDBOX=\'{"network": true}\'`). See `Sandbox`.',
    )
    sandbox_network: Annotated[bool | list[str] | None, NoDecode] = Field(
        None,
        description="The network of the sandbox policy (overrides `sandbox`'s): true, false, "
        "a JSON list or comma-separated entries (`CODEBOX_SANDBOX_NETWORK=pypi.org,"
        "*.example.com:443`). See `Sandbox.network`.",
    )
    max_retries: int = Field(
        3, ge=0, description="Retries of a request that is safe to repeat (REST client)."
    )

    @field_validator("sandbox_network", mode="before")
    @classmethod
    def _parse_network(cls, value: Any) -> Any:
        return parse_network(value)

    @model_validator(mode="after")
    def _network_into_sandbox(self) -> CodeBoxSettings:
        """``sandbox_network`` becomes the network of the ``sandbox`` policy (a `ValueError`
        for a bad entry)."""
        # Only a sandbox that was set is changed: a default must stay one (mcp asks).
        if self.sandbox is not False and self.sandbox_network is not None:
            self.sandbox = with_network(self.sandbox, self.sandbox_network)  # type: ignore[assignment]
        return self
