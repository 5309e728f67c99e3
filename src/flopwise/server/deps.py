"""FastAPI dependencies: the session factory, the clock, the catalog and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from flopwise.server.auth import Principal, PrincipalCache, cached_principal, principal_for_token

__all__ = ["CatalogDep", "ClockDep", "CurrentPrincipal", "DbDep", "SettingsDep"]


def get_db(request: Request) -> sessionmaker[Session]:
    """The session factory; routes open ``read_session(db)`` or ``write_session(db)`` themselves, so each write is
    one explicit transaction that commits before the response is built."""
    return request.app.state.db


def get_clock(request: Request) -> Callable[[], datetime]:
    """``now()`` in UTC; tests replace ``app.state.clock`` to move time (expiry, budget periods)."""
    return request.app.state.clock


def get_settings(request: Request) -> Any:
    return request.app.state.settings


def get_catalog(request: Request) -> Any:
    """The hardware catalog, loaded once per app on first use."""
    state = request.app.state
    if getattr(state, "catalog", None) is None:
        from flopwise.catalog import load_catalog

        state.catalog = load_catalog(state.settings.catalog_dir)
    return state.catalog


def principal_cache(state: Any) -> PrincipalCache:
    """The app's :class:`~flopwise.server.auth.PrincipalCache` (``Settings.auth_cache_s``), made on first use."""
    cache = getattr(state, "principal_cache", None)
    if cache is None:
        cache = state.principal_cache = PrincipalCache(getattr(state.settings, "auth_cache_s", 0.0))
    return cache


def get_principal(request: Request) -> Principal:
    """The caller: from the per-process cache when its token was seen within the TTL (no database), else one
    query (token, user and role bindings)."""
    from flopwise.store import read_session

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    state = request.app.state
    cache = principal_cache(state)
    now = state.clock()
    hit = cached_principal(cache, token or None, now)
    if hit is not None:
        return hit
    with read_session(state.db) as session:
        return principal_for_token(session, token or None, now, cache)


DbDep = Annotated[sessionmaker[Session], Depends(get_db)]
ClockDep = Annotated[Callable[[], datetime], Depends(get_clock)]
SettingsDep = Annotated[Any, Depends(get_settings)]
CatalogDep = Annotated[Any, Depends(get_catalog)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
