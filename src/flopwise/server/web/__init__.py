"""The web dashboard: server-rendered pages (Jinja2 + htmx) in the API's FastAPI process.

:func:`install_web` mounts the pages at ``/`` (``/login``, ``/usage``, ``/budgets``, ...) and the static files
(the app's CSS and JavaScript and the vendored htmx and Vega libraries, see ``static/vendor/VENDOR.md``) at
``/static``. Pages call the same store queries and API route functions as ``/api/v1``, so authorization and
business rules live in one place; chart specs come from the pure builders of :mod:`.charts`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["STATIC_DIR", "TEMPLATE_DIR", "install_web"]

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATE_DIR = Path(__file__).parent / "templates"


def install_web(app: Any) -> None:
    """Add the dashboard's routes, static files, session store and security headers to *app*."""
    from fastapi.staticfiles import StaticFiles

    from flopwise.server.web.routes import install_handlers, router
    from flopwise.server.web.security import SessionStore

    app.state.web_sessions = SessionStore(app.state)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
    install_handlers(app)
