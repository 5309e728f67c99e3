"""The server's one settings object (pydantic-settings): environment variables FLOPWISE_*, or arguments."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything ``create_app`` needs. Nothing is read at import time: build one and pass it in.

    ``database_url`` defaults to the embedded SQLite file in the per-user data directory
    (``flopwise.store.default_database_url()``); set ``FLOPWISE_DATABASE_URL`` for PostgreSQL
    (``postgresql+psycopg://user@host/db``).
    """

    model_config = SettingsConfigDict(env_prefix="FLOPWISE_", extra="ignore")

    database_url: str | None = Field(default=None, description="SQLAlchemy URL; None = embedded SQLite.")
    catalog_dir: str | None = Field(default=None, description="Catalog override directory (as --catalog).")
    request_expiry_hours: float = Field(default=72.0, gt=0, description="Pending requests expire after this.")
    token_default_ttl_days: float = Field(
        default=90.0, gt=0, description="Default lifetime of new API tokens."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body (bytes); larger ones get 413."
    )
    auth_cache_s: float = Field(
        default=2.0,
        ge=0,
        description="Seconds a worker keeps a token's principal without asking the database (0: never). Revoking a "
        "token or changing roles takes effect at once in the process that made the change, within this in others.",
    )
    write_threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Threads a worker runs request creations and admission decisions in at once; more wait in the "
        "event loop for one of them (see docs/server.md, 'Write threads').",
    )
    migrate_on_start: bool = Field(
        default=True, description="Run Alembic `upgrade head` when the app starts."
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        from flopwise.store import default_database_url

        return default_database_url()
