"""Database URL defaults, engine settings per backend, and the SQLite transaction modes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from flopwise.errors import InputError
from flopwise.store import (
    DATABASE_URL_ENV,
    Organization,
    begin_write,
    default_database_url,
    make_engine,
    make_session_factory,
    read_session,
    user_data_dir,
    write_session,
)


def test_env_var_overrides_default():
    env = {DATABASE_URL_ENV: "postgresql+psycopg://u@db:5432/gov", "HOME": "/home/ada"}
    assert default_database_url(env, "linux") == "postgresql+psycopg://u@db:5432/gov"


@pytest.mark.parametrize(
    ("env", "platform", "expected"),
    [
        ({"HOME": "/home/ada"}, "linux", "/home/ada/.local/share/flopwise"),
        ({"HOME": "/home/ada", "XDG_DATA_HOME": "/data/xdg"}, "linux", "/data/xdg/flopwise"),
        # the XDG spec: a relative XDG_DATA_HOME is invalid and ignored
        ({"HOME": "/home/ada", "XDG_DATA_HOME": "rel/path"}, "linux", "/home/ada/.local/share/flopwise"),
        ({"HOME": "/Users/ada"}, "darwin", "/Users/ada/Library/Application Support/flopwise"),
        (
            {"HOME": "/u", "LOCALAPPDATA": "C:/Users/ada/AppData/Local"},
            "win32",
            "C:/Users/ada/AppData/Local/flopwise",
        ),
    ],
)
def test_user_data_dir_per_platform(env, platform, expected):
    assert user_data_dir(env, platform).as_posix() == expected
    assert default_database_url(env, platform) == f"sqlite:///{expected}/flopwise.db"


def test_postgres_urls_get_psycopg3():
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        engine = make_engine(url)
        assert engine.url.drivername == "postgresql+psycopg"
        engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url at all"])
def test_unsupported_or_bad_url_names_the_field(url):
    with pytest.raises(InputError, match="database_url") as info:
        make_engine(url)
    assert "sqlite:///" in str(info.value)


def test_sqlite_pragmas_and_parent_dir(tmp_path: Path, monkeypatch):
    path = tmp_path / "nested" / "dir" / "flopwise.db"
    # an explicit URL whose directory is missing is refused (a typo must not create directories) ...
    with pytest.raises(InputError, match="does not exist"):
        make_engine(f"sqlite:///{path}")
    assert not (tmp_path / "nested").exists()
    # ... a read of a missing file too (no empty database that reports zeros) ...
    with pytest.raises(InputError, match="no database file"):
        make_engine(f"sqlite:///{tmp_path / 'missing.db'}", must_exist=True)
    assert not (tmp_path / "missing.db").exists()
    # ... while the default database's per-user directory is created
    monkeypatch.delenv("FLOPWISE_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "nested" / "dir"))
    path = tmp_path / "nested" / "dir" / "flopwise" / "flopwise.db"
    engine = make_engine()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert path.parent.is_dir()
    engine.dispose()


def test_import_builds_nothing(tmp_path: Path):
    """Importing the store connects to nothing and creates no file (the engine is built only when asked)."""
    code = (
        "import os, flopwise.store, sqlalchemy.pool;"
        "assert not os.path.exists(os.path.join(os.environ['XDG_DATA_HOME'], 'flopwise'))"
    )
    env = {"XDG_DATA_HOME": str(tmp_path), "HOME": str(tmp_path), "PATH": ""}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_write_session_begins_immediate_and_read_session_deferred(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    factory = make_session_factory(engine)
    with write_session(factory) as writer:
        writer.execute(text("CREATE TABLE t (x INTEGER)"))
    with write_session(factory) as writer:
        writer.execute(text("INSERT INTO t VALUES (1)"))
        # while a writer holds the lock, a reader still reads (WAL) but a second writer cannot begin
        with read_session(factory) as reader:
            assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
        other = sqlite3.connect(tmp_path / "f.db", timeout=0.05, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
    with read_session(factory) as reader:
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 1
    engine.dispose()


def test_begin_write_refuses_a_deferred_sqlite_transaction(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    factory = make_session_factory(engine)
    with factory() as session:
        session.execute(text("SELECT 1"))
        with pytest.raises(RuntimeError, match="write_session"):
            begin_write(session)
        session.rollback()
        begin_write(session)  # a new transaction may start as a writer
        session.rollback()
    engine.dispose()


def test_write_session_rolls_back_on_error(factory):
    with pytest.raises(ZeroDivisionError), write_session(factory) as session:
        session.add(Organization(name="rolled-back-org"))
        session.flush()
        1 / 0  # noqa: B018
    with read_session(factory) as session:
        assert session.query(Organization).filter_by(name="rolled-back-org").count() == 0


def test_a_postgresql_connection_closed_while_idle_in_the_pool_is_replaced(monkeypatch, tmp_path_factory) -> None:
    """The pool pings a connection idle longer than POOL_PING_IDLE_S before handing it out (a busy server's
    connections, used moments ago, are handed out without the round trip): one the server closed meanwhile is
    replaced, and the caller never sees the error."""
    import flopwise.store.session as store_session
    from flopwise.store import make_engine
    from pgutil import pg_connect, throwaway_database_url

    with throwaway_database_url("postgresql", tmp_path_factory, "ping") as url:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                first = conn.scalar(text("SELECT pg_backend_pid()"))
            with pg_connect(autocommit=True) as admin:  # the server closes the pooled connection
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            monkeypatch.setattr(store_session.time, "monotonic", lambda: 1e12)  # idle for ages
            with engine.connect() as conn:
                second = conn.scalar(text("SELECT pg_backend_pid()"))
            assert second != first
        finally:
            engine.dispose()
