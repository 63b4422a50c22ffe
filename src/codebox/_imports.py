"""Imports made lighter for a fast ``import codebox``: imported first by the package."""

from __future__ import annotations

import sys
from typing import Any


def import_httpx_without_cli() -> None:
    """Import httpx without its command-line client.

    ``import httpx`` imports the client's CLI (click, rich, pygments: ~0.1-0.2 s) whenever
    those happen to be installed; codebox never uses it. The CLI stays reachable:
    ``httpx.main`` imports it when called, and ``httpx._main`` imports as usual afterwards.
    """
    if "httpx" in sys.modules:
        return
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # makes its import fail
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main", 0) is None:
            del sys.modules["httpx._main"]

    def main(*args: Any, **kwargs: Any) -> Any:
        from httpx._main import main as cli

        return cli(*args, **kwargs)

    httpx.main = main  # type: ignore[assignment]  # called as the CLI entry point


import_httpx_without_cli()
