"""Browser sessions for the dashboard: an API token exchanged for a session cookie, CSRF tokens, security headers.

* **Login.** ``POST /login`` with an API token: the token is checked exactly as a bearer token is
  (:func:`flopwise.server.auth.principal_for_token`); the browser gets a random 256-bit session id in the cookie
  ``fw_session`` (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS, ``Path=/``). Sessions are rows of the
  database (:mod:`flopwise.store.web_sessions`: the id's sha256 and the token's id, never the token), so every
  process of ``serve --workers N`` knows every login and a logout ends the session in all of them. Every page
  checks the session's token again, so a revoked or expired token, or a disabled user, ends the session at the
  next click. Sessions end after :data:`SESSION_TTL_S` of inactivity, after :data:`SESSION_MAX_AGE_S`, or at
  logout (revoked in the database).
* **CSRF.** Each session has its own CSRF token, an HMAC of its secret id (synchronizer-token pattern, OWASP CSRF
  Prevention Cheat Sheet; derived rather than stored, so every process knows it); every form carries it in the hidden field ``csrf`` and htmx sends it as the ``X-CSRF-Token``
  header. A POST without the session's token is refused with 403 before anything runs. The login form (no
  session yet) uses a double-submit cookie ``fw_login_csrf``.
* **Headers.** Dashboard responses carry ``Content-Security-Policy`` with ``script-src 'self'`` (no inline
  script, no eval: charts use the Vega expression interpreter), ``frame-ancestors 'none'``, ``nosniff`` and
  ``Referrer-Policy: same-origin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CSP",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "SESSION_TTL_S",
    "SessionStore",
    "WebSession",
    "csrf_for",
    "csrf_ok",
    "security_headers",
]

SESSION_COOKIE = "fw_session"
LOGIN_CSRF_COOKIE = "fw_login_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: idle lifetime of a browser session (8 hours)
SESSION_TTL_S = 8 * 3600.0
#: longest a browser session lasts, however busy (7 days)
SESSION_MAX_AGE_S = 7 * 86400.0
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def security_headers() -> dict[str, str]:
    """Headers every dashboard response carries."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


@dataclass(frozen=True)
class WebSession:
    """A logged-in browser: the API token it logged in with (its id; the token itself is never kept) and its CSRF
    token."""

    token_id: int
    csrf: str


def csrf_for(sid: str) -> str:
    """The session's CSRF token: HMAC-SHA256 keyed by the (secret, 256-bit random) session id, so every process
    derives the same token without storing it, and the token does not reveal the session id."""
    return hmac.new(sid.encode(), b"flopwise-csrf-v1", hashlib.sha256).hexdigest()


class SessionStore:
    """Sessions in the database (:mod:`flopwise.store.web_sessions`): every process of ``serve --workers N`` sees
    every login and every logout. *state* is the app's ``state`` (its ``db`` session factory and ``clock``)."""

    def __init__(self, state: Any, ttl_s: float = SESSION_TTL_S, max_age_s: float = SESSION_MAX_AGE_S) -> None:
        self._state = state
        self._ttl_s = ttl_s
        self._max_age_s = max_age_s

    def create(self, token_id: int) -> tuple[str, WebSession]:
        from flopwise.store import write_session
        from flopwise.store.web_sessions import create_web_session, purge_web_sessions

        sid = secrets.token_urlsafe(32)
        now = self._state.clock()
        with write_session(self._state.db) as s:
            purge_web_sessions(s, now)  # indexed on expires_at: cheap, and keeps the table at the live sessions
            create_web_session(s, sid, token_id, now, self._ttl_s, self._max_age_s)
        return sid, WebSession(token_id=token_id, csrf=csrf_for(sid))

    def get(self, sid: str | None) -> WebSession | None:
        from flopwise.store import read_session, write_session
        from flopwise.store.web_sessions import TOUCH_EVERY_S, find_web_session, touch_web_session

        if not sid:
            return None
        now = self._state.clock()
        with read_session(self._state.db) as s:
            row = find_web_session(s, sid, now)
            if row is None:
                return None
            row_id, token_id, last_used = row.id, row.api_token_id, row.last_used_at
        if (now - last_used).total_seconds() >= TOUCH_EVERY_S:
            with write_session(self._state.db) as s:
                touch_web_session(s, row_id, now)
        return WebSession(token_id=token_id, csrf=csrf_for(sid))

    def drop(self, sid: str | None) -> None:
        from flopwise.store import write_session
        from flopwise.store.web_sessions import revoke_web_session

        if sid:
            with write_session(self._state.db) as s:
                revoke_web_session(s, sid, self._state.clock())


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one the request carried."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
