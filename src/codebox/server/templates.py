"""The templates a server offers, by name (``codebox serve --template NAME=FILE``).

Each is read when the app is made (a bad file stops the server before it serves), built
on this machine as the server starts (a no-op for one built already), and given a warm
pool on the server's gateway right after: the first session of a template finds a kernel
that has imported its ``preload``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx

from ..local._gateway import shared_gateway
from ..sandbox import resolve
from ..settings import CodeBoxSettings
from ..templates import Template, abuild_template
from ..templates._kernels import TemplateChoice

log = logging.getLogger(__name__)

_POLL = 0.05  # seconds between looks at the pools while the server gets ready


class ServerTemplates:
    """The server's templates.

    Args:
        files: Template name -> its file (a requirements file, or a TOML/JSON Template).

    Raises:
        ValueError: A file cannot be read or does not describe a template.
    """

    def __init__(self, files: dict[str, Path]) -> None:
        self.by_name = {name: Template.from_file(path) for name, path in sorted(files.items())}

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def pool_sizes(self, sizes: dict[str, int]) -> dict[str, int]:
        """Pool sizes by name as the gateway takes them: by template id.

        Raises:
            ValueError: A name that is no template of the server.
        """
        unknown = sorted(set(sizes) - set(self.by_name))
        if unknown:
            raise ValueError(f"pool sizes for unknown templates {unknown}: the templates are "
                             f"{self.names}")
        return {self.by_name[name].id: size for name, size in sizes.items()}

    async def build(self, settings: CodeBoxSettings) -> None:
        """Build every template not built yet (one at a time: each takes the cores).

        Raises:
            CodeBoxError: A build failed.
        """
        for name, template in self.by_name.items():
            log.info("template %s (%s): building unless built", name, template.id)
            await abuild_template(template, settings=settings)

    async def warm(self, settings: CodeBoxSettings) -> None:
        """Make the pool of each template on the gateway this process spawned (with the
        request a session's box makes for its first kernel, which fills that pool), and
        wait, at most ``settings.start_timeout``, until each holds a kernel that has run
        its preload: the server is ready when its templates are."""
        pooled = {name: t for name, t in self.by_name.items()
                  if settings.template_pool_sizes.get(t.id, settings.pool_size) > 0}
        if not pooled or shared_gateway.pid is None:
            return
        address = await asyncio.to_thread(shared_gateway.current, settings)
        headers = {"Authorization": f"token {address.token}"}
        async with httpx.AsyncClient(base_url=address.url, headers=headers, trust_env=False,
                                     timeout=settings.timeout) as client:
            for name, template in pooled.items():
                body = pool_request(template, settings)
                response = await client.post("/codebox/pool", json=body)
                log.info("template %s: warm pool made (HTTP %d)", name, response.status_code)
            deadline = time.monotonic() + settings.start_timeout
            wanted = {t.id for t in pooled.values()}
            while wanted and time.monotonic() < deadline:
                pools = (await client.get("/codebox/pool")).json()["pools"]
                wanted -= {p["template"] for p in pools if p["warm"] or not p["size"]}
                if wanted:
                    await asyncio.sleep(_POLL)
            if wanted:
                log.warning("templates %s: no warm kernel within %g s", sorted(wanted),
                            settings.start_timeout)


def pool_request(template: Template, settings: CodeBoxSettings) -> dict[str, object]:
    """What a session's box of ``template`` asks the gateway's pool for (the key of its
    pool): the template's kernelspec, and the sessions' policy with the template in it."""
    policy = resolve(None, settings.sandbox)
    choice = TemplateChoice(template, settings, gateway_url=None, sandboxed=policy is not None)
    sandbox = None if policy is None else {**policy.policy(), "template": choice.sandbox_field()}
    return {"name": choice.kernel_name(), "sandbox": sandbox}
