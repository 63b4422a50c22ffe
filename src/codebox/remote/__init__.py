"""The remote side: `CodeBox`, the client of the CodeBox REST API, over httpx.

The REST protocol is pure and split along its seams: the requests (``_requests``), the
replies and their errors (``_replies``), streamed NDJSON lines (``_ndjson``), the
``Content-Disposition`` file name (``_disposition``) and the retry policy (``_retry``).
Every operation is written once as an I/O-free generator (``_ops``), carried out by the
engine (``codebox._engine``) over the sync or async HTTP transport (``_transport``);
``_box`` binds them to `BaseBox`.
"""

from ._box import CodeBox

__all__ = ["CodeBox"]
