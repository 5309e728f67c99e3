"""The governance server: FastAPI under /api/v1, built by :func:`create_app`. Imported lazily by the CLI."""

from flopwise.server.app import create_app
from flopwise.server.settings import Settings

__all__ = ["Settings", "create_app"]
