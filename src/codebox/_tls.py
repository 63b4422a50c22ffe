"""TLS settings for the HTTP clients, built once per process.

httpx builds a fresh SSL context (loading the CA bundle, ~35 ms) for every client unless it
is given one; boxes create clients often, so they share this one.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The default verifying context, with httpx's CA bundle (certifi)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def verify_for(url: str) -> ssl.SSLContext | bool:
    """What to pass as httpx's ``verify`` for a base URL: nothing to verify over plain HTTP."""
    return ssl_context() if url.lower().startswith("https:") else False
