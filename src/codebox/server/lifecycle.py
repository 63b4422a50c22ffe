"""A session's life as clients see it: its lifetime (extension ``lifetime``) and the list of
a key's sessions (extension ``list``).

A session expires its lifetime after its last use (every request is a use); without one,
after the server's ``idle_timeout``. Both are kept in the store, so every server on it, and
the next one after a restart, stops it on time.
"""

from __future__ import annotations

from datetime import datetime

from .._lifetimes import utc
from . import models
from .sessions import Session, SessionManager, SessionNotFound
from .store import SessionRecord


def allowed_lifetime(manager: SessionManager, seconds: float | None) -> float | None:
    """The lifetime a session gets when a client asks for ``seconds``: at most the server's
    ``max_lifetime``."""
    if seconds is None:
        return None
    return min(seconds, manager.settings.max_lifetime)


async def set_lifetime(manager: SessionManager, session: Session,
                       seconds: float | None) -> datetime:
    """Give ``session`` a lifetime from now (None: the server's idle timeout); when it
    expires unless used again.

    Raises:
        SessionNotFound: The session was stopped meanwhile.
    """
    session.touch()
    record = await manager.store.set_lifetime(session.id, allowed_lifetime(manager, seconds),
                                              session.last_used)
    if record is None:
        raise SessionNotFound(f"no session {session.id}")
    return utc(record.expires(manager.settings.idle_timeout))


async def list_sessions(manager: SessionManager, owner: str) -> list[models.SessionInfo]:
    """The sessions of ``owner`` on every server of the store, oldest first."""
    await manager.record_use()  # this server's latest use, busy sessions as used now
    return [_info(manager, record) for record in await manager.store.sessions_of(owner)]


def _info(manager: SessionManager, record: SessionRecord) -> models.SessionInfo:
    return models.SessionInfo(
        id=record.id, status=record.status, created=utc(record.created),
        last_used=utc(record.last_used), template=record.template,
        expires=utc(record.expires(manager.settings.idle_timeout)))
