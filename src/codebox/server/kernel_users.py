"""Kernel users per API key (``kernel_user_per_key``): each key's kernels are started for a
``KERNEL_USERNAME`` of its own, so that Enterprise Gateway's per-user limits
(``max_kernels_per_user``) and its ``authorized_users`` apply to each key apart.

The name is derived from the key's digest (the key itself never leaves the server): stable
across restarts and servers, distinct between keys, and a valid Unix user name.
"""

from __future__ import annotations

import hashlib

from ..settings import CodeBoxSettings
from .settings import ServerSettings

PREFIX = "codebox-"


def kernel_user_for(owner: str) -> str:
    """The ``KERNEL_USERNAME`` of the key whose digest is ``owner``."""
    # Another digest of the digest: the name in the gateway's logs is not the stored owner.
    return PREFIX + hashlib.sha256(b"codebox kernel user\0" + owner.encode()).hexdigest()[:16]


def settings_for(settings: ServerSettings, box_settings: CodeBoxSettings,
                 owner: str) -> CodeBoxSettings:
    """The settings of a box of ``owner``: its own kernel user when the server says so."""
    if not settings.kernel_user_per_key:
        return box_settings
    return box_settings.model_copy(update={"kernel_username": kernel_user_for(owner)})
