"""Alembic environment of the flopwise store, driven from code by :mod:`flopwise.store.migrate` (no alembic.ini).

The caller puts an open SQLAlchemy ``Connection`` in ``config.attributes["connection"]``; offline (``--sql``)
mode renders DDL for the URL in ``config.attributes["database_url"]``.
"""

from __future__ import annotations

from alembic import context

from flopwise.store.models import Base

target_metadata = Base.metadata
config = context.config


def _configure_common() -> dict:
    # batch mode lets later migrations ALTER tables on SQLite (copy-and-move); it is a no-op on PostgreSQL
    return {"target_metadata": target_metadata, "render_as_batch": True, "compare_type": True}


def run_migrations_offline() -> None:
    context.configure(url=config.attributes["database_url"], literal_binds=True, **_configure_common())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(connection=connection, **_configure_common())
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
