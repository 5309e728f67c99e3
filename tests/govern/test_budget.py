"""Budgets: windows at month/quarter/year boundaries and leap years, checks, alerts, forecasts, Decimal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from flopwise.errors import InputError
from flopwise.govern import (
    Budget,
    BudgetUsage,
    budget_covers,
    budget_window,
    check_budget,
    crossed_alerts,
    forecast_budget,
    request_amount,
)

from .conftest import make_facts


def _b(period="month", **kw) -> Budget:
    base = dict(id="b1", scope_kind="org", scope_id="acme", period=period, unit="usd", amount=Decimal("1000"))
    base.update(kw)
    return Budget(**base)


def _d(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("month", _d(2024, 2, 29, 23, 59, 59), _d(2024, 2, 1), _d(2024, 3, 1)),  # leap February
        ("month", _d(2023, 2, 28, 12), _d(2023, 2, 1), _d(2023, 3, 1)),
        (
            "month",
            _d(2024, 3, 1),
            _d(2024, 3, 1),
            _d(2024, 4, 1),
        ),  # the first instant belongs to the new month
        ("month", _d(2024, 12, 31, 23, 59, 59, 999999), _d(2024, 12, 1), _d(2025, 1, 1)),
        ("quarter", _d(2024, 1, 1), _d(2024, 1, 1), _d(2024, 4, 1)),
        ("quarter", _d(2024, 3, 31, 23, 59), _d(2024, 1, 1), _d(2024, 4, 1)),
        ("quarter", _d(2024, 4, 1), _d(2024, 4, 1), _d(2024, 7, 1)),
        ("quarter", _d(2024, 9, 30, 23), _d(2024, 7, 1), _d(2024, 10, 1)),
        ("quarter", _d(2024, 12, 31, 23), _d(2024, 10, 1), _d(2025, 1, 1)),
        ("year", _d(2024, 2, 29), _d(2024, 1, 1), _d(2025, 1, 1)),
        ("year", _d(2025, 1, 1), _d(2025, 1, 1), _d(2026, 1, 1)),
    ],
)
def test_calendar_windows(period, now, start, end):
    assert budget_window(_b(period), now) == (start, end)


def test_window_uses_utc_not_local_time():
    # 2024-04-01 01:00 in UTC+02:00 is 2024-03-31 23:00 UTC: still March and still Q1
    local = datetime(2024, 4, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert budget_window(_b("month"), local) == (_d(2024, 3, 1), _d(2024, 4, 1))
    assert budget_window(_b("quarter"), local) == (_d(2024, 1, 1), _d(2024, 4, 1))
    with pytest.raises(InputError, match="timezone-aware"):
        budget_window(_b(), datetime(2024, 4, 1))


def test_leap_year_lengths():
    start, end = budget_window(_b("year"), _d(2024, 6, 1))
    assert (end - start).days == 366
    start, end = budget_window(_b("year"), _d(2100, 6, 1))  # divisible by 100, not by 400: not leap
    assert (end - start).days == 365
    start, end = budget_window(_b("month"), _d(2000, 2, 10))  # divisible by 400: leap
    assert (end - start).days == 29


def test_custom_window_and_coverage():
    b = _b("custom", window_start=_d(2025, 1, 10), window_end=_d(2025, 2, 10))
    facts = make_facts()
    assert budget_covers(b, facts, _d(2025, 1, 10))
    assert not budget_covers(b, facts, _d(2025, 2, 10))  # end is exclusive
    with pytest.raises(InputError, match="window_end"):
        _b("custom", window_start=_d(2025, 1, 10))
    with pytest.raises(InputError, match="only a custom period"):
        _b("month", window_start=_d(2025, 1, 10))


@pytest.mark.parametrize(
    ("scope_kind", "scope_id", "covered"),
    [("org", "acme", True), ("org", "other", False), ("team", "nlp", True), ("team", "vision", False),
     ("project", "llm-pretrain", True), ("user", "alice", True), ("user", "bob", False)],
)  # fmt: skip
def test_scope_coverage(scope_kind, scope_id, covered):
    assert (
        budget_covers(_b(scope_kind=scope_kind, scope_id=scope_id), make_facts(), _d(2025, 1, 1)) is covered
    )


def test_request_amount_in_each_unit_is_exact_decimal():
    facts = make_facts(cost_usd=Decimal("0.10"), device_hours=0.1, energy_kwh=0.3, co2e_kg=1e-3)
    assert request_amount(facts, "usd") == Decimal("0.10")
    assert request_amount(facts, "device_hours") == Decimal("0.1")  # not 0.1000000000000000055...
    assert request_amount(facts, "kwh") == Decimal("0.3")
    assert request_amount(facts, "co2e_kg") == Decimal("0.001")


def test_hard_budget_fails_closed_and_soft_fails_open():
    usage = BudgetUsage(reserved=Decimal("300"), committed=Decimal("200"), settled=Decimal("400.01"))
    hard = check_budget(_b(), usage, Decimal("100"), _d(2025, 1, 5))
    assert hard.remaining_before == Decimal("99.99") and hard.outcome == "deny"
    assert hard.remaining_after == Decimal("99.99")  # nothing is taken on a denial
    assert "only 99.99 of 1000 remains" in hard.message
    soft = check_budget(_b(is_hard=False), usage, Decimal("100"), _d(2025, 1, 5))
    assert soft.outcome == "warn" and soft.remaining_after == Decimal("-0.01")
    exact = check_budget(_b(), usage, Decimal("99.99"), _d(2025, 1, 5))
    assert exact.outcome == "ok" and exact.remaining_after == 0  # landing on zero fits


def test_alerts_crossed_by_a_change():
    b = _b()
    assert crossed_alerts(b, Decimal("0"), Decimal("499.99")) == ()
    assert crossed_alerts(b, Decimal("0"), Decimal("500")) == (Decimal("0.5"),)
    assert crossed_alerts(b, Decimal("500"), Decimal("1000")) == (Decimal("0.8"), Decimal("1.0"))
    assert crossed_alerts(b, Decimal("800"), Decimal("900")) == ()  # already past 0.8
    assert crossed_alerts(b, Decimal("900"), Decimal("800")) == ()  # releases cross nothing
    check = check_budget(b, BudgetUsage(settled=Decimal("790")), Decimal("20"), _d(2025, 1, 5))
    assert check.alerts_crossed == (Decimal("0.8"),)


def test_forecast_linear_burn_and_run_out_date():
    b = _b(amount=Decimal("3100"))  # January: 31 days, $100/day burns it exactly
    at_day_10 = _d(2025, 1, 11)
    f = forecast_budget(b, Decimal("1000"), at_day_10)
    assert f.burn_per_day == Decimal("100") and f.projected_at_end == Decimal("3100")
    assert f.runs_out_at is None and not f.is_projected_over
    f = forecast_budget(b, Decimal("2000"), at_day_10)  # $200/day runs out after 15.5 days
    assert f.runs_out_at == _d(2025, 1, 16, 12) and f.is_projected_over
    f = forecast_budget(b, Decimal("3100"), at_day_10)
    assert f.runs_out_at == at_day_10 and f.is_projected_over
    f = forecast_budget(b, Decimal("0"), _d(2025, 1, 1))
    assert f.burn_per_day is None and f.runs_out_at is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"period": "week"}, "period"), ({"unit": "eur"}, "unit"), ({"amount": Decimal("-1")}, "amount"),
     ({"amount": "lots"}, "amount"), ({"scope_kind": "galaxy"}, "scope_kind"), ({"alerts_frac": (0,)}, "alerts_frac"),
     ({"scope_id": ""}, "scope_id")],
)  # fmt: skip
def test_bad_budgets_name_the_field(kw, field):
    with pytest.raises(InputError) as err:
        _b(**kw)
    assert err.value.field == field


def test_usage_rejects_negative_and_sums_exactly():
    usage = BudgetUsage(reserved="0.1", committed="0.2", settled=Decimal("0.3"))
    assert usage.used == Decimal("0.6")
    with pytest.raises(InputError, match="reserved"):
        BudgetUsage(reserved=Decimal("-1"))
