"""FastAPI dependencies: the session factory, the clock, the catalog and the authenticated principal.

They are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, one hand-off per dependency
per request (five on the write path, ~0.1 ms of CPU each), while these only read ``app.state``. What may block
(the first catalog load, a token not in the cache) is sent to the thread pool explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from flopwise.server.auth import Principal, PrincipalCache, cached_principal, principal_for_token

__all__ = [
    "CatalogDep",
    "ClockDep",
    "CurrentPrincipal",
    "DbDep",
    "SettingsDep",
    "WriteContext",
    "WriteContextDep",
    "in_write_thread",
]

T = TypeVar("T")


async def get_db(request: Request) -> sessionmaker[Session]:
    """The session factory; routes open ``read_session(db)`` or ``write_session(db)`` themselves, so each write is
    one explicit transaction that commits before the response is built."""
    return request.app.state.db


async def get_clock(request: Request) -> Callable[[], datetime]:
    """``now()`` in UTC; tests replace ``app.state.clock`` to move time (expiry, budget periods)."""
    return request.app.state.clock


async def get_settings(request: Request) -> Any:
    return request.app.state.settings


def get_catalog(request: Request) -> Any:
    """The hardware catalog, loaded once per app on first use (reads files: call it from a thread, or through
    the :data:`CatalogDep` dependency)."""
    state = request.app.state
    if getattr(state, "catalog", None) is None:
        from flopwise.catalog import load_catalog

        state.catalog = load_catalog(state.settings.catalog_dir)
    return state.catalog


async def _catalog(request: Request) -> Any:
    """:func:`get_catalog` as a dependency: no thread hand-off once the catalog is loaded, the first load in the
    thread pool."""
    catalog = getattr(request.app.state, "catalog", None)
    if catalog is not None:
        return catalog
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(get_catalog, request)


def principal_cache(state: Any) -> PrincipalCache:
    """The app's :class:`~flopwise.server.auth.PrincipalCache` (``Settings.auth_cache_s``), made on first use."""
    cache = getattr(state, "principal_cache", None)
    if cache is None:
        cache = state.principal_cache = PrincipalCache(getattr(state.settings, "auth_cache_s", 0.0))
    return cache


async def get_principal(request: Request) -> Principal:
    """The caller: from the per-process cache when its token was seen within the TTL (no database, no thread
    hand-off), else one query (token, user and role bindings) in the thread pool."""
    from starlette.concurrency import run_in_threadpool

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    state = request.app.state
    cache = principal_cache(state)
    now = state.clock()
    hit = cached_principal(cache, token or None, now)
    if hit is not None:
        return hit
    return await run_in_threadpool(_principal_from_db, state.db, token or None, now, cache)


def _principal_from_db(
    db: sessionmaker[Session], token: str | None, now: datetime, cache: PrincipalCache
) -> Principal:
    from flopwise.store import read_session

    with read_session(db) as session:
        return principal_for_token(session, token, now, cache)


@dataclass(frozen=True)
class WriteContext:
    """What the write routes (request creation, admission decide) need, as one dependency: each dependency costs
    FastAPI a resolution step per request, so the hot routes take these five in one."""

    principal: Principal
    db: sessionmaker[Session]
    clock: Callable[[], datetime]
    catalog: Any
    settings: Any


async def get_write_context(request: Request) -> WriteContext:
    """:class:`WriteContext`: the caller (as :data:`CurrentPrincipal`), the session factory, the clock, the
    catalog (as :data:`CatalogDep`) and the settings."""
    principal = await get_principal(request)
    state = request.app.state
    catalog = state.catalog if state.catalog is not None else await _catalog(request)
    return WriteContext(principal, state.db, state.clock, catalog, state.settings)


async def in_write_thread(request: Request, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a worker thread, at most ``Settings.write_threads`` of them at once per process (the
    app's ``write_limiter``); the request waits in the event loop for a free one.

    Why bounded: FastAPI runs a plain ``def`` route in anyio's pool of 40 threads, so 16 concurrent writes are
    16 threads contending for the GIL, each switch costing CPU and each write holding its database connection
    (and, in its write transaction, its budget locks) longer, and more writes in flight than the engine's pool
    holds (5) make it open and close overflow connections (a PostgreSQL backend each). A few threads keep this
    process's CPU busy while others wait on database round trips (docs/server.md, "Write threads", for the
    measurements behind the defaults: 4 on PostgreSQL; 40 on SQLite, where a lower limit cost throughput).
    """
    import anyio.to_thread

    return await anyio.to_thread.run_sync(func, *args, limiter=request.app.state.write_limiter)


DbDep = Annotated[sessionmaker[Session], Depends(get_db)]
ClockDep = Annotated[Callable[[], datetime], Depends(get_clock)]
SettingsDep = Annotated[Any, Depends(get_settings)]
CatalogDep = Annotated[Any, Depends(_catalog)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
WriteContextDep = Annotated[WriteContext, Depends(get_write_context)]
