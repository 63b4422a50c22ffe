"""The errors codebox raises on purpose.

A failure of the *user's* code is data (``CodeBoxOutput.error``), never an exception.
Everything here is about the box itself: the kernel, the gateway, the server, the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schema import OutputChunk


class CodeBoxError(Exception):
    """Root of every error codebox raises on purpose.

    Attributes:
        http_status: The HTTP status of the response that caused it, if any.
        json_body: The parsed response body (a ``dict``), or its text when it was not JSON.
        headers: The response headers, if any.
        chunks: The output a stream delivered before it failed (empty otherwise).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        json_body: dict[str, Any] | Any | None = None,
        headers: dict[str, str] | None = None,
        chunks: list[OutputChunk] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.json_body = json_body
        self.headers = headers
        self.chunks: list[OutputChunk] = chunks if chunks is not None else []

    def __str__(self) -> str:
        if self.http_status is None:
            return self.message
        return f"{self.message} (HTTP {self.http_status})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the keyword attributes when an error crosses a process or thread boundary.
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[CodeBoxError], message: str, state: dict[str, Any]) -> CodeBoxError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class CodeBoxAuthError(CodeBoxError):
    """The server rejected the API key (HTTP 401 or 403)."""


class CodeBoxNotFoundError(CodeBoxError, FileNotFoundError):
    """A session, kernel or file does not exist."""


class CodeBoxRateLimitError(CodeBoxError):
    """Too many sessions or requests (HTTP 429)."""


class CodeBoxServerError(CodeBoxError):
    """The server failed (HTTP 5xx)."""


class CodeBoxConnectionError(CodeBoxError, ConnectionError):
    """The gateway, kernel or server could not be reached, or the connection broke."""


class CodeBoxTimeoutError(CodeBoxError, TimeoutError):
    """An operation of the box itself (not the user's code) ran past its deadline."""


class KernelDiedError(CodeBoxError):
    """The kernel died or was restarted; its state is gone."""


class GatewayError(CodeBoxError):
    """The Jupyter Kernel Gateway could not be started or answered with an error."""


class SandboxUnavailableError(CodeBoxError):
    """This machine cannot run a sandboxed kernel (not Linux, no bubblewrap, no user
    namespaces, an AppArmor restriction); the message names the cause and the fix."""
