"""How a kernel of a template starts: its command, and the box's own package directory.

Standard library only: the gateway (pools, plain kernels) and the sandbox (sandboxed
kernels) import it, and its bootstrap runs in the template's own interpreter.

A template's kernel runs the template environment's Python. ``preload`` goes to IPython's
``exec_lines``: the kernel imports it while it initialises, before it answers anything, so
no request of a box — pooled kernel or not, and after every restart — runs before it.

`install` must add to the box, never to the template. A sandboxed kernel has its own
``site`` directory already (``CODEBOX_SITE``, on ``PYTHONPATH``; the template is bound
read-only). A plain kernel gets one from `BOOTSTRAP`, beside its connection file (so a
restart, which keeps the file, keeps the packages; the gateway removes it with the kernel),
first on ``sys.path``, ahead of the template's packages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

KERNEL_NAME_PREFIX = "codebox-template-"
"""A template's kernelspec is this prefix and the template's id."""
SITE_PREFIX = "codebox-site-"

# Runs as `python -c BOOTSTRAP -f <connection file> ...`, then becomes ipykernel_launcher.
BOOTSTRAP = """\
import os, sys
_f = sys.argv[sys.argv.index("-f") + 1]
_site = os.path.join(os.path.dirname(_f), "SITE_PREFIX" + os.path.basename(_f).rsplit(".", 1)[0])
os.makedirs(_site, mode=0o700, exist_ok=True)
sys.path.insert(1 if sys.path and sys.path[0] == "" else 0, _site)
_join = lambda *parts: os.pathsep.join(p for p in parts if p)
os.environ.update(CODEBOX_SITE=_site, PIP_TARGET=_site,
                  PYTHONPATH=_join(_site, os.environ.get("PYTHONPATH")),
                  PATH=_join(os.path.dirname(sys.executable), os.environ.get("PATH")))
del os, sys, _f, _site, _join
import runpy
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
""".replace("SITE_PREFIX", SITE_PREFIX)


def preload_arguments(preload: str) -> list[str]:
    """The kernel arguments that import ``preload`` (Python code) at start."""
    return [f"--IPKernelApp.exec_lines={preload}"] if preload else []


def kernelspec(python: str, preload: str, env: Mapping[str, str],
               template_id: str) -> dict[str, Any]:
    """The ``kernel.json`` of a template's plain kernels."""
    return {
        "argv": [python, "-c", BOOTSTRAP, "-f", "{connection_file}",
                 *preload_arguments(preload)],
        "display_name": f"Python (codebox template {template_id})",
        "language": "python",
        "env": dict(env),
        "metadata": {"codebox_template": template_id},
    }


def site_of(connection_file: str) -> str:
    """The package directory `BOOTSTRAP` makes for the kernel of ``connection_file``."""
    stem = os.path.basename(connection_file).rsplit(".", 1)[0]
    return os.path.join(os.path.dirname(connection_file), SITE_PREFIX + stem)


def template_of(kernel_name: str, sandbox: Mapping[str, Any] | None) -> str | None:
    """The id of the template a kernel request is for (None: no template)."""
    if sandbox is not None:
        template = sandbox.get("template")
        return str(template["id"]) if isinstance(template, dict) and "id" in template else None
    if kernel_name.startswith(KERNEL_NAME_PREFIX):
        return kernel_name[len(KERNEL_NAME_PREFIX):]
    return None


def sandbox_argv(kernel_argv: list[str], template: Mapping[str, Any]) -> list[str]:
    """A sandboxed kernel's command for the template of a policy: the template's Python in
    place of the kernelspec's, and the preload."""
    return [template["python"], *kernel_argv[1:], *preload_arguments(template.get("preload", ""))]


def check_sandbox_field(template: Any) -> dict[str, Any]:
    """A policy's ``template`` field, checked (a `ValueError` if malformed)."""
    if not isinstance(template, dict):
        raise ValueError("sandbox template must be an object")
    problems = []
    if not isinstance(template.get("id"), str):
        problems.append("id")
    if not (isinstance(template.get("python"), str) and os.path.isabs(template["python"])):
        problems.append("python (an absolute path)")
    paths = template.get("paths")
    if not (isinstance(paths, list) and all(isinstance(p, str) and os.path.isabs(p)
                                            for p in paths)):
        problems.append("paths (absolute paths)")
    if not isinstance(template.get("preload", ""), str):
        problems.append("preload")
    env = template.get("env", {})
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in env.items())):
        problems.append("env")
    if problems:
        raise ValueError(f"sandbox template: bad {', '.join(problems)}: {json.dumps(template)}")
    return dict(template)
