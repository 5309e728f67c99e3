"""Dashboard browser sessions kept in the database (migration ``0008_rollups``), so every server process - ``flopwise
serve --workers N`` - knows every login, and a logout or a revoked token ends the session everywhere.

Only ``sha256(session id)`` is stored: a copy of the table does not let anyone ride a session. A session names
the API token it logged in with (its id, never the token), and is valid while it is not revoked (logout), not
idle for longer than its ``idle_ttl_s`` and not past ``expires_at``; every use re-checks the token itself (revoked,
expired, user disabled) in :mod:`flopwise.server.web.security`. ``last_used_at`` is written at most once a
minute per session (:data:`TOUCH_EVERY_S`), so page views are reads.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Index, Integer, String, delete, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from flopwise.store.models import Base
from flopwise.store.types import UTCDateTime

__all__ = [
    "TOUCH_EVERY_S",
    "WebSessionRow",
    "create_web_session",
    "find_web_session",
    "hash_session_id",
    "purge_web_sessions",
    "revoke_web_session",
    "touch_web_session",
]

#: a session's ``last_used_at`` is rewritten at most this often (seconds)
TOUCH_EVERY_S = 60.0


class WebSessionRow(Base):
    """One logged-in browser (see the module docstring)."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index(None, "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: sha256 of the random session id the browser holds in its cookie
    sid_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: absolute end of the session (idle timeout aside)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    idle_ttl_s: Mapped[int] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def hash_session_id(sid: str) -> str:
    """sha256 of a session id (ids are 256-bit random, so a fast hash is enough, as for API tokens)."""
    return hashlib.sha256(sid.encode()).hexdigest()


def create_web_session(
    session: Session, sid: str, api_token_id: int, now: datetime, idle_ttl_s: float, max_age_s: float
) -> WebSessionRow:
    """Store a new session for *sid* (in the caller's write transaction)."""
    row = WebSessionRow(
        sid_hash=hash_session_id(sid),
        api_token_id=api_token_id,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=max_age_s),
        idle_ttl_s=int(idle_ttl_s),
    )
    session.add(row)
    session.flush()
    return row


def find_web_session(session: Session, sid: str | None, now: datetime) -> WebSessionRow | None:
    """The live session of *sid*: None when unknown, revoked, idle too long or expired."""
    if not sid or len(sid) > 200:
        return None
    row = session.scalar(select(WebSessionRow).where(WebSessionRow.sid_hash == hash_session_id(sid)))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if now - row.last_used_at > timedelta(seconds=row.idle_ttl_s):
        return None
    return row


def touch_web_session(session: Session, row_id: int, now: datetime) -> None:
    """Record a use of the session (idle timeout restarts); the caller writes it only every TOUCH_EVERY_S."""
    session.execute(update(WebSessionRow).where(WebSessionRow.id == row_id).values(last_used_at=now))


def revoke_web_session(session: Session, sid: str | None, now: datetime) -> bool:
    """End the session of *sid* (logout) in every process; True when there was one to end."""
    if not sid:
        return False
    result = session.execute(
        update(WebSessionRow)
        .where(WebSessionRow.sid_hash == hash_session_id(sid), WebSessionRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)


def purge_web_sessions(session: Session, now: datetime, keep_revoked_s: float = 86_400.0) -> int:
    """Delete sessions past their absolute end, and revoked ones older than *keep_revoked_s*; returns how many."""
    result = session.execute(
        delete(WebSessionRow).where(
            or_(
                WebSessionRow.expires_at <= now,
                WebSessionRow.revoked_at <= now - timedelta(seconds=keep_revoked_s),
            )
        )
    )
    return int(result.rowcount or 0)
