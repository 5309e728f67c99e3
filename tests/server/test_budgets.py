"""Budgets and quotas over real HTTP: create, list, show usage per window, authorization, exact money, 422s."""

from __future__ import annotations

from decimal import Decimal

import gov_fixtures
from gov_fixtures import Org, make_budget, plan_request

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org


def _budget(o: Org, **over: object) -> dict:
    body = {"name": "gpu-march", "scope_kind": "project", "scope_id": o.project_id, "period": "month",
            "unit": "usd", "amount": "1234.567891"}  # fmt: skip
    body.update(over)
    return body


def test_create_show_list_with_exact_money(org: Org) -> None:
    r = org.post("/budgets", "admin", _budget(org, alert_thresholds=["0.5", "0.9"]))
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["amount"] == "1234.567891" and b["is_hard"] is True  # Decimal, sent and returned as a string
    assert (b["current_window_start"], b["current_window_end"]) == (
        "2026-03-01T00:00:00Z",
        "2026-04-01T00:00:00Z",
    )
    assert org.post("/budgets", "admin", _budget(org)).status_code == 409  # name taken
    org.post("/requests", "member", plan_request(org.project_id, hours="320.05", price="2.00"))  # $640.10
    shown = org.get(f"/budgets/{b['id']}", "viewer").json()
    assert Decimal(shown["reserved"]) == Decimal("640.1")
    assert Decimal(shown["remaining"]) == Decimal("1234.567891") - Decimal("640.1")
    assert [Decimal(a) for a in shown["alerts_crossed"]] == [Decimal("0.5")]
    assert [x["id"] for x in org.get("/budgets", "viewer").json()] == [b["id"]]
    assert org.get("/budgets", "other_org").json() == []
    assert org.get(f"/budgets/{b['id']}", "other_org").status_code == 404


def test_budget_window_moves_with_the_clock(org: Org) -> None:
    b = make_budget(org, org.project_id, "100")
    org.post("/requests", "member", plan_request(org.project_id, hours="10"))  # $20 in March
    assert Decimal(org.get(f"/budgets/{b['id']}", "admin").json()["used"]) == 20
    org.gov.clock.advance(days=30)  # April: a new monthly window
    april = org.get(f"/budgets/{b['id']}", "admin").json()
    assert Decimal(april["used"]) == 0 and april["current_window_start"] == "2026-04-01T00:00:00Z"


def test_custom_window_and_team_scope_cover_the_project(org: Org) -> None:
    r = org.post(
        "/budgets",
        "admin",
        _budget(org, name="sprint", scope_kind="team", scope_id=org.team_id, period="custom", unit="device_hours",
                amount="15", window_start="2026-03-01T00:00:00Z", window_end="2026-03-15T00:00:00+00:00"),
    )  # fmt: skip
    assert r.status_code == 201, r.text
    first = org.post("/requests", "member", plan_request(org.project_id, hours="10")).json()
    assert first["state"] == "approved" and Decimal(first["reservations"][0]["amount"]) == 10
    second = org.post("/requests", "member", plan_request(org.project_id, hours="10")).json()
    assert second["state"] == "denied"  # 10 + 10 device-hours > 15 on a hard team budget


def test_budget_authorization(org: Org) -> None:
    for who, status in [("none", 401), ("expired", 401), ("revoked", 401), ("malformed", 401), ("other_org", 404),
                        ("viewer", 403), ("member", 403), ("approver", 403)]:  # fmt: skip
        assert org.post("/budgets", who, _budget(org, name=f"b-{who}")).status_code == status, who
    assert org.post("/budgets", "admin", _budget(org, name="ok")).status_code == 201


def test_budget_bad_input_is_422_with_fields(org: Org) -> None:
    cases = [
        (_budget(org, amount="-1"), "amount"),
        (_budget(org, amount="1e20"), "amount"),
        (_budget(org, amount="ten"), "amount"),
        (_budget(org, unit="eur"), "unit"),
        (_budget(org, period="week"), "period"),
        (_budget(org, period="custom"), ""),
        (
            _budget(
                org, period="custom", window_start="2026-03-01T00:00:00", window_end="2026-04-01T00:00:00"
            ),
            "",
        ),
        (_budget(org, alert_thresholds=["0"]), ""),
        (_budget(org, scope_id=0), "scope_id"),
        (_budget(org, extra="x"), "extra"),
    ]
    for body, field in cases:
        r = org.post("/budgets", "admin", body)
        assert r.status_code == 422, (body, r.text)
        if field:
            assert any(e["field"] == field for e in r.json()["errors"]), (field, r.json())
    assert org.post("/budgets", "admin", _budget(org, scope_id=10**9)).status_code == 404


def test_quotas_create_list_delete(org: Org) -> None:
    body = {"scope_kind": "project", "scope_id": org.project_id, "match_on": "device_type", "device": "h100-*",
            "max_concurrent_devices": "8"}  # fmt: skip
    assert org.post("/quotas", "member", body).status_code == 403
    q = org.post("/quotas", "admin", body)
    assert q.status_code == 201 and q.json()["max_concurrent_devices"] == "8"
    assert org.post("/quotas", "admin", body).status_code == 409
    ok = org.post("/requests", "member", plan_request(org.project_id, devices=8)).json()
    assert ok["state"] == "approved"
    over = org.post("/requests", "member", plan_request(org.project_id, devices=1)).json()
    assert over["state"] == "denied" and "quota" in over["reasons"][0]
    assert [x["id"] for x in org.get("/quotas", "viewer").json()] == [q.json()["id"]]
    assert (
        org.gov.client.delete(f"/api/v1/quotas/{q.json()['id']}", headers=org.h("viewer")).status_code == 403
    )
    assert (
        org.gov.client.delete(f"/api/v1/quotas/{q.json()['id']}", headers=org.h("admin")).status_code == 204
    )
    assert org.get("/quotas", "admin").json() == []
    bad = org.post("/quotas", "admin", {**body, "match_on": "vendor"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "match_on"


def test_a_quota_counts_only_requests_within_their_duration(org: Org) -> None:
    """A request holds its devices from its creation for its duration (``holds_until``); once that is over, a
    quota counts them no more, whatever the number of such requests (they are not read)."""
    body = {"scope_kind": "project", "scope_id": org.project_id, "match_on": "device_type", "device": "h100-*",
            "max_concurrent_devices": "8"}  # fmt: skip
    assert org.post("/quotas", "admin", body).status_code == 201
    first = org.post("/requests", "member", plan_request(org.project_id, devices=8, hours="10")).json()
    assert first["state"] == "approved"
    org.gov.clock.advance(hours=9, minutes=59)
    over = org.post("/requests", "member", plan_request(org.project_id, devices=1, hours="1")).json()
    assert over["state"] == "denied" and "quota" in over["reasons"][0]
    org.gov.clock.advance(minutes=1)  # the first request's 10 hours are over: its 8 devices are free again
    again = org.post("/requests", "member", plan_request(org.project_id, devices=8, hours="2")).json()
    assert again["state"] == "approved", again
    over = org.post("/requests", "member", plan_request(org.project_id, devices=1, hours="1")).json()
    assert over["state"] == "denied"
