"""The remote side: `CodeBox`, the client of the CodeBox REST API, over httpx.

``_protocol`` holds the REST protocol (requests, replies, errors) and does no I/O.
"""

from ._box import CodeBox

__all__ = ["CodeBox"]
