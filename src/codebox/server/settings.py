"""Configuration of `codebox serve`: ``ServerSettings``, read from ``CODEBOX_SERVER_*``
variables and a ``.env`` file; command-line options win over both.

The boxes of the sessions take their own settings from ``CODEBOX_*`` as usual
(`codebox.CodeBoxSettings`: kernel start timeout, output limit, ...).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..sandbox import Sandbox

DEFAULT_PORT = 8069


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerSettings(BaseSettings):
    """Settings of the CodeBox REST API server. Each field reads ``CODEBOX_SERVER_<FIELD>``
    (``CODEBOX_SERVER_API_KEYS`` is comma separated)."""

    model_config = SettingsConfigDict(
        env_prefix="CODEBOX_SERVER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="Port (0: any free port).")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="API keys accepted as `Authorization: Bearer <key>`."
    )
    no_auth: bool = Field(
        False, description="Accept requests without a key (loopback addresses only)."
    )
    gateway_url: str | None = Field(
        None, description="A running Kernel Gateway or Enterprise Gateway to use (default: "
        "spawn one on 127.0.0.1)."
    )
    gateway_token: str | None = Field(None, description="Auth token of that gateway.")
    max_sessions_per_key: int = Field(
        10, ge=1, description="Most sessions one API key may hold at once (HTTP 429 past it)."
    )
    max_upload_size: int = Field(
        100 * 1024 * 1024, ge=0, description="Most bytes of one uploaded file (HTTP 413 past it)."
    )
    max_request_size: int = Field(
        8 * 1024 * 1024, ge=1024, description="Most bytes of a JSON request body (HTTP 413 past "
        "it, before it is read in full). The default fits the largest code a kernel accepts "
        "(10 MiB including its envelope); uploads have `max_upload_size` instead."
    )
    client_timeout: float = Field(
        20.0, gt=0, description="Most seconds a client may take to send a request's headers, "
        "or stay silent while sending its body; past them its connection is dropped."
    )
    run_timeout: float = Field(
        300.0, gt=0, description="Most seconds one run may take; a longer one is interrupted "
        "and answered with a `TimeoutError` result. A client's own `timeout` can only shorten it."
    )
    install_timeout: float = Field(600.0, gt=0, description="Most seconds of one `install`.")
    idle_timeout: float = Field(
        3600.0, gt=0, description="Seconds without requests after which a session is stopped "
        "and its kernel deleted."
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, description="Seconds open requests get to finish when the server stops."
    )
    data_dir: Path | None = Field(
        None, description="Directory for the sessions' files, upload spools and, with "
        "`gateway_url`, the sessions themselves (`sessions.sqlite3`: they survive a restart "
        "and are shared by every server on the directory). Default: a fresh temporary "
        "directory, removed when the server stops."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    api_key_file: Path | None = Field(
        None, description="A file of API keys, one per line (# starts a comment): keeps keys "
        "out of the command line, which every user of the machine can read."
    )
    sandbox: bool | None = Field(
        None, description="Run every session's kernel in a sandbox. Default: yes when the "
        "server spawns its gateway; with `gateway_url`, only if set (that gateway then needs "
        "codebox's `codebox-sandbox` kernelspec)."
    )
    sandbox_network: bool = Field(False, description="Let sandboxed sessions use the network.")
    sandbox_memory_mb: int | None = Field(2048, gt=0, description="Memory of a session (MiB).")
    sandbox_max_processes: int | None = Field(
        256, gt=0, description="Processes and threads of a session.")
    sandbox_disk_mb: int | None = Field(
        2048, gt=0, description="Largest file of a session, and its /tmp (MiB).")

    def sandbox_policy(self) -> Sandbox | None:
        """The sessions' sandbox policy; None: plain kernels."""
        enabled = self.sandbox if self.sandbox is not None else self.gateway_url is None
        if not enabled:
            return None
        return Sandbox(network=self.sandbox_network, memory_mb=self.sandbox_memory_mb,
                       max_processes=self.sandbox_max_processes,
                       disk_mb=self.sandbox_disk_mb)

    @model_validator(mode="after")
    def _read_key_file(self) -> ServerSettings:
        """Add the keys of ``api_key_file`` to ``api_keys``."""
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read the API key file: {exc}") from None
            for line in text.splitlines():
                key = line.split("#", 1)[0].strip()
                if key and key not in self.api_keys:
                    self.api_keys.append(key)
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            return [k.strip() for k in value if isinstance(k, str) and k.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.lower()
        if level not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(f"unknown log level {value!r}")
        return level

    def check_security(self) -> None:
        """Refuse settings that would expose kernels to anyone.

        Raises:
            ValueError: No API key and no ``no_auth``; ``no_auth`` with keys; ``no_auth`` on
                an address other than loopback.
        """
        if self.no_auth and self.api_keys:
            raise ValueError("give API keys or --no-auth, not both")
        if not self.no_auth and not self.api_keys:
            raise ValueError(
                "no API key: give --api-key-file FILE, CODEBOX_SERVER_API_KEYS or --api-key "
                "KEY, or --no-auth to serve without authentication on a loopback address"
            )
        if self.no_auth and not is_loopback(self.host):
            raise ValueError(
                f"--no-auth serves on loopback addresses only, not {self.host!r}: anyone who "
                "reaches the server could run code"
            )
