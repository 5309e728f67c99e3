"""Money is exact Decimal and time is UTC-aware, through a real table on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from flopwise.store import ComputeRequest, Organization, to_money, write_session

# SQLite keeps micro-units in a 64-bit integer, so stay inside |x| < 9.2e12 for the cross-backend property
money = st.decimals(
    min_value=Decimal("-9000000000000"),
    max_value=Decimal("9000000000000"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
)


def _request(seed, **kw) -> ComputeRequest:
    base = dict(
        org_id=seed.org_id,
        requester_id=seed.user_id,
        project_id=seed.project_id,
        workload_kind="train",
        inputs={"model": "llama-3.1-8b"},
    )
    return ComputeRequest(**(base | kw))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cost=money, kwh=money)
def test_decimal_round_trips_exactly(factory, seed, cost, kwh):
    with write_session(factory) as s:
        row = _request(seed, estimated_cost_usd=cost, estimated_kwh=kwh)
        s.add(row)
        s.flush()
        row_id = row.id
    with factory() as s:
        back = s.scalars(
            select(ComputeRequest)
            .where(ComputeRequest.id == row_id)
            .execution_options(populate_existing=True)
        ).one()
        assert isinstance(back.estimated_cost_usd, Decimal)
        assert back.estimated_cost_usd == cost and back.estimated_kwh == kwh
        assert back.estimated_cost_usd.as_tuple().exponent == -6


def test_sql_sum_is_exact(factory, seed):
    """0.1 + 0.2 is 0.3 in the database too (a float column would give 0.30000000000000004)."""
    from sqlalchemy import func

    with write_session(factory) as s:
        s.add_all([_request(seed, estimated_cost_usd=Decimal(v)) for v in ("0.1", "0.2", "0.000001")])
    with factory() as s:
        total = s.scalar(
            select(func.sum(ComputeRequest.estimated_cost_usd)).where(
                ComputeRequest.project_id == seed.project_id
            )
        )
    assert total == Decimal("0.300001") and isinstance(total, Decimal)


@pytest.mark.parametrize(
    "bad",
    [
        0.1,
        float("nan"),
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("1e14"),
        Decimal("1e40"),
        "1e40",
        "abc",
        True,
    ],
)
def test_money_refuses_inexact_or_out_of_range(bad):
    with pytest.raises(ValueError, match="amount"):
        to_money(bad)


def test_float_never_reaches_the_database(factory, seed):
    with pytest.raises(StatementError, match="Decimal"), write_session(factory) as s:
        s.add(_request(seed, estimated_cost_usd=12.5))
        s.flush()


def test_money_rounds_half_even_to_six_places():
    assert to_money(Decimal("1.0000005")) == Decimal("1.000000")
    assert to_money(Decimal("1.0000015")) == Decimal("1.000002")
    assert to_money("2.5") == Decimal("2.500000")


def test_timestamps_come_back_utc_aware(factory, seed):
    paris = timezone(timedelta(hours=2))
    expires = datetime(2025, 6, 30, 23, 30, 0, 123456, tzinfo=paris)
    with write_session(factory) as s:
        row = _request(seed, expires_at=expires)
        s.add(row)
        s.flush()
        row_id = row.id
    with factory() as s:
        back = s.get_one(ComputeRequest, row_id, populate_existing=True)
    assert back.expires_at == expires
    assert back.expires_at.tzinfo is UTC and back.expires_at.hour == 21
    assert back.created_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - back.created_at) < timedelta(minutes=5)


def test_naive_timestamp_is_refused(factory, seed):
    with pytest.raises(StatementError, match="naive"), write_session(factory) as s:
        s.add(_request(seed, expires_at=datetime(2025, 1, 1)))
        s.flush()


def test_json_columns_keep_money_as_decimal_strings(factory, seed):
    with write_session(factory) as s:
        row = _request(
            seed, estimate={"cost_usd": Decimal("1234.50"), "at": datetime(2025, 1, 1, tzinfo=UTC)}
        )
        s.add(row)
        s.flush()
        row_id = row.id
    with factory() as s:
        back = s.get_one(ComputeRequest, row_id, populate_existing=True)
    assert back.estimate == {"cost_usd": "1234.50", "at": "2025-01-01T00:00:00+00:00"}


def test_unique_and_foreign_keys_are_enforced(factory, seed):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), write_session(factory) as s:
        s.add(_request(seed, project_id=10**9))  # no such project: SQLite enforces it too (foreign_keys=ON)
        s.flush()
    name = f"dup-{uuid.uuid4().hex[:6]}"
    with write_session(factory) as s:
        s.add(Organization(name=name))
    with pytest.raises(IntegrityError), write_session(factory) as s:
        s.add(Organization(name=name))
        s.flush()
    with pytest.raises(IntegrityError), write_session(factory) as s:
        s.add(_request(seed, state="approved-ish"))  # CHECK constraint on the state
        s.flush()
