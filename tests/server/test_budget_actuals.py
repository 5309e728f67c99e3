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
