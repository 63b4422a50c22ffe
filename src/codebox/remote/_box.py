"""``CodeBox``: the client of the CodeBox REST API, over httpx, sync and async.

Every operation is written once, as a generator in `_ops`; `BaseBox` runs it with the sync
or the async transport (`_transport`). Using a key never imports the local machinery
(gateway, websockets): without a key, ``CodeBox(...)`` is a `LocalBox`, imported then.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from .. import _engine as engine
from .._checks import check_env
from .._engine import OnProgress, Op
from .._lifetimes import check_lifetime
from .._protocol import INTERRUPT
from .._tls import verify_for
from ..base import BaseBox
from ..errors import CodeBoxError, CodeBoxNotFoundError
from ..schema import (
    BoxInfo,
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxStatus,
    CommandResult,
    Snapshot,
)
from ..settings import CodeBoxSettings
from . import _ops as ops
from ._listing import alist_boxes, list_boxes, set_lifetime
from ._ops import ClientState
from ._replies import Reply, require, session_id_of
from ._requests import capabilities_request, interrupt_request, stop_request
from ._retry import RetryPolicy
from ._snapshots import adelete_snapshot, delete_snapshot
from ._transport import AsyncHttpTransport, HttpTransport, convert

if TYPE_CHECKING:
    from ..local import LocalBox
    from ..templates import Template

logger = logging.getLogger(__name__)


def _template_name(template: str | Template | None) -> str | None:
    if template is None or isinstance(template, str):
        return template
    raise TypeError("a server's templates are named: CodeBox(template='name')")


def _wants_local(settings: CodeBoxSettings, local: bool) -> bool:
    return local or settings.api_key in (None, "", "local")


def _resolve(
    api_key: str | None,
    base_url: str | None,
    settings: CodeBoxSettings | None,
    timeout: float | None,
) -> CodeBoxSettings:
    base = settings if settings is not None else CodeBoxSettings()
    update = {"api_key": api_key, "base_url": base_url, "timeout": timeout}
    update = {k: v for k, v in update.items() if v is not None}
    return base.model_copy(update=update) if update else base


def _snapshot_id(snapshot: Snapshot | str | None) -> str | None:
    return snapshot.id if isinstance(snapshot, Snapshot) else snapshot


def _local_box(settings: CodeBoxSettings, env: Mapping[str, str] | None,
               lifetime: float | None = None,
               template: str | Template | None = None,
               snapshot: Snapshot | str | None = None) -> LocalBox:
    from ..local import LocalBox  # only now: a key's user never loads the local machinery

    if isinstance(template, str):
        raise CodeBoxError(f"template {template!r} names a server's template, and this box "
                           "is local (no API key): give a Template")
    return LocalBox(settings=settings, env=env, lifetime=lifetime, template=template,
                    snapshot=snapshot)


class CodeBox(BaseBox):
    """A box on a CodeBox REST API server (see ``docs/protocol.md``); without a key, a
    `LocalBox`.

    ``CodeBox(...)`` is typed as a `CodeBox` for every type checker; without a key (or
    with ``local=True``) the box it gives is a `LocalBox`, which counts as a `CodeBox`
    (``isinstance(box, CodeBox)``): both have the same public interface.

    The session starts with `start` (or lazily, once, with the first other operation,
    however many threads or tasks race it) and its id is `session_id`, the server's integer
    id in decimal. Extensions (rich results, streaming, interrupt) are used where the
    server announces them; a core-only server works too. Requests that cannot run code
    twice are retried (``settings.max_retries``).

    Args:
        api_key: The API key (default: ``settings.api_key``, i.e. ``CODEBOX_API_KEY``).
            With none, or ``"local"``, the result is a `LocalBox`.
        base_url: The API's base URL (default: ``settings.base_url``).
        session_id: Attach to this existing session instead of starting one.
        settings: A `CodeBoxSettings` (default: read from the environment and ``.env``).
        timeout: Seconds allowed for one HTTP request (default: ``settings.timeout``).
            A run is allowed its own ``timeout`` plus a margin, and no limit without one.
        local: Return a `LocalBox` whatever the key.
        env: Environment variables set in the session's kernel at start (extension
            ``start-options``).
        lifetime: Seconds after its last use when the session stops by itself (extension
            ``lifetime``; the server may cut it to its most). Default: the server's idle
            timeout.
        template: The name of a template of the server to start from (extension
            ``templates``); without a key, a `Template` for the `LocalBox`.
        snapshot: Start from this snapshot of the key's (its id, or the `Snapshot`;
            extension ``snapshots``): its files, packages and variables.
    """

    def __new__(
        cls,
        api_key: str | None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
        env: Mapping[str, str] | None = None,
        lifetime: float | None = None,
        template: str | Template | None = None,
        snapshot: Snapshot | str | None = None,
    ) -> CodeBox:
        resolved = _resolve(api_key, base_url, settings, timeout)
        if _wants_local(resolved, local):
            # A CodeBox: see below.
            box: Any = _local_box(resolved, env, lifetime, template, snapshot)
            return box
        return super().__new__(cls)

    @classmethod
    def __subclasshook__(cls, other: type) -> bool:
        # A LocalBox is what CodeBox() gives without a key: it counts as one. Looked up, not
        # imported: a key's user never loads the local machinery.
        local = sys.modules.get("codebox.local._box")
        if cls is CodeBox and local is not None and local.LocalBox in other.__mro__:
            return True
        return NotImplemented

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
        env: Mapping[str, str] | None = None,
        lifetime: float | None = None,
        template: str | Template | None = None,
        snapshot: Snapshot | str | None = None,
    ) -> None:
        super().__init__(settings=_resolve(api_key, base_url, settings, timeout))
        self._state = ClientState(
            session_id=None if session_id is None else session_id_of(session_id),
            started=session_id is not None,
            retry=RetryPolicy(max_retries=self.settings.max_retries),
            env=check_env(env),
            lifetime=check_lifetime(lifetime),
            template=_template_name(template),
            snapshot=_snapshot_id(snapshot),
        )
        self._remote_ops = _RemoteOps(self._state)
        self._side: HttpTransport | None = None
        # Tests put an in-memory server here (httpx.MockTransport, httpx.ASGITransport).
        self._http_transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None

    @classmethod
    def from_id(cls, session_id: int | str | uuid.UUID, **kwargs: Any) -> BaseBox:
        """Reattach to a session that exists on the server (nothing is sent until used).

        Without an API key, return the `LocalBox` of this process with that id.

        Args:
            session_id: An int, its decimal string, or a UUID (``UUID(int=n)`` is ``n``).
            **kwargs: The arguments of `CodeBox` (``api_key``, ``base_url``, ...).

        Raises:
            ValueError: ``session_id`` is not a session id.
            CodeBoxError: No key, and this process has no `LocalBox` with that id.
        """
        resolved = _resolve(kwargs.get("api_key"), None, kwargs.get("settings"), None)
        if _wants_local(resolved, kwargs.get("local", False)):
            from ..local import LocalBox

            return LocalBox.from_id(str(session_id))
        return cls(**{**kwargs, "session_id": session_id})

    @property
    def session_id(self) -> str | None:
        """The server's id of the session (decimal string), once started or attached."""
        return self._state.session_id

    @property
    def _ops(self) -> _RemoteOps:
        return self._remote_ops

    # -- transports and the side channel ------------------------------------------------

    def _client_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "base_url": self.settings.base_url,
            "headers": {"Authorization": f"Bearer {self.settings.api_key}"},
            "timeout": httpx.Timeout(self.settings.timeout),
            "verify": verify_for(self.settings.base_url),
        }
        if self._http_transport is not None:
            args["transport"] = self._http_transport
        return args

    def _new_transport(self) -> engine.Transport:
        return HttpTransport(lambda: httpx.Client(**self._client_args()), self.settings.timeout)

    def _new_atransport(self) -> engine.AsyncTransport:
        return AsyncHttpTransport(lambda: httpx.AsyncClient(**self._client_args()),
                                  self.settings.timeout)

    def _side_interrupt(self) -> None:
        """``POST /codebox/{id}/interrupt`` on a client of its own (extension
        ``interrupt``).

        Raises:
            CodeBoxError: The server does not support it, or did not answer.
        """
        st = self._state
        sid = st.session_id
        if not st.started or sid is None:
            return
        client = self._side_client()
        if st.caps is None:
            st.caps = self._side_send(client, capabilities_request())
        require(st.caps, INTERRUPT, "interrupt")
        self._side_send(client, interrupt_request(sid))

    def _side_stop(self) -> bool:
        """``POST /codebox/{id}/stop`` on the side client: the server ends the session's
        operation in progress, which answers its request at once (a run that ignores
        interrupts included)."""
        sid = self._state.session_id
        if not self._state.started or sid is None:
            return False
        try:
            self._side_send(self._side_client(), stop_request(sid))
        except CodeBoxNotFoundError:
            pass  # stopped already
        except CodeBoxError as exc:
            logger.info("%r: stop could not reach the server beside the operation in "
                        "progress: %s", self, exc)
            return False
        return True

    def _side_client(self) -> httpx.Client:
        if self._side is None:
            self._side = HttpTransport(lambda: httpx.Client(**self._client_args()),
                                       self.settings.timeout)
        return self._side.client()

    def _side_send(self, client: httpx.Client, req: Any) -> Any:
        try:
            response = client.request(req.method, req.path, params=req.params, json=req.json)
        except httpx.HTTPError as exc:
            raise convert(req.what, exc) from exc
        return req.interpret(Reply(response.status_code, response.headers, response.content))

    def _stop_grace(self) -> float:
        # The server interrupts, and restarts a kernel that ignores it, within its own grace.
        return self.settings.interrupt_timeout + 5.0

    def _stopped(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            side.close()

    # -- snapshots --------------------------------------------------------------------

    def _fork_box(self, snapshot: Snapshot) -> CodeBox:
        st = self._state
        return CodeBox(settings=self.settings, env=st.env, lifetime=st.lifetime,
                       template=st.template, snapshot=snapshot.id)

    def _drop_snapshot(self, snapshot: Snapshot) -> None:
        type(self).delete_snapshot(snapshot.id, settings=self.settings)

    async def _adrop_snapshot(self, snapshot: Snapshot) -> None:
        await type(self).adelete_snapshot(snapshot.id, settings=self.settings)

    @classmethod
    def delete_snapshot(cls, snapshot_id: str, api_key: str | None = None,
                        base_url: str | None = None,
                        settings: CodeBoxSettings | None = None) -> None:
        """Remove a snapshot of the key's on the server (extension ``snapshots``); without
        a key, one of this machine's (`LocalBox.delete_snapshot`).

        Raises:
            CodeBoxNotFoundError: The key has no such snapshot.
        """
        delete_snapshot(cls, snapshot_id, api_key, base_url, settings)

    @classmethod
    async def adelete_snapshot(cls, snapshot_id: str, api_key: str | None = None,
                               base_url: str | None = None,
                               settings: CodeBoxSettings | None = None) -> None:
        """Async version of `delete_snapshot`."""
        await adelete_snapshot(cls, snapshot_id, api_key, base_url, settings)

    # Last in the class: below ``list``, the name would shadow the builtin in annotations.
    @classmethod
    async def alist(cls, api_key: str | None = None, base_url: str | None = None,
                    settings: CodeBoxSettings | None = None) -> list[BoxInfo]:
        """Async version of `list`."""
        return await alist_boxes(cls, api_key, base_url, settings)

    @classmethod
    def list(cls, api_key: str | None = None, base_url: str | None = None,
             settings: CodeBoxSettings | None = None) -> list[BoxInfo]:
        """The sessions of the API key on the server (extension ``list``), oldest first;
        without a key, this process's `LocalBox`es."""
        return list_boxes(cls, api_key, base_url, settings)


class _RemoteOps:
    """The operations of a `CodeBox`, bound to its session's state."""

    def __init__(self, state: ClientState) -> None:
        self._st = state

    def status(self) -> CodeBoxStatus:
        return ops.status(self._st)

    def start(self) -> Op[CodeBoxStatus]:
        return ops.start(self._st)

    def stop(self) -> Op[CodeBoxStatus]:
        return ops.stop(self._st)

    def restart(self) -> Op[CodeBoxStatus]:
        return ops.restart(self._st)

    def run(self, code: str, timeout: float | None, streaming: bool) -> Op[CodeBoxOutput]:
        return ops.run(self._st, code, timeout, streaming=streaming)

    def shell(self, command: str | list[str], timeout: float | None, cwd: str | None,
              env: dict[str, str], streaming: bool) -> Op[CommandResult]:
        args = {"command": command, "timeout": timeout, "cwd": cwd, "env": env}
        return ops.shell(self._st, args, streaming=streaming)

    def install(self, names: tuple[str, ...], timeout: float) -> Op[CodeBoxStatus]:
        return ops.install(self._st, names, timeout)

    def upload(self, name: str, data: bytes | memoryview, timeout: float,
               on_progress: OnProgress | None) -> Op[CodeBoxFile]:
        return ops.upload(self._st, name, data, timeout, on_progress)

    def download(self, name: str, timeout: float,
                 on_progress: OnProgress | None) -> Op[CodeBoxFile]:
        return ops.download(self._st, name, timeout, on_progress)

    def read(self, name: str, timeout: float) -> Op[None]:
        return ops.read(self._st, name, timeout)

    def list_files(self) -> Op[list[CodeBoxFile]]:
        return ops.list_files(self._st)

    def remove(self, path: str) -> Op[CodeBoxStatus]:
        return ops.remove(self._st, path)

    def rename(self, source: str, destination: str) -> Op[CodeBoxFile]:
        return ops.rename(self._st, source, destination)

    def make_dir(self, path: str) -> Op[CodeBoxFile]:
        return ops.make_dir(self._st, path)

    def exists(self, path: str) -> Op[bool]:
        return ops.exists(self._st, path)

    def file_info(self, path: str) -> Op[CodeBoxFile]:
        return ops.file_info(self._st, path)

    def set_lifetime(self, seconds: float | None) -> Op[datetime | None]:
        return set_lifetime(self._st, seconds)

    def snapshot(self) -> Op[Snapshot]:
        return ops.snapshot(self._st)

