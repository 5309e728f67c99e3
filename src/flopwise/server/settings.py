"""The server's one settings object (pydantic-settings): environment variables FLOPWISE_*, or arguments."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_WRITE_THREADS", "SQLITE_WRITE_THREADS", "Settings"]

#: write threads of a server on PostgreSQL, in all (``Settings.write_threads``): measured best on 2 cores with
#: PostgreSQL beside the server, 4 threads in one worker or 2 in each of two (docs/server.md, "Write threads")
DEFAULT_WRITE_THREADS = 4
#: write threads on SQLite: anyio's own thread pool size, as before the limit. There a limit of 4 or 16 cost
#: throughput (16 clients: 418 -> 227 and 248 req/s, 2.6 -> 4.7 and 4.3 ms of CPU per creation) while it
#: shortened the busy handler's tail (p99 742 -> 282 ms); docs/server.md, "Write threads"
SQLITE_WRITE_THREADS = 40


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
    write_threads: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Threads a worker runs request creations and admission decisions in at once; more wait in the "
        "event loop for one of them. None: see resolved_write_threads() (docs/server.md, 'Write threads').",
    )
    migrate_on_start: bool = Field(
        default=True, description="Run Alembic `upgrade head` when the app starts."
    )

    def resolved_write_threads(self, workers: int = 1) -> int:
        """``write_threads`` when given; else on PostgreSQL :data:`DEFAULT_WRITE_THREADS` shared out among
        *workers* processes (at least 1 each), on SQLite :data:`SQLITE_WRITE_THREADS`."""
        if self.write_threads is not None:
            return self.write_threads
        from sqlalchemy.engine import make_url

        if make_url(self.resolved_database_url()).get_backend_name() == "sqlite":
            return SQLITE_WRITE_THREADS
        return max(1, DEFAULT_WRITE_THREADS // workers)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        from flopwise.store import default_database_url

        return default_database_url()
