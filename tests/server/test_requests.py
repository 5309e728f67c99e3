"""Compute requests over real HTTP on SQLite and PostgreSQL: decide, approve, deny, expire, idempotency, flags."""

from __future__ import annotations

from decimal import Decimal

import gov_fixtures
from gov_fixtures import Org, make_budget, plan_request

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org

DENY_SPOT_RESTRICTED = """
name: data-rules
rules:
  - id: no-restricted-on-spot
    when: {all: [{field: data_classification, eq: restricted}, {field: pricing, eq: spot}]}
    effect: deny
    message: Restricted data may not run on spot capacity.
"""

TWO_APPROVERS_OVER_1K = """
name: spend
default: allow
rules:
  - id: big-runs
    when: {field: cost_usd, gt: "1000"}
    effect: require_approval
    approvals: 2
    role: approver
"""

SYSTEMIC_RISK_NEEDS_ADMIN = """
name: thresholds
rules:
  - id: eu-systemic-risk
    when: {field: threshold_flags, eq: eu-ai-act-systemic-risk}
    effect: require_approval
    approvals: 1
    role: admin
"""


def _apply(o: Org, text: str) -> None:
    r = o.post("/policies", "admin", {"yaml": text})
    assert r.status_code == 201, r.text


def test_allowed_request_is_approved_and_reserved(org: Org) -> None:
    budget = make_budget(org, org.project_id, "1000")
    r = org.post("/requests", "member", plan_request(org.project_id, hours="10", devices=2, price="2.50"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "approved" and body["outcome"] == "allow"
    assert Decimal(body["estimated_cost_usd"]) == Decimal("50")  # 2 devices x 10 h x $2.50, exact
    assert Decimal(body["estimated_device_hours"]) == Decimal("20")
    assert [(x["budget_id"], Decimal(x["amount"]), x["state"]) for x in body["reservations"]] == [
        (budget["id"], Decimal("50"), "reserved")
    ]
    shown = org.get(f"/budgets/{budget['id']}", "viewer").json()
    assert Decimal(shown["reserved"]) == 50 and Decimal(shown["remaining"]) == 950
    # the trace says which budget and what remains
    checks = body["decision_trace"]["trace"]["budgets"]
    assert checks[0]["budget_id"] == str(budget["id"]) and Decimal(checks[0]["remaining_after"]) == 950


def test_policy_deny_denies_with_its_message_and_reserves_nothing(org: Org) -> None:
    _apply(org, DENY_SPOT_RESTRICTED)
    budget = make_budget(org, org.project_id, "1000")
    body = plan_request(org.project_id, pricing="spot", data_classification="restricted")
    r = org.post("/requests", "member", body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["state"] == "denied" and out["outcome"] == "deny"
    assert out["reasons"] == ["policy: Restricted data may not run on spot capacity."]
    assert out["reservations"] == []
    assert out["decision_trace"]["trace"]["policy"]["decided_by"] == ["data-rules/no-restricted-on-spot"]
    assert Decimal(org.get(f"/budgets/{budget['id']}", "admin").json()["used"]) == 0
    # the same request on on-demand capacity is allowed
    ok = org.post("/requests", "member", plan_request(org.project_id, data_classification="restricted"))
    assert ok.json()["state"] == "approved"


def test_hard_budget_denies_and_soft_budget_warns(org: Org) -> None:
    hard_project, soft_project = org.new_project(), org.new_project()
    make_budget(org, hard_project, "100")
    make_budget(org, soft_project, "100", is_hard=False)
    denied = org.post("/requests", "member", plan_request(hard_project, hours="100")).json()
    assert denied["state"] == "denied" and "is hard" in denied["reasons"][0]
    warned = org.post("/requests", "member", plan_request(soft_project, hours="100")).json()
    assert warned["state"] == "approved" and any("soft" in w for w in warned["warnings"])
    assert Decimal(warned["reservations"][0]["amount"]) == 200


def test_n_of_m_approvals_with_separation_of_duties(org: Org) -> None:
    _apply(org, TWO_APPROVERS_OVER_1K)
    budget = make_budget(org, org.project_id, "100000")
    r = org.post("/requests", "approver", plan_request(org.project_id, hours="1000"))  # $2000 by an approver
    req = r.json()
    assert req["state"] == "pending" and req["approvals_required"] == 2 and req["approver_role"] == "approver"
    assert Decimal(req["reservations"][0]["amount"]) == 2000  # a pending request holds its amount
    rid = req["id"]
    own = org.post(f"/requests/{rid}/approve", "approver", {})
    assert own.status_code == 403 and "separation of duties" in own.json()["error"]
    assert org.post(f"/requests/{rid}/approve", "member", {}).status_code == 403  # too weak a role
    first = org.post(f"/requests/{rid}/approve", "approver2", {"comment": "fine"})
    assert first.status_code == 200 and first.json()["state"] == "pending"
    assert org.post(f"/requests/{rid}/approve", "approver2", {}).status_code == 403  # one vote each
    second = org.post(f"/requests/{rid}/approve", "approver3", {})
    assert second.json()["state"] == "approved"
    assert [v["verdict"] for v in second.json()["approvals"]] == ["approve", "approve"]
    assert org.post(f"/requests/{rid}/approve", "admin", {}).status_code == 409  # no longer pending
    # cancel by the requester releases the reservation
    cancelled = org.post(f"/requests/{rid}/cancel", "approver")
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["reservations"][0]["state"] == "released"
    assert Decimal(org.get(f"/budgets/{budget['id']}", "admin").json()["used"]) == 0


def test_deny_by_approver_releases_and_needs_a_reason(org: Org) -> None:
    _apply(org, TWO_APPROVERS_OVER_1K)
    rid = org.post("/requests", "member", plan_request(org.project_id, hours="1000")).json()["id"]
    missing = org.post(f"/requests/{rid}/deny", "approver", {})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "comment"
    denied = org.post(f"/requests/{rid}/deny", "approver", {"comment": "too big this month"})
    assert denied.status_code == 200 and denied.json()["state"] == "denied"
    comment = org.post(f"/requests/{rid}/comments", "viewer", {"body": "noted"})
    assert comment.status_code == 201
    assert [c["body"] for c in org.get(f"/requests/{rid}", "member").json()["comments"]] == ["noted"]


def test_pending_requests_expire_and_release(org: Org) -> None:
    _apply(org, TWO_APPROVERS_OVER_1K)
    budget = make_budget(org, org.project_id, "100000")
    req = org.post("/requests", "member", plan_request(org.project_id, hours="1000")).json()
    assert req["state"] == "pending"
    org.gov.clock.advance(hours=73)  # Settings.request_expiry_hours = 72
    assert org.get(f"/requests/{req['id']}", "member").json()["state"] == "expired"
    late = org.post(f"/requests/{req['id']}/approve", "approver", {})
    assert late.status_code == 409
    shown = org.get(f"/requests/{req['id']}", "member").json()
    assert shown["state"] == "expired" and shown["reservations"][0]["state"] == "released"
    assert Decimal(org.get(f"/budgets/{budget['id']}", "admin").json()["used"]) == 0
    listed = org.get("/requests", "viewer", params={"state": "expired"}).json()
    assert [x["id"] for x in listed] == [req["id"]]


def test_idempotency_key_returns_the_same_request_without_a_second_reservation(org: Org) -> None:
    budget = make_budget(org, org.project_id, "1000")
    body = plan_request(org.project_id, hours="10")
    first = org.post("/requests", "member", body, headers={"Idempotency-Key": "run-42"})
    again = org.post("/requests", "member", body, headers={"Idempotency-Key": "run-42"})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert Decimal(org.get(f"/budgets/{budget['id']}", "admin").json()["reserved"]) == 20
    # the key as a field works the same; a different body under the same key is a conflict
    same = org.post("/requests", "member", {**body, "idempotency_key": "run-42"})
    assert same.json()["id"] == first.json()["id"]
    clash = org.post(
        "/requests", "member", plan_request(org.project_id, hours="11"), headers={"Idempotency-Key": "run-42"}
    )
    assert clash.status_code == 409 and clash.json()["errors"][0]["field"] == "idempotency_key"


def test_threshold_flag_and_policy_requires_admin_approval(org: Org) -> None:
    _apply(org, SYSTEMIC_RISK_NEEDS_ADMIN)
    big = plan_request(org.project_id, hours="10", plan={"duration_h": "10", "flops": 2e25})
    req = org.post("/requests", "member", big).json()
    assert (
        "eu-ai-act-systemic-risk" in req["threshold_flags"]
        and "eu-ai-act-gpai-indicator" in req["threshold_flags"]
    )
    assert req["state"] == "pending" and req["approver_role"] == "admin"
    assert org.post(f"/requests/{req['id']}/approve", "approver", {}).status_code == 403
    assert org.post(f"/requests/{req['id']}/approve", "admin", {}).json()["state"] == "approved"
    small = org.post(
        "/requests", "member", plan_request(org.project_id, plan={"duration_h": "10", "flops": 1e22})
    )
    # below the FLOP lines; the H100 itself still crosses the US export-control TPP line (15831 >= 4800)
    assert small.json()["threshold_flags"] == ["us-3a090a-tpp"] and small.json()["state"] == "approved"


def test_server_estimates_from_parameters(org: Org) -> None:
    body = {
        "project_id": org.project_id,
        "workload": "train",
        "device": "h100-sxm",
        "device_count": 8,
        "params": {"model": "llama-3.1-8b", "tokens": 1e9},
    }
    r = org.post("/requests", "member", body)
    assert r.status_code == 201, r.text
    out = r.json()
    # 6 N D training FLOPs for 8.03e9 parameters and 1e9 tokens is 4.8e19 (Kaplan et al. 2020)
    assert 4.0e19 < out["estimated_flops"] < 6.0e19
    assert Decimal(out["estimated_cost_usd"]) > 0 and Decimal(out["estimated_kwh"]) > 0
    assert out["estimate"]["basis"] == "estimate_training"
    serve = {
        **body,
        "workload": "serve",
        "device_count": 1,
        "params": {"model": "llama-3.1-8b", "duration_h": "24"},
    }
    s = org.post("/requests", "member", serve).json()
    assert Decimal(s["estimated_device_hours"]) == 24 and s["estimated_flops"] > 0


def test_bad_input_is_422_with_fields_never_500(org: Org) -> None:
    cases = [
        ({"project_id": org.project_id}, "workload"),
        (plan_request(org.project_id, device="no-such-gpu"), "device"),
        (plan_request(org.project_id, plan={"duration_h": "-1"}), "plan.duration_h"),
        ({**plan_request(org.project_id), "params": {"model": "llama-3.1-8b"}}, ""),
        (plan_request(org.project_id, device_count=0), "device_count"),
        (plan_request(org.project_id, usd_per_device_h="abc"), "usd_per_device_h"),
        (plan_request(org.project_id, devices=1_000_000, hours="100000", price="1000000"), "cost_usd"),
        (
            {**plan_request(org.project_id), "plan": None, "params": {"model": "llama-3.1-8b"}},
            "params.tokens",
        ),
    ]
    for body, field in cases:
        r = org.post("/requests", "member", body)
        assert r.status_code == 422, (body, r.text)
        out = r.json()
        assert out["ok"] is False and out["errors"], out
        if field:
            assert any(e["field"] == field for e in out["errors"]), (field, out)
    assert org.post("/requests", "member", plan_request(10**9)).status_code == 404


def test_authorization_of_request_routes(org: Org) -> None:
    body = plan_request(org.project_id)
    for who, status in [("none", 401), ("expired", 401), ("revoked", 401), ("malformed", 401), ("other_org", 404),
                        ("viewer", 403), ("member", 201), ("approver", 201), ("admin", 201)]:  # fmt: skip
        assert org.post("/requests", who, body).status_code == status, who
    rid = org.post("/requests", "member", body).json()["id"]
    for who, status in [("other_org", 404), ("viewer", 200), ("none", 401)]:
        assert org.get(f"/requests/{rid}", who).status_code == status, who
    assert org.post(f"/requests/{rid}/cancel", "member2").status_code == 403  # not the requester, not admin
    assert org.post(f"/requests/{rid}/cancel", "admin").json()["state"] == "cancelled"
    assert {x["org_id"] for x in org.get("/requests", "other_org").json()} <= {None} or org.get(
        "/requests", "other_org"
    ).json() == []


def test_old_spellings_are_aliases_and_answers_use_the_one_spelling(org: Org) -> None:
    """``fine_tune`` / ``on_demand`` are accepted; the answer and the stored row say ``fine-tune``."""
    body = {
        "project_id": org.project_id,
        "workload": "fine_tune",
        "pricing": "on_demand",
        "device": "h100-sxm",
        "device_count": 8,
        "params": {"model": "llama-3.1-8b", "tokens": 1e9, "method": "lora"},
    }
    r = org.post("/requests", "member", body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["workload"] == "fine-tune"
    shown = org.get(f"/requests/{created['id']}", "member").json()
    assert shown["workload"] == "fine-tune"
    bad = org.post("/requests", "member", {**body, "pricing": "on-demnd"})
    assert bad.status_code == 422
    assert "did you mean 'on-demand'" in bad.text


def test_the_list_pages_by_id_or_by_offset_alike(org: Org) -> None:
    """``before_id`` (the last id of the page before) gives the pages ``offset`` gives, newest first."""
    project = org.new_project()
    made = [org.post("/requests", "member", plan_request(project, hours="1")).json()["id"] for _ in range(7)]
    everything = [r["id"] for r in org.get(f"/requests?project_id={project}&limit=500", "admin").json()]
    assert everything == sorted(made, reverse=True)
    by_offset, by_id, last = [], [], None
    for page in range(3):
        by_offset += [r["id"] for r in org.get(f"/requests?project_id={project}&limit=3&offset={3 * page}",
                                                "admin").json()]  # fmt: skip
        after = "" if last is None else f"&before_id={last}"
        ids = [r["id"] for r in org.get(f"/requests?project_id={project}&limit=3{after}", "admin").json()]
        by_id += ids
        last = ids[-1] if ids else last
    assert by_offset == by_id == everything
    assert org.get("/requests?before_id=0", "admin").status_code == 422
