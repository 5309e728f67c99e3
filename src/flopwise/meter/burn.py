"""Budgets burned by actuals: attribute the ledger, settle requests' reservations, draw budgets down, raise alerts.

One pass, :func:`apply_actuals`, run after each ingestion (or on a timer) inside one write transaction:

1. **Attribute** (:func:`apply_attribution`): ledger rows without a scope are given one by
   :func:`flopwise.meter.attribution.attribute` - the compute request they name, else the first matching
   ``attribution_rules`` row. Rows that match nothing stay unattributed (NULL scope) and are counted.
2. **Settle** (:func:`settle_actuals`): for each request with metered usage, its reservations are replaced by
   the actual amounts in each budget's unit (``usd`` = sum of ``cost_usd``, ``device_hours``, ``kwh`` =
   ``x_energy_kwh``, ``co2e_kg`` = ``x_co2e_kg``) through :func:`flopwise.store.settle_reservations`. Usage that
   arrives after the first settlement updates the settled amount, so a request counts its actuals once.
3. **Draw down** (:func:`budget_used`): what a budget has used in its window is its reservations (reserved +
   committed + settled, :func:`flopwise.store.budget_spent`) plus metered usage in its scope that no
   reservation on that budget already holds (usage without a request, or whose request reserved elsewhere).
4. **Alert** (:func:`raise_alerts`): thresholds crossed (:func:`flopwise.govern.budget.crossed_alerts`, from
   zero to the used amount) become ``budget_alerts`` rows, at most once per budget, threshold and window
   (``UNIQUE (budget_id, threshold_frac, window_start)``, inserted with ``ON CONFLICT DO NOTHING``).
   :mod:`flopwise.meter.alerts` delivers them.
5. **Forecast** (:func:`budget_forecasts`): a linear burn to the window's end
   (:func:`flopwise.govern.budget.forecast_budget`) says whether and when the budget runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flopwise.govern.budget import (
    DEFAULT_ALERTS_FRAC,
    BudgetForecast,
    budget_window,
    crossed_alerts,
    forecast_budget,
)
from flopwise.govern.budget import Budget as GovBudget
from flopwise.meter.attribution import AttributionRule, Scope, attribute, parse_request_id
from flopwise.meter.record import UsageRecord

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from flopwise.store.ledger import BudgetAlert, UsageRecordRow
    from flopwise.store.models import Budget

__all__ = [
    "AttributionSummary",
    "BurnResult",
    "apply_actuals",
    "apply_attribution",
    "budget_forecasts",
    "budget_used",
    "budget_window_of",
    "budgets_in_scope",
    "governed_budget",
    "raise_alerts",
    "record_of_row",
    "settle_actuals",
]

#: the ledger column that measures each budget unit
UNIT_COLUMNS = {
    "usd": "cost_usd",
    "device_hours": "x_device_hours",
    "kwh": "x_energy_kwh",
    "co2e_kg": "x_co2e_kg",
}
_BATCH = 1000


@dataclass(frozen=True)
class AttributionSummary:
    """How many ledger rows one pass looked at, and where they went."""

    examined: int = 0
    by_request: int = 0
    by_rule: int = 0
    unattributed: int = 0


@dataclass(frozen=True)
class BurnResult:
    """What :func:`apply_actuals` did: attribution counts, settled requests, new alerts and forecasts."""

    attribution: AttributionSummary
    settled: Mapping[int, Mapping[str, Decimal]]  # request id -> unit -> actual
    alerts: tuple[Any, ...]  # new flopwise.store.ledger.BudgetAlert rows
    forecasts: tuple[tuple[int, BudgetForecast], ...] = field(default=())


def governed_budget(row: Budget) -> GovBudget:
    """The store's budget row as the pure core's :class:`flopwise.govern.budget.Budget`."""
    alerts = tuple(Decimal(str(a)) for a in (row.alert_thresholds or ())) or DEFAULT_ALERTS_FRAC
    is_custom = row.period == "custom"
    return GovBudget(
        id=str(row.id),
        scope_kind=row.scope_kind,
        scope_id=str(row.scope_id),
        period=row.period,
        unit=row.unit,
        amount=row.amount,
        is_hard=row.is_hard,
        alerts_frac=alerts,
        window_start=row.window_start if is_custom else None,
        window_end=row.window_end if is_custom else None,
        name=row.name,
    )


def budget_window_of(row: Budget, now: datetime) -> tuple[datetime, datetime]:
    """The ``[start, end)`` window of a stored budget that contains *now* (its own window when custom)."""
    return budget_window(governed_budget(row), now)


def record_of_row(row: UsageRecordRow) -> UsageRecord:
    """The fields of a ledger row that attribution looks at, as a :class:`UsageRecord`."""
    return UsageRecord(
        source=row.source,
        source_key=row.source_key,
        charge_period_start=row.charge_period_start,
        charge_period_end=row.charge_period_end,
        provider_name=row.provider_name,
        region_id=row.region_id,
        resource_id=row.resource_id,
        tags={str(k): str(v) for k, v in (row.tags or {}).items()},
        x_device_type=row.x_device_type,
        x_job_id=row.x_job_id,
        x_request_id=row.x_request_id,
        x_user=row.x_user,
        x_account=row.x_account,
        x_extra=dict(row.x_extra or {}),
    )


def _rules(session: Session, org_id: int | None) -> list[AttributionRule]:
    from sqlalchemy import select

    from flopwise.store.ledger import AttributionRule as RuleRow
    from flopwise.store.models import Project, Team

    stmt = select(RuleRow)
    if org_id is not None:
        stmt = stmt.where(RuleRow.org_id == org_id)
    rules = []
    for row in session.scalars(stmt):
        team_id, project_id = row.team_id, row.project_id
        if project_id is not None:
            team_id = session.scalar(select(Project.team_id).where(Project.id == project_id))
        if team_id is not None:
            team_org = session.scalar(select(Team.org_id).where(Team.id == team_id))
            if team_org != row.org_id:  # a rule pointing outside its organization is ignored
                continue
        rules.append(AttributionRule(row.id, row.priority, row.match, Scope(row.org_id, team_id, project_id)))
    return rules


def _request_scopes(session: Session, request_ids: Iterable[int]) -> dict[int, Scope]:
    from sqlalchemy import select

    from flopwise.store.models import ComputeRequest, Project, Team

    ids = sorted(set(request_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(ComputeRequest.id, ComputeRequest.org_id, Team.id, Project.id)
        .join(Project, Project.id == ComputeRequest.project_id)
        .join(Team, Team.id == Project.team_id)
        .where(ComputeRequest.id.in_(ids))
    ).all()
    return {rid: Scope(org, team, project) for rid, org, team, project in rows}


def apply_attribution(
    session: Session, org_id: int | None = None, run_id: int | None = None
) -> AttributionSummary:
    """Give a project to every ledger row that has none (or names a request not yet linked); see the module doc.

    Rows with no organization try every organization's rules (*org_id*: only that one's); rows that already
    belong to an organization (``ingest --org``) try only that organization's rules, for their team and
    project. Rows that name a known compute request get its scope and ``request_id`` (never across
    organizations). *run_id*: only the rows that ingest run wrote (the incremental pass after an ingest).
    Returns the counts; nothing is dropped.
    """
    from sqlalchemy import or_, select

    from flopwise.store.ledger import UsageRecordRow as Row

    rules = _rules(session, org_id)
    rules_of: dict[int, list[AttributionRule]] = {}
    for rule in rules:
        rules_of.setdefault(rule.scope.org_id, []).append(rule)
    examined = by_request = by_rule = unattributed = 0
    last_id = 0
    pending = or_(
        Row.org_id.is_(None),
        Row.project_id.is_(None),
        (Row.request_id.is_(None) & Row.x_request_id.is_not(None)),
    )
    if org_id is not None:
        pending = pending & (Row.org_id.is_(None) | (Row.org_id == org_id))
    if run_id is not None:
        pending = pending & (Row.ingest_run_id == run_id)
    while True:
        batch = list(
            session.scalars(select(Row).where(pending, Row.id > last_id).order_by(Row.id).limit(_BATCH))
        )
        if not batch:
            break
        last_id = batch[-1].id
        records = [record_of_row(r) for r in batch]
        wanted = {parse_request_id(r.x_request_id) for r in records} - {None}
        scopes = _request_scopes(session, wanted)  # type: ignore[arg-type]
        for row, record in zip(batch, records, strict=True):
            examined += 1
            if row.org_id is None:
                result = attribute(record, rules, scopes)
            else:
                own = {k: v for k, v in scopes.items() if v.org_id == row.org_id}
                result = attribute(record, rules_of.get(row.org_id, ()), own)
            if result.basis == "request":
                by_request += 1
                row.request_id = result.request_id
            elif row.project_id is not None:  # already attributed; its request id names nothing known
                continue
            elif result.basis == "rule":
                by_rule += 1
            else:
                unattributed += 1
                continue
            assert result.scope is not None
            row.org_id, row.team_id, row.project_id = (
                result.scope.org_id,
                result.scope.team_id,
                result.scope.project_id,
            )
        session.flush()
    return AttributionSummary(examined, by_request, by_rule, unattributed)


def _actuals(session: Session, request_ids: Iterable[int] | None) -> dict[int, dict[str, Decimal]]:
    from sqlalchemy import func, select

    from flopwise.store.ledger import UsageRecordRow as Row
    from flopwise.store.types import to_money

    stmt = select(
        Row.request_id,
        func.coalesce(func.sum(Row.cost_usd), to_money(0)),
        func.coalesce(func.sum(Row.x_device_hours), 0.0),
        func.coalesce(func.sum(Row.x_energy_kwh), 0.0),
        func.coalesce(func.sum(Row.x_co2e_kg), 0.0),
    ).where(Row.request_id.is_not(None))
    if request_ids is not None:
        stmt = stmt.where(Row.request_id.in_(list(request_ids)))
    out = {}
    for rid, usd, hours, kwh, co2 in session.execute(stmt.group_by(Row.request_id)):
        out[int(rid)] = {
            "usd": to_money(usd),
            "device_hours": to_money(Decimal(repr(float(hours)))),
            "kwh": to_money(Decimal(repr(float(kwh)))),
            "co2e_kg": to_money(Decimal(repr(float(co2)))),
        }
    return out


def settle_actuals(
    session: Session, request_ids: Iterable[int] | None = None
) -> dict[int, dict[str, Decimal]]:
    """Replace the reservations of each request that has metered usage by its actuals (all requests, or *request_ids*).

    Active (reserved/committed) reservations are settled by :func:`flopwise.store.settle_reservations`; a
    reservation settled earlier is brought up to date when more usage arrived since (under the budget lock).
    Negative totals (a credit larger than the usage) settle at zero. Returns request id -> unit -> actual.
    """
    from sqlalchemy import select

    from flopwise.store.models import BudgetReservation
    from flopwise.store.queries import (
        lock_budgets,
        lock_budgets_held,
        metered_unit_price,
        settle_reservations,
    )

    actuals = _actuals(session, request_ids)
    # every budget these requests hold, locked at once in ascending id before the first settlement (the lock
    # order of flopwise.store.queries): settling request by request locked each one's budgets in turn, so a pass
    # over requests on budgets 5 then 3 deadlocked with a creation that held 3 and waited for 5
    lock_budgets_held(session, "request_id", list(actuals), ("reserved", "committed", "settled"))
    for request_id, actual in actuals.items():
        amounts = {unit: max(value, Decimal(0)) for unit, value in actual.items()}
        settle_reservations(session, amounts, request_id=request_id)
        settled = list(
            session.scalars(
                select(BudgetReservation).where(
                    BudgetReservation.request_id == request_id, BudgetReservation.state == "settled"
                )
            )
        )
        price = metered_unit_price(amounts)
        stale = [r for r in settled if r.amount != amounts[r.unit] or r.settled_usd_per_device_h != price]
        if stale:
            lock_budgets(session, [r.budget_id for r in stale])
            for r in stale:
                r.amount = amounts[r.unit]
                r.settled_usd_per_device_h = price
            session.flush()
    return actuals


#: what each budget has used per window, within one post-ingest pass (alerts and forecasts ask the same question)
UsedCache = dict[tuple[int, datetime, datetime], Decimal]


def budget_used(session: Session, budget: Budget, now: datetime, cache: UsedCache | None = None) -> Decimal:
    """What *budget* has used in its window containing *now*: its reservations plus unreserved metered usage."""
    return _used_in(session, budget, budget_window_of(budget, now), cache)


def _used_in(
    session: Session, budget: Budget, window: tuple[datetime, datetime], cache: UsedCache | None
) -> Decimal:
    from flopwise.store.queries import budget_spent

    key = (budget.id, *window)
    if cache is not None and key in cache:
        return cache[key]
    used = budget_spent(session, budget.id, window) + metered_unreserved(session, budget, window)
    used = max(used, Decimal(0))  # credits lower usage, never below zero
    if cache is not None:
        cache[key] = used
    return used


def metered_unreserved(session: Session, budget: Budget, window: tuple[datetime, datetime]) -> Decimal:
    """Metered usage in *budget*'s scope and *window* (in the budget's unit) that no reservation on this budget
    already holds: usage with no request, or whose request holds nothing on this budget. Counted once.

    Summed from the usage rollups (:func:`flopwise.store.rollups.scope_sum`, keyed by request too) when they can
    answer, else from the ledger's rows in the window; the same amount either way."""
    from sqlalchemy import and_, exists, func, select

    from flopwise.store.ledger import UsageRecordRow as Row
    from flopwise.store.models import SPENDING_STATES, BudgetReservation
    from flopwise.store.types import to_money

    start, end = window
    column = getattr(Row, UNIT_COLUMNS[budget.unit])
    scope_column = {"org": Row.org_id, "team": Row.team_id, "project": Row.project_id}[budget.scope_kind]
    held = exists().where(
        and_(
            BudgetReservation.budget_id == budget.id,
            BudgetReservation.request_id == Row.request_id,
            BudgetReservation.state.in_(SPENDING_STATES),
        )
    )
    from flopwise.store.rollups import scope_sum

    holding = select(BudgetReservation.request_id).where(
        BudgetReservation.budget_id == budget.id,
        BudgetReservation.state.in_(SPENDING_STATES),
        BudgetReservation.request_id.is_not(None),
    )
    metered = scope_sum(session, budget.unit, budget.scope_kind, budget.scope_id, window, holding)
    if metered is None:  # the rollups cannot answer (a window off the hour, or usage changed since their refresh)
        metered = session.scalar(
            select(func.sum(column)).where(
                scope_column == budget.scope_id,
                Row.charge_period_start >= start,
                Row.charge_period_start < end,
                Row.request_id.is_(None) | ~held,
            )
        )
    if metered is None:
        return Decimal(0)
    return to_money(metered if isinstance(metered, Decimal) else Decimal(repr(float(metered))))


def budgets_in_scope(
    session: Session, org_id: int | None = None, org_ids: Iterable[int] | None = None
) -> list[Budget]:
    """Every budget (of *org_id*, or all; and of *org_ids* when given), in id order."""
    from sqlalchemy import select

    from flopwise.store.models import Budget as BudgetRow

    stmt = select(BudgetRow).order_by(BudgetRow.id)
    if org_id is not None:
        stmt = stmt.where(BudgetRow.org_id == org_id)
    if org_ids is not None:
        stmt = stmt.where(BudgetRow.org_id.in_(list(org_ids)))
    return list(session.scalars(stmt))


def _applies(budget: Budget, now: datetime) -> bool:
    """False when *now* is outside a budget's outer limits (month/quarter/year budgets may have them)."""
    if budget.period == "custom":
        return True
    if budget.window_start is not None and now < budget.window_start:
        return False
    return not (budget.window_end is not None and now >= budget.window_end)


def raise_alerts(
    session: Session,
    now: datetime,
    org_id: int | None = None,
    touched: Iterable[datetime] = (),
    org_ids: Iterable[int] | None = None,
    cache: UsedCache | None = None,
) -> list[BudgetAlert]:
    """Insert a ``budget_alerts`` row for every threshold a budget has reached in its current window, once.

    *touched*: times of usage that an ingest inserted or restated (a late or restated charge); the windows that
    contain them are checked too, so a restatement that pushes a past month over a threshold alerts for that
    month. Returns the rows created by this call (thresholds already alerted in a window are not repeated).
    """
    from sqlalchemy import select
    from sqlalchemy.dialects import postgresql, sqlite

    from flopwise.store.ledger import BudgetAlert

    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    created: list[BudgetAlert] = []
    times = sorted({now, *touched})
    for budget in budgets_in_scope(session, org_id, org_ids):
        gov = governed_budget(budget)
        windows = sorted({budget_window(gov, t) for t in times if _applies(budget, t)})
        for start, end in windows:
            used = _used_in(session, budget, (start, end), cache)
            for threshold in crossed_alerts(gov, Decimal(0), used):
                stmt = (
                    insert(BudgetAlert.__table__)
                    .values(
                        budget_id=budget.id,
                        threshold_frac=threshold,
                        window_start=start,
                        window_end=end,
                        crossed_at=now,
                        used_amount=used,
                        limit_amount=budget.amount,
                        delivery_status="pending",
                        attempts=0,
                    )
                    .on_conflict_do_nothing(index_elements=["budget_id", "threshold_frac", "window_start"])
                    .returning(BudgetAlert.__table__.c.id)
                )
                new_id = session.execute(stmt).scalar()
                if new_id is not None:
                    created.append(session.scalars(select(BudgetAlert).where(BudgetAlert.id == new_id)).one())
    return created


def budget_forecasts(
    session: Session,
    now: datetime,
    org_id: int | None = None,
    org_ids: Iterable[int] | None = None,
    cache: UsedCache | None = None,
) -> list[tuple[int, BudgetForecast]]:
    """(budget id, linear end-of-window forecast) for every budget (of *org_ids* when given) that applies at
    *now*."""
    return [
        (b.id, forecast_budget(governed_budget(b), budget_used(session, b, now, cache), now))
        for b in budgets_in_scope(session, org_id, org_ids)
        if _applies(b, now)
    ]


def apply_actuals(
    session: Session,
    now: datetime,
    org_id: int | None = None,
    touched: Iterable[datetime] = (),
    run_id: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BurnResult:
    """Attribute, settle, draw down and alert in one pass (the caller's transaction; it commits). *touched*: the
    times of inserted or restated usage, whose budget windows are checked for alerts besides the current one.

    *run_id* makes the pass incremental, what ``flopwise ingest`` does after a run: only the rows that run wrote
    are attributed, only the requests they name are settled, and only the budgets of the organizations they
    belong to are drawn down, alerted and forecast (each budget with one indexed ``SUM`` per window). Without it
    the whole ledger is looked at. *progress* is told each stage as it starts.
    """
    say = progress or (lambda _stage: None)
    say("attributing")
    summary = apply_attribution(session, org_id, run_id)
    request_ids: list[int] | None = None
    org_ids: list[int] | None = None
    if run_id is not None:
        from sqlalchemy import select

        from flopwise.store.ledger import UsageRecordRow as Row

        of_run = Row.ingest_run_id == run_id
        request_ids = list(
            session.scalars(select(Row.request_id).where(of_run, Row.request_id.is_not(None)).distinct())
        )
        org_ids = list(session.scalars(select(Row.org_id).where(of_run, Row.org_id.is_not(None)).distinct()))
    say(f"settling {len(request_ids)} requests" if request_ids is not None else "settling requests")
    settled = settle_actuals(session, request_ids) if request_ids != [] else {}
    say("checking budgets")
    cache: UsedCache = {}
    alerts = raise_alerts(session, now, org_id, touched, org_ids, cache)
    record_completed_calibration(session, settled, now)
    _refresh_rollups(session, touched, say)
    say("forecasting")
    forecasts = budget_forecasts(session, now, org_id, org_ids, cache)
    return BurnResult(summary, settled, tuple(alerts), tuple(forecasts))


def _refresh_rollups(session: Session, touched: Iterable[datetime], say: Callable[[str], None]) -> None:
    """Bring the hourly usage rollups up to date with what this pass and the writes before it changed."""
    from flopwise.store.rollups import refresh_rollups

    say("refreshing rollups")
    refresh_rollups(session, touched)


def record_completed_calibration(session: Session, settled: Mapping[int, Any], now: datetime) -> list[int]:
    """Plan-vs-actual samples for settled requests whose planned run is over (decided + duration <= *now*), so a
    request still running never leaves a partial, too-low sample (one sample per request)."""
    from datetime import timedelta

    from flopwise.meter.calibration import record_calibration_samples
    from flopwise.store.models import ComputeRequest

    done = []
    for request_id in settled:
        req = session.get(ComputeRequest, request_id)
        if req is None or req.duration_h is None:
            continue
        start = req.decided_at or req.created_at
        if start + timedelta(hours=float(req.duration_h)) <= now:
            done.append(request_id)
    return record_calibration_samples(session, request_ids=done) if done else []
