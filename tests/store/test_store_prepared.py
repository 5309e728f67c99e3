"""``PreparedStatement`` (the write path's statements on the driver's connection, PostgreSQL) answers as
SQLAlchemy does: the same rows and types (``Money``, ``UTCDateTime``, JSON), errors as SQLAlchemy's exceptions,
the engine's cursor events, and the session's transaction (committed or rolled back with it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, event, select
from sqlalchemy.exc import IntegrityError, NoResultFound

from flopwise.store import Budget, read_session, write_session
from flopwise.store.session import PreparedStatement

_BUDGETS = select(Budget.__table__).where(Budget.scope_id == bindparam("org_id")).order_by(Budget.id)


def _budget(org_id: int, name: str) -> dict:
    return {"b_org_id": org_id, "b_name": name, "b_scope_kind": "org", "b_scope_id": org_id, "b_period": "month",
            "b_unit": "usd", "b_amount": Decimal("12.345678"), "b_is_hard": True,
            "b_alert_thresholds": [Decimal("0.5"), 0.9], "b_created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}  # fmt: skip


_INSERT = PreparedStatement(
    Budget.__table__.insert()
    .values({c: bindparam(f"b_{c}", type_=Budget.__table__.c[c].type) for c in (
        "org_id", "name", "scope_kind", "scope_id", "period", "unit", "amount", "is_hard", "alert_thresholds",
        "created_at")})  # fmt: skip
    .returning(Budget.__table__.c.id)
)


def test_rows_and_types_match_sqlalchemy(factory, seed) -> None:
    with write_session(factory) as s:
        new_id = _INSERT.one(s, _budget(seed.org_id, f"p-{uuid.uuid4().hex[:6]}"))[0]
    with read_session(factory) as s:
        prepared = PreparedStatement(_BUDGETS).execute(s, {"org_id": seed.org_id})
        expected = list(s.connection().execute(_BUDGETS, {"org_id": seed.org_id}))
    assert [tuple(r) for r in prepared] == [tuple(r) for r in expected]
    (row,) = prepared
    assert row.id == row[0] == new_id
    assert row.amount == Decimal("12.345678") and isinstance(row.amount, Decimal)
    assert row.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and row.created_at.tzinfo is not None
    assert row.alert_thresholds == ["0.5", 0.9]  # the JSON column's serializer: Decimals as strings


def test_it_runs_in_the_session_transaction(factory, seed) -> None:
    name = f"rolled-back-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RuntimeError), write_session(factory) as s:
        _INSERT.one(s, _budget(seed.org_id, name))
        raise RuntimeError("roll back")
    with read_session(factory) as s:
        assert name not in {r.name for r in PreparedStatement(_BUDGETS).execute(s, {"org_id": seed.org_id})}


def test_errors_are_sqlalchemy_errors_and_the_session_recovers(factory, seed) -> None:
    name = f"dup-{uuid.uuid4().hex[:6]}"
    with write_session(factory) as s:
        _INSERT.one(s, _budget(seed.org_id, name))
    with pytest.raises(IntegrityError), write_session(factory) as s:  # (org_id, name) is unique
        _INSERT.one(s, _budget(seed.org_id, name))
    with write_session(factory) as s:  # the pooled connection (and its cursor) still work
        assert _INSERT.one(s, _budget(seed.org_id, name + "-2"))[0] > 0
    with read_session(factory) as s, pytest.raises(NoResultFound):
        PreparedStatement(_BUDGETS).one(s, {"org_id": -1})


def test_cursor_events_see_the_statement(engine, factory, seed) -> None:
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with read_session(factory) as s:
            PreparedStatement(_BUDGETS).execute(s, {"org_id": seed.org_id})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len([q for q in seen if "FROM budgets" in q]) == 1


def test_expanding_parameters_are_refused_on_postgresql(factory) -> None:
    stmt = PreparedStatement(select(Budget.id).where(Budget.id.in_(bindparam("ids", expanding=True))))
    with read_session(factory) as s:
        if s.get_bind().dialect.name != "postgresql":
            assert isinstance(stmt.execute(s, {"ids": [1, 2]}), list)  # SQLAlchemy runs it elsewhere
            return
        with pytest.raises(RuntimeError, match="expanding"):
            stmt.execute(s, {"ids": [1, 2]})


def test_a_statement_without_rows_gives_an_empty_list_either_way(factory, seed) -> None:
    from sqlalchemy import update

    stmt = PreparedStatement(update(Budget).where(Budget.org_id == bindparam("o")).values(name=Budget.name))
    for on_driver in (True, False):
        PreparedStatement.on_driver = on_driver
        try:
            with write_session(factory) as s:
                assert stmt.execute(s, {"o": seed.org_id}) == []
        finally:
            PreparedStatement.on_driver = True


@pytest.mark.parametrize("count", [1, 2, 8, 9, 12])
def test_budget_rows_are_locked_in_ascending_id_whatever_their_number(factory, seed, count) -> None:
    """``lock_budget_rows`` (one statement per number of ids up to eight on PostgreSQL, an array beyond): the
    rows of the ids given, once each, in ascending id; an unknown id is refused by name."""
    from flopwise.errors import InputError
    from flopwise.store.queries import lock_budget_rows

    with write_session(factory) as s:
        ids = [_INSERT.one(s, _budget(seed.org_id, f"lock-{uuid.uuid4().hex[:8]}"))[0] for _ in range(count)]
    with write_session(factory) as s:
        rows = lock_budget_rows(s, [*reversed(ids), ids[0]])  # any order, a repeat
        assert [r.id for r in rows] == sorted(ids)
        assert all(r.amount == Decimal("12.345678") for r in rows)
    with pytest.raises(InputError, match="budget_ids"), write_session(factory) as s:
        lock_budget_rows(s, [*ids, max(ids) + 10_000])
