"""API keys: ``Authorization: Bearer <key>``. No key: 401; a key we do not know: 403.

A session belongs to the key that started it; the server keeps only a digest of it.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .sessions import owner_of
from .settings import ServerSettings

bearer = HTTPBearer(auto_error=False, description="An API key of the server.")


def _known(key: str, keys: list[str]) -> bool:
    found = False
    for candidate in keys:  # no early exit: the time taken says nothing about the keys
        found |= secrets.compare_digest(key.encode(), candidate.encode())
    return found


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The owner (digest of the API key) of the request.

    Raises:
        HTTPException: 401 without a key, 403 with a key the server does not accept.
    """
    settings: ServerSettings = request.app.state.settings
    key = credentials.credentials.strip() if credentials is not None else ""
    if settings.no_auth:
        return owner_of(key)
    if not key:
        raise HTTPException(
            401, "missing API key: send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not _known(key, settings.api_keys):
        raise HTTPException(403, "invalid API key")
    return owner_of(key)


Owner = Annotated[str, Depends(authenticate)]
"""An endpoint parameter: the authenticated owner of the request."""
