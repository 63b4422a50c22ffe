"""What the CodeBox REST API answers, read without I/O: replies, their errors, capabilities,
session ids, runs and file lists.

Errors are decided here, once, from the status: `error_for` gives the `CodeBoxError`
subclass a caller branches on, with the status, body and headers attached.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..errors import (
    CodeBoxAuthError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxRateLimitError,
    CodeBoxServerError,
)
from ..schema import (
    BoxInfo,
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxStatus,
    CommandResult,
    ExecError,
    OutputChunk,
    Snapshot,
)

logger = logging.getLogger(__name__)


_DETAIL_LIMIT = 500


@dataclass(frozen=True)
class Reply:
    """What came back from the server: status, headers and body bytes."""

    status: int
    headers: Mapping[str, str]
    content: bytes


@dataclass(frozen=True)
class Capabilities:
    """What a server offers beyond the core protocol.

    Attributes:
        version: The server's version, if it said.
        extensions: The names of the extensions it announced.
        core_only: The server has no ``/codebox/capabilities`` (a core v1 server).
    """

    version: str | None = None
    extensions: frozenset[str] = frozenset()
    core_only: bool = True

    def has(self, extension: str) -> bool:
        """Whether the server announced ``extension``."""
        return extension in self.extensions


def require(caps: Capabilities, extension: str, operation: str) -> None:
    """Raise unless the server announced ``extension``.

    Raises:
        CodeBoxError: The server does not support ``operation``.
    """
    if not caps.has(extension):
        raise CodeBoxError(
            f"the CodeBox server does not support {operation}() "
            f"(it does not announce the {extension!r} extension)"
        )


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value whatever the case of its name in ``headers``."""
    value = headers.get(name)
    if value is not None:
        return value
    name = name.lower()
    return next((v for k, v in headers.items() if k.lower() == name), None)


def decode_body(content: bytes) -> Any:
    """The body as JSON, or as text when it is not JSON (whatever the Content-Type says)."""
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def json_of(what: str, reply: Reply) -> Any:
    """The JSON body of a successful reply.

    Raises:
        CodeBoxError: It is not JSON.
    """
    body = decode_body(reply.content)
    if isinstance(body, str):
        raise unexpected(what, reply, "its answer is not JSON")
    return body


def unexpected(what: str, reply: Reply, problem: str) -> CodeBoxError:
    """The error for a reply that is not what the protocol promises."""
    return CodeBoxError(
        f"CodeBox {what}: unexpected answer from the server: {problem}",
        http_status=reply.status,
        json_body=decode_body(reply.content),
        headers=dict(reply.headers),
    )


def detail_of(body: Any, status: int) -> str:
    """The server's ``detail`` in a line a person can read (FastAPI validation lists
    joined), at most a few hundred characters."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    text = detail if isinstance(detail, str) else json.dumps(detail)
    text = text.strip() or f"HTTP {status} with no detail"
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "…"


def error_class(status: int) -> type[CodeBoxError]:
    """The `CodeBoxError` subclass for an error status."""
    if status in (401, 403):
        return CodeBoxAuthError
    if status == 404:
        return CodeBoxNotFoundError
    if status == 429:
        return CodeBoxRateLimitError
    if status >= 500:
        return CodeBoxServerError
    return CodeBoxError


def error_for(what: str, reply: Reply) -> CodeBoxError:
    """The error for an error reply: the right subclass, naming the operation and the
    server's ``detail``, with the status, the body (parsed, or text) and the headers."""
    body = decode_body(reply.content)
    return error_class(reply.status)(
        f"CodeBox {what} failed: {detail_of(body, reply.status)}",
        http_status=reply.status,
        json_body=body,
        headers=dict(reply.headers),
    )


# -- session ids ----------------------------------------------------------------------


def session_id_of(value: int | str | uuid.UUID) -> str:
    """The decimal string of a session id given as an int, a decimal string or a UUID
    (``UUID(int=n)`` is session ``n``).

    Raises:
        ValueError: The value is none of these, or negative.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid session id {value!r}")
    if isinstance(value, uuid.UUID):
        number = value.int
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            number = int(text)
        else:
            try:
                number = uuid.UUID(text).int
            except ValueError:
                raise ValueError(
                    f"invalid session id {value!r}: expected an integer or a UUID"
                ) from None
    else:
        raise ValueError(f"invalid session id {value!r}: expected an integer or a UUID")
    if number < 0:
        raise ValueError(f"invalid session id {value!r}: it is negative")
    return str(number)


# -- the answers of each operation ------------------------------------------------------


def parse_capabilities(reply: Reply) -> Capabilities:
    """The capabilities of a server from its ``/codebox/capabilities`` reply (404: core)."""
    if reply.status == 404:
        return Capabilities()
    body = decode_body(reply.content)
    extensions = body.get("extensions") if isinstance(body, dict) else None
    if not isinstance(extensions, list):
        logger.warning("the server's capabilities are not understood; using the core protocol")
        return Capabilities()
    version = body.get("version")
    return Capabilities(
        version=version if isinstance(version, str) else None,
        extensions=frozenset(e for e in extensions if isinstance(e, str)),
        core_only=False,
    )


def parse_start(reply: Reply) -> str:
    """The new session's id from the answer of ``start``."""
    body = json_of("start", reply)
    value = body.get("id") if isinstance(body, dict) else None
    if value is None or isinstance(value, (bool, float)):
        raise unexpected("start", reply, "no session id")
    try:
        return session_id_of(value)
    except ValueError as exc:
        raise unexpected("start", reply, str(exc)) from None


def parse_status(reply: Reply) -> CodeBoxStatus:
    """The session's status from the answer of ``status``."""
    body = json_of("status", reply)
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, str):
        raise unexpected("status", reply, "no status")
    return CodeBoxStatus(status=status)


def parse_install(name: str, reply: Reply) -> CodeBoxStatus:
    """The status of an install of ``name`` (the server's words, else ``"… installed"``)."""
    body = decode_body(reply.content)
    status = body.get("status") if isinstance(body, dict) else None
    return CodeBoxStatus(status=status if isinstance(status, str) else f"{name} installed")


def exec_error_of(content: str) -> ExecError:
    """An `ExecError` from a core ``"Name: value"`` error content."""
    name, sep, value = content.partition(": ")
    if not sep and name.endswith(":"):
        name = name[:-1]
    return ExecError(name=name.strip() or "Error", value=value)


def parse_run(body: Any, *, rich: bool, what: str = "run") -> CodeBoxOutput:
    """A `CodeBoxOutput` from a run's JSON answer.

    With ``rich`` (the server announces ``rich-run``) and a ``chunks`` field, the answer's
    fields are the output's. Otherwise it is built from the core ``type``/``content``: text
    becomes a ``"text"`` chunk, ``image/png`` an image chunk, an error an `ExecError` parsed
    from ``"Name: value"``.

    Raises:
        CodeBoxError: The answer is not a run result.
    """
    if not isinstance(body, dict):
        raise CodeBoxError(f"CodeBox {what}: unexpected answer from the server: {body!r:.200}")
    if rich and "chunks" in body:
        try:
            return CodeBoxOutput.model_validate(body)
        except ValidationError as exc:
            raise CodeBoxError(
                f"CodeBox {what}: unexpected rich run result: {exc}", json_body=body
            ) from None
    kind, content = body.get("type"), body.get("content")
    if not isinstance(kind, str) or not isinstance(content, str):
        raise CodeBoxError(
            f"CodeBox {what}: unexpected answer from the server: no type/content",
            json_body=body,
        )
    if kind == "error":
        return CodeBoxOutput.from_chunks(
            [OutputChunk(type="error", content=content)], error=exec_error_of(content)
        )
    chunks = [OutputChunk(type=kind, content=content)] if content else []
    if kind in ("text", "image/png"):
        return CodeBoxOutput.from_chunks(chunks)
    return CodeBoxOutput(type=kind, content=content, chunks=chunks)


def parse_command(body: Any, *, what: str = "shell") -> CommandResult:
    """A `CommandResult` from a shell command's JSON answer.

    Raises:
        CodeBoxError: The answer is not a command result.
    """
    try:
        return CommandResult.model_validate(body)
    except ValidationError as exc:
        raise CodeBoxError(f"CodeBox {what}: unexpected answer from the server: {exc}",
                           json_body=body) from None


def parse_file(body: Any, *, what: str) -> CodeBoxFile:
    """A `CodeBoxFile` from a file object ``{name, size, is_dir, modified}``.

    Raises:
        CodeBoxError: The answer is not a file object.
    """
    try:
        return CodeBoxFile.model_validate(body)
    except ValidationError as exc:
        raise CodeBoxError(f"CodeBox {what}: unexpected answer from the server: {exc}",
                           json_body=body) from None


def parse_files(body: Any, *, what: str = "list_files") -> list[CodeBoxFile]:
    """The files of a ``files`` answer, sorted by name; entries are names or objects.

    Raises:
        CodeBoxError: The answer is not a file list.
    """
    entries = body.get("files") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise CodeBoxError(f"CodeBox {what}: unexpected answer from the server: no file list")
    files = []
    for entry in entries:
        if isinstance(entry, str):
            files.append(CodeBoxFile(name=entry))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            size = entry.get("size")
            valid_size = isinstance(size, int) and not isinstance(size, bool)
            files.append(CodeBoxFile(name=entry["name"], size=size if valid_size else None))
        else:
            raise CodeBoxError(f"CodeBox {what}: unexpected file entry {entry!r:.200}")
    return sorted(files, key=lambda f: f.name)


def parse_sessions(reply: Reply) -> list[BoxInfo]:
    """The key's sessions from the answer of ``GET /codebox/sessions``."""
    body = json_of("list", reply)
    if not isinstance(body, list):
        raise unexpected("list", reply, "not a list of sessions")
    try:
        return [BoxInfo(session_id=str(entry["id"]), **{k: v for k, v in entry.items()
                                                       if k != "id"})
                for entry in body]
    except (TypeError, KeyError, ValidationError) as exc:
        raise unexpected("list", reply, f"a session is not understood ({exc})") from None


def parse_snapshot(reply: Reply) -> Snapshot:
    """The `Snapshot` a ``POST /codebox/{id}/snapshot`` answered with."""
    body = json_of("snapshot", reply)
    try:
        return Snapshot.model_validate(body)
    except ValidationError as exc:
        raise unexpected("snapshot", reply, f"not a snapshot ({exc})") from None


def parse_expires(reply: Reply) -> datetime | None:
    """When the session expires, from the answer of ``POST /codebox/{id}/lifetime``."""
    body = json_of("set_lifetime", reply)
    if not isinstance(body, dict) or "expires" not in body:
        raise unexpected("set_lifetime", reply, "no expires")
    try:
        return BoxInfo(session_id="", status="", created=_EPOCH, last_used=_EPOCH,
                       expires=body["expires"]).expires
    except ValidationError as exc:
        raise unexpected("set_lifetime", reply, f"expires is not a time ({exc})") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
