"""``create_app(settings)`` builds the whole server: engine, migrations, session factory, routes, error handler."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from flopwise.server.errors import install_error_handlers
from flopwise.server.settings import Settings

__all__ = ["app_from_env", "create_app"]


def _version() -> str:
    try:
        return version("flopwise")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. Nothing global: each call has its own engine, so tests build one per database."""
    from flopwise.server.api import API_ROUTERS
    from flopwise.store import make_engine, make_session_factory, upgrade
    from flopwise.store.types import utcnow

    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url())
    if settings.migrate_on_start:
        upgrade(engine)
    from flopwise.store import current_revision

    app = FastAPI(
        title="flopwise",
        version=_version(),
        description="Compute governance: organizations, budgets, quotas, policies, compute requests, approvals, "
        "admission decisions and a hash-chained audit log, backed by flopwise's estimates.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.db = make_session_factory(engine)
    app.state.clock = utcnow
    app.state.catalog = None
    app.state.schema_revision = current_revision(engine)  # what /health reports, read once
    from anyio import CapacityLimiter

    app.state.write_limiter = CapacityLimiter(settings.resolved_write_threads())  # flopwise.server.deps.in_write_thread
    install_error_handlers(app)
    from flopwise.server.guard import InputGuard

    app.add_middleware(InputGuard, max_body_bytes=settings.max_body_bytes)
    for router in API_ROUTERS:
        app.include_router(router, prefix="/api/v1")
    from flopwise.server.web import install_web

    install_web(app)
    return app


def app_from_env() -> FastAPI:
    """The app of one worker process of ``flopwise serve --workers N`` (uvicorn's factory): settings from the
    FLOPWISE_* environment the parent set (database URL; migrations already run by the parent)."""
    return create_app(Settings())
