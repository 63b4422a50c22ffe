"""Configuration of `codebox serve`: ``ServerSettings``, read from ``CODEBOX_SERVER_*``
variables and a ``.env`` file; command-line options win over both.

The boxes of the sessions take their own settings from ``CODEBOX_*`` as usual
(`codebox.CodeBoxSettings`: kernel start timeout, output limit, ...).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .._limits import OUTPUT_LIMIT
from ..sandbox import Sandbox, parse_network

DEFAULT_PORT = 8069
MOST_SESSIONS_PER_KEY = 10
"""The most sessions per key by default, however much memory the machine has."""
RESERVED_MB = 1024
"""Memory kept for the server, its gateway and the system when sizing the defaults."""


def machine_memory_mb() -> int | None:
    """The machine's memory (``MemTotal``), in MiB; None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    except (OSError, ValueError, AttributeError):
        return None


def sessions_that_fit(memory_mb: int | None, machine_mb: int | None = None) -> int:
    """How many sessions of ``memory_mb`` one key may hold by default: as many as fit in
    80 % of the machine's memory less `RESERVED_MB`, at least 1, at most
    `MOST_SESSIONS_PER_KEY` (with no memory limit per session, that most)."""
    machine_mb = machine_memory_mb() if machine_mb is None else machine_mb
    if not memory_mb or not machine_mb:
        return MOST_SESSIONS_PER_KEY
    room = int(machine_mb * 0.8) - RESERVED_MB
    return max(1, min(MOST_SESSIONS_PER_KEY, room // memory_mb))


class SessionSandbox(Sandbox):
    """The sandbox of a server's session: its working directory is the session's own,
    made by the server, so it may become a filesystem of its own (sized by ``disk_mb``)."""

    def policy(self) -> dict[str, Any]:
        return {**super().policy(), "own_work_dir": True}


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
        0, ge=0, description="Most sessions one API key may hold at once (HTTP 429 past it). "
        "0 (the default): as many as fit in the machine's memory at `sandbox_memory_mb` "
        "each (80 % of it, less 1 GiB for the server), at least 1 and at most 10."
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
    store: str | None = Field(
        None, description="Where the sessions are kept, for servers that share them: a "
        "PostgreSQL URL (`postgresql://USER@HOST/DB`, for servers on several machines; give "
        "the password in `PGPASSWORD` or a password file rather than in the URL) or a SQLite "
        "file (`sqlite:///PATH`, servers of one machine). Needs `gateway_url`. Default: "
        "`sessions.sqlite3` in `data_dir` with `gateway_url`, else the server's memory."
    )
    max_lifetime: float = Field(
        86400.0, gt=0, allow_inf_nan=False, description="Longest lifetime a client may give "
        "a session (seconds after its last use); a longer one is cut to this."
    )
    pause_idle: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Seconds without requests after which "
        "a session is paused: snapshotted into the data directory and its kernel freed; the "
        "next request resumes it (same id, files, packages, variables). Default: never."
    )
    snapshot_quota: int = Field(
        1024**3, ge=0, description="Most bytes the snapshots of one API key may take in all "
        "(HTTP 413 past it). Paused sessions' snapshots are the server's and do not count."
    )
    kernel_user_per_key: bool = Field(
        False, description="Start each API key's kernels for a user of its own "
        "(`KERNEL_USERNAME` = `codebox-` and a digest of the key), so that Enterprise "
        "Gateway's per-user limits apply per key. Needs `gateway_url`."
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
    sandbox_network: Annotated[bool | list[str], NoDecode] = Field(
        False, description="What sandboxed sessions may connect to, through codebox's proxy: "
        "false (nothing), true (public addresses), or a list of hosts (`*.` for subdomains), "
        "IPs, CIDRs with an optional `:port`, and `host.codebox.internal[:port]` (a JSON list "
        "or comma-separated). `install` needs none of it.")
    sandbox_memory_mb: int | None = Field(2048, gt=0, description="Memory of a session (MiB).")
    sandbox_max_processes: int | None = Field(
        256, gt=0, description="Processes and threads of a session.")
    sandbox_disk_mb: int | None = Field(
        2048, gt=0, description="Largest file of a session, its /tmp, and, when the server "
        "runs as root, the size of its directory (MiB; at most 64 files per MiB).")
    output_limit: int = Field(
        OUTPUT_LIMIT, gt=0, description="Most bytes of output one run sends, every kind "
        "together (text, images, HTML, errors); past it the output is cut, with a notice, "
        "and marked `truncated`. One message is cut at the same size.")

    templates: dict[str, Path] = Field(
        default_factory=dict, description="Templates sessions may start from, by name: a "
        "requirements file, or a TOML or JSON `Template` (`--template NAME=FILE`; a JSON "
        "object here). Built as the server starts, each with a warm pool."
    )
    template_pool_size: dict[str, Annotated[int, Field(ge=0, le=32)]] = Field(
        default_factory=dict, description="Warm kernels kept per template, by name "
        "(`--template-pool NAME=N`); others keep `CODEBOX_POOL_SIZE` (1)."
    )

    @field_validator("templates")
    @classmethod
    def _check_template_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"a template name is letters, digits, '_', '.', '-' "
                                 f"(at most 64), not {name!r}")
        return value

    @model_validator(mode="after")
    def _templates_here(self) -> ServerSettings:
        if self.templates and self.gateway_url:
            raise ValueError(
                "templates are built on this machine, for the gateway codebox serve spawns; "
                "with --gateway-url, give that gateway a kernelspec per template instead "
                "(docs/deployment.md)")
        return self

    def sandbox_policy(self) -> Sandbox | None:
        """The sessions' sandbox policy; None: plain kernels."""
        enabled = self.sandbox if self.sandbox is not None else self.gateway_url is None
        if not enabled:
            return None
        return SessionSandbox(network=self.sandbox_network, memory_mb=self.sandbox_memory_mb,
                              max_processes=self.sandbox_max_processes,
                              disk_mb=self.sandbox_disk_mb, output_limit=self.output_limit)

    @model_validator(mode="after")
    def _size_to_the_machine(self) -> ServerSettings:
        if not self.max_sessions_per_key:
            sandboxed = self.sandbox if self.sandbox is not None else self.gateway_url is None
            self.max_sessions_per_key = sessions_that_fit(
                self.sandbox_memory_mb if sandboxed else None)
        return self

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

    @field_validator("sandbox_network", mode="before")
    @classmethod
    def _parse_network(cls, value: Any) -> Any:
        return parse_network(value)

    @field_validator("sandbox_network")
    @classmethod
    def _check_network(cls, value: bool | list[str]) -> bool | list[str]:
        return Sandbox(network=value).network

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
