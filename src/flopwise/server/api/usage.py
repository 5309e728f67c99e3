"""Usage reports, plan vs actual, budget alerts, alert channels and attribution rules of the caller's organization.

* ``GET /reports/usage?group_by=&from=&to=&format=json|csv``: totals and groups of the usage ledger
  (:func:`flopwise.store.reports.usage_report`); any role on the organization.
* ``GET /reports/concentration?by=provider|vendor|device|region&measure=cost_usd|device_hours``: HHI and
  largest share.
* ``GET /reports/plan-vs-actual``: per request with metered usage, estimated vs actual device-hours, cost and
  energy (:func:`flopwise.meter.calibration.plan_vs_actual`).
* ``GET /alerts``: budget alerts raised by actuals (:mod:`flopwise.meter.burn`) and their delivery state.
* ``POST /alert-channels``: a webhook for the organization's alerts (admins; the secret signs each POST).
* ``POST /attribution-rules``, ``GET /attribution-rules``: rules that map usage to teams and projects (admins
  create; any role lists).

Money leaves as decimal strings (exact), times as ISO 8601 UTC.
"""

from __future__ import annotations

import csv
import io
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from flopwise.server.auth import authorize
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep
from flopwise.server.errors import ApiError

__all__ = ["AlertChannelCreate", "AttributionRuleCreate", "router"]

router = APIRouter(tags=["usage"])

GroupBy = Literal["org", "team", "project", "device", "provider", "region", "source", "day", "month"]
REPORT_COLUMNS = (
    "key", "label", "records", "device_hours", "cost_usd", "energy_kwh", "co2e_kg", "idle_device_hours",
    "idle_cost_usd", "utilization_frac", "idle_frac", "uncosted_records",
    "node_energy_kwh", "facility_energy_kwh", "device_co2e_kg", "node_co2e_kg", "facility_co2e_kg",
)  # fmt: skip


def jsonable(value: Any) -> Any:
    """Decimals as exact strings, datetimes as ISO 8601, recursively (FastAPI would turn Decimals into floats)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ApiError(
            422,
            f"{name}: {value.isoformat()!r} has no time zone; send e.g. 2025-01-01T00:00:00Z",
            [{"field": name, "message": "needs a timezone"}],
        )
    return value


def report_csv(report: dict[str, Any]) -> str:
    """The groups of a usage report (or its total when ungrouped) as CSV with a header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    rows = report["groups"] or [{"key": "total", "label": "total", **report["total"]}]
    for g in rows:
        writer.writerow(["" if g.get(c) is None else jsonable(g.get(c)) for c in REPORT_COLUMNS])
    return out.getvalue()


@router.get("/reports/usage")
def usage(
    principal: CurrentPrincipal,
    db: DbDep,
    group_by: GroupBy | None = None,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Usage of the caller's organization in ``[from, to)``: totals and, with ``group_by``, groups."""
    from flopwise.store import read_session
    from flopwise.store.reports import usage_report

    with read_session(db) as session:
        authorize(session, principal, "viewer", "org", principal.org_id)
        report = usage_report(session, group_by, _aware("from", from_), _aware("to", to), principal.org_id)
    if format == "csv":
        return Response(report_csv(report), media_type="text/csv; charset=utf-8")
    return JSONResponse(jsonable(report))


@router.get("/reports/concentration")
def concentration(
    principal: CurrentPrincipal,
    db: DbDep,
    by: Literal["provider", "vendor", "device", "region"] = "provider",
    measure: Literal["cost_usd", "device_hours"] = "cost_usd",
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
) -> JSONResponse:
    """How concentrated the organization's spending is (Herfindahl-Hirschman index, largest share)."""
    from flopwise.store import read_session
    from flopwise.store.reports import catalog_vendor_of, concentration_report

    with read_session(db) as session:
        authorize(session, principal, "viewer", "org", principal.org_id)
        report = concentration_report(
            session,
            by,
            measure,
            _aware("from", from_),
            _aware("to", to),
            principal.org_id,
            catalog_vendor_of(by),
        )
    return JSONResponse(jsonable(report))


@router.get("/reports/plan-vs-actual")
def plan_vs_actual_report(principal: CurrentPrincipal, db: DbDep) -> JSONResponse:
    """Per request with metered usage: estimated vs actual device-hours, cost and energy, and the errors."""
    from flopwise.meter.calibration import plan_vs_actual
    from flopwise.store import read_session

    with read_session(db) as session:
        authorize(session, principal, "viewer", "org", principal.org_id)
        rows = plan_vs_actual(session, org_id=principal.org_id)
    return JSONResponse(jsonable({"requests": rows}))


@router.get("/alerts")
def list_alerts(
    principal: CurrentPrincipal,
    db: DbDep,
    clock: ClockDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Budget alerts of the organization, newest first, with each budget's end-of-window forecast."""
    from flopwise.govern.budget import forecast_budget
    from flopwise.meter.burn import budget_used, governed_budget
    from flopwise.store import Budget, read_session
    from flopwise.store.ledger import BudgetAlert

    now = clock()
    with read_session(db) as session:
        authorize(session, principal, "viewer", "org", principal.org_id)
        stmt = (
            select(BudgetAlert, Budget)
            .join(Budget, Budget.id == BudgetAlert.budget_id)
            .where(Budget.org_id == principal.org_id)
            .order_by(BudgetAlert.crossed_at.desc(), BudgetAlert.id.desc())
            .limit(limit)
        )
        if status is not None:
            stmt = stmt.where(BudgetAlert.delivery_status == status)
        alerts, forecasts = [], {}
        for alert, budget in session.execute(stmt).all():
            if budget.id not in forecasts:
                f = forecast_budget(governed_budget(budget), budget_used(session, budget, now), now)
                forecasts[budget.id] = {
                    "used": f.used,
                    "burn_per_day": f.burn_per_day,
                    "projected_at_end": f.projected_at_end,
                    "runs_out_at": f.runs_out_at,
                    "is_projected_over": f.is_projected_over,
                    "window_end": f.window_end,
                }
            alerts.append(
                {
                    "id": alert.id,
                    "budget_id": budget.id,
                    "budget_name": budget.name,
                    "unit": budget.unit,
                    "threshold_frac": alert.threshold_frac,
                    "window_start": alert.window_start,
                    "window_end": alert.window_end,
                    "crossed_at": alert.crossed_at,
                    "used_amount": alert.used_amount,
                    "limit_amount": alert.limit_amount,
                    "delivery_status": alert.delivery_status,
                    "delivered_at": alert.delivered_at,
                    "attempts": alert.attempts,
                    "forecast": forecasts[budget.id],
                }
            )
    return JSONResponse(jsonable({"alerts": alerts}))


class AlertChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="the webhook that receives a signed JSON POST per alert")
    secret: str | None = Field(
        default=None, min_length=16, max_length=200,
        description="the HMAC-SHA256 signing key; one is generated (and shown once) when omitted",
    )  # fmt: skip


@router.post("/alert-channels", status_code=201)
def create_alert_channel(body: AlertChannelCreate, principal: CurrentPrincipal, db: DbDep) -> JSONResponse:
    """Add a webhook for the organization's budget alerts (org admins). The secret is returned once."""
    from flopwise.store import write_session
    from flopwise.store.ledger import AlertChannel

    secret = body.secret or secrets.token_urlsafe(32)
    with write_session(db) as session:
        authorize(session, principal, "admin", "org", principal.org_id)
        channel = AlertChannel(org_id=principal.org_id, kind="webhook", url=str(body.url), secret=secret)
        session.add(channel)
        session.flush()
        out = {"id": channel.id, "org_id": channel.org_id, "kind": channel.kind, "url": channel.url}
        out["created_at"] = channel.created_at
    return JSONResponse(jsonable({**out, "secret": secret}), status_code=201)


class AttributionRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: int = Field(default=100, ge=0, le=1_000_000, description="lower is tried first")
    match: dict[str, Any] = Field(
        description="conditions that must all hold: source, account, partition, user, namespace, tags, tag, "
        "labels, label, resource_id (globs)"
    )
    team_id: int | None = Field(default=None, ge=1)
    project_id: int | None = Field(default=None, ge=1)

    @field_validator("match")
    @classmethod
    def _valid(cls, match: dict[str, Any]) -> dict[str, Any]:
        from flopwise.govern.match import validate_match

        validate_match(match)
        return match


def _rule_public(rule: Any) -> dict[str, Any]:
    return {
        "id": rule.id,
        "org_id": rule.org_id,
        "priority": rule.priority,
        "match": rule.match,
        "team_id": rule.team_id,
        "project_id": rule.project_id,
        "created_at": rule.created_at,
    }


@router.post("/attribution-rules", status_code=201)
def create_attribution_rule(
    body: AttributionRuleCreate, principal: CurrentPrincipal, db: DbDep
) -> JSONResponse:
    """Add a rule mapping usage to a team or project of the organization (org admins)."""
    from flopwise.store import Project, write_session
    from flopwise.store.ledger import AttributionRule

    if body.team_id is None and body.project_id is None:
        raise ApiError(
            422,
            "give team_id or project_id: the team or project that matching usage belongs to",
            [{"field": "team_id", "message": "team_id or project_id is required"}],
        )
    with write_session(db) as session:
        authorize(session, principal, "admin", "org", principal.org_id)
        team_id = body.team_id
        if body.project_id is not None:
            authorize(session, principal, "admin", "project", body.project_id)
            project_team = session.get(Project, body.project_id).team_id  # type: ignore[union-attr]
            if team_id is not None and team_id != project_team:
                raise ApiError(
                    422,
                    f"project {body.project_id} belongs to team {project_team}, not team {team_id}",
                    [{"field": "team_id", "message": "must be the project's team (or omitted)"}],
                )
            team_id = project_team
        else:
            authorize(session, principal, "admin", "team", team_id)  # type: ignore[arg-type]
        rule = AttributionRule(
            org_id=principal.org_id,
            priority=body.priority,
            match=body.match,
            team_id=team_id,
            project_id=body.project_id,
        )
        session.add(rule)
        session.flush()
        out = _rule_public(rule)
    return JSONResponse(jsonable(out), status_code=201)


@router.get("/attribution-rules")
def list_attribution_rules(principal: CurrentPrincipal, db: DbDep) -> JSONResponse:
    """The organization's attribution rules in the order they are tried (priority, then id)."""
    from flopwise.store import read_session
    from flopwise.store.ledger import AttributionRule

    with read_session(db) as session:
        authorize(session, principal, "viewer", "org", principal.org_id)
        rules = session.scalars(
            select(AttributionRule)
            .where(AttributionRule.org_id == principal.org_id)
            .order_by(AttributionRule.priority, AttributionRule.id)
        ).all()
        out = [_rule_public(r) for r in rules]
    return JSONResponse(jsonable({"rules": out}))
