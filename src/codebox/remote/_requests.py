"""The requests of the CodeBox REST API, version 1, as data: one builder per route, each
saying how its reply is read. No I/O; see ``docs/protocol.md`` for the wire format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from .._protocol import RICH_RUN, STREAM
from ..schema import (
    BoxInfo,
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxStatus,
    CommandResult,
    Snapshot,
)
from ._disposition import box_name, parse_content_disposition
from ._replies import (
    Capabilities,
    Reply,
    error_for,
    header,
    json_of,
    parse_capabilities,
    parse_command,
    parse_expires,
    parse_file,
    parse_files,
    parse_install,
    parse_run,
    parse_sessions,
    parse_snapshot,
    parse_start,
    parse_status,
)

T = TypeVar("T")

RUN_TIMEOUT_MARGIN = 30.0
"""Seconds the HTTP read timeout of a run waits past the run's own ``timeout``, so that the
server's answer (which reports the timeout) arrives before the client gives up."""

@dataclass(frozen=True)
class Request(Generic[T]):
    """One HTTP request of the API and how to read its reply.

    Attributes:
        op: The operation (``"start"``, ``"run"``, ...); it decides the retry policy.
        what: The operation in words, for error messages (``"download of 'x.csv'"``).
        method: The HTTP method.
        path: The path relative to the base URL.
        parse: Turns a successful reply (or one of ``allow``) into the result.
        params: Query parameters.
        json: A JSON body.
        files: Multipart files, ``{part name: (file name, bytes, content type)}``.
        timeout: Overrides of the box's HTTP timeout by phase (``connect``, ``read``,
            ``write``, ``pool``), in seconds; ``None`` means no limit. Empty: the default.
        allow: Error statuses handed to ``parse`` instead of raising.
        stream: The answer is read line by line as it arrives (NDJSON), not at once.
    """

    op: str
    what: str
    method: str
    path: str
    parse: Callable[[Reply], T]
    params: dict[str, str] | None = None
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    timeout: dict[str, float | None] = field(default_factory=dict)
    allow: frozenset[int] = frozenset()
    stream: bool = False

    def interpret(self, reply: Reply) -> T:
        """The result of this request from its reply.

        Raises:
            CodeBoxError: The reply is an error (the subclass follows the status), or it is
                not what the protocol promises.
        """
        if not 200 <= reply.status < 300 and reply.status not in self.allow:
            raise error_for(self.what, reply)
        return self.parse(reply)


def _all_phases(timeout: float | None) -> dict[str, float | None]:
    if timeout is None:
        return {}
    return {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}


def _install_phases(timeout: float | None) -> dict[str, float | None]:
    # pip may work for minutes: the read waits for the install's own limit, and the server's
    # answer to it.
    return {"read": None if timeout is None else timeout + RUN_TIMEOUT_MARGIN}


def _run_phases(timeout: float | None) -> dict[str, float | None]:
    # A run may take as long as its own limit; without one, the read has no limit either.
    return {"read": None if timeout is None else timeout + RUN_TIMEOUT_MARGIN}


def _session(session_id: str, suffix: str = "") -> str:
    return f"/codebox/{session_id}/{suffix}"


def capabilities_request() -> Request[Capabilities]:
    """``GET /codebox/capabilities``; a 404 means a core-only server."""
    return Request("capabilities", "capabilities", "GET", "/codebox/capabilities",
                   parse_capabilities, allow=frozenset({404}))


def start_request(env: dict[str, str] | None = None,
                  lifetime: float | None = None, template: str | None = None,
                  snapshot: str | None = None) -> Request[str]:
    """``GET /codebox/start``, or ``POST`` with ``env`` (extension ``start-options``),
    ``lifetime`` (extension ``lifetime``), ``template`` (extension ``templates``) and
    ``snapshot`` (extension ``snapshots``); the result is the new session id (decimal
    string)."""
    body: dict[str, Any] = {"env": env} if env else {}
    if lifetime is not None:
        body["lifetime"] = lifetime
    if template:
        body["template"] = template
    if snapshot:
        body["snapshot"] = snapshot
    if body:
        return Request("start", "start", "POST", "/codebox/start", parse_start, json=body)
    return Request("start", "start", "GET", "/codebox/start", parse_start)


def sessions_request() -> Request[list[BoxInfo]]:
    """``GET /codebox/sessions``: the key's sessions (extension ``list``)."""
    return Request("sessions", "list", "GET", "/codebox/sessions", parse_sessions)


def lifetime_request(session_id: str, seconds: float | None) -> Request[datetime | None]:
    """``POST /codebox/{id}/lifetime``: when the session expires (extension ``lifetime``)."""
    return Request("lifetime", "set_lifetime", "POST", _session(session_id, "lifetime"),
                   parse_expires, json={"seconds": seconds})


def snapshot_request(session_id: str) -> Request[Snapshot]:
    """``POST /codebox/{id}/snapshot`` (extension ``snapshots``). Never sent twice: each
    one keeps a snapshot."""
    return Request("snapshot", f"snapshot of session {session_id}", "POST",
                   _session(session_id, "snapshot"), parse_snapshot)


def delete_snapshot_request(snapshot_id: str) -> Request[CodeBoxStatus]:
    """``DELETE /codebox/snapshots/{sid}`` (extension ``snapshots``); 404: no such snapshot
    of this key."""
    return Request("delete_snapshot", f"delete of snapshot {snapshot_id}", "DELETE",
                   f"/codebox/snapshots/{snapshot_id}",
                   lambda reply: CodeBoxStatus(status="deleted"))


def status_request(session_id: str) -> Request[CodeBoxStatus]:
    """``GET /codebox/{id}/`` (with the trailing slash)."""
    return Request("status", f"status of session {session_id}", "GET", _session(session_id),
                   parse_status)


def run_body(code: str, timeout: float | None, caps: Capabilities) -> dict[str, Any]:
    """The JSON body of a run: the code, and ``timeout`` where the server understands it."""
    body: dict[str, Any] = {"code": code}
    if timeout is not None and (caps.has(RICH_RUN) or caps.has(STREAM)):
        body["timeout"] = timeout
    return body


def run_request(
    session_id: str, code: str, timeout: float | None, caps: Capabilities
) -> Request[CodeBoxOutput]:
    """``POST /codebox/{id}/run``; rich results where the server announces ``rich-run``."""
    rich = caps.has(RICH_RUN)
    what = f"run in session {session_id}"
    return Request(
        "run", what, "POST", _session(session_id, "run"),
        lambda reply: parse_run(json_of(what, reply), rich=rich, what=what),
        json=run_body(code, timeout, caps), timeout=_run_phases(timeout),
    )


def stream_request(
    session_id: str, code: str, timeout: float | None, caps: Capabilities
) -> Request[None]:
    """``POST /codebox/{id}/run/stream`` (extension ``stream``); its lines are read with
    `StreamState`. A run: never sent twice."""
    return Request(
        "run", f"stream in session {session_id}", "POST", _session(session_id, "run/stream"),
        lambda reply: None, json=run_body(code, timeout, caps), timeout=_run_phases(timeout),
        stream=True,
    )


def upload_request(
    session_id: str, file_name: str, data: bytes, timeout: float | None = None
) -> Request[CodeBoxFile]:
    """``POST /codebox/{id}/upload``, multipart with one part ``file`` named ``file_name``.

    ``file_name`` must already be checked (see `_checks`).
    """
    return Request(
        "upload", f"upload of {file_name!r}", "POST", _session(session_id, "upload"),
        lambda reply: CodeBoxFile(name=file_name, size=len(data)),
        files={"file": (file_name, data, "application/octet-stream")},
        timeout=_all_phases(timeout),
    )


def download_request(
    session_id: str, file_name: str, timeout: float | None = None
) -> Request[CodeBoxFile]:
    """``GET /codebox/{id}/download`` with the JSON body and the query ``file_name``.

    ``file_name`` must already be checked with `check_file_name`.
    """

    def parse(reply: Reply) -> CodeBoxFile:
        name = box_name(parse_content_disposition(header(reply.headers, "content-disposition")))
        content = reply.content
        return CodeBoxFile(name=name or file_name, size=len(content), content=content)

    return Request(
        "download", f"download of {file_name!r}", "GET", _session(session_id, "download"),
        parse, params={"file_name": file_name}, json={"file_name": file_name},
        timeout=_all_phases(timeout),
    )


def install_requests(
    session_id: str, names: tuple[str, ...], caps: Capabilities, timeout: float | None = None
) -> list[Request[CodeBoxStatus]]:
    """``POST /codebox/{id}/install``: one request with ``package_names`` on a server with
    extensions, else one core request per package."""
    path, phases = _session(session_id, "install"), _install_phases(timeout)

    def request(label: str, body: dict[str, Any]) -> Request[CodeBoxStatus]:
        return Request("install", f"install of {label}", "POST", path,
                       lambda reply: parse_install(label, reply), json=body, timeout=phases)

    if caps.core_only:
        return [request(name, {"package_name": name}) for name in names]
    joined = " ".join(names)
    return [request(joined, {"package_name": joined, "package_names": list(names)})]


def join_statuses(statuses: list[CodeBoxStatus]) -> CodeBoxStatus:
    """One status for the requests of one install."""
    if len(statuses) == 1:
        return statuses[0]
    return CodeBoxStatus(status="; ".join(s.status for s in statuses))


def files_request(session_id: str) -> Request[list[CodeBoxFile]]:
    """``GET /codebox/{id}/files``; entries may be names or ``{name, size}`` objects."""
    what = f"list_files of session {session_id}"
    return Request("files", what, "GET", _session(session_id, "files"),
                   lambda reply: parse_files(json_of(what, reply), what=what))


def restart_request(session_id: str) -> Request[CodeBoxStatus]:
    """``POST /codebox/{id}/restart``."""
    return Request("restart", f"restart of session {session_id}", "POST",
                   _session(session_id, "restart"),
                   lambda reply: CodeBoxStatus(status="restarted"))


def stop_request(session_id: str) -> Request[CodeBoxStatus]:
    """``POST /codebox/{id}/stop``; a session the server no longer knows counts as stopped."""
    return Request("stop", f"stop of session {session_id}", "POST",
                   _session(session_id, "stop"),
                   lambda reply: CodeBoxStatus(status="stopped"), allow=frozenset({404}))


def interrupt_request(session_id: str) -> Request[CodeBoxStatus]:
    """``POST /codebox/{id}/interrupt`` (extension ``interrupt``; see `require`)."""
    return Request("interrupt", f"interrupt of session {session_id}", "POST",
                   _session(session_id, "interrupt"),
                   lambda reply: CodeBoxStatus(status="interrupted"))


# -- shell commands and file operations (extensions ``shell``, ``file-ops``) -------------


def shell_body(args: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a shell command from checked ``command``, ``timeout``, ``cwd`` and
    ``env`` (those not set are left out)."""
    return {k: v for k, v in args.items() if v is not None and v != {}}


def shell_request(session_id: str, args: dict[str, Any]) -> Request[CommandResult]:
    """``POST /codebox/{id}/shell``; ``args`` as for `shell_body`. Never sent twice."""
    what = f"shell in session {session_id}"
    return Request("shell", what, "POST", _session(session_id, "shell"),
                   lambda reply: parse_command(json_of(what, reply), what=what),
                   json=shell_body(args), timeout=_run_phases(args.get("timeout")))


def shell_stream_request(session_id: str, args: dict[str, Any]) -> Request[None]:
    """``POST /codebox/{id}/shell/stream``; its lines are read with `CommandLines`."""
    return Request("shell", f"shell stream in session {session_id}", "POST",
                   _session(session_id, "shell/stream"), lambda reply: None,
                   json=shell_body(args), timeout=_run_phases(args.get("timeout")),
                   stream=True)


def remove_request(session_id: str, path: str) -> Request[CodeBoxStatus]:
    """``POST /codebox/{id}/files/remove``; ``path`` checked already."""
    return Request("remove", f"remove of {path!r}", "POST",
                   _session(session_id, "files/remove"), parse_status, json={"path": path})


def rename_request(session_id: str, source: str, destination: str) -> Request[CodeBoxFile]:
    """``POST /codebox/{id}/files/rename``; the paths checked already."""
    what = f"rename of {source!r}"
    return Request("rename", what, "POST", _session(session_id, "files/rename"),
                   lambda reply: parse_file(json_of(what, reply), what=what),
                   json={"source": source, "destination": destination})


def make_dir_request(session_id: str, path: str) -> Request[CodeBoxFile]:
    """``POST /codebox/{id}/files/mkdir``; ``path`` checked already."""
    what = f"make_dir of {path!r}"
    return Request("make_dir", what, "POST", _session(session_id, "files/mkdir"),
                   lambda reply: parse_file(json_of(what, reply), what=what),
                   json={"path": path})


def file_info_request(session_id: str, path: str) -> Request[CodeBoxFile]:
    """``GET /codebox/{id}/files/info?path=``; a 404 for a missing path."""
    what = f"file_info of {path!r}"
    return Request("file_info", what, "GET", _session(session_id, "files/info"),
                   lambda reply: parse_file(json_of(what, reply), what=what),
                   params={"path": path})
