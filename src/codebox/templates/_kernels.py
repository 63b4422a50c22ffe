"""What a box of a template asks its gateway for.

On the gateway a box spawns, a plain kernel of a template is the kernelspec
``codebox-template-<id>`` (written by the build, found by the gateway in the cache); a
sandboxed one is the ``codebox-sandbox`` kernelspec with the template in its policy (the
interpreter to run and the paths to bind read-only). Either way the kernel request, and so
the warm pool it draws from, names the template.

On a gateway given by URL nothing is built here: the kernelspec ``codebox-template-<id>``
must exist there (see docs/deployment.md), and a sandbox cannot take a template (a remote
``codebox-sandbox`` kernelspec takes no host paths from a request).
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import CodeBoxError
from ..settings import CodeBoxSettings
from ._build import ensure
from ._model import Template
from ._store import BuiltTemplate


class TemplateChoice:
    """A box's template: built (or found built) on first use, once per box.

    Raises:
        CodeBoxError: A sandboxed box on a gateway given by URL.
        TypeError: ``template`` is not a `Template`.
    """

    def __init__(self, template: Template, settings: CodeBoxSettings, *,
                 gateway_url: str | None, sandboxed: bool) -> None:
        if not isinstance(template, Template):
            raise TypeError(f"template must be a Template, not {type(template).__name__}")
        if gateway_url is not None and sandboxed:
            raise CodeBoxError(
                "a sandboxed box takes a template on the gateway codebox spawns only; on a "
                "gateway given by URL, give the template its own kernelspec there")
        self.template = template
        self._settings = settings
        self._remote = gateway_url is not None
        self._built: BuiltTemplate | None = None
        self._lock = threading.Lock()

    def built(self) -> BuiltTemplate:
        """The template's build on this machine (built now if there is none).

        Raises:
            CodeBoxError: The build failed.
        """
        with self._lock:
            if self._built is None:
                self._built = ensure(self.template, self._settings)[0]
            return self._built

    def kernel_name(self) -> str:
        """The kernelspec the box starts (its template built first on our own gateway)."""
        if not self._remote:
            self.built()
        return self.template.kernel_name

    def sandbox_field(self) -> dict[str, Any]:
        """The ``template`` field of the box's sandbox policy."""
        return self.built().sandbox_field()
