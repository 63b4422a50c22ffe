"""Templates: environments built once per machine with uv, read-only, content-addressed;
boxes of a template start from them, with warm kernels that have imported its ``preload``.

    from codebox import LocalBox, Template, build_template

    data = Template(packages=["pandas"], preload=["pandas as pd"])
    build_template(data)                  # ahead of time (else on the first box's start)
    with LocalBox(template=data) as box:
        box.run("pd.DataFrame({'a': [1, 2]})['a'].sum()")

`list_templates`, `remove_template` and `prune_templates` manage what is built (the
``codebox template`` command uses them).
"""

from __future__ import annotations

from ..settings import CodeBoxSettings
from . import _bytecode
from ._build import STEPS, abuild_template, build_template
from ._model import Template
from ._store import BuiltTemplate, Layout, listing, prune, remove

__all__ = ["STEPS", "BuiltTemplate", "Template", "abuild_template", "build_template",
           "list_templates", "prune_templates", "remove_template"]


def _layout(settings: CodeBoxSettings | None) -> Layout:
    return Layout.under((settings or CodeBoxSettings()).cache_dir)


def list_templates(*, settings: CodeBoxSettings | None = None) -> list[BuiltTemplate]:
    """The templates built on this machine (under ``settings.cache_dir``), most recently
    used first."""
    return listing(_layout(settings))


def remove_template(template_id: str, *, settings: CodeBoxSettings | None = None) -> bool:
    """Remove a built template; False if there was none. Boxes running on it lose it."""
    return remove(_layout(settings), template_id)


def prune_templates(unused_days: float, *, settings: CodeBoxSettings | None = None) -> list[str]:
    """Remove the templates no box used for ``unused_days`` days, and the cached bytecode
    no template uses any more; the templates' ids."""
    layout = _layout(settings)
    gone = prune(layout, unused_days * 86400.0)
    _bytecode.prune_unlinked(_bytecode.directory(layout.cache))
    return gone
