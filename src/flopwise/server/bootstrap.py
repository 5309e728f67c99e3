"""The first organization of a new server: the organization, its admin user and the admin's API token.

``flopwise admin bootstrap`` calls :func:`bootstrap` against the database directly (there is no token to
call the API with yet). It refuses when an organization exists already, unless ``allow_existing=True``
(a second, separate organization on the same server). The token is returned once and only its hash is
stored. The whole thing is one transaction, with an ``org.bootstrap`` entry in the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from flopwise.errors import InputError

__all__ = ["DEFAULT_ADMIN_NAME", "DEFAULT_ORG_NAME", "DEFAULT_TOKEN_TTL_DAYS", "bootstrap"]

DEFAULT_ORG_NAME = "default"
DEFAULT_ADMIN_NAME = "admin"
#: the bootstrap token's lifetime when none is given (the server's default token lifetime)
DEFAULT_TOKEN_TTL_DAYS = 90.0


def _clean_name(field: str, value: str) -> str:
    name = (value or "").strip()
    if not name or len(name) > 200:
        raise InputError(field, value, "give a name of 1 to 200 characters")
    return name


def bootstrap(
    session_factory: sessionmaker[Session],
    org_name: str,
    admin_name: str,
    now: datetime,
    *,
    allow_existing: bool = False,
    token_ttl_days: float | None = DEFAULT_TOKEN_TTL_DAYS,
    email: str | None = None,
) -> tuple[Any, Any, str]:
    """Create an organization, its admin (role ``admin`` on the organization) and an API token for them.

    Returns ``(org, user, token)``: the ``Organization`` and ``User`` rows (committed, detached) and the
    bearer token, the only copy there is (its row is ``token.split("_")[1]``'s prefix in ``api_tokens``). Raises ``InputError`` when an organization exists and
    *allow_existing* is false, when *org_name* is taken, or for an empty name. ``token_ttl_days=None`` makes
    a token that never expires.
    """
    from flopwise.server.api.audit import record_audit
    from flopwise.server.api.tokens import issue_token
    from flopwise.store import Organization, RoleBinding, User, write_session

    org_name = _clean_name("org_name", org_name)
    admin_name = _clean_name("admin_name", admin_name)
    if now.tzinfo is None or now.utcoffset() is None:
        raise InputError("now", now, "give a timezone-aware datetime (UTC)")
    if token_ttl_days is not None and not 0 < token_ttl_days <= 3650:
        raise InputError("token_ttl_days", token_ttl_days, "give a lifetime between 0 and 3650 days")
    with write_session(session_factory) as s:
        existing = s.scalars(select(Organization.name).order_by(Organization.id).limit(5)).all()
        if existing and not allow_existing:
            raise InputError(
                "org_name",
                org_name,
                f"this database already has an organization ({', '.join(map(repr, existing))}); bootstrap only "
                "creates the first one. Use an admin token for everything else, or pass --allow-existing to "
                "create another, separate organization",
            )
        if org_name in existing or s.scalar(select(Organization.id).where(Organization.name == org_name)):
            raise InputError(
                "org_name", org_name, "an organization with this name exists; choose another name"
            )
        org = Organization(name=org_name, created_at=now)
        s.add(org)
        s.flush()
        user = User(org_id=org.id, name=admin_name, email=email, is_active=True, created_at=now)
        s.add(user)
        s.flush()
        s.add(RoleBinding(user_id=user.id, role="admin", scope_kind="org", scope_id=org.id, created_at=now))
        row, token = issue_token(s, user.id, "bootstrap", now, token_ttl_days)
        record_audit(
            s,
            actor="system",
            action="org.bootstrap",
            payload={
                "org_id": org.id,
                "org_name": org.name,
                "admin_user_id": user.id,
                "admin_name": user.name,
                "token_id": row.id,
                "token_prefix": row.prefix,
                "token_expires_at": row.expires_at,
            },
            at=now,
            org_id=org.id,
        )
    return org, user, token
