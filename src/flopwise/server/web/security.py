"""Browser sessions for the dashboard: an API token exchanged for a session cookie, CSRF tokens, security headers.

* **Login.** ``POST /login`` with an API token: the token is checked exactly as a bearer token is
  (:func:`flopwise.server.auth.principal_for_token`) and kept server-side; the browser gets a random session id
  in the cookie ``fw_session`` (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS, ``Path=/``). Every
  page resolves the session's token again, so a revoked or expired token, or a disabled user, ends the session
  at the next click. Sessions live in the server process and end after :data:`SESSION_TTL_S` of inactivity, at
  logout, or when the server restarts.
* **CSRF.** Each session has its own random CSRF token (synchronizer-token pattern, OWASP CSRF Prevention
  Cheat Sheet); every form carries it in the hidden field ``csrf`` and htmx sends it as the ``X-CSRF-Token``
  header. A POST without the session's token is refused with 403 before anything runs. The login form (no
  session yet) uses a double-submit cookie ``fw_login_csrf``.
* **Headers.** Dashboard responses carry ``Content-Security-Policy`` with ``script-src 'self'`` (no inline
  script, no eval: charts use the Vega expression interpreter), ``frame-ancestors 'none'``, ``nosniff`` and
  ``Referrer-Policy: same-origin``.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = [
    "CSP",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "SESSION_TTL_S",
    "SessionStore",
    "WebSession",
    "security_headers",
]

SESSION_COOKIE = "fw_session"
LOGIN_CSRF_COOKIE = "fw_login_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: idle lifetime of a browser session (8 hours)
SESSION_TTL_S = 8 * 3600.0
MAX_SESSIONS = 10_000
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


@dataclass
class WebSession:
    """A logged-in browser: the API token it logged in with (never sent back), its CSRF token, last use."""

    token: str
    csrf: str
    last_used: float = field(default_factory=time.monotonic)


class SessionStore:
    """Server-side sessions keyed by a random id (thread-safe; FastAPI runs sync routes in a thread pool)."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, clock=time.monotonic) -> None:
        self._sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()
        self._ttl_s = ttl_s
        self._clock = clock

    def create(self, token: str) -> tuple[str, WebSession]:
        sid = secrets.token_urlsafe(32)
        session = WebSession(token=token, csrf=secrets.token_urlsafe(32), last_used=self._clock())
        with self._lock:
            self._expire()
            if len(self._sessions) >= MAX_SESSIONS:  # drop the least recently used
                oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
                del self._sessions[oldest]
            self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> WebSession | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            now = self._clock()
            if now - session.last_used > self._ttl_s:
                del self._sessions[sid]
                return None
            session.last_used = now
            return session

    def drop(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)

    def _expire(self) -> None:
        now = self._clock()
        for sid in [k for k, s in self._sessions.items() if now - s.last_used > self._ttl_s]:
            del self._sessions[sid]


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one the request carried."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
