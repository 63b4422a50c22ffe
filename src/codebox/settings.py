"""Configuration: ``CodeBoxSettings``, read from ``CODEBOX_*`` variables and a ``.env`` file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .sandbox import Sandbox

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
    output_limit: int | None = Field(
        None,
        gt=0,
        description="Most characters of text output kept per run (None: keep everything); "
        "output past it is cut and the result says so (`truncated`).",
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
    sandbox: bool | Sandbox = Field(
        False,
        description="Run local kernels in a sandbox: true (the default policy), false, or a "
        'policy as JSON (`CODEBOX_SANDBOX=\'{"network": true}\'`). See `Sandbox`.',
    )
    max_retries: int = Field(
        3, ge=0, description="Retries of a request that is safe to repeat (REST client)."
    )
