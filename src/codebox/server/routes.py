"""The endpoints of the CodeBox REST API, version 1 (docs/protocol.md: the core and every
extension), mounted under ``/api/v1``."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from .. import __version__
from .._commands import check_command, check_cwd, check_env
from .._paths import check_file_name
from ..errors import CodeBoxError
from ..remote import _replies as protocol
from ..schema import CodeBoxFile, CodeBoxOutput, CommandResult
from . import models
from .auth import Owner
from .operations import command, execute, operate
from .sessions import Session, SessionManager, SessionNotFound
from .streaming import (
    NDJSON,
    ClientGone,
    FollowedStream,
    RunStream,
    held_while_sent,
    open_download,
    run_lines,
    unless_disconnected,
)
from .uploads import FIELD, mapped, receive_upload

EXTENSIONS = [protocol.RICH_RUN, protocol.STREAM, protocol.INTERRUPT, protocol.FILE_SIZES,
              protocol.START_OPTIONS, protocol.SHELL, protocol.FILE_OPS]

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


async def _session(session_id: int, owner: Owner, request: Request) -> Session:
    return manager_of(request).get(owner, session_id)


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
async def capabilities(owner: Owner) -> models.Capabilities:
    """What this server offers beyond the core protocol."""
    return models.Capabilities(version=__version__, extensions=EXTENSIONS)


_TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"description": "This API key holds too many sessions."}}


@router.get("/start", response_model=models.Started, responses=_TOO_MANY)
async def start(owner: Owner, request: Request) -> models.Started:
    """Start a session: a kernel of its own, in a directory of its own."""
    session = await manager_of(request).create(owner)
    return models.Started(id=session.id)


@router.post("/start", response_model=models.Started, responses=_TOO_MANY)
async def start_with(body: models.StartRequest, owner: Owner,
                     request: Request) -> models.Started:
    """Start a session with options: environment variables set in its kernel."""
    try:
        env = check_env(body.env)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    session = await manager_of(request).create(owner, env=env)
    return models.Started(id=session.id)


@router.get("/{session_id}/", response_model=models.Status, responses=_SESSION_ERRORS)
async def status(session: SessionDep) -> models.Status:
    """The session's status: running, starting or stopped."""
    return models.Status(status=(await session.box.astatus()).status)


@router.post("/{session_id}/run", response_model=CodeBoxOutput, responses=_SESSION_ERRORS)
async def run(body: models.RunRequest, session: SessionDep, request: Request) -> Response:
    """Run code; the answer has the core ``type``/``content`` and every field of the output.

    A failure of the code is data (``error``); a client that disconnects interrupts the run.
    """
    work = execute(manager_of(request), session, body.code, _run_timeout(request, body.timeout))
    try:
        output = await unless_disconnected(request, work)
    except ClientGone:
        return Response(status_code=499)
    return Response(output.model_dump_json(), media_type="application/json")


@router.post("/{session_id}/run/stream", response_class=RunStream, status_code=200,
             responses={**_SESSION_ERRORS, 200: {
                 "description": "One JSON object per line: the chunks as produced, then "
                 '`{"type": "end", "output": <the run result>}`.',
                 "content": {NDJSON: {}}}})
async def run_stream(body: models.RunRequest, session: SessionDep, request: Request) -> RunStream:
    """Run code and stream its output as NDJSON while it runs; a client that disconnects
    interrupts the run."""
    manager, timeout = manager_of(request), _run_timeout(request, body.timeout)
    return RunStream(run_lines(
        lambda on_output: execute(manager, session, body.code, timeout, on_output)))


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
            await operate(manager, session, lambda: session.box.aupload(name, content))
    return models.Uploaded(status=f"{name} uploaded", name=name, size=received.size)


@router.get("/{session_id}/download", response_class=Response,
            responses={**_SESSION_ERRORS, 200: {"content": {"application/octet-stream": {}}}})
async def download(
    session: SessionDep,
    request: Request,
    file_name: Annotated[str | None, Query(min_length=1,
                                           description="The file's relative path.")] = None,
    body: Annotated[models.DownloadRequest | None, Body()] = None,
) -> Response:
    """Read a file of the session (its name as a query parameter or in a JSON body); the
    content streams from the kernel as the client reads it."""
    given = file_name if file_name is not None else body.file_name if body else None
    if given is None:
        raise HTTPException(422, "say which file: ?file_name= or a JSON body {\"file_name\": ...}")
    name = _file_name(given)
    manager = manager_of(request)
    size, content = await operate(manager, session, lambda: open_download(session.box, name))
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
        done = await operate(manager, session,
                             lambda: session.box.ainstall(*names, timeout=timeout))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return models.Status(status=done.status)


@router.get("/{session_id}/files", response_model=models.Files, responses=_SESSION_ERRORS)
async def files(session: SessionDep, request: Request) -> models.Files:
    """Every file of the session, recursively, with sizes, sorted by name."""
    found = await operate(manager_of(request), session, session.box.alist_files)
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
    work = command(manager_of(request), session, _shell_args(body, request))
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
    return RunStream(run_lines(
        lambda on_output: command(manager, session, args, on_output), key="result"))


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
    done = await operate(manager_of(request), session, lambda: session.box.aremove(name))
    return models.Status(status=done.status)


@router.post("/{session_id}/files/rename", response_model=models.FileInfo,
             responses=_SESSION_ERRORS)
async def rename(body: models.RenameRequest, session: SessionDep,
                 request: Request) -> models.FileInfo:
    """Move a file or directory; the destination's parents are created."""
    source, destination = _file_name(body.source), _file_name(body.destination)
    moved = await operate(manager_of(request), session,
                          lambda: session.box.arename(source, destination))
    return _file_info(moved)


@router.post("/{session_id}/files/mkdir", response_model=models.FileInfo,
             responses=_SESSION_ERRORS)
async def make_dir(body: models.PathRequest, session: SessionDep,
                   request: Request) -> models.FileInfo:
    """Create a directory and its parents; an existing directory is fine."""
    name = _file_name(body.path)
    made = await operate(manager_of(request), session, lambda: session.box.amake_dir(name))
    return _file_info(made)


@router.get("/{session_id}/files/info", response_model=models.FileInfo,
            responses={**_SESSION_ERRORS, 404: {"description": "No such session or path."}})
async def file_info(
    session: SessionDep,
    request: Request,
    path: Annotated[str, Query(min_length=1,
                               description="A path relative to the session's directory.")],
) -> models.FileInfo:
    """A file's or directory's size, kind and modification time."""
    name = _file_name(path)
    found = await operate(manager_of(request), session, lambda: session.box.afile_info(name))
    return _file_info(found)


@router.post("/{session_id}/restart", response_model=models.Status, responses=_SESSION_ERRORS)
async def restart(session: SessionDep, request: Request) -> models.Status:
    """Restart the session's kernel: variables are gone, files are kept."""
    done = await operate(manager_of(request), session, session.box.arestart)
    return models.Status(status=done.status)


@router.post("/{session_id}/stop", response_model=models.Status, responses=_SESSION_ERRORS)
async def stop(session: SessionDep, request: Request) -> models.Status:
    """Stop the session: its kernel is deleted and its files are removed."""
    await manager_of(request).remove(session)
    return models.Status(status="stopped")
