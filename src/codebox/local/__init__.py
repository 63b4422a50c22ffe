"""The local side: `LocalBox` and the machinery under it.

A pure Jupyter protocol (``_jupyter``), every box operation written once as an I/O-free
generator (``_kernel_ops``, with the code it runs in the kernel in ``_snippets``), the sync
and async drivers that do the I/O (``_drivers``), and the Kernel Gateway a box spawns
(``_gateway``, running ``_gateway_app``).
"""

from ._box import LocalBox

__all__ = ["LocalBox"]
