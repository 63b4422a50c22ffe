"""The remote side: `CodeBox`, the client of the CodeBox REST API, over httpx.

The REST protocol is pure and split along its seams: the requests (``_requests``), the
replies and their errors (``_replies``), streamed NDJSON lines (``_ndjson``), the
``Content-Disposition`` file name (``_disposition``) and the retry policy (``_retry``).
Every operation is written once as an I/O-free generator (``_ops``), carried out by a
sync or an async driver over httpx (``_drivers``); ``_box`` holds the thin twins.
"""

from ._box import CodeBox

__all__ = ["CodeBox"]
