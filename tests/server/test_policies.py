"""Policies over real HTTP: apply YAML (validated, field-level 422s), versions, precedence, audit entries."""

from __future__ import annotations

import gov_fixtures
from gov_fixtures import Org, plan_request

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org

ALLOW_SMALL = """
name: spend
default: require_approval
rules:
  - id: small-runs
    when: {field: cost_usd, lte: "100"}
    effect: allow
"""

DENY_REGION = """
name: regions
rules:
  - id: no-us-west
    when: {field: region, matches: "aws:us-west-*"}
    effect: deny
    message: Data must stay out of us-west.
  - id: small-approve
    when: {field: cost_usd, lte: "100"}
    effect: allow
"""


def test_apply_versions_and_latest_wins(org: Org) -> None:
    first = org.post("/policies", "admin", {"yaml": ALLOW_SMALL})
    assert first.status_code == 201, first.text
    assert (first.json()["name"], first.json()["version"], first.json()["rules"]) == (
        "spend",
        1,
        ["small-runs"],
    )
    assert (
        org.post("/requests", "member", plan_request(org.project_id, hours="100")).json()["state"]
        == "pending"
    )
    second = org.post(
        "/policies", "admin", {"yaml": ALLOW_SMALL.replace("default: require_approval", "default: allow")}
    )
    assert second.json()["version"] == 2
    assert (
        org.post("/requests", "member", plan_request(org.project_id, hours="100")).json()["state"]
        == "approved"
    )
    versions = org.get("/policies/spend", "viewer").json()
    assert [v["version"] for v in versions] == [2, 1]
    assert [p["version"] for p in org.get("/policies", "viewer").json()] == [2]
    disabled = org.post("/policies", "admin", {"yaml": ALLOW_SMALL, "is_enabled": False})
    assert disabled.json()["version"] == 3 and org.get("/policies", "viewer").json() == []
    assert org.get("/policies/nope", "viewer").status_code == 404
    assert org.get("/policies/spend", "other_org").status_code == 404


def test_deny_beats_allow_across_rules(org: Org) -> None:
    org.post("/policies", "admin", {"yaml": DENY_REGION})
    r = org.post(
        "/requests", "member", plan_request(org.project_id, hours="1", region="aws:us-west-2")
    ).json()
    assert r["state"] == "denied" and r["reasons"] == ["policy: Data must stay out of us-west."]
    trace = {t["rule_id"]: t["matched"] for t in r["decision_trace"]["trace"]["policy"]["trace"]}
    assert trace == {"no-us-west": True, "small-approve": True}  # both matched; deny takes precedence
    ok = org.post(
        "/requests", "member", plan_request(org.project_id, hours="1", region="aws:us-east-1")
    ).json()
    assert ok["state"] == "approved"


def test_invalid_policy_is_422_naming_rule_and_field(org: Org) -> None:
    cases = [
        ("name: x\nrules:\n  - id: a\n    when: {field: cost_usd, gt: lots}\n    effect: deny\n    message: m\n",
         "rules[0].when.gt"),
        ("name: x\nrules:\n  - id: a\n    effect: deny\n", "rules[0].message"),
        ("name: x\nrules:\n  - id: a\n    when: {field: colour, eq: red}\n    effect: allow\n", "rules[0].when.field"),
        ("name: x\nrules: [\n", "policy"),
        ("- just a list\n", "policy"),
    ]  # fmt: skip
    for text, field in cases:
        r = org.post("/policies", "admin", {"yaml": text})
        assert r.status_code == 422, (text, r.text)
        assert r.json()["errors"][0]["field"] == field, r.json()
    assert org.post("/policies", "admin", {"yaml": ""}).status_code == 422
    assert org.post("/policies", "admin", {}).json()["errors"][0]["field"] == "yaml"


def test_policy_authorization(org: Org) -> None:
    for who, status in [("none", 401), ("revoked", 401), ("other_org", 201), ("viewer", 403), ("member", 403),
                        ("approver", 403), ("admin", 201)]:  # fmt: skip
        # another organization's admin applies to their own organization, never to this one
        assert org.post("/policies", who, {"yaml": ALLOW_SMALL}).status_code == status, who
    assert [p["version"] for p in org.get("/policies", "admin").json()] == [1]


def test_changes_and_decisions_are_audited(org: Org) -> None:
    from sqlalchemy import select

    from flopwise.store import AuditLog, read_session

    org.post("/policies", "admin", {"yaml": ALLOW_SMALL})
    rid = org.post("/requests", "member", plan_request(org.project_id, hours="1")).json()["id"]
    with read_session(org.gov.app.state.db) as s:
        rows = s.execute(
            select(AuditLog.action, AuditLog.actor, AuditLog.payload)
            .where(AuditLog.org_id == org.org_id)
            .order_by(AuditLog.seq)
        ).all()
    assert ("policy.apply", f"user:{org.user_ids['admin']}") in [(a, b) for a, b, _ in rows]
    decided = [payload for action, _, payload in rows if action == "request.create"]
    assert decided[-1]["request_id"] == rid and decided[-1]["outcome"] == "allow"
    assert decided[-1]["decided_by"] == ["spend/small-runs"]
