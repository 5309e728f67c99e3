"""Database URL, engine and session factory. Nothing is built at import time; callers pass what they built.

SQLite (the embedded default) is opened with WAL journaling (readers never block the writer), foreign keys on,
and a busy timeout so concurrent writers queue instead of failing. pysqlite's own implicit transactions are
turned off and flopwise emits ``BEGIN`` itself, so a session that is going to write can start its transaction
as ``BEGIN IMMEDIATE`` (see :func:`begin_write`).

Why ``BEGIN IMMEDIATE``: a plain (deferred) SQLite transaction takes the write lock only at its first write.
Two writers that first read a budget's spent sum and then insert a reservation would both read the same sum;
in WAL mode the second one's upgrade to writer then fails with ``SQLITE_BUSY`` (its snapshot is stale), which
the busy timeout cannot wait out. ``BEGIN IMMEDIATE`` takes the write lock before the first read, so writers
queue on the busy timeout and each one reads the sum its predecessor committed. SQLite has no row locks; this
is its equivalent of PostgreSQL's ``SELECT ... FOR UPDATE`` on the budget rows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from flopwise.errors import InputError

__all__ = [
    "DATABASE_URL_ENV",
    "SQLITE_BUSY_TIMEOUT_S",
    "begin_write",
    "default_database_url",
    "make_engine",
    "make_session_factory",
    "pinned_session",
    "read_session",
    "read_transaction",
    "user_data_dir",
    "write_session",
    "write_transaction",
    "PreparedStatement",
]

#: environment variable that overrides the default database
DATABASE_URL_ENV = "FLOPWISE_DATABASE_URL"
#: how long a SQLite writer waits for the write lock before giving up
SQLITE_BUSY_TIMEOUT_S = 30.0
#: page size of a new SQLite database file (SQLite's default is 4096; an existing file keeps its own). A ledger
#: row is ~1.2 KB, three to a 4 KiB page: 16 KiB pages take ~0.5x the commit (WAL write and checkpoint) CPU of
#: a FOCUS ingest (docs/ingest/index.md, "SQLite write")
SQLITE_PAGE_SIZE = 16384
#: a pooled PostgreSQL connection idle for longer than this is pinged before it is handed out (a server restart,
#: or an idle timeout, closes connections behind the pool's back: the ping finds it and the pool connects
#: again); one used more recently is handed out as is, which saves the ping's round trip on every request of a
#: busy server (a connection that died within this time fails one statement, which invalidates the pool)
POOL_PING_IDLE_S = 2.0
#: connection execution option read by the ``begin`` hook: "DEFERRED" (default) or "IMMEDIATE"
_SQLITE_BEGIN_OPTION = "flopwise_sqlite_begin"
#: key in ``Session.info``: the BEGIN mode of the session's current SQLite transaction
_SESSION_BEGIN_KEY = "flopwise_sqlite_begin"
_APP_NAME = "flopwise"


def user_data_dir(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The per-user data directory of flopwise, as platformdirs would compute it (stdlib only).

    Linux and other Unix: ``$XDG_DATA_HOME/flopwise`` (default ``~/.local/share/flopwise``);
    macOS: ``~/Library/Application Support/flopwise``; Windows: ``%LOCALAPPDATA%\\flopwise``.
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or env.get("APPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / _APP_NAME
    if platform == "darwin":
        return home / "Library" / "Application Support" / _APP_NAME
    xdg = env.get("XDG_DATA_HOME", "").strip()
    # the XDG spec says relative paths in XDG_* are invalid and must be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base / _APP_NAME


def default_database_url(env: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """``$FLOPWISE_DATABASE_URL`` if set, else a SQLite file ``flopwise.db`` in :func:`user_data_dir`."""
    env = os.environ if env is None else env
    url = env.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    return "sqlite:///" + (user_data_dir(env, platform) / "flopwise.db").as_posix()


def _normalize_url(database_url: str | URL) -> URL:
    try:
        url = make_url(database_url)
    except Exception:  # sqlalchemy.exc.ArgumentError, ValueError: both mean "not a URL"
        raise InputError(
            "database_url",
            str(database_url),
            "give a SQLAlchemy URL such as 'sqlite:///path/flopwise.db' or "
            "'postgresql+psycopg://user@host:5432/dbname'",
        ) from None
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        # psycopg 3 is the PostgreSQL driver flopwise depends on; psycopg2 is SQLAlchemy's default
        if url.drivername in ("postgres", "postgresql"):
            url = url.set(drivername="postgresql+psycopg")
        if url.drivername == "postgresql+psycopg" and importlib.util.find_spec("psycopg") is None:
            raise InputError(
                "database_url",
                url.render_as_string(hide_password=True),
                "PostgreSQL needs the psycopg driver, an optional extra: pip install 'flopwise[postgres]'",
            )
    elif backend != "sqlite":
        raise InputError(
            "database_url",
            url.render_as_string(hide_password=True),
            "flopwise supports SQLite ('sqlite:///file.db') and PostgreSQL ('postgresql+psycopg://...')",
        )
    return url


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money stays exact: decimal strings in JSON, as in the estimate JSON
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} {value!r} cannot be stored in a JSON column")


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=False)


def make_engine(
    database_url: str | URL | None = None, *, must_exist: bool = False, **engine_options: Any
) -> Engine:
    """Build the engine for *database_url* (default :func:`default_database_url`).

    ``postgresql://`` URLs get the psycopg 3 driver. The default SQLite file's parent directory (the per-user
    data directory) is created; for any other SQLite file a missing directory is an InputError (a typo must not
    create directories), and with *must_exist* (commands that only read) so is a missing file, rather than an
    empty database that reports zeros. Extra keyword arguments go to :func:`sqlalchemy.create_engine` (e.g.
    ``pool_size``, ``echo``). JSON columns serialize ``Decimal`` as a string and datetimes as ISO 8601 text.
    """
    default = _normalize_url("sqlite:///" + (user_data_dir() / "flopwise.db").as_posix())
    url = _normalize_url(default_database_url() if database_url is None else database_url)
    options: dict[str, Any] = {"json_serializer": _json_dumps}
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        is_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not is_memory and not url.query.get("uri"):
            _check_sqlite_path(
                Path(database).expanduser(), url, is_default=url == default, must_exist=must_exist
            )
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    options.update(engine_options)
    engine = create_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine, is_memory)
    elif not options.get("pool_pre_ping"):
        _install_idle_ping(engine, POOL_PING_IDLE_S)
    return engine


def _install_idle_ping(engine: Engine, idle_s: float) -> None:
    """``pool_pre_ping`` for connections idle longer than *idle_s* only (SQLAlchemy's pessimistic disconnect
    handling, with the ping skipped for a connection checked in moments ago): a failed ping raises
    ``DisconnectionError``, on which the pool drops the connection and hands out a new one."""
    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["flopwise_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("flopwise_idle_since")
        if since is None or time.monotonic() - since < idle_s:  # None: connected just now
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as err:
            raise DisconnectionError(f"pooled connection closed while idle: {err}") from err


def _check_sqlite_path(path: Path, url: URL, *, is_default: bool, must_exist: bool) -> None:
    """Create the default database's directory; refuse a missing directory (or file, with *must_exist*) else."""
    from flopwise.errors import InputError

    shown = url.render_as_string(hide_password=True)
    fix = "fix the path (--database-url or FLOPWISE_DATABASE_URL)"
    if must_exist and not path.is_file():
        raise InputError(
            "database URL", shown, f"there is no database file at {path}; {fix}, or ingest first"
        )
    if is_default:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise InputError(
            "database URL", shown, f"the directory {path.parent} does not exist; create it or {fix}"
        )


def _install_sqlite_hooks(engine: Engine, is_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control away from pysqlite: it would otherwise BEGIN (deferred) on its own
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not is_memory:
                # takes effect on a new, empty file only (before WAL mode: a WAL database keeps its page size)
                cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A ``sessionmaker`` bound to *engine*; its sessions remember how their SQLite transaction began.

    ``expire_on_commit=False`` so rows read in a transaction stay usable after it commits (the API returns them).
    """
    factory = sessionmaker(bind=engine, expire_on_commit=False)

    @event.listens_for(factory, "after_begin")
    def _after_begin(session: Session, transaction: SessionTransaction, connection: Any) -> None:
        if connection.dialect.name == "sqlite":
            session.info[_SESSION_BEGIN_KEY] = connection.get_execution_options().get(
                _SQLITE_BEGIN_OPTION, "DEFERRED"
            )

    @event.listens_for(factory, "after_transaction_end")
    def _after_end(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            session.info.pop(_SESSION_BEGIN_KEY, None)

    return factory


def begin_write(session: Session) -> None:
    """Make sure *session*'s transaction holds the database write lock from its start.

    PostgreSQL: nothing to do (row locks are taken by the queries that need them). SQLite: if the session has
    not touched the database yet, start its transaction with ``BEGIN IMMEDIATE``. If it already started a
    deferred transaction, raise ``RuntimeError``: its snapshot may be stale, so it cannot safely become the
    writer; open it with :func:`write_session` or call this before the first query.
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    mode = session.info.get(_SESSION_BEGIN_KEY)
    if mode is None:
        session.connection(execution_options={_SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        if _SESSION_BEGIN_KEY not in session.info:
            raise RuntimeError(
                "begin_write: this session does not come from flopwise.store.make_session_factory(), so its "
                "SQLite transaction mode cannot be checked; build sessions with make_session_factory(engine)"
            )
        return
    if mode != "IMMEDIATE":
        raise RuntimeError(
            "begin_write: this SQLite session already started a deferred transaction, which cannot safely "
            "take the write lock; open it with flopwise.store.write_session(factory) or call begin_write() "
            "before its first query"
        )


@contextmanager
def write_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction holds the write lock from the start; commits on success, rolls back on error."""
    with factory() as session, write_transaction(session):
        yield session


@contextmanager
def read_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads (a deferred transaction on SQLite, never blocking writers); rolled back at the end."""
    with factory() as session:
        try:
            yield session
        finally:
            session.rollback()


@contextmanager
def pinned_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session of *factory* bound to one pooled connection for its whole life, so a read transaction and a
    write transaction after it (:func:`read_transaction`, :func:`write_transaction`) check the connection out
    of the pool (and ping it) once, not once per transaction."""
    engine = factory.kw["bind"]
    with engine.connect() as connection, factory(bind=connection) as session:
        yield session


@contextmanager
def read_transaction(session: Session, *, then_write: bool = False) -> Iterator[Session]:
    """A read transaction on an open *session* (as :func:`read_session`), rolled back at the end: a route that
    reads, then writes (:func:`write_transaction`) uses one session and one pooled connection for both.

    ``then_write=True`` says a :func:`write_transaction` follows at once: on PostgreSQL at ``READ COMMITTED``
    (the default) the transaction is then left open for it instead of rolled back, which saves the
    ``ROLLBACK`` and ``BEGIN`` round trips and reads the same (each statement sees what is committed when it
    starts, in one transaction or two; plain reads take no row locks). Rolled back on an error, and always on
    SQLite (whose writer must start its transaction with ``BEGIN IMMEDIATE``) or at another isolation level.
    """
    keep = False
    try:
        yield session
        keep = then_write and _reads_committed(session)
    finally:
        if not keep:
            session.rollback()


def _reads_committed(session: Session) -> bool:
    """PostgreSQL at ``READ COMMITTED`` (the engine's default level, not changed for this connection)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    connection = session.connection()
    level = connection.get_execution_options().get("isolation_level") or connection.default_isolation_level
    return level == "READ COMMITTED"


@contextmanager
def write_transaction(session: Session) -> Iterator[Session]:
    """A write transaction on an open *session* that has no transaction now (as :func:`write_session`: the
    SQLite write lock from its start); commits on success, rolls back on error."""
    begin_write(session)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


class PreparedStatement:
    """A Core statement the write path runs on every request, compiled once per dialect; on PostgreSQL executed
    on the session's psycopg connection as a server-side prepared statement (``prepare=True``), with
    SQLAlchemy's own bind and result processors (``Money``, ``UTCDateTime``, JSON) applied, but without its
    per-execution machinery (execution context, parameter construction, result metadata: about 0.1 ms of CPU
    per statement, half the cost of a short statement; ``bench/bench_hot_path.py``). Elsewhere (SQLite) it runs
    through SQLAlchemy as before.

    The statement runs in the session's transaction (``session.connection()`` begins it), errors are raised as
    SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` subclasses, the connection invalidated on a disconnect), and the
    engine's ``before_cursor_execute`` / ``after_cursor_execute`` listeners see it (statement counts stay honest).
    Rows are named tuples (``row.id``, ``row[0]``) as SQLAlchemy's ``Row``. Expanding ``IN`` parameters are not
    supported (give PostgreSQL an array: ``= ANY(:ids)``); ``IN`` over constant lists is.
    """

    __slots__ = ("statement", "_compiled")

    #: False runs every PreparedStatement through SQLAlchemy instead (``bench/bench_hot_path.py --compare``: the
    #: baseline in the same process)
    on_driver = True

    def __init__(self, statement: Any) -> None:
        import weakref

        self.statement = statement
        #: dialect -> the statement compiled for it (bind processors belong to the dialect: one per engine)
        self._compiled: weakref.WeakKeyDictionary[Any, _CompiledForDriver] = weakref.WeakKeyDictionary()

    def execute(self, session: Session, params: Mapping[str, Any]) -> list[Any]:
        """The statement's rows (an empty list for a statement without ``RETURNING``)."""
        connection = session.connection()
        if connection.dialect.name != "postgresql" or not PreparedStatement.on_driver:
            result = connection.execute(self.statement, dict(params))
            return list(result) if result.returns_rows else []
        dialect = connection.dialect
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _CompiledForDriver(self.statement, dialect)
        return compiled.run(connection, params)

    def first(self, session: Session, params: Mapping[str, Any]) -> Any:
        """The first row, or None."""
        rows = self.execute(session, params)
        return rows[0] if rows else None

    def one(self, session: Session, params: Mapping[str, Any]) -> Any:
        """The one row (``sqlalchemy.exc.NoResultFound`` / ``MultipleResultsFound`` otherwise)."""
        from sqlalchemy.exc import MultipleResultsFound, NoResultFound

        rows = self.execute(session, params)
        if not rows:
            raise NoResultFound("no row was found")
        if len(rows) > 1:
            raise MultipleResultsFound("more than one row was found")
        return rows[0]


class _CompiledForDriver:
    """:class:`PreparedStatement` compiled for one PostgreSQL dialect: the SQL text, the constant parameters
    and the bind processors; the result processors and the row type are set at the first execution (from the
    cursor's column types, as SQLAlchemy does)."""

    __slots__ = ("sql", "defaults", "binds", "keys", "types", "dialect", "row_type", "results", "returns_rows")

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.positional:
            raise RuntimeError("PreparedStatement expects a dialect with named parameters (psycopg's)")
        variable = [b.key for b in compiled.post_compile_params if b.value is None and b.callable is None]
        if variable:
            raise RuntimeError(f"PreparedStatement: expanding IN parameters are not supported: {variable}")
        defaults = compiled.construct_params(_check=False)  # the constants (literals, IN lists)
        self.sql = compiled.string
        self.binds = dict(compiled._bind_processors)  # name -> processor (only where one is needed)
        if compiled.post_compile_params:  # IN over constant lists: rendered once, as SQLAlchemy does per call
            expanded = compiled._process_parameters_for_postcompile(dict(defaults))
            self.sql, defaults = expanded.statement, expanded.parameters
            self.binds.update(expanded.processors)
        self.defaults = {k: v for k, v in defaults.items() if v is not None}
        self.keys = [entry[0] for entry in compiled._result_columns]
        self.returns_rows = bool(self.keys)  # a SELECT, or a DML statement with RETURNING
        self.types = [entry[3] for entry in compiled._result_columns]
        self.dialect = dialect
        self.row_type: Any = None
        self.results: list[Any] = []

    def run(self, connection: Any, params: Mapping[str, Any]) -> list[Any]:
        values = {**self.defaults, **params}
        for name, process in self.binds.items():
            if name in values:
                values[name] = process(values[name])
        raw = connection.connection.driver_connection
        cursor = getattr(raw, "_flopwise_cursor", None)  # one cursor per connection, reused (one thread at a time)
        if cursor is None or cursor.closed:
            cursor = raw._flopwise_cursor = raw.cursor()
        events = connection._has_events or connection.engine._has_events
        try:
            if events:
                for listener in connection.dispatch.before_cursor_execute:
                    listener(connection, cursor, self.sql, values, None, False)
            cursor.execute(self.sql, values, prepare=True)
            if events:
                for listener in connection.dispatch.after_cursor_execute:
                    listener(connection, cursor, self.sql, values, None, False)
            rows = cursor.fetchall() if self.returns_rows else []
            if rows and self.row_type is None:
                self._set_results([column.type_code for column in cursor.description or ()])
        except Exception as err:  # psycopg.Error: as SQLAlchemy wraps it (and invalidates on a disconnect)
            raw._flopwise_cursor = None
            connection._handle_dbapi_exception(err, self.sql, values, cursor, None)
            raise  # not reached: the call above raises the wrapped error
        if not rows:
            return []
        results, make = self.results, self.row_type._make
        if not any(results):
            return [make(row) for row in rows]
        return [
            make(
                [
                    value if p is None or value is None else p(value)
                    for p, value in zip(results, row, strict=True)
                ]
            )
            for row in rows
        ]

    def _set_results(self, cursor_types: list[Any]) -> None:
        from collections import namedtuple

        keys = self.keys or [f"c{i}" for i in range(len(cursor_types))]
        types = self.types or [None] * len(cursor_types)
        self.results = [
            None if t is None else t._cached_result_processor(self.dialect, code)
            for t, code in zip(types, cursor_types, strict=True)
        ]
        self.row_type = namedtuple("PreparedRow", keys, rename=True)  # type: ignore[misc]
