"""The endpoints of the CodeBox REST API, version 1 (docs/protocol.md: the core and every
extension), mounted under ``/api/v1``."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response

from .. import __version__
from .. import _protocol as protocol
from .._checks import check_command, check_cwd, check_env
from .._paths import check_file_name
from ..errors import CodeBoxError
from ..schema import CodeBoxFile, CodeBoxOutput, CommandResult
from . import models, pausing
from .auth import Owner
from .lifecycle import allowed_lifetime, list_sessions, set_lifetime
from .sessions import Session, SessionManager, SessionNotFound
from .streaming import (
    NDJSON,
    ClientGone,
    FollowedStream,
    PiecewiseJSON,
    RunStream,
    box_stream,
    held_while_sent,
    output_lines,
    unless_disconnected,
)
from .uploads import FIELD, mapped, receive_upload

EXTENSIONS = [protocol.RICH_RUN, protocol.STREAM, protocol.INTERRUPT, protocol.FILE_SIZES,
              protocol.START_OPTIONS, protocol.SHELL, protocol.FILE_OPS, protocol.BUNDLES,
              protocol.LIST, protocol.LIFETIME, protocol.TEMPLATES, protocol.SNAPSHOTS]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key."},
    403: {"description": "An API key the server does not accept."},
}
_SESSION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 404: {"description": "No such session for this API key."},
}

router = APIRouter(prefix="/codebox", tags=["codebox"], responses=_ERRORS)


def manager_of(request: Request) -> SessionManager:
    return request.app.state.manager


SESSION_IDS = (1, 2**63 - 1)
"""The range of session ids: what the store can hold (SQLite's integers)."""


SessionIdPath = Annotated[int, Path(ge=SESSION_IDS[0], le=SESSION_IDS[1],
                                   description="The session's id, as `start` gave it.")]


async def _session(session_id: SessionIdPath, owner: Owner, request: Request) -> Session:
    return await manager_of(request).get(owner, session_id)


SessionDep = Annotated[Session, Depends(_session)]


def _file_name(name: str) -> str:
    try:
        return check_file_name(name)
    except CodeBoxError as exc:
        raise HTTPException(422, exc.message) from None


def _run_timeout(request: Request, asked: float | None) -> float:
    limit = manager_of(request).settings.run_timeout
    return limit if asked is None else min(asked, limit)


def _content_disposition(name: str) -> str:
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return (f'attachment; filename="{fallback}"; '
            f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}")


@router.get("/capabilities", response_model=models.Capabilities)
async def capabilities(owner: Owner, request: Request) -> models.Capabilities:
    """What this server offers beyond the core protocol, and its templates."""
    return models.Capabilities(version=__version__, extensions=EXTENSIONS,
                               templates=request.app.state.templates.names)


_TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"description": "This API key holds too many sessions."}}


@router.get("/start", response_model=models.Started, responses=_TOO_MANY)
async def start(owner: Owner, request: Request) -> models.Started:
    """Start a session: a kernel of its own, in a directory of its own."""
    session = await manager_of(request).create(owner)
    return models.Started(id=session.id)


@router.post("/start", response_model=models.Started,
             responses={**_TOO_MANY, 404: {"description": "No such template."}})
async def start_with(body: models.StartRequest, owner: Owner,
                     request: Request) -> models.Started:
    """Start a session with options: environment variables set in its kernel, a lifetime,
    the template it starts from."""
    try:
        env = check_env(body.env)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    template = None
    if body.template is not None:
        templates = request.app.state.templates
        template = templates.by_name.get(body.template)
        if template is None:
            offered = ", ".join(templates.names) or "none"
            raise HTTPException(404, f"no template {body.template!r} on this server; its "
                                f"templates: {offered}")
    manager = manager_of(request)
    if body.snapshot is not None:
        await pausing.owned(manager, owner, body.snapshot)
    session = await manager.create(owner, env=env, template=template,
                                   template_name=body.template,
                                   lifetime=allowed_lifetime(manager, body.lifetime),
                                   snapshot=body.snapshot)
    return models.Started(id=session.id)


@router.post("/{session_id}/snapshot", response_model=models.SnapshotInfo,
             responses={**_SESSION_ERRORS, 413: {
                 "description": "The snapshot would take the key's past its quota."}})
async def snapshot(session: SessionDep, request: Request) -> models.SnapshotInfo:
    """Snapshot the session: its files, the packages installed into it, its variables
    (those that cannot be pickled are named in `unpicklable`)."""
    taken = await pausing.take(manager_of(request), session)
    return models.SnapshotInfo(**taken.model_dump())


@router.delete("/snapshots/{snapshot_id}", response_model=models.Status,
               responses={**_ERRORS, 404: {"description": "No such snapshot for this key."}})
async def delete_snapshot(snapshot_id: str, owner: Owner, request: Request) -> models.Status:
    """Remove a snapshot of this key's."""
    await pausing.delete(manager_of(request), owner, snapshot_id)
    return models.Status(status="deleted")


@router.get("/sessions", response_model=list[models.SessionInfo])
async def sessions(owner: Owner, request: Request) -> list[models.SessionInfo]:
    """The sessions of this API key, on every server sharing the store, oldest first."""
    return await list_sessions(manager_of(request), owner)


@router.post("/{session_id}/lifetime", response_model=models.Lifetime,
             responses=_SESSION_ERRORS)
async def lifetime(body: models.LifetimeRequest, session: SessionDep,
                   request: Request) -> models.Lifetime:
    """Make the session stop by itself that many seconds after its last use (this call is
    a use); null: after the server's idle timeout."""
    return models.Lifetime(expires=await set_lifetime(manager_of(request), session,
                                                      body.seconds))


@router.get("/{session_id}/", response_model=models.Status, responses=_SESSION_ERRORS)
async def status(session_id: SessionIdPath, owner: Owner, request: Request) -> models.Status:
    """The session's status: running, starting, stopped, or paused (also pausing and
    resuming for a moment; asking does not resume it)."""
    manager = manager_of(request)
    record = await manager.paused(owner, session_id)
    if record is not None:
        return models.Status(status=record.status)
    session = await manager.get(owner, session_id)
    return models.Status(status=(await session.box.astatus()).status)


@router.post("/{session_id}/run", response_model=CodeBoxOutput, responses=_SESSION_ERRORS)
async def run(body: models.RunRequest, session: SessionDep, request: Request) -> Response:
    """Run code; the answer has the core ``type``/``content`` and every field of the output.

    A failure of the code is data (``error``); a client that disconnects interrupts the run.
    """
    timeout = _run_timeout(request, body.timeout)
    work = manager_of(request).operate(session, lambda: session.box.arun(body.code,
                                                                          timeout=timeout))
    try:
        output = await unless_disconnected(request, work)
    except ClientGone:
        return Response(status_code=499)
    return PiecewiseJSON(output.model_dump(mode="json"))


@router.post("/{session_id}/run/stream", response_class=RunStream, status_code=200,
             responses={**_SESSION_ERRORS, 200: {
                 "description": "One JSON object per line: the chunks as produced, then "
                 '`{"type": "end", "output": <the run result>}`.',
                 "content": {NDJSON: {}}}})
async def run_stream(body: models.RunRequest, session: SessionDep, request: Request) -> RunStream:
    """Run code and stream its output as NDJSON while it runs, as fast as the client reads
    it; a client that disconnects interrupts the run."""
    manager, timeout = manager_of(request), _run_timeout(request, body.timeout)
    return RunStream(output_lines(box_stream(
        manager, session, lambda: session.box.astream(body.code, timeout=timeout))))


@router.post("/{session_id}/interrupt", response_model=models.Status,
             responses=_SESSION_ERRORS)
async def interrupt(session: SessionDep) -> models.Status:
    """Interrupt the session's running execution; its state is kept."""
    if session.closed:
        raise SessionNotFound(f"no session {session.id}")
    session.touch()
    return models.Status(status=(await session.box.ainterrupt()).status)


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": [FIELD],
            "properties": {FIELD: {
                "type": "string", "format": "binary",
                "description": "The file; the part's filename is its relative path in the "
                "session."}},
        }}},
    }
}


@router.post("/{session_id}/upload", response_model=models.Uploaded, openapi_extra=_UPLOAD_BODY,
             responses={**_SESSION_ERRORS, 413: {"description": "The file is too large."}})
async def upload(session: SessionDep, request: Request) -> models.Uploaded:
    """Write a file into the session (multipart, one part named ``file``)."""
    manager = manager_of(request)
    limit = manager.settings.max_upload_size
    async with receive_upload(request, limit=limit, directory=manager.upload_dir) as received:
        name = _file_name(received.name)
        with mapped(received) as content:
            await manager.operate(session, lambda: session.box.aupload(name, content))
    return models.Uploaded(status=f"{name} uploaded", name=name, size=received.size)


@router.get("/{session_id}/download", response_class=Response,
            responses={**_SESSION_ERRORS, 200: {"content": {"application/octet-stream": {}}},
                       404: {"description": "No such session for this API key, no such "
                             "file, or no file named."}})
async def download(
    session: SessionDep,
    request: Request,
    file_name: Annotated[str | None, Query(min_length=1, json_schema_extra=models.FILE_NAME,
                                           description="The file's relative path.")] = None,
    body: Annotated[models.DownloadRequest | None, Body()] = None,
) -> Response:
    """Read a file of the session (its name as a query parameter or in a JSON body); the
    content streams from the kernel as the client reads it."""
    given = file_name if file_name is not None else body.file_name if body else None
    if given is None:  # no file named: none to find (the schema cannot require one of two)
        raise HTTPException(404, "no file named: say which with ?file_name= or a JSON body "
                            "{\"file_name\": ...}")
    name = _file_name(given)
    content = session.box.astream_download(name)
    size = await manager_of(request).operate(session, content.open)
    return FollowedStream(
        held_while_sent(session, content),
        media_type="application/octet-stream",
        headers={"Content-Disposition": _content_disposition(name), "Content-Length": str(size)},
    )


@router.post("/{session_id}/install", response_model=models.Status,
             responses={**_SESSION_ERRORS, 400: {"description": "pip failed; `detail` says why."}})
async def install(body: models.InstallRequest, session: SessionDep,
                  request: Request) -> models.Status:
    """Install packages with pip into the session's interpreter."""
    names = body.package_names or ([body.package_name] if body.package_name else [])
    if not names:
        raise HTTPException(422, "name a package: package_name or package_names")
    manager = manager_of(request)
    timeout = manager.settings.install_timeout
    try:
        done = await manager.operate(session,
                                     lambda: session.box.ainstall(*names, timeout=timeout))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return models.Status(status=done.status)


@router.get("/{session_id}/files", response_model=models.Files, responses=_SESSION_ERRORS)
async def files(session: SessionDep, request: Request) -> models.Files:
    """Every file of the session, recursively, with sizes, sorted by name."""
    found = await manager_of(request).operate(session, session.box.alist_files)
    return models.Files(files=[models.FileEntry(name=f.name, size=f.size) for f in found])


# -- shell commands (extension `shell`) -------------------------------------------------------


def _shell_args(body: models.ShellRequest, request: Request) -> dict[str, Any]:
    """The keywords of `LocalBox.ashell`, checked: bad input is a 422 before anything runs."""
    try:
        return {"command": check_command(body.command), "cwd": check_cwd(body.cwd),
                "env": check_env(body.env), "timeout": _run_timeout(request, body.timeout)}
    except (ValueError, CodeBoxError) as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/{session_id}/shell", response_model=CommandResult,
             responses={**_SESSION_ERRORS, 404: {"description": "No such session, or no "
                                                  "such `cwd`."}})
async def shell(body: models.ShellRequest, session: SessionDep, request: Request) -> Response:
    """Run a command in the session (``/bin/sh -c`` for a string, directly for a list). A
    non-zero exit is data; a client that disconnects ends the command."""
    args = _shell_args(body, request)
    work = manager_of(request).operate(session, lambda: session.box.ashell(**args))
    try:
        result = await unless_disconnected(request, work)
    except ClientGone:
        return Response(status_code=499)
    return Response(result.model_dump_json(), media_type="application/json")


@router.post("/{session_id}/shell/stream", response_class=RunStream, status_code=200,
             responses={**_SESSION_ERRORS, 200: {
                 "description": "One JSON object per line: the chunks as produced, then "
                 '`{"type": "end", "result": <the command result>}` (or `{"type": "end", '
                 '"error": {"status": int, "detail": str}}` if the box failed).',
                 "content": {NDJSON: {}}}})
async def shell_stream(body: models.ShellRequest, session: SessionDep,
                       request: Request) -> RunStream:
    """Run a command and stream its output as NDJSON while it runs; a client that
    disconnects ends the command."""
    manager, args = manager_of(request), _shell_args(body, request)
    return RunStream(output_lines(box_stream(
        manager, session, lambda: session.box.astream_shell(**args)), key="result"))


# -- file operations (extension `file-ops`) ------------------------------------------------


def _file_info(found: CodeBoxFile) -> models.FileInfo:
    return models.FileInfo(name=found.name, size=found.size, is_dir=found.is_dir,
                           modified=found.modified)


@router.post("/{session_id}/files/remove", response_model=models.Status,
             responses=_SESSION_ERRORS)
async def remove(body: models.PathRequest, session: SessionDep,
                 request: Request) -> models.Status:
    """Remove a file, or a directory with everything in it."""
    name = _file_name(body.path)
    done = await manager_of(request).operate(session, lambda: session.box.aremove(name))
    return models.Status(status=done.status)


@router.post("/{session_id}/files/rename", response_model=models.FileInfo,
             responses=_SESSION_ERRORS)
async def rename(body: models.RenameRequest, session: SessionDep,
                 request: Request) -> models.FileInfo:
    """Move a file or directory; the destination's parents are created."""
    source, destination = _file_name(body.source), _file_name(body.destination)
    moved = await manager_of(request).operate(
        session, lambda: session.box.arename(source, destination))
    return _file_info(moved)


@router.post("/{session_id}/files/mkdir", response_model=models.FileInfo,
             responses=_SESSION_ERRORS)
async def make_dir(body: models.PathRequest, session: SessionDep,
                   request: Request) -> models.FileInfo:
    """Create a directory and its parents; an existing directory is fine."""
    name = _file_name(body.path)
    made = await manager_of(request).operate(session, lambda: session.box.amake_dir(name))
    return _file_info(made)


@router.get("/{session_id}/files/info", response_model=models.FileInfo,
            responses={**_SESSION_ERRORS, 404: {"description": "No such session or path."}})
async def file_info(
    session: SessionDep,
    request: Request,
    path: Annotated[str, Query(min_length=1, json_schema_extra=models.FILE_NAME,
                               description="A path relative to the session's directory.")],
) -> models.FileInfo:
    """A file's or directory's size, kind and modification time."""
    name = _file_name(path)
    found = await manager_of(request).operate(session, lambda: session.box.afile_info(name))
    return _file_info(found)


@router.post("/{session_id}/restart", response_model=models.Status, responses=_SESSION_ERRORS)
async def restart(session: SessionDep, request: Request) -> models.Status:
    """Restart the session's kernel: variables are gone, files are kept."""
    done = await manager_of(request).operate(session, session.box.arestart)
    return models.Status(status=done.status)


@router.post("/{session_id}/stop", response_model=models.Status, responses=_SESSION_ERRORS)
async def stop(session_id: SessionIdPath, owner: Owner, request: Request) -> models.Status:
    """Stop the session: its kernel is deleted and its files are removed."""
    manager = manager_of(request)
    record = await manager.paused(owner, session_id)
    if record is not None and record.status == "paused":
        await manager.remove_paused(record)
    else:
        await manager.remove(await manager.get(owner, session_id))
    return models.Status(status="stopped")
