"""SQLite writers of one engine take turns first come, first served, in Python (``SqliteWriterQueue``), instead of
meeting in SQLite's busy handler; readers never queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from flopwise.store import make_engine, make_session_factory, read_session, write_session
from flopwise.store import session as store_session
from flopwise.store.session import SqliteWriterQueue, sqlite_writer_queue

WAIT_S = 10.0


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'writers.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield engine
    engine.dispose()


def _queue(engine: Engine) -> SqliteWriterQueue:
    queue = sqlite_writer_queue(engine)
    assert queue is not None
    return queue


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def _increment(factory: Any) -> None:
    with write_session(factory) as s:
        n = s.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
        s.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})


def _count(factory: Any) -> int:
    with read_session(factory) as s:
        return int(s.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one())


def _writer_thread(factory: Any, done: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            _increment(factory)
            done.append("ok")
        except Exception as err:  # the test looks at it
            done.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_only_sqlite_engines_have_a_writer_queue(engine):
    queue = sqlite_writer_queue(engine)
    assert (queue is not None) == (engine.dialect.name == "sqlite")


def test_a_second_writer_waits_in_the_queue_not_in_sqlite(sqlite_engine):
    factory = make_session_factory(sqlite_engine)
    queue = _queue(sqlite_engine)
    begins: list[str] = []

    def on_begin_sql(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            begins.append(threading.current_thread().name)

    from sqlalchemy import event

    event.listen(sqlite_engine, "before_cursor_execute", on_begin_sql)
    done: list[Any] = []
    with write_session(factory) as first:
        first.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        second = _writer_thread(factory, done)
        _until(lambda: queue.waiting() == 1, "the second writer queues")
        time.sleep(0.05)
        # it has not sent BEGIN IMMEDIATE (it would be polling SQLite's lock in the busy handler)
        assert begins == [threading.current_thread().name]
        with read_session(factory) as reader:  # readers never queue
            assert reader.execute(text("SELECT n FROM counter")).scalar_one() == 0
    second.join(WAIT_S)
    assert done == ["ok"]
    assert begins[1] == second.name
    assert queue.waiting() == 0
    assert _count(factory) == 2


def test_writers_are_served_in_the_order_they_came(sqlite_engine):
    factory = make_session_factory(sqlite_engine)
    queue = _queue(sqlite_engine)
    order: list[int] = []

    def writer(i: int) -> None:
        with write_session(factory) as s:
            order.append(i)
            s.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))

    threads = []
    with write_session(factory) as first:
        first.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        for i in range(6):
            thread = threading.Thread(target=writer, args=(i,), daemon=True)
            thread.start()
            threads.append(thread)
            _until(lambda i=i: queue.waiting() == i + 1, f"writer {i} queues")
    for thread in threads:
        thread.join(WAIT_S)
    assert order == list(range(6))
    assert _count(factory) == 7


def test_the_turn_passes_on_at_rollback(sqlite_engine):
    factory = make_session_factory(sqlite_engine)
    queue = _queue(sqlite_engine)
    done: list[Any] = []
    with pytest.raises(ZeroDivisionError), write_session(factory) as first:
        first.execute(text("UPDATE counter SET n = 100 WHERE id = 1"))
        second = _writer_thread(factory, done)
        _until(lambda: queue.waiting() == 1, "the second writer queues")
        1 / 0  # noqa: B018
    second.join(WAIT_S)
    assert done == ["ok"]
    assert _count(factory) == 1  # the rolled back 100 is gone, the second writer's increment is there


@pytest.mark.parametrize("how", ["invalidate", "close"])
def test_the_turn_passes_on_when_a_connection_leaves_without_commit_or_rollback(sqlite_engine, how):
    factory = make_session_factory(sqlite_engine)
    queue = _queue(sqlite_engine)
    conn = sqlite_engine.connect().execution_options(flopwise_sqlite_begin="IMMEDIATE")
    transaction = conn.begin()
    conn.execute(text("UPDATE counter SET n = 100 WHERE id = 1"))
    assert queue.holds(conn.connection.dbapi_connection)
    done: list[Any] = []
    second = _writer_thread(factory, done)
    _until(lambda: queue.waiting() == 1, "the second writer queues")
    if how == "invalidate":
        conn.invalidate()  # closes the DBAPI connection, its transaction lost
    else:
        conn.connection.close()  # back to the pool, which rolls it back: no ROLLBACK through the Connection
    second.join(WAIT_S)
    assert done == ["ok"]
    assert _count(factory) == 1
    if how == "invalidate":
        transaction.rollback()  # SQLAlchemy wants the invalidated transaction ended before the Connection closes
    conn.close()


def test_a_thread_that_waits_for_its_own_turn_fails_at_once_as_sqlite_would(sqlite_engine):
    factory = make_session_factory(sqlite_engine)
    with write_session(factory) as first:
        first.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        t0 = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), write_session(factory) as nested:
            nested.execute(text("SELECT 1"))
        assert time.monotonic() - t0 < 1.0  # SQLite would wait out its busy timeout (30 s) first
    _increment(factory)  # the turn was not lost
    assert _count(factory) == 2


def test_a_waiter_gives_up_after_the_busy_timeout_as_sqlite_would(sqlite_engine, monkeypatch):
    monkeypatch.setattr(store_session, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    factory = make_session_factory(sqlite_engine)
    queue = _queue(sqlite_engine)
    done: list[Any] = []
    with write_session(factory) as first:
        first.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        t0 = time.monotonic()
        second = _writer_thread(factory, done)
        second.join(WAIT_S)
        waited_s = time.monotonic() - t0
    assert len(done) == 1 and isinstance(done[0], OperationalError), done
    assert "database is locked" in str(done[0])
    assert 0.15 < waited_s < 5.0
    assert queue.waiting() == 0
    _increment(factory)  # the queue still serves
    assert _count(factory) == 2


def test_sixteen_threads_of_read_modify_write_transactions_all_count(sqlite_engine):
    factory = make_session_factory(sqlite_engine)
    threads, per_thread = 16, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(WAIT_S)
            for _ in range(per_thread):
                _increment(factory)
        except BaseException as err:  # the test looks at it
            errors.append(err)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert errors == []
    assert _count(factory) == threads * per_thread
    assert _queue(sqlite_engine).waiting() == 0
