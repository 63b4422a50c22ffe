"""The CodeBox REST API, version 1, as pure data: no I/O, no httpx, no event loop.

Builds the request of every operation (`Request`), turns replies into schemas or into the
right `CodeBoxError`, decides which failures are retried and how long to wait, and parses
what the server sends back (capabilities, ``Content-Disposition``, NDJSON stream lines).
`codebox.cloud` does the sending, once for blocking code and once for coroutines.

See ``docs/protocol.md`` for the wire format this module speaks.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from .._paths import check_file_name
from ..errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxRateLimitError,
    CodeBoxServerError,
)
from ..schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, ExecError, OutputChunk

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Extensions a server may announce in ``GET /codebox/capabilities``.
RICH_RUN = "rich-run"
STREAM = "stream"
INTERRUPT = "interrupt"
FILE_SIZES = "file-sizes"

RUN_TIMEOUT_MARGIN = 30.0
"""Seconds the HTTP read timeout of a run waits past the run's own ``timeout``, so that the
server's answer (which reports the timeout) arrives before the client gives up."""

_DETAIL_LIMIT = 500


# -- requests and replies -------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What came back from the server: status, headers (lower-case names) and body bytes."""

    status: int
    headers: Mapping[str, str]
    content: bytes


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

    def interpret(self, reply: Reply) -> T:
        """The result of this request from its reply.

        Raises:
            CodeBoxError: The reply is an error (the subclass follows the status), or it is
                not what the protocol promises.
        """
        if not 200 <= reply.status < 300 and reply.status not in self.allow:
            raise error_for(self.what, reply)
        return self.parse(reply)


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


def _all_phases(timeout: float | None) -> dict[str, float | None]:
    if timeout is None:
        return {}
    return {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}


INSTALL_TIMEOUT = 600.0
"""Seconds an install may take when the caller gives no ``timeout`` (as a LocalBox's)."""


def _install_phases(timeout: float | None) -> dict[str, float | None]:
    # pip may work for minutes: without a timeout of the caller's, wait for the server's own
    # limit (a LocalBox's default) rather than the default request timeout.
    if timeout is None:
        return {"read": INSTALL_TIMEOUT + RUN_TIMEOUT_MARGIN}
    return _all_phases(timeout)


def _run_phases(timeout: float | None) -> dict[str, float | None]:
    # A run may take as long as its own limit; without one, the read has no limit either.
    return {"read": None if timeout is None else timeout + RUN_TIMEOUT_MARGIN}


def _session(session_id: str, suffix: str = "") -> str:
    return f"/codebox/{session_id}/{suffix}"


def capabilities_request() -> Request[Capabilities]:
    """``GET /codebox/capabilities``; a 404 means a core-only server."""
    return Request(
        "capabilities",
        "capabilities",
        "GET",
        "/codebox/capabilities",
        parse_capabilities,
        allow=frozenset({404}),
    )


def start_request() -> Request[str]:
    """``GET /codebox/start``; the result is the new session id (decimal string)."""
    return Request("start", "start", "GET", "/codebox/start", _parse_start)


def status_request(session_id: str) -> Request[CodeBoxStatus]:
    """``GET /codebox/{id}/`` (with the trailing slash)."""
    return Request(
        "status", f"status of session {session_id}", "GET", _session(session_id), _parse_status
    )


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
        "run",
        what,
        "POST",
        _session(session_id, "run"),
        lambda reply: parse_run(_json(what, reply), rich=rich, what=what),
        json=run_body(code, timeout, caps),
        timeout=_run_phases(timeout),
    )


def stream_request(
    session_id: str, code: str, timeout: float | None, caps: Capabilities
) -> Request[None]:
    """``POST /codebox/{id}/run/stream`` (extension ``stream``); read it with `StreamState`."""
    return Request(
        "run",
        f"stream in session {session_id}",
        "POST",
        _session(session_id, "run/stream"),
        lambda reply: None,
        json=run_body(code, timeout, caps),
        timeout=_run_phases(timeout),
    )


def upload_request(
    session_id: str, file_name: str, data: bytes, timeout: float | None = None
) -> Request[CodeBoxFile]:
    """``POST /codebox/{id}/upload``, multipart with one part ``file`` named ``file_name``.

    ``file_name`` must already be checked (see `prepare_upload`).
    """
    return Request(
        "upload",
        f"upload of {file_name!r}",
        "POST",
        _session(session_id, "upload"),
        lambda reply: CodeBoxFile(name=file_name, size=len(data)),
        files={"file": (file_name, data, "application/octet-stream")},
        timeout=_all_phases(timeout),
    )


def prepare_upload(file_name: str, content: Any) -> tuple[str, bytes]:
    """Check an upload before anything is sent: the file name, and content as bytes.

    Args:
        file_name: The relative path in the box.
        content: ``bytes``, ``bytearray``, ``memoryview`` or ``str`` (sent as UTF-8).

    Raises:
        CodeBoxError: The file name is not a valid box file name.
        ValueError: The content is of another type (as for `LocalBox`).
    """
    name = check_file_name(file_name)
    if isinstance(content, str):
        return name, content.encode("utf-8")
    if isinstance(content, (bytes, bytearray, memoryview)):
        return name, bytes(content)
    raise ValueError(f"upload content must be bytes or str, not {type(content).__name__}")


def download_request(
    session_id: str, file_name: str, timeout: float | None = None
) -> Request[CodeBoxFile]:
    """``GET /codebox/{id}/download`` with the JSON body and the query ``file_name``.

    ``file_name`` must already be checked with `check_file_name`.
    """

    def parse(reply: Reply) -> CodeBoxFile:
        name = _box_name(parse_content_disposition(_header(reply.headers, "content-disposition")))
        content = reply.content
        return CodeBoxFile(name=name or file_name, size=len(content), content=content)

    return Request(
        "download",
        f"download of {file_name!r}",
        "GET",
        _session(session_id, "download"),
        parse,
        params={"file_name": file_name},
        json={"file_name": file_name},
        timeout=_all_phases(timeout),
    )


def check_package_names(package_names: Iterable[str]) -> tuple[str, ...]:
    """The package names of an install, checked before anything is sent.

    Raises:
        ValueError: There are none, or one is not a non-empty string, or one starts with
            ``-`` (an option, not a package: refused as `LocalBox` refuses it).
    """
    names = tuple(package_names)
    if not names:
        raise ValueError("install() needs at least one package name")
    for name in names:
        if not isinstance(name, str) or not name.strip() or name.startswith("-"):
            raise ValueError(f"invalid package name {name!r}")
    return names


def install_requests(
    session_id: str, names: tuple[str, ...], caps: Capabilities, timeout: float | None = None
) -> list[Request[CodeBoxStatus]]:
    """``POST /codebox/{id}/install``: one request with ``package_names`` on a server with
    extensions, else one core request per package."""
    path = _session(session_id, "install")
    phases = _install_phases(timeout)
    if caps.core_only:
        return [
            Request(
                "install",
                f"install of {name}",
                "POST",
                path,
                _parse_install(name),
                json={"package_name": name},
                timeout=phases,
            )
            for name in names
        ]
    joined = " ".join(names)
    return [
        Request(
            "install",
            f"install of {joined}",
            "POST",
            path,
            _parse_install(joined),
            json={"package_name": joined, "package_names": list(names)},
            timeout=phases,
        )
    ]


def join_statuses(statuses: list[CodeBoxStatus]) -> CodeBoxStatus:
    """One status for the requests of one install."""
    if len(statuses) == 1:
        return statuses[0]
    return CodeBoxStatus(status="; ".join(s.status for s in statuses))


def files_request(session_id: str) -> Request[list[CodeBoxFile]]:
    """``GET /codebox/{id}/files``; entries may be names or ``{name, size}`` objects."""
    what = f"list_files of session {session_id}"
    return Request(
        "files",
        what,
        "GET",
        _session(session_id, "files"),
        lambda reply: parse_files(_json(what, reply), what=what),
    )


def restart_request(session_id: str) -> Request[CodeBoxStatus]:
    """``POST /codebox/{id}/restart``."""
    return Request(
        "restart",
        f"restart of session {session_id}",
        "POST",
        _session(session_id, "restart"),
        lambda reply: CodeBoxStatus(status="restarted"),
    )


def stop_request(session_id: str) -> Request[CodeBoxStatus]:
    """``POST /codebox/{id}/stop``; a session the server no longer knows counts as stopped."""
    return Request(
        "stop",
        f"stop of session {session_id}",
        "POST",
        _session(session_id, "stop"),
        lambda reply: CodeBoxStatus(status="stopped"),
        allow=frozenset({404}),
    )


def interrupt_request(session_id: str) -> Request[CodeBoxStatus]:
    """``POST /codebox/{id}/interrupt`` (extension ``interrupt``; see `require`)."""
    return Request(
        "interrupt",
        f"interrupt of session {session_id}",
        "POST",
        _session(session_id, "interrupt"),
        lambda reply: CodeBoxStatus(status="interrupted"),
    )


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


# -- replies --------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
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


def _json(what: str, reply: Reply) -> Any:
    body = decode_body(reply.content)
    if isinstance(body, str):
        raise _unexpected(what, reply, "its answer is not JSON")
    return body


def _unexpected(what: str, reply: Reply, problem: str) -> CodeBoxError:
    return CodeBoxError(
        f"CodeBox {what}: unexpected answer from the server: {problem}",
        http_status=reply.status,
        json_body=decode_body(reply.content),
        headers=dict(reply.headers),
    )


def _detail(body: Any, status: int) -> str:
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
        f"CodeBox {what} failed: {_detail(body, reply.status)}",
        http_status=reply.status,
        json_body=body,
        headers=dict(reply.headers),
    )


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


def _parse_start(reply: Reply) -> str:
    body = _json("start", reply)
    value = body.get("id") if isinstance(body, dict) else None
    if value is None or isinstance(value, (bool, float)):
        raise _unexpected("start", reply, "no session id")
    try:
        return session_id_of(value)
    except ValueError as exc:
        raise _unexpected("start", reply, str(exc)) from None


def _parse_status(reply: Reply) -> CodeBoxStatus:
    body = _json("status", reply)
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, str):
        raise _unexpected("status", reply, "no status")
    return CodeBoxStatus(status=status)


def _parse_install(name: str) -> Callable[[Reply], CodeBoxStatus]:
    def parse(reply: Reply) -> CodeBoxStatus:
        body = decode_body(reply.content)
        status = body.get("status") if isinstance(body, dict) else None
        return CodeBoxStatus(status=status if isinstance(status, str) else f"{name} installed")

    return parse


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


# -- streams --------------------------------------------------------------------------


class StreamState:
    """Reads the NDJSON lines of ``run/stream``: chunks as produced, then the final
    ``{"type": "end", "output": ...}`` line."""

    def __init__(self, what: str = "stream") -> None:
        self.what = what
        self.chunks: list[OutputChunk] = []
        self.output: CodeBoxOutput | None = None

    @property
    def done(self) -> bool:
        """Whether the final line has arrived."""
        return self.output is not None

    def feed(self, line: str) -> OutputChunk | None:
        """Take one line; return the chunk it carries, if any.

        Raises:
            CodeBoxError: The line is not a JSON object of the stream.
        """
        line = line.strip()
        if not line or self.done:
            return None
        try:
            item = json.loads(line)
        except ValueError:
            raise CodeBoxError(f"CodeBox {self.what}: a line is not JSON: {line!r:.200}") from None
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise CodeBoxError(f"CodeBox {self.what}: unexpected line {line!r:.200}")
        if item["type"] == "end":
            output = item.get("output")
            self.output = (
                parse_run(output, rich=True, what=self.what)
                if isinstance(output, dict)
                else CodeBoxOutput.from_chunks(self.chunks)
            )
            return None
        chunk = OutputChunk(type=item["type"], content=str(item.get("content", "")))
        self.chunks.append(chunk)
        return chunk

    def result(self) -> CodeBoxOutput:
        """The output of the run once the stream is over.

        Raises:
            CodeBoxConnectionError: The stream ended before its final line.
        """
        if self.output is None:
            raise CodeBoxConnectionError(
                f"CodeBox {self.what}: the stream ended before the run's final line"
            )
        return self.output


# -- Content-Disposition --------------------------------------------------------------


def _header_params(value: str) -> dict[str, str]:
    """The parameters of a header value like ``attachment; filename="a;b.txt"``."""
    params: dict[str, str] = {}
    i, n = value.find(";"), len(value)
    if i < 0:
        return params
    i += 1
    while i < n:
        eq, semi = value.find("=", i), value.find(";", i)
        if eq < 0 or (0 <= semi < eq):
            i = n if semi < 0 else semi + 1  # a parameter without a value
            continue
        name = value[i:eq].strip().lower()
        i = eq + 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            chars, i = [], i + 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            text = "".join(chars)
            semi = value.find(";", i)
            i = n if semi < 0 else semi + 1
        else:
            semi = value.find(";", i)
            end = n if semi < 0 else semi
            text, i = value[i:end].strip(), end + 1
        params.setdefault(name, text)
    return params


def _decode_ext_value(value: str) -> str | None:
    """An RFC 5987 ``charset'language'percent-encoded`` value, decoded."""
    charset, sep, rest = value.partition("'")
    _language, sep2, encoded = rest.partition("'")
    if not sep or not sep2 or charset.lower() not in ("utf-8", "iso-8859-1"):
        return None
    try:
        return urllib.parse.unquote(encoded, encoding=charset, errors="strict")
    except (UnicodeDecodeError, LookupError):
        return None


def parse_content_disposition(value: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header: ``filename*`` (RFC 5987) first,
    then ``filename`` (quoted or not); ``None`` if there is none."""
    if not value:
        return None
    params = _header_params(value)
    extended = params.get("filename*")
    name = _decode_ext_value(extended) if extended else None
    return name or params.get("filename") or None


def _box_name(name: str | None) -> str | None:
    """A name the server sent, if it is a valid box file name."""
    if name is None:
        return None
    try:
        return check_file_name(name)
    except CodeBoxError:
        return None


# -- retries --------------------------------------------------------------------------

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses after which a request that cannot run code is sent again."""

RETRY_STATUS_OPS = frozenset({"start", "status", "files", "download", "capabilities"})
"""Operations sent again after one of `RETRY_STATUSES`. ``run``, ``install`` and ``upload``
are never sent twice; any operation is retried when the connection failed before sending."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date); ``None``
    when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again, and after how long.

    Attributes:
        max_retries: Most repeats of one request (0: none).
        base_delay: Seconds before the first retry, doubled each time (before jitter).
        max_delay: Most seconds of backoff between two attempts.
        max_retry_after: Most seconds a server's ``Retry-After`` makes us wait.
        rand: A source of numbers in [0, 1) for the jitter.
        clock: The current time (for ``Retry-After`` dates).
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    rand: Callable[[], float] = random.random
    clock: Callable[[], float] = time.time

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (0-based): exponential, half of
        it random ("equal jitter"), at most ``max_delay``."""
        full = min(self.max_delay, self.base_delay * 2**attempt)
        return full / 2 + self.rand() * full / 2

    def after_reply(self, op: str, attempt: int, reply: Reply) -> float | None:
        """Seconds to wait before sending ``op`` again after ``reply``, or ``None`` to stop.

        Only `RETRY_STATUSES` on `RETRY_STATUS_OPS` are retried; ``Retry-After`` (seconds or
        an HTTP date) is honoured up to ``max_retry_after``, else exponential backoff.

        Args:
            op: The operation.
            attempt: How many attempts failed before this one (0 for the first).
            reply: The reply of this attempt.
        """
        if attempt >= self.max_retries:
            return None
        if reply.status not in RETRY_STATUSES or op not in RETRY_STATUS_OPS:
            return None
        after = parse_retry_after(_header(reply.headers, "retry-after"), self.clock())
        if after is not None:
            return min(after, self.max_retry_after)
        return self.backoff(attempt)

    def after_failure(self, op: str, attempt: int, unsent: bool) -> float | None:
        """Seconds to wait before sending ``op`` again after a transport failure, or ``None``.

        Args:
            op: The operation (any operation is retried when nothing was sent).
            attempt: How many attempts failed before this one (0 for the first).
            unsent: The connection failed before the request was sent.
        """
        if attempt >= self.max_retries or not unsent:
            return None
        return self.backoff(attempt)
