"""Building a template: once per machine, with uv, in a sandbox, published atomically.

A build happens under the template's lock (threads and processes wait for it, then find
it built), in a temporary directory on the same file system as its final place:

1. the interpreter: ``python`` as uv finds it (``uv python find``), or the running one;
2. ``uv venv --relocatable`` (the directory is renamed afterwards);
3. ``uv pip install`` of the requirements, ipykernel and pip, from the host's index
   (`_index`);
4. their bytecode, now, since nothing can write it into a read-only environment later
   (every import would compile again in every box): linked from, or compiled into, the
   machine's bytecode cache (`_bytecode`);
5. a check that the kernel and every ``preload`` import work, which also says which
   directories the interpreter reads;
6. the record, the directories made read-only, the rename into place, the kernelspec.

Steps 2-5 run in a sandbox. Writable there is the cache directory (the build, uv's cache
and the bytecode cache must be one mount for hard links), never the templates built
already; the bytecode cache only while bytecode is compiled (no package code runs then);
nothing at all while the check imports packages. A package built from source by uv can
change uv's cache, as it could on the host (and so the files templates share with it):
prefer wheels. Any failure removes the temporary directory: nothing half-built is left,
and the error carries uv's own message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._template_kernel import kernelspec
from ..errors import CodeBoxError, CodeBoxTimeoutError, SandboxUnavailableError
from ..settings import CodeBoxSettings
from . import _bytecode, _index, _store
from ._model import KERNEL_REQUIREMENTS, Template
from ._store import BuiltTemplate, Layout

log = logging.getLogger(__name__)

BUILD_TIMEOUT = 1800.0
"""Default seconds a build may take (waiting for another build of it included)."""
STEPS = ("python", "environment", "packages", "bytecode", "check", "publish")
"""What `on_step` is called with, in order, as a build goes on."""
_OUTPUT_KEPT = 20_000  # characters of uv's output an error carries
_INFO = "codebox-template-info:"

OnStep = Callable[[str], object]


@dataclass(frozen=True)
class Interpreter:
    """The Python a template is built for: its path, full version, and installation."""

    path: str
    version: str
    dirs: tuple[str, ...]


# -- the one place that runs a build step ------------------------------------------------------


def _run_build(argv: Sequence[str], *, writable: Sequence[str], read_only: Sequence[str],
               env: Mapping[str, str], timeout: float, cwd: str) -> tuple[int, str]:
    """Run one build step in an installer sandbox (`codebox.local._installer`): the system
    read-only, ``writable``, then ``read_only`` (so a read-only path inside a writable one
    stays read-only), an environment of ``env`` and the index's, and egress to the package
    index only. Its exit code and output.

    Raises:
        SandboxUnavailableError: bubblewrap cannot run here.
        CodeBoxTimeoutError: The step took longer than ``timeout`` seconds (it is killed).
    """
    from ..local import _installer, _sandbox

    try:
        _sandbox.check()
    except _sandbox.Unavailable as exc:
        raise SandboxUnavailableError(f"cannot sandbox a template build: {exc}") from None
    # A build is bigger than an install: no memory, process or per-file cap of a box's.
    limits = {"memory_mb": None, "max_processes": None, "disk_mb": None}
    code, output = _installer.run_sandboxed(
        argv, writable=writable, read_only=read_only, env=env, timeout=timeout, cwd=cwd,
        limits=limits, name="template-build")
    if code == -9 and "was killed after" in output:
        raise CodeBoxTimeoutError(f"a template build step took more than {timeout:g} s: "
                                  f"{' '.join(argv[:3])} ...")
    return code, output


# -- the interpreter ---------------------------------------------------------------------


_QUERY = ("import json, os, sys; print(json.dumps(['%d.%d.%d' % sys.version_info[:3], "
          "sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,"
          " sys.base_exec_prefix)})]))")


def find_interpreter(template: Template, uv: str, cwd: str) -> Interpreter:
    """The interpreter ``template.python`` names (uv finds versions), or the running one.

    Raises:
        CodeBoxError: uv finds no such Python, or it does not run.
    """
    if template.python is None:
        dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                              sys.base_exec_prefix)}
        # abspath: a path through a directory the sandbox does not have (``x/../python``)
        # would not resolve there.
        return Interpreter(os.path.abspath(sys.executable), template.python_version,
                           tuple(sorted(dirs)))
    path = template.python
    if not os.path.isabs(path):
        # Only finding: this runs no package code (uv asks interpreters their version).
        found = subprocess.run([uv, "python", "find", "--no-python-downloads", path],
                               capture_output=True, text=True, timeout=60, cwd=cwd,
                               env={**os.environ, "NO_COLOR": "1"}, check=False)
        if found.returncode != 0:
            raise CodeBoxError(f"uv cannot find Python {path!r} for the template:\n"
                               f"{(found.stderr or found.stdout).strip()}")
        path = found.stdout.strip().splitlines()[-1]
    try:
        asked = subprocess.run([path, "-I", "-c", _QUERY], capture_output=True, text=True,
                               timeout=60, check=True)
        version, dirs = json.loads(asked.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise CodeBoxError(f"the template's Python {path} does not run: {exc}") from None
    return Interpreter(path, version, tuple(dirs))


# -- the build -----------------------------------------------------------------------------


def uv_binary() -> str:
    """The uv that the ``uv`` wheel ships.

    Raises:
        CodeBoxError: It is missing.
    """
    try:
        from uv import find_uv_bin

        return os.fsdecode(find_uv_bin())
    except (ImportError, FileNotFoundError) as exc:
        raise CodeBoxError(f"templates need uv: pip install uv ({exc})") from None


def ensure(template: Template, settings: CodeBoxSettings | None = None, *,
           timeout: float = BUILD_TIMEOUT, on_step: OnStep | None = None,
           ) -> tuple[BuiltTemplate, bool]:
    """The build of ``template`` on this machine, made now if there is none; and whether
    this call made it.

    Raises:
        CodeBoxError: The build failed (uv's message); nothing of it is left.
        CodeBoxTimeoutError: It took longer than ``timeout`` seconds.
        SandboxUnavailableError: Builds run in a sandbox, and this machine cannot run one.
    """
    settings = settings if settings is not None else CodeBoxSettings()
    layout = Layout.under(settings.cache_dir)
    built = _store.read(layout, template.id)
    if built is None:
        deadline = time.monotonic() + timeout
        with _store.locked(layout, template.id, timeout):
            built = _store.read(layout, template.id)  # built by another while we waited
            if built is None:
                env = layout.env(template.id)
                if env.exists() and (env / _store.META_FILE).exists():
                    _write_kernelspec(layout, template.id)  # the rename happened, not this
                    built = _store.read(layout, template.id)
            if built is None:
                _store.sweep(layout, template.id)
                started = time.monotonic()
                built = _build(template, layout, settings, deadline, on_step or _no_step)
                log.info("built template %s in %.1f s (%d MB)", template.id,
                         time.monotonic() - started, built.size // 2**20)
                _store.touch(layout, template.id)
                return built, True
    _store.touch(layout, template.id)
    return built, False


def _no_step(step: str) -> None:
    return None


def _build(template: Template, layout: Layout, settings: CodeBoxSettings, deadline: float,
           on_step: OnStep) -> BuiltTemplate:
    uv = uv_binary()
    final = layout.env(template.id)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = layout.temporary(template.id)
    temp.parent.mkdir(parents=True, exist_ok=True)
    uv_cache = Path(os.environ.get("UV_CACHE_DIR") or layout.cache / "uv").expanduser()
    uv_cache.mkdir(parents=True, exist_ok=True)
    bytecode = _bytecode.directory(layout.cache)
    bytecode.mkdir(parents=True, exist_ok=True)
    on_step("python")
    interpreter = find_interpreter(template, uv, str(layout.root))
    index = _index.host_index()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
           "TMPDIR": "/tmp", **index.env, "UV_CACHE_DIR": str(uv_cache),
           "UV_NO_PROGRESS": "1", "NO_COLOR": "1", "UV_PYTHON_DOWNLOADS": "never"}
    read_only = [uv, *interpreter.dirs, os.path.realpath(interpreter.path), *index.read_only]

    def own_mount(path: Path) -> list[str]:
        return [] if path.resolve().is_relative_to(layout.cache) else [str(path)]

    def step(argv: list[str], what: str, *, writable: bool = True,
             shielded: tuple[Path, ...] = (layout.root, bytecode),
             extra_env: dict[str, str] | None = None) -> str:
        """Run a step with the cache directory writable (one mount: uv and the bytecode
        cache hard-link into the build) but the built templates and the ``shielded``
        directories read-only; or nothing writable at all."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise CodeBoxTimeoutError(f"building template {template.id} took too long")
        # (A bind inside the cache directory would be a mount of its own: no hard links.)
        rw = [str(layout.cache), *own_mount(uv_cache)] if writable else []
        ro = [*read_only, *(str(p) for p in shielded)] if writable else [
            *read_only, str(layout.cache), *own_mount(uv_cache)]
        code, output = _run_build(argv, writable=list(dict.fromkeys(rw)), read_only=ro,
                                  env={**(extra_env or {}), **env}, timeout=left,
                                  cwd=str(temp))
        if code != 0:
            raise CodeBoxError(f"cannot build template {template.id}: {what}:\n"
                               f"{output.strip()[-_OUTPUT_KEPT:]}")
        return output

    temp.mkdir(mode=0o755)
    try:
        on_step("environment")
        step([uv, "venv", "--quiet", "--relocatable", "--python", interpreter.path, str(temp)],
             f"uv could not make an environment for Python {interpreter.path}")
        requirements = temp / "codebox-requirements.txt"
        requirements.write_text("\n".join([*template.specifiers, *KERNEL_REQUIREMENTS]) + "\n")
        on_step("packages")
        python = str(temp / "bin" / "python")
        step([uv, "pip", "install", "--python", python, "--link-mode", "hardlink",
              *index.args, "-r", str(requirements)], "uv could not install its packages")
        on_step("bytecode")
        # Only this step writes the shared bytecode cache, and it runs no package's code.
        step([python, "-I", "-S", "-c", _bytecode.SCRIPT, str(bytecode), str(temp)],
             "its bytecode could not be compiled", shielded=(layout.root,))
        on_step("check")
        code = "\n".join(["import ipykernel.kernelapp", template.preload_code(),
                          f"import json, os, sys; print({_INFO!r} + json.dumps(sorted("
                          "{os.path.realpath(p) for p in (sys.base_prefix, "
                          "sys.base_exec_prefix)})))"])
        # Imports run package code: nothing may change now. (With the kernels' variables.)
        output = step([python, "-I", "-c", code], "its kernel or preload does not import",
                      writable=False, extra_env=template.env)
        info = [line for line in output.splitlines() if line.startswith(_INFO)]
        base_dirs = json.loads(info[-1][len(_INFO):])
        on_step("publish")
        size, files = _store.tree_size(temp)
        _store.write_meta(temp, {
            "template": template.model_dump(), "id": template.id,
            "requirements": template.specifiers,
            "python": str(final / "bin" / "python"), "python_version": interpreter.version,
            "paths": [str(final), *base_dirs], "preload": template.preload_code(),
            "env": template.env, "size": size, "files": files, "built": time.time()})
        _store.set_read_only(temp)
        temp.rename(final)
    except BaseException:
        _store.remove_tree(temp)
        raise
    _write_kernelspec(layout, template.id)
    built = _store.read(layout, template.id)
    assert built is not None
    return built


def _write_kernelspec(layout: Layout, template_id: str) -> None:
    """Write the kernelspec of a published environment (atomically: a file renamed)."""
    meta = json.loads((layout.env(template_id) / _store.META_FILE).read_text())
    path = layout.kernelspec(template_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = kernelspec(meta["python"], meta["preload"], meta["env"], template_id)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(spec, indent=1))
    partial.replace(path)


# -- the public functions ------------------------------------------------------------------


def build_template(template: Template, *, settings: CodeBoxSettings | None = None,
                   timeout: float = BUILD_TIMEOUT, on_step: OnStep | None = None) -> str:
    """Build ``template`` on this machine unless it is built already; return its id.

    Boxes of the template then start from the build (`LocalBox(template=...)` builds on
    first use otherwise). Concurrent calls, in threads or processes, build it once.

    Args:
        template: The template.
        settings: Where the cache is (``settings.cache_dir``); default from ``CODEBOX_*``.
        timeout: Most seconds to take, waiting for another build of it included.
        on_step: Called with each step's name (`STEPS`) as the build goes on.

    Raises:
        CodeBoxError: The build failed; the message carries uv's. Nothing of it is left.
        CodeBoxTimeoutError: It took longer than ``timeout``.
        SandboxUnavailableError: This machine cannot sandbox the build.
    """
    return ensure(template, settings, timeout=timeout, on_step=on_step)[0].id


async def abuild_template(template: Template, *, settings: CodeBoxSettings | None = None,
                          timeout: float = BUILD_TIMEOUT,
                          on_step: OnStep | None = None) -> str:
    """Async version of `build_template` (the build runs in a thread)."""
    return await asyncio.to_thread(build_template, template, settings=settings,
                                   timeout=timeout, on_step=on_step)
