"""The test PostgreSQL server: connection, reachability, and a throwaway database per test module.

``$FLOPWISE_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` (trust auth, as in CI).
:func:`throwaway_database_url` gives the URL of an empty database on either backend: a SQLite file in a fresh
temporary directory, or a new PostgreSQL schema (dropped afterwards) selected through ``search_path`` in the
URL, so migrations run from empty exactly as on a new server. When PostgreSQL is unreachable the test is
skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

PG_URL = os.environ.get("FLOPWISE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def pg_connect(**kwargs: Any) -> Any:
    """A psycopg connection to the database of :data:`PG_URL` (*kwargs* go to ``psycopg.connect``)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        **kwargs,
    )


def pg_unreachable_reason() -> str | None:
    """Why the test PostgreSQL server cannot be used (password hidden), or None when it can."""
    import psycopg
    from sqlalchemy.engine import make_url

    try:
        pg_connect(connect_timeout=3).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        shown = make_url(PG_URL).render_as_string(hide_password=True)
        return (
            f"PostgreSQL at {shown} is unreachable ({type(exc).__name__}: {first}); "
            "set FLOPWISE_TEST_POSTGRES_URL"
        )
    return None


def skip_or_fail(reason: str) -> None:
    """Skip a PostgreSQL test locally when no server is reachable; in CI (``CI`` set) fail instead.

    ``.ci/run`` installs and starts PostgreSQL when none answers, so an unreachable server there is a broken
    run, not a reason to report fewer tests.
    """
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def pg_admin(sql: str) -> None:
    """Run one statement on the test server in autocommit mode (``CREATE SCHEMA``, ``DROP SCHEMA``...)."""
    with pg_connect(autocommit=True) as conn:
        conn.execute(sql)


def schema_url(schema: str) -> str:
    """:data:`PG_URL` with ``search_path`` set to *schema*."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def throwaway_database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, label: str
) -> Iterator[str]:
    """The URL of an empty database on *backend* (``sqlite`` or ``postgresql``), removed afterwards.

    ``sqlite``: ``flopwise.db`` in a new temporary directory named after *label*. ``postgresql``: a new schema
    ``flopwise_<label>_<random>``, dropped on exit; skips the test with the reason if the server is unreachable.
    """
    if backend == "sqlite":
        yield "sqlite:///" + (tmp_path_factory.mktemp(label) / "flopwise.db").as_posix()
        return
    reason = pg_unreachable_reason()
    if reason:
        skip_or_fail(reason)
    schema = f"flopwise_{label}_{uuid.uuid4().hex[:10]}"
    pg_admin(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(schema)
    finally:
        pg_admin(f"DROP SCHEMA {schema} CASCADE")
