"""Budgets: a limit per scope and period, in dollars, device-hours, kWh or kg CO2e; checks, alerts, forecasts.

A budget's window is the calendar month, quarter or year (UTC) that contains ``now``, or a custom
``[window_start, window_end)``. What is used in the window is ``reserved + committed + settled``
(:class:`BudgetUsage`, summed by the store), and

    remaining = amount - (reserved + committed + settled)

A request fits when its amount in the budget's unit is at most ``remaining`` (landing exactly on zero
fits). A **hard** budget fails closed: a request that does not fit is denied. A **soft** budget fails open:
the request goes on with a warning. Alert thresholds are fractions of the amount (0.5, 0.8, 1.0 by
default); a change that moves usage from below ``t x amount`` to at or above it crosses ``t``.

All arithmetic is ``Decimal``; timestamps are timezone-aware and compared in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flopwise.errors import InputError
from flopwise.govern.facts import RequestFacts, to_decimal

__all__ = [
    "BUDGET_UNITS",
    "DEFAULT_ALERTS_FRAC",
    "PERIODS",
    "SCOPE_KINDS",
    "Budget",
    "BudgetCheck",
    "BudgetForecast",
    "BudgetUsage",
    "budget_covers",
    "budget_window",
    "check_budget",
    "crossed_alerts",
    "forecast_budget",
    "request_amount",
    "utc",
]

PERIODS = ("month", "quarter", "year", "custom")
BUDGET_UNITS = ("usd", "device_hours", "kwh", "co2e_kg")
#: the scope a budget, quota or role is attached to
SCOPE_KINDS = ("org", "team", "project", "user")
DEFAULT_ALERTS_FRAC = (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))


def utc(moment: datetime, field: str = "now") -> datetime:
    """*moment* in UTC; InputError for a naive datetime (it has no defined instant)."""
    if not isinstance(moment, datetime):
        raise InputError(field, moment, "give a datetime")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InputError(field, moment, "give a timezone-aware datetime (e.g. datetime.now(UTC))")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Budget:
    """A spending limit on a scope (``org``/``team``/``project``/``user`` + its id) per period."""

    id: str
    scope_kind: str
    scope_id: str
    period: str
    unit: str
    amount: Decimal
    is_hard: bool = True
    alerts_frac: tuple[Decimal, ...] = DEFAULT_ALERTS_FRAC
    window_start: datetime | None = None  # custom period only
    window_end: datetime | None = None  # custom period only, exclusive
    name: str = ""

    def __post_init__(self) -> None:
        if self.scope_kind not in SCOPE_KINDS:
            raise InputError("scope_kind", self.scope_kind, f"use one of {', '.join(SCOPE_KINDS)}")
        if not self.scope_id:
            raise InputError(
                "scope_id", self.scope_id, "name the org, team, project or user the budget covers"
            )
        if self.period not in PERIODS:
            raise InputError("period", self.period, f"use one of {', '.join(PERIODS)}")
        if self.unit not in BUDGET_UNITS:
            raise InputError("unit", self.unit, f"use one of {', '.join(BUDGET_UNITS)}")
        amount = to_decimal(self.amount, "amount")
        if amount < 0:
            raise InputError("amount", self.amount, "a budget amount is zero or more")
        object.__setattr__(self, "amount", amount)
        alerts = tuple(sorted(to_decimal(a, "alerts_frac") for a in self.alerts_frac))
        for a in alerts:
            if not Decimal(0) < a <= Decimal(10):
                raise InputError(
                    "alerts_frac", a, "each alert is a fraction of the amount, above 0 and at most 10"
                )
        object.__setattr__(self, "alerts_frac", alerts)
        if self.period == "custom":
            if self.window_start is None or self.window_end is None:
                raise InputError(
                    "window_start", self.window_start, "a custom period needs window_start and window_end"
                )
            start, end = utc(self.window_start, "window_start"), utc(self.window_end, "window_end")
            if end <= start:
                raise InputError("window_end", self.window_end, "must be after window_start")
            object.__setattr__(self, "window_start", start)
            object.__setattr__(self, "window_end", end)
        elif self.window_start is not None or self.window_end is not None:
            raise InputError(
                "window_start", self.window_start, f"only a custom period takes a window, not {self.period!r}"
            )


@dataclass(frozen=True)
class BudgetUsage:
    """What is already drawn on a budget in its current window, in the budget's unit."""

    reserved: Decimal = Decimal(0)  # approved or pending requests not started yet
    committed: Decimal = Decimal(0)  # running jobs, at their reserved worst case
    settled: Decimal = Decimal(0)  # finished work, metered

    def __post_init__(self) -> None:
        for name in ("reserved", "committed", "settled"):
            value = to_decimal(getattr(self, name), name)
            if value < 0:
                raise InputError(name, value, "usage is zero or more")
            object.__setattr__(self, name, value)

    @property
    def used(self) -> Decimal:
        return self.reserved + self.committed + self.settled


@dataclass(frozen=True)
class BudgetCheck:
    """One budget against one request: before, after, and what that means."""

    budget_id: str
    unit: str
    is_hard: bool
    limit: Decimal
    window_start: datetime
    window_end: datetime
    used_before: Decimal
    request_amount: Decimal
    remaining_before: Decimal
    remaining_after: Decimal  # negative only when a soft budget is overrun
    outcome: str  # ok | deny (hard budget would be overrun) | warn (soft budget overrun)
    alerts_crossed: tuple[Decimal, ...]
    message: str


@dataclass(frozen=True)
class BudgetForecast:
    """Linear burn-rate projection to the end of the window."""

    budget_id: str
    window_start: datetime
    window_end: datetime
    used: Decimal
    burn_per_day: Decimal | None  # None when no time has elapsed yet
    projected_at_end: Decimal | None
    runs_out_at: datetime | None  # None when the projection stays within the amount
    is_projected_over: bool


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def budget_window(budget: Budget, now: datetime) -> tuple[datetime, datetime]:
    """The ``[start, end)`` window of *budget* that contains *now* (UTC); a custom budget's own window."""
    now = utc(now)
    if budget.period == "custom":
        assert budget.window_start is not None and budget.window_end is not None
        return budget.window_start, budget.window_end
    if budget.period == "month":
        first = (now.year, now.month)
        months = 1
    elif budget.period == "quarter":
        first = (now.year, 3 * ((now.month - 1) // 3) + 1)
        months = 3
    else:
        first = (now.year, 1)
        months = 12
    start = datetime(first[0], first[1], 1, tzinfo=UTC)
    end_year, end_month = _add_months(first[0], first[1], months)
    return start, datetime(end_year, end_month, 1, tzinfo=UTC)


def budget_covers(budget: Budget, facts: RequestFacts, now: datetime) -> bool:
    """True when *facts* falls in the budget's scope and *now* in its window (custom windows can lapse)."""
    start, end = budget_window(budget, now)
    if not start <= utc(now) < end:
        return False
    if budget.scope_kind == "org":
        return facts.org == budget.scope_id
    if budget.scope_kind == "team":
        return budget.scope_id in facts.requester_teams
    if budget.scope_kind == "project":
        return facts.project == budget.scope_id
    return facts.requester == budget.scope_id


def request_amount(facts: RequestFacts, unit: str) -> Decimal:
    """The request's size in *unit*: cost_usd, device_hours, energy_kwh or co2e_kg, as a Decimal."""
    if unit == "usd":
        return facts.cost_usd
    if unit == "device_hours":
        return to_decimal(facts.device_hours, "device_hours")
    if unit == "kwh":
        return to_decimal(facts.energy_kwh, "energy_kwh")
    if unit == "co2e_kg":
        return to_decimal(facts.co2e_kg, "co2e_kg")
    raise InputError("unit", unit, f"use one of {', '.join(BUDGET_UNITS)}")


def crossed_alerts(budget: Budget, used_before: Decimal, used_after: Decimal) -> tuple[Decimal, ...]:
    """Alert fractions crossed going from *used_before* to *used_after* (below t x amount -> at or above)."""
    if used_after <= used_before:
        return ()
    if budget.amount == 0:
        return budget.alerts_frac if used_before <= 0 < used_after else ()
    return tuple(t for t in budget.alerts_frac if used_before < t * budget.amount <= used_after)


def check_budget(budget: Budget, usage: BudgetUsage, amount: Decimal, now: datetime) -> BudgetCheck:
    """Check a request of *amount* (in the budget's unit) against *budget* with *usage* so far."""
    amount = to_decimal(amount, "amount")
    if amount < 0:
        raise InputError("amount", amount, "a request amount is zero or more")
    start, end = budget_window(budget, now)
    used = usage.used
    remaining_before = budget.amount - used
    remaining_after = remaining_before - amount
    label = f"budget {budget.id!r} ({budget.scope_kind} {budget.scope_id}, {budget.period}, {budget.unit})"
    if remaining_after >= 0:
        outcome = "ok"
        message = f"{label}: {amount} of {remaining_before} remaining; {remaining_after} left after"
    elif budget.is_hard:
        outcome = "deny"
        message = (
            f"{label} is hard: the request needs {amount} but only {max(remaining_before, Decimal(0))} "
            f"of {budget.amount} remains until {end.isoformat()}"
        )
    else:
        outcome = "warn"
        message = f"{label} is soft and will be overrun by {-remaining_after}: allowed with a warning"
    alerts = crossed_alerts(budget, used, used + amount) if outcome != "deny" else ()
    return BudgetCheck(
        budget.id,
        budget.unit,
        budget.is_hard,
        budget.amount,
        start,
        end,
        used,
        amount,
        remaining_before,
        remaining_after if outcome != "deny" else remaining_before,
        outcome,
        alerts,
        message,
    )


def forecast_budget(budget: Budget, used: Decimal, now: datetime) -> BudgetForecast:
    """Project *used* (so far in the window) linearly to the window's end: burn = used / elapsed time.

    ``runs_out_at`` = window_start + amount / burn when that falls before window_end (or *now* when the
    budget is already used up); ``projected_at_end`` = burn x window length.
    """
    used = to_decimal(used, "used")
    now = utc(now)
    start, end = budget_window(budget, now)
    elapsed_s = Decimal(str((min(now, end) - start).total_seconds()))
    total_s = Decimal(str((end - start).total_seconds()))
    if used >= budget.amount and used > 0:
        return BudgetForecast(
            budget.id,
            start,
            end,
            used,
            _per_day(used, elapsed_s),
            _project(used, elapsed_s, total_s),
            min(now, end),
            True,
        )
    if elapsed_s <= 0 or used == 0:
        return BudgetForecast(
            budget.id,
            start,
            end,
            used,
            None if elapsed_s <= 0 else Decimal(0),
            None if elapsed_s <= 0 else Decimal(0),
            None,
            False,
        )
    projected = used * total_s / elapsed_s
    runs_out = None
    if projected > budget.amount:
        runs_out = start + timedelta(seconds=float(budget.amount * elapsed_s / used))
    return BudgetForecast(
        budget.id, start, end, used, _per_day(used, elapsed_s), projected, runs_out, runs_out is not None
    )


def _per_day(used: Decimal, elapsed_s: Decimal) -> Decimal | None:
    return used * Decimal(86400) / elapsed_s if elapsed_s > 0 else None


def _project(used: Decimal, elapsed_s: Decimal, total_s: Decimal) -> Decimal | None:
    return used * total_s / elapsed_s if elapsed_s > 0 else None
