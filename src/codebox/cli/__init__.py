"""The ``codebox`` command.

``codebox run FILE`` runs a script in a fresh box, ``codebox shell CMD`` a command,
``codebox serve`` runs the CodeBox REST API server, ``codebox mcp`` serves MCP over stdio,
``codebox template`` builds and manages templates.
Each subcommand imports what it needs inside its function, so ``codebox --help`` stays fast
and works without extras.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from ._templates import template

_NETWORK = click.option(
    "--sandbox-network", is_flag=False, flag_value="true", default=None,
    metavar="false|true|ENTRIES",
    help="What sandboxed kernels may connect to, through codebox's proxy: false, true (public "
    "addresses), or comma-separated hosts (*. for subdomains), IPs, CIDRs, each with an "
    "optional :port, and host.codebox.internal[:port]; alone: true. install needs none of "
    "it.  [default: false]")
_NO_NETWORK = click.option("--no-sandbox-network", is_flag=True, default=False,
                           help="The same as --sandbox-network false.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="codebox")
def main() -> None:
    """codebox: run Python code in isolated, stateful Jupyter kernels."""


@main.command()
@click.option("--host", help="Interface to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=int, help="Port to listen on; 0 picks a free one.  [default: 8069]")
@click.option("--api-key-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A file of API keys, one per line (also CODEBOX_SERVER_API_KEY_FILE).")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="An API key clients must send (repeatable; also CODEBOX_SERVER_API_KEYS, "
              "comma separated). Prefer --api-key-file or the variable: a command line can "
              "be read by every user of the machine.")
@click.option("--no-auth", is_flag=True, default=None,
              help="Serve without API keys (loopback addresses only).")
@click.option("--gateway-url", metavar="URL",
              help="Use this running Kernel Gateway or Enterprise Gateway instead of "
              "spawning one.")
@click.option("--gateway-token", metavar="TOKEN", help="Auth token of that gateway.")
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Directory for the sessions' files and records. With --gateway-url the "
              "sessions are kept there (SQLite): they survive a restart, and every server "
              "on the directory serves them.  [default: a temporary one]")
@click.option("--store", metavar="URL",
              help="Keep the sessions in this database, shared by every server on it: "
              "postgresql://USER@HOST/DB (password in PGPASSWORD or a password file) or "
              "sqlite:///PATH. Needs --gateway-url.  [default: DIR/sessions.sqlite3 with "
              "--data-dir and --gateway-url, else memory]")
@click.option("--max-sessions-per-key", type=int,
              help="Most sessions per API key.  [default: as many as fit in the machine's "
              "memory at --memory-mb each, 1 to 10]")
@click.option("--max-upload-size", type=int, metavar="BYTES",
              help="Largest file an upload may carry.  [default: 100 MiB]")
@click.option("--run-timeout", type=float, metavar="SECONDS",
              help="Longest a run may take.  [default: 300]")
@click.option("--idle-timeout", type=float, metavar="SECONDS",
              help="Sessions idle this long are stopped.  [default: 3600]")
@click.option("--max-lifetime", type=float, metavar="SECONDS",
              help="Longest lifetime a client may give a session.  [default: 86400]")
@click.option("--pause-idle", type=float, metavar="SECONDS",
              help="Sessions idle this long are snapshotted and their kernels freed; the "
              "next request resumes them.  [default: never]")
@click.option("--snapshot-quota", type=int, metavar="BYTES",
              help="Most bytes of snapshots per API key.  [default: 1 GiB]")
@click.option("--kernel-user-per-key", is_flag=True, default=None,
              help="Start each API key's kernels for a KERNEL_USERNAME of its own (Enterprise "
              "Gateway's per-user limits then apply per key). Needs --gateway-url.")
@click.option("--log-level",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level.  [default: info]")
@click.option("--sandbox/--no-sandbox", default=None,
              help="Run each session's kernel in a sandbox.  [default: sandbox, unless "
              "--gateway-url]")
@_NETWORK
@_NO_NETWORK
@click.option("--memory-mb", "sandbox_memory_mb", type=click.IntRange(min=1), metavar="MIB",
              help="Memory of a session.  [default: 2048]")
@click.option("--max-processes", "sandbox_max_processes", type=click.IntRange(min=1),
              metavar="N", help="Processes and threads of a session.  [default: 256]")
@click.option("--disk-mb", "sandbox_disk_mb", type=click.IntRange(min=1), metavar="MIB",
              help="Largest file of a session, its /tmp, and (as root) its directory.  "
              "[default: 2048]")
@click.option("--output-limit", type=click.IntRange(min=1), metavar="BYTES",
              help="Most bytes of output one run sends (every kind).  [default: 16 MiB]")
@click.option("--template", "templates", multiple=True, metavar="NAME=FILE",
              help="A template sessions may start from (POST /codebox/start {\"template\": "
              "NAME}): a requirements file, or a TOML/JSON Template. Built at start. "
              "Repeatable.")
@click.option("--template-pool", "template_pool_size", multiple=True, metavar="NAME=N",
              help="Warm kernels kept for template NAME.  [default: 1]")
def serve(**options: Any) -> None:
    """Run the CodeBox REST API server.

    Clients reach it with CODEBOX_BASE_URL=http://HOST:PORT/api/v1 and an API key. Every
    option can also be set as CODEBOX_SERVER_<OPTION> (e.g. CODEBOX_SERVER_RUN_TIMEOUT).
    Stops cleanly, with its kernels and gateway, on Ctrl-C or SIGTERM.
    """
    try:
        from pydantic import ValidationError

        from ..server import ServerSettings
        from ..server import serve as run_server
    except ImportError as exc:
        raise click.ClickException(
            f"codebox serve needs the server extra: pip install 'codebox[server]' ({exc})"
        ) from None
    _network_option(options)
    given = {k: v for k, v in options.items() if v not in (None, ())}
    if "api_keys" in given:
        given["api_keys"] = list(given["api_keys"])
    for key, flag in (("templates", "--template"), ("template_pool_size", "--template-pool")):
        if key in given:
            given[key] = _pairs(given[key], flag)
    try:
        settings = ServerSettings(**given)
        if settings.sandbox_policy() is None:
            _warn_unsandboxed(
                "--no-sandbox" if settings.sandbox is False else "--gateway-url without "
                "--sandbox", "anyone with an API key")
        code = run_server(settings, announce=lambda line: click.echo(line))
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on the address: {exc}") from None
    sys.exit(code)


def _network_option(options: dict[str, Any]) -> None:
    """``--no-sandbox-network`` as ``--sandbox-network false``."""
    if options.pop("no_sandbox_network", False):
        options["sandbox_network"] = "false"
def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise click.UsageError(f"{flag} takes NAME=VALUE, not {value!r}")
        pairs[name] = rest
    return pairs


def _warn_unsandboxed(why: str, who: str) -> None:
    click.secho(
        f"WARNING ({why}): kernels run WITHOUT a sandbox, as this user, with this machine's "
        f"files, processes and network: {who} can read your files and keys and every other "
        "kernel. Only do this for code you trust.",
        fg="red", bold=True, err=True)


def _transfers(uploads: tuple[str, ...], downloads: tuple[str, ...]) -> dict[str, Any]:
    from ._runner import parse_download, parse_upload

    try:
        return {"uploads": [parse_upload(u) for u in uploads],
                "downloads": [parse_download(d) for d in downloads]}
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


_UPLOAD = click.option(
    "--upload", "uploads", multiple=True, metavar="LOCAL[:BOX]",
    help="Upload a local file first (as BOX; default: its base name). Repeatable.")
_DOWNLOAD = click.option(
    "--download", "downloads", multiple=True, metavar="BOX[:LOCAL]",
    help="Download a file of the box afterwards (to LOCAL; default: its base name here). "
    "Repeatable.")
_PROGRESS = click.option(
    "--progress/--no-progress", default=None,
    help="Progress bars for uploads and downloads.  [default: for big files on a terminal]")


@main.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--images-dir", default="codebox-images", show_default=True,
              type=click.Path(file_okay=False), help="Folder where images (plots) are saved.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Seconds the script may run.  [default: no limit]")
@_UPLOAD
@_DOWNLOAD
@_PROGRESS
def run(file: str, images_dir: str, timeout: float | None, uploads: tuple[str, ...],
        downloads: tuple[str, ...], progress: bool | None) -> None:
    """Run FILE (or - for stdin) in a fresh box, streaming its output as it comes.

    The box is local, or remote when CODEBOX_API_KEY is set. Exits 0 when the code ran
    through, 1 when it raised or timed out, 2 when the box itself failed (or a file could
    not be moved).
    """
    from ._runner import run_script

    sys.exit(run_script(file, images_dir=images_dir, timeout=timeout, progress=progress,
                        **_transfers(uploads, downloads)))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Seconds the command may run.  [default: no limit]")
@click.option("--cwd", default=None, metavar="DIR",
              help="Directory to start in, relative to the box.")
@_UPLOAD
@_DOWNLOAD
@_PROGRESS
def shell(command: tuple[str, ...], timeout: float | None, cwd: str | None,
          uploads: tuple[str, ...], downloads: tuple[str, ...], progress: bool | None) -> None:
    """Run COMMAND in a fresh box, streaming its output as it comes.

    One argument is a command line for /bin/sh (codebox shell "ls -l | wc -l"); several are
    a program and its arguments, run without a shell (codebox shell -- ls -l). Exits with
    the command's exit code (124 after a timeout, 2 when the box itself failed).
    """
    from ._runner import run_command

    line: str | list[str] = command[0] if len(command) == 1 else list(command)
    sys.exit(run_command(line, timeout=timeout, cwd=cwd, progress=progress,
                         **_transfers(uploads, downloads)))


@main.command()
@click.option("--sandbox/--no-sandbox", default=None,
              help="Run the local box's kernel in a sandbox.  [default: CODEBOX_SANDBOX, "
              "else sandbox]")
@_NETWORK
@_NO_NETWORK
def mcp(sandbox: bool | None, **network: Any) -> None:
    """Serve MCP over stdio: run, shell, upload, download, list_files, remove and install on
    one box per session."""
    try:
        from ..integrations.mcp import main as serve_mcp
    except ImportError as exc:
        raise click.ClickException(
            f"codebox mcp needs the mcp extra: pip install 'codebox[mcp]' ({exc})"
        ) from None
    if sandbox is False:
        _warn_unsandboxed("--no-sandbox", "the code an agent runs")
    _network_option(network)
    try:
        serve_mcp(sandbox, network=network["sandbox_network"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


main.add_command(template)
