"""codebox as a sandbox client of the OpenAI Agents SDK's sandbox agents (the
``codebox[openai-agents]`` extra).

    from agents import Runner
    from agents.run import RunConfig
    from agents.sandbox import SandboxAgent, SandboxRunConfig
    from codebox.integrations.openai_agents import CodeboxPython, CodeboxSandboxClient

    agent = SandboxAgent(name="analyst", model="...",
                         capabilities=[*Capabilities.default(), CodeboxPython()])
    run_config = RunConfig(sandbox=SandboxRunConfig(client=CodeboxSandboxClient(sandbox=True)))
    result = await Runner.run(agent, "Summarise data.csv", run_config=run_config)

Each sandbox session is one box (made from the client's arguments, or the box given to
the client): the SDK's shell tool runs its commands with `BaseBox.shell`, its file tools
read and write through the box, and the manifest's files are written into the box's
working directory, which is the session's workspace root. `CodeboxPython` adds the
``run_python`` tool: a stateful Python kernel in the same workspace.

Sessions persist and resume as the SDK's do: a workspace snapshot is a tar archive of the
working directory, and a session's state names its box, so a run resumed in the same
process (or against the same server) reattaches to it.
"""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Literal

try:
    from agents.run_context import RunContextWrapper
    from agents.sandbox.capabilities import Capability
    from agents.sandbox.errors import (
        ExecTimeoutError,
        ExecTransportError,
        WorkspaceArchiveReadError,
        WorkspaceArchiveWriteError,
        WorkspaceReadNotFoundError,
        WorkspaceStartError,
        WorkspaceWriteTypeError,
    )
    from agents.sandbox.manifest import Manifest
    from agents.sandbox.session import SandboxSession
    from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
    from agents.sandbox.session.manager import Instrumentation
    from agents.sandbox.session.sandbox_client import BaseSandboxClient, BaseSandboxClientOptions
    from agents.sandbox.session.sandbox_session_state import SandboxSessionState
    from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot
    from agents.sandbox.types import ExecResult, User
    from agents.sandbox.util.tar_utils import validate_tar_bytes
    from agents.tool import FunctionTool, Tool, ToolOutputImage, ToolOutputText
    from pydantic import Field
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "codebox's sandbox client needs the OpenAI Agents SDK: "
        "pip install 'codebox[openai-agents]'"
    ) from exc

from ..base import BaseBox
from ..errors import CodeBoxError
from ._adapters import box_from, make_box
from .tools import DEFAULT_MAX_CHARS, RUN_PYTHON, TOOLS, aexecute_tool_call

logger = logging.getLogger(__name__)

_DEFAULT_ROOT = Manifest.model_fields["root"].default
_ARCHIVE = ".codebox-workspace.tar"


class CodeboxSandboxClientOptions(BaseSandboxClientOptions):
    """Per-run options of `CodeboxSandboxClient`: arguments of the box to make, over the
    client's own (``{"sandbox": True}``, ...). JSON-ready, as the SDK keeps them."""

    type: Literal["codebox"] = "codebox"
    box_options: dict[str, Any] = Field(default_factory=dict)


class CodeboxSandboxSessionState(SandboxSessionState):
    """What the SDK keeps of a codebox session to resume it: the box's session id (and
    server), and the arguments to make a new box when that one is gone."""

    type: Literal["codebox"] = "codebox"
    box_session_id: str | None = None
    base_url: str | None = None
    box_root: str | None = None
    box_options: dict[str, Any] = Field(default_factory=dict)
    owns_box: bool = True


class CodeboxSandboxSession(BaseSandboxSession):
    """A sandbox session on one codebox box: the workspace root is (inside) the box's
    working directory; commands run with `BaseBox.shell`, files move with
    `BaseBox.upload` and `BaseBox.download`."""

    state: CodeboxSandboxSessionState

    def __init__(self, *, state: CodeboxSandboxSessionState, box: BaseBox) -> None:
        self.state = state
        self._box = box

    @property
    def box(self) -> BaseBox:
        """The box this session runs in."""
        return self._box

    # -- lifecycle --------------------------------------------------------------------------

    async def _ensure_backend_started(self) -> None:
        await self._box.astart()
        self.state.box_session_id = self._box.session_id

    async def _prepare_backend_workspace(self) -> None:
        root = self.state.manifest.root
        made = await self._box.ashell(["mkdir", "-p", "--", root])
        if not made.ok:
            raise WorkspaceStartError(path=Path(root), context={"stderr": made.stderr})

    async def running(self) -> bool:
        """Whether the box is running."""
        try:
            return str(await self._box.astatus()) == "running"
        except CodeBoxError:
            return False

    async def _shutdown_backend(self) -> None:
        if self.state.owns_box:
            await self._box.astop()

    # -- commands ---------------------------------------------------------------------------

    async def _exec_internal(self, *command: str | Path, timeout: float | None = None
                             ) -> ExecResult:
        argv = [str(part) for part in command]
        env = await self.state.manifest.environment.resolve()
        try:
            result = await self._box.ashell(argv, timeout=timeout, env=env or None)
        except (CodeBoxError, ValueError) as exc:
            raise ExecTransportError(command=argv, cause=exc, message=str(exc)) from exc
        if result.timed_out:
            raise ExecTimeoutError(command=argv, timeout_s=timeout)
        return ExecResult(stdout=result.stdout.encode(), stderr=result.stderr.encode(),
                          exit_code=result.exit_code)

    # -- files ------------------------------------------------------------------------------

    def _in_box(self, path: Path | str, *, for_write: bool = False) -> str:
        """The path as the box names it: relative to its working directory."""
        policy = self._workspace_path_policy()
        absolute = policy.normalize_sandbox_path(path, for_write=for_write)
        root = PurePosixPath(self.state.box_root or self.state.manifest.root)
        try:
            return absolute.relative_to(root).as_posix()
        except ValueError as exc:
            raise WorkspaceArchiveReadError(
                path=Path(str(absolute)), context={"reason": "outside the box"}) from exc

    async def read(self, path: Path, *, user: str | User | None = None) -> io.IOBase:
        """Read a file of the workspace (``user`` is not supported: one user per box)."""
        name = self._in_box(path)
        try:
            file = await self._box.adownload(name)
        except FileNotFoundError as exc:
            raise WorkspaceReadNotFoundError(path=path, cause=exc) from exc
        except CodeBoxError as exc:
            raise WorkspaceArchiveReadError(path=path, cause=exc) from exc
        return io.BytesIO(file.content or b"")

    async def write(self, path: Path, data: io.IOBase, *, user: str | User | None = None
                    ) -> None:
        """Write a file of the workspace, making its folders."""
        payload = data.read()
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, bytes | bytearray):
            raise WorkspaceWriteTypeError(path=path, actual_type=type(payload).__name__)
        name = self._in_box(path, for_write=True)
        try:
            await self._box.aupload(name, bytes(payload))
        except CodeBoxError as exc:
            raise WorkspaceArchiveWriteError(path=path, cause=exc) from exc

    async def persist_workspace(self) -> io.IOBase:
        """The workspace as a tar archive (ephemeral entries and mounts left out)."""
        root = self.state.manifest.root
        skip = [f"--exclude=./{p.as_posix()}" for p in self._persist_workspace_skip_relpaths()]
        archive = f"{root.rstrip('/')}/{_ARCHIVE}"
        made = await self._box.ashell(
            ["tar", "-C", root, f"--exclude=./{_ARCHIVE}", *skip, "-cf", archive, "."])
        try:
            if not made.ok:
                raise WorkspaceArchiveReadError(path=Path(root), context={"stderr": made.stderr})
            file = await self._box.adownload(self._in_box(archive))
        finally:
            await self._box.ashell(["rm", "-f", "--", archive])
        return io.BytesIO(file.content or b"")

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        """Unpack a tar archive of `persist_workspace` into the workspace."""
        raw = data.read()
        if isinstance(raw, str):
            raw = raw.encode()
        root = self.state.manifest.root
        try:
            validate_tar_bytes(bytes(raw), allow_external_symlink_targets=False)
        except Exception as exc:
            raise WorkspaceArchiveWriteError(path=Path(root), cause=exc) from exc
        archive = f"{root.rstrip('/')}/{_ARCHIVE}"
        await self._box.aupload(self._in_box(archive, for_write=True), bytes(raw))
        try:
            unpacked = await self._box.ashell(["tar", "-C", root, "-xf", archive])
        finally:
            await self._box.ashell(["rm", "-f", "--", archive])
        if not unpacked.ok:
            raise WorkspaceArchiveWriteError(path=Path(root), context={"stderr": unpacked.stderr})


class CodeboxSandboxClient(BaseSandboxClient[CodeboxSandboxClientOptions | None]):
    """A sandbox client whose sessions are codebox boxes.

    Args:
        box: The box every session of this client runs in: a `LocalBox` (sandboxed or
            not, from a template or not) or a `CodeBox` of a server. The caller keeps it:
            ending a session leaves it running.
        instrumentation: The SDK's session instrumentation (events, tracing).
        **box_options: Without ``box``, the arguments of the box each session makes
            (``sandbox=True``, ``api_key=...``, ...); JSON-ready values, as the SDK keeps
            them in the session's state. The session stops its box when it ends.
    """

    backend_id = "codebox"
    supports_default_options = True

    def __init__(self, *, box: BaseBox | None = None,
                 instrumentation: Instrumentation | None = None, **box_options: Any) -> None:
        if box is not None and box_options:
            raise ValueError(f"give a box or the arguments of one, not both: "
                             f"{sorted(box_options)}")
        self._box = box
        self._box_options = box_options
        self._instrumentation = instrumentation or Instrumentation()

    async def create(
        self,
        *,
        snapshot: SnapshotSpec | SnapshotBase | None = None,
        manifest: Manifest | None = None,
        options: CodeboxSandboxClientOptions | None = None,
    ) -> SandboxSession:
        """A new session on a new box (or on the client's box)."""
        manifest = self._validate_manifest_for_create(manifest or Manifest())
        options_given = {**self._box_options, **(options.box_options if options else {})}
        box, owns = box_from(self._box, options_given if self._box is None else {})
        box_root = await _working_dir(box)
        if manifest.root == _DEFAULT_ROOT:
            manifest = manifest.model_copy(update={"root": box_root}, deep=True)
        elif not PurePosixPath(manifest.root).is_relative_to(box_root):
            raise ValueError(f"the manifest's root {manifest.root!r} is outside the box's "
                             f"working directory {box_root!r}")
        session_id = uuid.uuid4()
        state = CodeboxSandboxSessionState(
            session_id=session_id, manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
            box_session_id=box.session_id, base_url=_server_of(box), box_root=box_root,
            box_options=options_given, owns_box=owns,
        )
        return self._wrap_session(CodeboxSandboxSession(state=state, box=box),
                                  instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        """Nothing left to delete: ending the session stopped the box it owned."""
        return session

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        """A session on the box the state names, if it still runs; else on a new box
        (the SDK then restores the workspace from its snapshot)."""
        if not isinstance(state, CodeboxSandboxSessionState):
            raise TypeError("CodeboxSandboxClient.resume expects a CodeboxSandboxSessionState")
        state.assert_path_grants_rebound()
        box = self._box or await _reattach(state)
        reattached = box is not None and str(await box.astatus()) == "running"
        if box is None or not reattached:
            box = self._box or make_box(**state.box_options)
            box_root = await _working_dir(box)
            if state.box_root is not None and state.manifest.root == state.box_root:
                state.manifest = state.manifest.model_copy(update={"root": box_root}, deep=True)
            state.box_root = box_root
            state.box_session_id = box.session_id
            state.workspace_root_ready = False
        session = CodeboxSandboxSession(state=state, box=box)
        session._set_start_state_preserved(reattached)
        return self._wrap_session(session, instrumentation=self._instrumentation)

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        """The session state from what `serialize_session_state` gave."""
        return self._deserialize_session_state_payload(payload, CodeboxSandboxSessionState)


class CodeboxPython(Capability):
    """A capability that gives a sandbox agent ``run_python``: a stateful Python kernel (the
    box's own) in the session's workspace, answering with the text of
    `codebox.integrations.tools` and the images the code showed. Needs a session of
    `CodeboxSandboxClient`.

    Attributes:
        max_chars: Character budget of each answer's text.
        timeout: Seconds one call may run (default: the box's ``run_timeout``).
    """

    type: Literal["codebox_python"] = "codebox_python"
    max_chars: int = DEFAULT_MAX_CHARS
    timeout: float | None = None

    def tools(self) -> list[Tool]:
        """The ``run_python`` tool, bound to the session's box."""
        if self.session is None:
            raise ValueError("CodeboxPython is not bound to a sandbox session")
        inner = getattr(self.session, "_inner", self.session)
        if not isinstance(inner, CodeboxSandboxSession):
            raise TypeError("CodeboxPython needs a session of CodeboxSandboxClient")
        box, spec = inner.box, TOOLS[RUN_PYTHON]
        max_chars, timeout = self.max_chars, self.timeout

        async def invoke(_: RunContextWrapper[Any], arguments: str) -> Any:
            call = {"name": RUN_PYTHON, "arguments": arguments}
            result = await aexecute_tool_call(box, call, max_chars=max_chars, timeout=timeout)
            if not result.images:
                return result.text
            images = [ToolOutputImage(image_url=f"data:{i.media_type};base64,{i.data}")
                      for i in result.images]
            return [ToolOutputText(text=result.text), *images]

        return [FunctionTool(name=spec.name, description=spec.description,
                             params_json_schema=spec.parameters, on_invoke_tool=invoke,
                             strict_json_schema=False)]

    async def instructions(self, manifest: Manifest) -> str | None:
        """Tell the model that the kernel and the shell share the workspace."""
        return (f"`{RUN_PYTHON}` runs Python in a stateful kernel whose working directory is "
                f"the workspace root ({manifest.root}): variables and imports persist between "
                "calls, and it sees the files the shell sees.")


async def _working_dir(box: BaseBox) -> str:
    where = await box.ashell(["pwd", "-P"])
    if not where.ok:
        raise WorkspaceStartError(path=Path("."), context={"stderr": where.stderr})
    return where.stdout.strip()


def _server_of(box: BaseBox) -> str | None:
    from ..remote import CodeBox

    return str(box.settings.base_url) if isinstance(box, CodeBox) else None


async def _reattach(state: CodeboxSandboxSessionState) -> BaseBox | None:
    if state.box_session_id is None:
        return None
    from ..remote import CodeBox

    try:
        extra = {"base_url": state.base_url} if state.base_url else {}
        return CodeBox.from_id(state.box_session_id, **extra)
    except CodeBoxError as exc:
        logger.info("box %s is gone (%s): a new one is made", state.box_session_id, exc)
        return None


__all__ = [
    "CodeboxPython",
    "CodeboxSandboxClient",
    "CodeboxSandboxClientOptions",
    "CodeboxSandboxSession",
    "CodeboxSandboxSessionState",
]
