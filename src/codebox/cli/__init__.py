"""The ``codebox`` command.

``codebox run FILE`` runs a script in a fresh box, ``codebox shell CMD`` a command,
``codebox serve`` runs the CodeBox REST API server, ``codebox mcp`` serves MCP over stdio.
Each subcommand imports what it needs inside its function, so ``codebox --help`` stays fast
and works without extras.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__


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
@click.option("--max-sessions-per-key", type=int, help="Most sessions per API key.  [default: 10]")
@click.option("--max-upload-size", type=int, metavar="BYTES",
              help="Largest file an upload may carry.  [default: 100 MiB]")
@click.option("--run-timeout", type=float, metavar="SECONDS",
              help="Longest a run may take.  [default: 300]")
@click.option("--idle-timeout", type=float, metavar="SECONDS",
              help="Sessions idle this long are stopped.  [default: 3600]")
@click.option("--log-level",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level.  [default: info]")
@click.option("--sandbox/--no-sandbox", default=None,
              help="Run each session's kernel in a sandbox.  [default: sandbox, unless "
              "--gateway-url]")
@click.option("--sandbox-network/--no-sandbox-network", default=None,
              help="Let sessions use the network (install needs it).  [default: no]")
@click.option("--memory-mb", "sandbox_memory_mb", type=click.IntRange(min=1), metavar="MIB",
              help="Memory of a session.  [default: 2048]")
@click.option("--max-processes", "sandbox_max_processes", type=click.IntRange(min=1),
              metavar="N", help="Processes and threads of a session.  [default: 256]")
@click.option("--disk-mb", "sandbox_disk_mb", type=click.IntRange(min=1), metavar="MIB",
              help="Largest file of a session, and its /tmp.  [default: 2048]")
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
    given = {k: v for k, v in options.items() if v not in (None, ())}
    if "api_keys" in given:
        given["api_keys"] = list(given["api_keys"])
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
def mcp(sandbox: bool | None) -> None:
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
    serve_mcp(sandbox)

