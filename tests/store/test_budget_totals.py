"""Budget totals (``flopwise.store.totals``): the triggers keep each budget's per-day, per-state totals equal to
its reservations through every kind of change, and a window's sum read from them equals the sum of the
reservations in the window, for windows on and off UTC midnight, on both databases."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select

from flopwise.store import (
    SPENDING_STATES,
    Budget,
    BudgetReservation,
    BudgetTotal,
    ComputeRequest,
    budget_spent,
    commit_reservations,
    release_reservations,
    reserve_against_budgets,
    settle_reservations,
    write_session,
)
from flopwise.store.rollups import budget_usage_sums
from flopwise.store.totals import has_edges, window_params

D = Decimal
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _budgets(factory, seed, n: int) -> list[int]:
    ids = []
    with write_session(factory) as s:
        for _ in range(n):
            b = Budget(
                org_id=seed.org_id, name=f"t-{uuid.uuid4().hex[:8]}", scope_kind="org", scope_id=seed.org_id,
                period="month", unit="usd", amount=D("1000000"), is_hard=False,
            )  # fmt: skip
            s.add(b)
            s.flush()
            ids.append(b.id)
    return ids


def _request(s, seed) -> int:
    row = ComputeRequest(
        org_id=seed.org_id, requester_id=seed.user_id, project_id=seed.project_id, workload_kind="train",
        inputs={"model": "llama-3.1-8b"},
    )  # fmt: skip
    s.add(row)
    s.flush()
    return row.id


def _moment(rng: random.Random) -> datetime:
    """A time in March 2026, often right at or around a UTC midnight (where the day split must be exact)."""
    day = T0 + timedelta(days=rng.randrange(30))
    return day + rng.choice(
        [timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(hours=rng.random() * 24)]
    )


def _amount(rng: random.Random) -> Decimal:
    return D(rng.randrange(0, 10**9)).scaleb(-6)


def _raw_totals(s, budget_ids) -> dict[tuple[int, datetime, str], Decimal]:
    rows = s.execute(
        select(BudgetReservation.budget_id, BudgetReservation.counted_at, BudgetReservation.state,
               BudgetReservation.amount)
        .where(BudgetReservation.budget_id.in_(budget_ids), BudgetReservation.state.in_(SPENDING_STATES))
    ).all()  # fmt: skip
    out: dict[tuple[int, datetime, str], Decimal] = {}
    for budget_id, at, state, amount in rows:
        key = (budget_id, at.replace(hour=0, minute=0, second=0, microsecond=0), state)
        out[key] = out.get(key, D(0)) + amount
    return out


def _stored_totals(s, budget_ids) -> dict[tuple[int, datetime, str], Decimal]:
    rows = s.execute(
        select(BudgetTotal.budget_id, BudgetTotal.day, BudgetTotal.state, BudgetTotal.amount).where(
            BudgetTotal.budget_id.in_(budget_ids)
        )
    ).all()
    return {(b, day, state): amount for b, day, state, amount in rows}


def _assert_totals_match(factory, budget_ids) -> None:
    with factory() as s:
        raw, stored = _raw_totals(s, budget_ids), _stored_totals(s, budget_ids)
    assert {k: v for k, v in stored.items() if v != 0} == {k: v for k, v in raw.items() if v != 0}
    assert set(raw) <= set(stored)


def _raw_window_sums(factory, budget_id, window) -> dict[str, Decimal]:
    start, end = window
    with factory() as s:
        rows = s.execute(
            select(BudgetReservation.state, func.sum(BudgetReservation.amount))
            .where(
                BudgetReservation.budget_id == budget_id,
                BudgetReservation.state.in_(SPENDING_STATES),
                BudgetReservation.counted_at >= start,
                BudgetReservation.counted_at < end,
            )
            .group_by(BudgetReservation.state)
        ).all()
    return {state: amount for state, amount in rows}


def _random_window(rng: random.Random) -> tuple[datetime, datetime]:
    kind = rng.randrange(4)
    if kind == 0:  # whole days (as month windows are)
        start = T0 + timedelta(days=rng.randrange(-2, 30))
        return start, start + timedelta(days=rng.randrange(1, 35))
    if kind == 1:  # inside one day, or across one midnight
        start = _moment(rng)
        return start, start + timedelta(hours=rng.random() * 30 + 1e-3)
    start, end = sorted((_moment(rng), _moment(rng)))
    return start, end + timedelta(microseconds=1)


def test_totals_follow_every_change_and_window_sums_match(factory, seed):
    """300 random changes of reservations on 3 budgets, by the store's functions and by plain ORM updates and
    deletes (so every trigger runs): after each batch the totals equal the reservations summed per budget, UTC
    day and spending state, and 40 random windows sum the same from the totals as from the reservations."""
    rng = random.Random(20261207)
    budget_ids = _budgets(factory, seed, 3)
    holders: list[int] = []
    for batch in range(10):
        with write_session(factory) as s:
            for _ in range(30):
                op = rng.randrange(8)
                if op <= 2 or not holders:  # a new holder reserving on one or more budgets
                    request_id = _request(s, seed)
                    on = rng.sample(budget_ids, rng.randrange(1, 4))
                    result = reserve_against_budgets(
                        s, on, [_amount(rng) for _ in on], request_id=request_id, counted_at=_moment(rng),
                        new_holder=True,
                    )  # fmt: skip
                    assert result.ok
                    holders.append(request_id)
                    continue
                request_id = rng.choice(holders)
                if op == 3:
                    commit_reservations(s, request_id=request_id)
                elif op == 4:
                    release_reservations(s, request_id=request_id)
                elif op == 5:
                    settle_reservations(s, {"usd": _amount(rng)}, request_id=request_id)
                else:  # by hand: move in time or to another budget, change the amount or the state, delete
                    rows = s.scalars(select(BudgetReservation).where(BudgetReservation.request_id == request_id))
                    for row in rows:
                        change = rng.randrange(5)
                        if change == 0:
                            row.counted_at = _moment(rng)
                        elif change == 1:
                            row.amount = _amount(rng)
                        elif change == 2:
                            row.state = rng.choice(("reserved", "committed", "released", "settled"))
                        elif change == 3:
                            others = set(budget_ids) - set(
                                s.scalars(
                                    select(BudgetReservation.budget_id).where(
                                        BudgetReservation.request_id == request_id
                                    )
                                )
                            )
                            if others:
                                row.budget_id = min(others)
                        else:
                            s.delete(row)
                    s.flush()
        _assert_totals_match(factory, budget_ids)
        for _ in range(4):
            window = _random_window(rng)
            budget_id = rng.choice(budget_ids)
            raw = _raw_window_sums(factory, budget_id, window)
            with factory() as s:
                assert budget_spent(s, budget_id, window) == sum(raw.values(), D(0)), (batch, window)
                budget = s.get(Budget, budget_id)
                by_state, _metered = budget_usage_sums(s, budget, window)
            assert {k: v for k, v in by_state.items() if v != 0} == {k: v for k, v in raw.items() if v != 0}
            # an open side (a budget without a stored window, ``reserve_against_budgets``' default)
            far = (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))
            for open_window, bounds in (((None, None), far), ((window[0], None), (window[0], far[1])),
                                        ((None, window[1]), (far[0], window[1])), (None, far)):  # fmt: skip
                expected = sum(_raw_window_sums(factory, budget_id, bounds).values(), D(0))
                with factory() as s:
                    assert budget_spent(s, budget_id, open_window) == expected, (batch, open_window)


def test_a_window_is_split_into_whole_days_and_edges():
    day = timedelta(days=1)
    month = (T0, T0 + 31 * day)
    assert window_params(month) == {"start": T0, "mid_start": T0, "mid_end": T0 + 31 * day, "end": T0 + 31 * day}
    odd = (T0 + timedelta(hours=5), T0 + 3 * day + timedelta(hours=2))
    assert window_params(odd) == {
        "start": odd[0], "mid_start": T0 + day, "mid_end": T0 + 3 * day, "end": odd[1],
    }  # fmt: skip
    short = (T0 + timedelta(hours=5), T0 + day + timedelta(hours=2))  # no whole day: all from the reservations
    assert window_params(short) == {"start": short[0], "mid_start": short[1], "mid_end": short[1], "end": short[1]}
    # whole-day windows (every month, quarter and year window) run the statement without the edges' ranges
    assert [has_edges(window_params(w)) for w in (month, odd, short)] == [False, True, True]
    with pytest.raises(ValueError, match="naive"):  # a day of no known zone is not split on a guess
        window_params((datetime(2026, 3, 1, 5), T0 + 31 * day))


def test_deleting_a_budget_takes_its_totals(factory, seed):
    """A budget whose reservations are gone can be deleted: its (now zero) totals go with it."""
    (budget_id,) = _budgets(factory, seed, 1)
    with write_session(factory) as s:
        request_id = _request(s, seed)
        assert reserve_against_budgets(s, [budget_id], [D("5")], request_id=request_id, counted_at=T0).ok
    with write_session(factory) as s:
        assert s.scalar(select(func.count()).where(BudgetTotal.budget_id == budget_id)) == 1
        s.execute(delete(BudgetReservation).where(BudgetReservation.budget_id == budget_id))
        s.execute(delete(Budget).where(Budget.id == budget_id))
    with factory() as s:
        assert s.scalar(select(func.count()).where(BudgetTotal.budget_id == budget_id)) == 0
