"""Budgets burn by actuals: metered usage in a budget's scope counts against it at decision time (#5 -> #4)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import gov_fixtures
from gov_fixtures import T0, Org, make_budget, plan_request

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org


def _metered(project_id: int, cost: str) -> dict:
    """One billed line of metered usage for the project, inside the budget's month."""
    start = T0 - timedelta(days=2)
    return {
        "project_id": project_id,
        "records": [
            {
                "source": "focus",
                "source_key": f"test:{uuid.uuid4().hex}",
                "charge_period_start": start.isoformat(),
                "charge_period_end": (start + timedelta(hours=10)).isoformat(),
                "billed_cost": cost,
                "billing_currency": "USD",
                "x_device_type": "h100-sxm",
                "x_device_count": 1,
                "x_device_hours": 10,
            }
        ],
    }


def test_metered_usage_draws_the_hard_budget_down(org: Org) -> None:
    project = org.new_project()
    make_budget(org, project, "100")
    posted = org.post("/usage", "member", _metered(project, "90.00"))
    assert posted.status_code == 200, posted.text
    assert posted.json()["inserted"] == 1
    # $90 already spent: a $20 request no longer fits the $100 hard budget, a $8 one does
    denied = org.post("/requests", "member", plan_request(project, hours="10")).json()
    assert denied["state"] == "denied", denied
    allowed = org.post("/requests", "member", plan_request(project, hours="4")).json()
    assert allowed["state"] == "approved", allowed
    assert Decimal(allowed["reservations"][0]["amount"]) == Decimal("8.00")


def test_finished_request_becomes_a_calibration_sample(org: Org) -> None:
    """request (plan: 1 x H100 for 10 h) -> its metered usage (13 device-hours) arrives after the planned end ->
    the reservation settles at the actual and a plan-vs-actual sample is stored for calibration."""
    from sqlalchemy import select

    from flopwise.store import read_session
    from flopwise.store.ledger import CalibrationSample

    project = org.new_project()
    make_budget(org, project, "1000")
    req = org.post("/requests", "member", plan_request(project, hours="10")).json()
    assert req["state"] == "approved", req
    org.gov.clock.advance(hours=11)
    usage = _metered(project, "26.00")
    usage["records"][0]["x_request_id"] = str(req["id"])
    usage["records"][0]["x_device_hours"] = 13
    usage["records"][0]["charge_period_start"] = org.gov.clock.now.replace(minute=0).isoformat()
    usage["records"][0]["charge_period_end"] = (
        org.gov.clock.now.replace(minute=0) + timedelta(hours=1)
    ).isoformat()
    assert org.post("/usage", "member", usage).json()["inserted"] == 1
    with read_session(org.gov.app.state.db) as s:
        sample = s.scalars(select(CalibrationSample).where(CalibrationSample.request_id == req["id"])).one()
        assert (sample.device_type, sample.workload_kind) == ("h100-sxm", "train")
        assert sample.estimated_device_hours == 10 and sample.actual_device_hours == 13
