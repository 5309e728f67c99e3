"""Budgets burned by actuals, on SQLite and PostgreSQL: attribution of the ledger, settlement of a request's
reservation, draw-down by unreserved usage, alerts once per threshold and window, forecasts; and the real
hb-jobinfo sacct sample burning a device-hour budget."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from flopwise.catalog import load_catalog
from flopwise.meter.burn import (
    apply_actuals,
    apply_attribution,
    budget_forecasts,
    budget_used,
    governed_budget,
    raise_alerts,
    settle_actuals,
)
from flopwise.meter.record import RejectedRow
from flopwise.meter.sacct import parse_sacct
from flopwise.store import (
    Budget,
    BudgetReservation,
    ComputeRequest,
    Organization,
    Project,
    Team,
    User,
    make_engine,
    make_session_factory,
    read_session,
    reserve_against_budgets,
    upgrade,
    write_session,
)
from flopwise.store.ledger import AttributionRule, BudgetAlert, UsageRecordRow
from pgutil import BACKENDS, throwaway_database_url

SLURM = Path(__file__).resolve().parents[1] / "data" / "slurm"
NOW = datetime(2025, 3, 16, tzinfo=UTC)  # the middle of March


@pytest.fixture(scope="module", params=BACKENDS)
def factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker]:
    with throwaway_database_url(request.param, tmp_path_factory, "burn") as url:
        upgrade(url)
        engine = make_engine(url)
        yield make_session_factory(engine)
        engine.dispose()


@dataclass(frozen=True)
class World:
    org_id: int
    team_id: int
    project_id: int
    user_id: int


@pytest.fixture
def world(factory) -> World:
    with write_session(factory) as s:
        org = Organization(name=f"burn-{uuid.uuid4().hex[:8]}")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="research")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="llm")
        user = User(org_id=org.id, name="ada")
        s.add_all([project, user])
        s.flush()
        return World(org.id, team.id, project.id, user.id)


def _budget(s: Session, w: World, amount: str, *, unit: str = "usd", kind: str = "project", **kw) -> Budget:
    scope_id = {"project": w.project_id, "team": w.team_id, "org": w.org_id}[kind]
    b = Budget(
        org_id=w.org_id, name=f"b-{uuid.uuid4().hex[:6]}", scope_kind=kind, scope_id=scope_id,
        period=kw.pop("period", "month"), unit=unit, amount=Decimal(amount),
        alert_thresholds=kw.pop("alerts", ["0.5", "0.8", "1.0"]), **kw,
    )  # fmt: skip
    s.add(b)
    s.flush()
    return b


def _request(s: Session, w: World, estimated_usd: str) -> ComputeRequest:
    r = ComputeRequest(
        org_id=w.org_id, requester_id=w.user_id, project_id=w.project_id, workload_kind="train", inputs={},
        device_type="h100-sxm", device_count=8, estimated_cost_usd=Decimal(estimated_usd),
        estimated_device_hours=Decimal("20"), state="approved",
    )  # fmt: skip
    s.add(r)
    s.flush()
    return r


def _usage(s: Session, key: str, *, cost: str, hours: float, at: datetime = NOW, **kw) -> UsageRecordRow:
    row = UsageRecordRow(
        source=kw.pop("source", "slurm"), source_key=f"{key}-{uuid.uuid4().hex[:8]}", charge_period_start=at,
        charge_period_end=at + timedelta(hours=1), cost_usd=Decimal(cost), cost_basis="catalog-onprem",
        x_device_hours=hours, x_energy_kwh=hours * 0.7, x_co2e_kg=hours * 0.3, tags=kw.pop("tags", {}),
        x_extra={}, **kw,
    )  # fmt: skip
    s.add(row)
    s.flush()
    return row


def test_request_usage_replaces_its_reservation_and_other_usage_draws_down(factory, world):
    with write_session(factory) as s:
        budget = _budget(s, world, "100")
        req = _request(s, world, "60")
        assert reserve_against_budgets(s, [budget.id], [Decimal("60")], request_id=req.id, counted_at=NOW).ok
        s.add(AttributionRule(org_id=world.org_id, priority=10, match={"account": "physics"},
                              project_id=world.project_id))  # fmt: skip
        _usage(s, "linked", cost="25", hours=10, x_request_id=str(req.id))
        _usage(s, "linked2", cost="15", hours=6, x_request_id=f"req-{req.id}")
        _usage(s, "rule", cost="45", hours=18, x_account="physics")
        _usage(s, "stray", cost="1000", hours=400, x_account="chemistry")  # matches no rule
        budget_id, request_id = budget.id, req.id
    with write_session(factory) as s:
        result = apply_actuals(s, NOW, org_id=world.org_id)
    assert result.attribution.by_request == 2 and result.attribution.by_rule == 1
    assert result.attribution.unattributed >= 1
    assert result.settled[request_id]["usd"] == Decimal("40")
    assert result.settled[request_id]["device_hours"] == Decimal("16")
    with read_session(factory) as s:
        res = s.scalars(select(BudgetReservation).where(BudgetReservation.request_id == request_id)).one()
        assert (res.state, res.amount, res.reserved_amount) == ("settled", Decimal("40"), Decimal("60"))
        budget = s.get(Budget, budget_id)
        assert budget_used(s, budget, NOW) == Decimal("85")  # 40 settled + 45 unreserved, the stray not
        stray = s.scalars(select(UsageRecordRow).where(UsageRecordRow.x_account == "chemistry")).one()
        assert stray.org_id is None  # kept, unattributed
    assert sorted(a.threshold_frac for a in result.alerts if a.budget_id == budget_id) == [
        Decimal("0.5"),
        Decimal("0.8"),
    ]
    forecast = dict(result.forecasts)[budget_id]
    assert forecast.is_projected_over and forecast.runs_out_at is not None
    assert forecast.window_start <= forecast.runs_out_at < forecast.window_end


def test_alerts_fire_once_per_threshold_per_window(factory, world):
    with write_session(factory) as s:
        budget = _budget(s, world, "50", kind="team")
        _usage(s, "a", cost="30", hours=1, org_id=world.org_id, team_id=world.team_id)
        first = raise_alerts(s, NOW, world.org_id)
        again = raise_alerts(s, NOW + timedelta(hours=1), world.org_id)
        _usage(s, "b", cost="25", hours=1, org_id=world.org_id, team_id=world.team_id)
        third = raise_alerts(s, NOW + timedelta(hours=2), world.org_id)
        april = NOW + timedelta(days=20)
        _usage(s, "c", cost="26", hours=1, at=april, org_id=world.org_id, team_id=world.team_id)
        fourth = raise_alerts(s, april, world.org_id)
        budget_id = budget.id
    assert [a.threshold_frac for a in first if a.budget_id == budget_id] == [Decimal("0.5")]
    assert [a for a in again if a.budget_id == budget_id] == []
    assert sorted(a.threshold_frac for a in third if a.budget_id == budget_id) == [
        Decimal("0.8"),
        Decimal("1.0"),
    ]
    assert [(a.threshold_frac, a.window_start.month) for a in fourth if a.budget_id == budget_id] == [
        (Decimal("0.5"), 4)
    ]
    with read_session(factory) as s:
        rows = s.scalars(select(BudgetAlert).where(BudgetAlert.budget_id == budget_id)).all()
        assert len(rows) == 4 and all(r.delivery_status == "pending" and r.attempts == 0 for r in rows)


def test_late_usage_updates_a_settled_reservation_once(factory, world):
    with write_session(factory) as s:
        budget = _budget(s, world, "1000")
        req = _request(s, world, "100")
        reserve_against_budgets(
            s, [budget.id], [Decimal("100")], request_id=req.id, counted_at=NOW, unit_price=Decimal("10")
        )
        _usage(s, "x", cost="30", hours=2, x_request_id=str(req.id))
        apply_attribution(s)
        settle_actuals(s, [req.id])
        row = s.scalars(select(BudgetReservation).where(BudgetReservation.request_id == req.id)).one()
        assert row.settled_usd_per_device_h == Decimal("15")  # metered $30 / 2 device-hours
        _usage(s, "y", cost="12.5", hours=1, x_request_id=str(req.id))
        apply_attribution(s)
        settled = settle_actuals(s, [req.id])
        assert settled[req.id]["usd"] == Decimal("42.5")
        assert budget_used(s, budget, NOW) == Decimal("42.5")  # counted once: via the reservation only
        # the late usage moves the metered price too ($42.50 / 3 device-hours); the reserved $10 stays
        s.refresh(row)
        assert (row.reserved_usd_per_device_h, row.settled_usd_per_device_h) == (
            Decimal("10"),
            Decimal("14.166667"),
        )


def test_hard_budget_overrun_by_actuals_is_recorded_and_forecast(factory, world):
    with write_session(factory) as s:
        budget = _budget(s, world, "10", unit="device_hours", kind="org")
        _usage(s, "big", cost="0", hours=12, org_id=world.org_id, at=NOW - timedelta(days=1))
        forecasts = dict(budget_forecasts(s, NOW, world.org_id))
        used = budget_used(s, budget, NOW)
        budget_id = budget.id
    assert used == Decimal("12")
    f = forecasts[budget_id]
    assert f.is_projected_over and f.runs_out_at == NOW


def test_real_sacct_sample_burns_a_team_device_hour_budget(factory, world):
    path = SLURM / "hb-jobinfo-sacct.txt"
    assert path.exists(), f"sample file {path.name} not found in {SLURM}"
    rejected: list[RejectedRow] = []
    with path.open(encoding="utf-8") as f:
        records = list(
            parse_sacct(f, rejected=rejected, fields="hb-jobinfo", assume_tz="UTC", catalog=load_catalog())
        )
    start = min(r.charge_period_start for r in records)
    end = max(r.charge_period_start for r in records) + timedelta(seconds=1)
    gpu_hours = sum(r.x_device_hours or 0 for r in records if r.tags.get("partition", "").startswith("gpu"))
    assert gpu_hours > 0
    with write_session(factory) as s:
        budget = _budget(s, world, f"{gpu_hours * 2:.6f}", unit="device_hours", kind="team", period="custom",
                         window_start=start, window_end=end)  # fmt: skip
        s.add(
            AttributionRule(
                org_id=world.org_id, priority=1, match={"partition": "gpu*"}, team_id=world.team_id
            )
        )
        for r in records:
            s.add(UsageRecordRow(
                source=r.source, source_key=f"{world.org_id}:{r.source_key}",
                charge_period_start=r.charge_period_start, charge_period_end=r.charge_period_end,
                cost_basis="none", tags=r.tags, x_device_hours=r.x_device_hours, x_extra=r.x_extra,
                x_account=r.x_account, x_user=r.x_user,
            ))  # fmt: skip
        s.flush()
        result = apply_actuals(s, end - timedelta(seconds=1), world.org_id)
        used = budget_used(s, budget, end - timedelta(seconds=1))
        budget_id = budget.id
    assert result.attribution.by_rule == 14
    assert math.isclose(float(used), gpu_hours, rel_tol=1e-6)
    assert [a.threshold_frac for a in result.alerts if a.budget_id == budget_id] == [Decimal("0.5")]


def test_governed_budget_keeps_thresholds_and_custom_window(factory, world):
    with write_session(factory) as s:
        b = _budget(s, world, "5", alerts=["0.9", "0.25"])
        gov = governed_budget(b)
    assert gov.alerts_frac == (Decimal("0.25"), Decimal("0.9")) and gov.scope_kind == "project"


@pytest.mark.parametrize("first_on_higher", [True, False])
def test_settling_many_requests_takes_their_budgets_in_lock_order(factory, world, first_on_higher):
    """A settlement pass over two requests on two budgets locks both budgets at once, in ascending id, before it
    settles either: a creation holding the lower budget and then asking for the higher one is not deadlocked.
    Settling request by request locked each one's budgets in turn (the higher one first for one of the two
    orders the requests come in), so PostgreSQL aborted one of the two transactions as a deadlock."""
    import threading

    from sqlalchemy import text

    engine = factory.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite runs one writer at a time)")
    with write_session(factory) as s:
        low, high = _budget(s, world, "1000"), _budget(s, world, "1000")
        requests = [_request(s, world, "10"), _request(s, world, "10")]
        budgets = [high, low] if first_on_higher else [low, high]
        for req, budget in zip(requests, budgets, strict=True):
            assert reserve_against_budgets(s, [budget.id], [Decimal("10")], request_id=req.id, counted_at=NOW).ok
            _usage(s, f"r{req.id}", cost="4", hours=1, x_request_id=str(req.id))
        apply_attribution(s)
        ids, low_id, high_id = [r.id for r in requests], low.id, high.id
    errors: list[BaseException] = []

    def settle() -> None:
        try:
            with write_session(factory) as s:
                s.execute(text("SET LOCAL lock_timeout = '10s'"))
                settle_actuals(s, ids)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    with engine.connect() as creator:  # a creation: the lower budget locked first, then the higher one
        creator.execute(text("SET lock_timeout = '10s'"))
        creator.execute(text("SELECT id FROM budgets WHERE id = :i FOR UPDATE"), {"i": low_id})
        burn = threading.Thread(target=settle)
        burn.start()
        burn.join(0.5)  # the pass now waits for the lower budget
        try:
            creator.execute(text("SELECT id FROM budgets WHERE id = :i FOR UPDATE"), {"i": high_id})
            creator.commit()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)
            creator.rollback()
        burn.join(15)
    assert not burn.is_alive()
    assert errors == []
    with read_session(factory) as s:
        states = s.scalars(select(BudgetReservation.state).where(BudgetReservation.request_id.in_(ids))).all()
    assert sorted(states) == ["settled", "settled"]
