"""Alembic migrations run from code: ``upgrade(database_url)`` is ``alembic upgrade head`` without an alembic.ini.

The migration scripts live in ``flopwise/store/migrations`` inside the package, so an installed flopwise can
create or upgrade its database anywhere. :func:`schema_diff` is ``alembic check``: it lists the differences
between the models and the migrated database (empty when they agree).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from flopwise.store.models import Base
from flopwise.store.session import make_engine

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "schema_diff",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str | URL | None = None) -> Config:
    """An Alembic ``Config`` for flopwise's migrations (``script_location`` set, no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # file names of new revisions: 0002_<slug>.py (set the revision id with --rev-id 0002)
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if database_url is not None:
        config.attributes["database_url"] = (
            str(database_url) if isinstance(database_url, str) else database_url
        )
    return config


def _with_engine(database_url: str | URL | Engine | None) -> tuple[Engine, bool]:
    if isinstance(database_url, Engine):
        return database_url, False
    return make_engine(database_url), True


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction for the migrations. On SQLite, foreign keys are off while batch mode copies
    and moves a table (SQLite's own procedure for schema changes, https://www.sqlite.org/lang_altertable.html
    section 7), and ``PRAGMA foreign_key_check`` must come back empty before the transaction commits."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        if sqlite:  # outside any transaction, where the pragma takes effect
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {broken[:5]}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(database_url: str | URL | Engine | None = None, revision: str = "head") -> None:
    """Migrate the database to *revision* (default the newest). Safe to repeat: at head it does nothing.

    *database_url* may also be an ``Engine`` (it is then left open); ``None`` means the default database.
    """
    engine, owned = _with_engine(database_url)
    try:
        with _migrating(engine) as connection:
            config = alembic_config(engine.url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if owned:
            engine.dispose()


def downgrade(database_url: str | URL | Engine | None, revision: str) -> None:
    """Migrate the database down to *revision* (``"base"`` drops every table: all data is lost)."""
    engine, owned = _with_engine(database_url)
    try:
        with _migrating(engine) as connection:
            config = alembic_config(engine.url)
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        if owned:
            engine.dispose()


def head_revision() -> str:
    """The newest revision id of the migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "flopwise's migration scripts have no head revision"
    return head


def current_revision(database_url: str | URL | Engine | None = None) -> str | None:
    """The revision the database is at, or ``None`` for a database never migrated."""
    engine, owned = _with_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def schema_diff(database_url: str | URL | Engine | None = None) -> list[Any]:
    """``alembic check``: Alembic's autogenerate differences between the models and the database ([] if none)."""
    engine, owned = _with_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        if owned:
            engine.dispose()
