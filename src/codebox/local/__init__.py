"""The local side: `LocalBox` and the machinery under it.

A pure Jupyter protocol (``_jupyter``); every box operation written once as an I/O-free
generator, by concern: the requests they make (``_requests``), their building blocks
(``_kernel``), the kernel's lifecycle (``_lifecycle``), code and commands
(``_execution``), file transfers (``_transfers``) and file operations (``_fileops``); what
a box does inside the kernel, per kernel language (``_dialect``); the transport that carries
the requests out (``_transport``); and the Kernel Gateway a box spawns (``_gateway``,
running ``_gateway_app``).
"""

from ._box import LocalBox

__all__ = ["LocalBox"]
