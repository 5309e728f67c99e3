"""Budgets: a cap per scope (organization, team, project) and period, in usd, device_hours, kwh or co2e_kg.

Hard budgets fail closed at admission (a request that would overrun is denied), soft ones fail open with a
warning. ``GET`` shows what is reserved, committed and settled in the current window and what remains, and for a
USD budget what the settled usage would have cost at the prices it was reserved at (the price difference).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from flopwise import govern
from flopwise.server.auth import authorize, visibility
from flopwise.server.decisions import MAX_AMOUNT, MAX_ID, BodyModel, IdPath, audit, budget_usage, window_for
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep
from flopwise.server.errors import ApiError

__all__ = ["BudgetCreate", "BudgetPublic", "BudgetUpdate", "router", "update_budget"]

router = APIRouter(prefix="/budgets", tags=["budgets"])


class BudgetCreate(BodyModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scope_kind: Literal["org", "team", "project"]
    scope_id: int = Field(ge=1, le=MAX_ID)
    period: Literal["month", "quarter", "year", "custom"]
    unit: Literal["usd", "device_hours", "kwh", "co2e_kg"]
    amount: Decimal = Field(ge=0, lt=MAX_AMOUNT, description="the cap, exact (send it as a string)")
    is_hard: bool = True
    alert_thresholds: list[Decimal] = Field(
        default_factory=lambda: list(govern.budget.DEFAULT_ALERTS_FRAC), max_length=20,
        description="fractions of amount that raise an alert when crossed, e.g. ['0.5', '0.8', '1.0']",
    )  # fmt: skip
    window_start: datetime | None = None
    window_end: datetime | None = None

    @model_validator(mode="after")
    def _window(self) -> BudgetCreate:
        for name in ("window_start", "window_end"):
            value = getattr(self, name)
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise ValueError(f"{name} needs a timezone, e.g. 2026-01-01T00:00:00Z")
        if self.period == "custom" and (self.window_start is None or self.window_end is None):
            raise ValueError("a custom period needs window_start and window_end")
        if self.window_start and self.window_end and self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        for a in self.alert_thresholds:
            if not Decimal(0) < a <= Decimal(10):
                raise ValueError(f"alert threshold {a} is a fraction of amount: above 0 and at most 10")
        return self


class BudgetUpdate(BodyModel):
    """A change to a budget: its name, cap, hardness or alert thresholds (scope, unit and period stay)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    amount: Decimal | None = Field(default=None, ge=0, lt=MAX_AMOUNT)
    is_hard: bool | None = None
    alert_thresholds: list[Decimal] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _thresholds(self) -> BudgetUpdate:
        for a in self.alert_thresholds or ():
            if not Decimal(0) < a <= Decimal(10):
                raise ValueError(f"alert threshold {a} is a fraction of amount: above 0 and at most 10")
        return self


class BudgetPublic(BaseModel):
    id: int
    org_id: int
    name: str
    scope_kind: str
    scope_id: int
    period: str
    unit: str
    amount: Decimal
    is_hard: bool
    alert_thresholds: list[Decimal]
    window_start: datetime | None
    window_end: datetime | None
    created_at: datetime
    current_window_start: datetime | None
    current_window_end: datetime | None
    reserved: Decimal
    committed: Decimal
    settled: Decimal
    used: Decimal
    remaining: Decimal
    used_frac: Decimal | None
    alerts_crossed: list[Decimal]
    #: USD budgets, over the settled reservations in the window that carry both unit prices: what their usage
    #: would have cost at the prices it was reserved at, and their settled amount minus that (the part due to a
    #: price that moved between reservation and settlement); None when no settled reservation carries both
    settled_at_reserved_prices: Decimal | None = None
    settled_price_difference: Decimal | None = None


def _public(session: Session, budget: object, now: datetime) -> BudgetPublic:
    window = window_for(budget, now)  # type: ignore[arg-type]
    usage = budget_usage(session, budget.id, window) if window else govern.BudgetUsage()  # type: ignore[attr-defined]
    amount: Decimal = budget.amount  # type: ignore[attr-defined]
    alerts = [Decimal(str(a)) for a in budget.alert_thresholds or ()]  # type: ignore[attr-defined]
    crossed = [a for a in alerts if usage.used >= a * amount and usage.used > 0]
    effect = None
    if budget.unit == "usd":  # type: ignore[attr-defined]
        from flopwise.store import settled_price_effect

        effect = settled_price_effect(session, budget.id, window)  # type: ignore[attr-defined]
    return BudgetPublic(
        id=budget.id,  # type: ignore[attr-defined]
        org_id=budget.org_id,  # type: ignore[attr-defined]
        name=budget.name,  # type: ignore[attr-defined]
        scope_kind=budget.scope_kind,  # type: ignore[attr-defined]
        scope_id=budget.scope_id,  # type: ignore[attr-defined]
        period=budget.period,  # type: ignore[attr-defined]
        unit=budget.unit,  # type: ignore[attr-defined]
        amount=amount,
        is_hard=budget.is_hard,  # type: ignore[attr-defined]
        alert_thresholds=alerts,
        window_start=budget.window_start,  # type: ignore[attr-defined]
        window_end=budget.window_end,  # type: ignore[attr-defined]
        created_at=budget.created_at,  # type: ignore[attr-defined]
        current_window_start=window[0] if window else None,
        current_window_end=window[1] if window else None,
        reserved=usage.reserved,
        committed=usage.committed,
        settled=usage.settled,
        used=usage.used,
        remaining=amount - usage.used,
        used_frac=(usage.used / amount).quantize(Decimal("0.000001")) if amount > 0 else None,
        alerts_crossed=crossed,
        settled_at_reserved_prices=effect[0] if effect else None,
        settled_price_difference=effect[1] if effect else None,
    )


@router.post("", response_model=BudgetPublic, status_code=201)
def create_budget(
    body: BudgetCreate, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> BudgetPublic:
    """Create a budget on a scope (needs admin on it); names are unique in the organization (409)."""
    from flopwise.store import Budget, write_session

    now = clock()
    with write_session(db) as session:
        authorize(session, principal, "admin", body.scope_kind, body.scope_id)
        if session.scalar(
            select(Budget.id).where(Budget.org_id == principal.org_id, Budget.name == body.name)
        ):
            raise ApiError(
                409, f"a budget named {body.name!r} exists", [{"field": "name", "message": "taken"}]
            )
        budget = Budget(
            org_id=principal.org_id,
            name=body.name,
            scope_kind=body.scope_kind,
            scope_id=body.scope_id,
            period=body.period,
            window_start=body.window_start,
            window_end=body.window_end,
            unit=body.unit,
            amount=body.amount,
            is_hard=body.is_hard,
            alert_thresholds=[str(a) for a in body.alert_thresholds],
            created_by=principal.user_id,
            created_at=now,
        )
        session.add(budget)
        session.flush()
        audit(session, principal, "budget.create", {"budget_id": budget.id, **body.model_dump(mode="json")}, now,
              principal.org_id)  # fmt: skip
        return _public(session, budget, now)


@router.get("", response_model=list[BudgetPublic])
def list_budgets(
    principal: CurrentPrincipal,
    db: DbDep,
    clock: ClockDep,
    scope_kind: Annotated[Literal["org", "team", "project"] | None, Query()] = None,
    scope_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[BudgetPublic]:
    """The organization's budgets the caller may see (a role on their scope or above), with current usage."""
    from flopwise.store import Budget, read_session

    now = clock()
    with read_session(db) as session:
        seen = visibility(session, principal)
        stmt = select(Budget).where(
            Budget.org_id == principal.org_id, seen.scopes(Budget.scope_kind, Budget.scope_id)
        )
        if scope_kind is not None:
            stmt = stmt.where(Budget.scope_kind == scope_kind)
        if scope_id is not None:
            stmt = stmt.where(Budget.scope_id == scope_id)
        return [_public(session, b, now) for b in session.scalars(stmt.order_by(Budget.id))]


@router.get("/{budget_id}", response_model=BudgetPublic)
def show_budget(budget_id: IdPath, principal: CurrentPrincipal, db: DbDep, clock: ClockDep) -> BudgetPublic:
    """One budget: what is reserved, committed and settled in the current window and what remains."""
    from flopwise.store import Budget, read_session

    with read_session(db) as session:
        budget = session.get(Budget, budget_id)
        if budget is None or budget.org_id != principal.org_id:
            raise ApiError(404, f"budget {budget_id} not found")
        authorize(session, principal, "viewer", budget.scope_kind, budget.scope_id)
        return _public(session, budget, clock())


@router.patch("/{budget_id}", response_model=BudgetPublic)
def update_budget(
    budget_id: IdPath, body: BudgetUpdate, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> BudgetPublic:
    """Change a budget's name, amount, hardness or alert thresholds (needs admin on its scope); audited with the
    old and new values. Reservations already made stay; the new amount applies to the next check."""
    from flopwise.store import Budget, write_session

    now = clock()
    with write_session(db) as session:
        budget = session.get(Budget, budget_id)
        if budget is None or budget.org_id != principal.org_id:
            raise ApiError(404, f"budget {budget_id} not found")
        authorize(session, principal, "admin", budget.scope_kind, budget.scope_id)
        changes = body.model_dump(exclude_none=True)
        if "name" in changes and changes["name"] != budget.name and session.scalar(
            select(Budget.id).where(Budget.org_id == principal.org_id, Budget.name == changes["name"])
        ):
            raise ApiError(
                409, f"a budget named {changes['name']!r} exists", [{"field": "name", "message": "taken"}]
            )
        before = {
            "name": budget.name,
            "amount": str(budget.amount),
            "is_hard": budget.is_hard,
            "alert_thresholds": list(budget.alert_thresholds or ()),
        }
        for key, value in changes.items():
            setattr(budget, key, [str(a) for a in value] if key == "alert_thresholds" else value)
        session.flush()
        audit(session, principal, "budget.update",
              {"budget_id": budget.id, "before": before, "after": body.model_dump(mode="json", exclude_none=True)},
              now, principal.org_id)  # fmt: skip
        return _public(session, budget, now)
