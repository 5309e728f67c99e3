"""Governance under attack (issue D1-D10): each test reproduces one attack that worked before its fix.

On SQLite and PostgreSQL through the real app (``gov_fixtures``). Users with a role on one project only are
made by :func:`project_user`.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import gov_fixtures
from gov_fixtures import Org, make_budget, plan_request

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org


def project_user(o: Org, project_id: int, role: str = "member") -> str:
    """A new user of the organization holding *role* on *project_id* only; its name (a key of ``o.tokens``)."""
    from flopwise.store import RoleBinding, User, write_session

    name = f"p{project_id}-{role}-{uuid.uuid4().hex[:6]}"
    with write_session(o.gov.app.state.db) as s:
        user = User(org_id=o.org_id, name=name)
        s.add(user)
        s.flush()
        s.add(RoleBinding(user_id=user.id, role=role, scope_kind="project", scope_id=project_id))
        o.user_ids[name] = user.id
        o.tokens[name] = gov_fixtures._token(s, user.id, o.gov.clock.now, expires_at=None)
    return name


def _usage(key: str, **over: Any) -> dict[str, Any]:
    record = {
        "source": "nvml",
        "source_key": key,
        "charge_period_start": "2026-03-10T10:00:00+00:00",
        "charge_period_end": "2026-03-10T11:00:00+00:00",
        "x_device_type": "h100-sxm",
        "x_device_count": 1.0,
        "x_device_hours": 1.0,
    }
    record.update(over)
    return record


def _audit_actions(o: Org, action: str | None) -> list[dict]:
    out, after = [], 0
    while True:
        params = {"after_seq": after, "limit": 1000, **({"action": action} if action else {})}
        page = o.get("/audit", "admin", params=params).json()
        out += page["entries"]
        if page["next_after_seq"] is None:
            return out
        after = page["next_after_seq"]


APPROVAL_OVER_500 = """
name: spend
default: allow
rules:
  - id: big-runs
    when: {field: cost_usd, gt: "500"}
    effect: require_approval
    approvals: 1
    role: approver
"""


# ---------------------------------------------------------------------------------------------- D1


def test_d1_concurrent_creators_expire_each_stale_request_once(org: Org) -> None:
    assert org.post("/policies", "admin", {"yaml": APPROVAL_OVER_500}).status_code == 201
    make_budget(org, org.project_id, "100000")
    stale = [
        org.post("/requests", "member", plan_request(org.project_id, hours="1000", price="1.00")).json()
        for _ in range(8)
    ]
    assert all(r["state"] == "pending" for r in stale), stale
    org.gov.clock.advance(hours=100)  # past the 72 h expiry

    def create(i: int) -> int:
        body = plan_request(org.project_id, hours="1", price="1.00")
        return org.post("/requests", "member" if i % 2 else "member2", body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(24)))
    assert set(statuses) == {201}, statuses
    ids = [e["payload"]["request_id"] for e in _audit_actions(org, "request.expire")]
    assert sorted(ids) == sorted(r["id"] for r in stale)  # once each, not once per creator


# ---------------------------------------------------------------------------------------------- D2


def test_d2_negative_usage_is_a_typed_credit_and_never_breaks_a_budget(org: Org) -> None:
    budget = make_budget(org, org.project_id, "912")
    # a member cannot post a negative amount as usage: 422 naming the field and the fix
    r = org.post("/usage", "member", {"project_id": org.project_id,
                                      "records": [_usage("neg-1", billed_cost="-100000")]})  # fmt: skip
    assert r.status_code == 422, r.text
    assert "billed_cost" in r.text and "credit" in r.text
    # a credit is typed, and only admins of the scope may grant one
    credit = {"project_id": org.project_id,
              "records": [_usage("credit-1", billed_cost="-100000", charge_category="credit")]}  # fmt: skip
    assert org.post("/usage", "member", credit).status_code == 403
    r = org.post("/usage", "admin", credit)
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    # the budget still answers, never below zero used, and requests under it are decided
    shown = org.get(f"/budgets/{budget['id']}", "admin")
    assert shown.status_code == 200, shown.text
    assert Decimal(shown.json()["used"]) >= 0
    assert org.get("/budgets", "admin").status_code == 200
    req = org.post("/requests", "member", plan_request(org.project_id, hours="10", price="2.00"))
    assert req.status_code == 201 and req.json()["state"] == "approved", req.text


# ---------------------------------------------------------------------------------------------- D3


def test_d3_usage_cannot_settle_another_projects_reservation(org: Org) -> None:
    budget = make_budget(org, org.project_id, "912")
    req = org.post("/requests", "member", plan_request(org.project_id, hours="200", price="2.00")).json()
    assert req["state"] == "approved"  # $400 reserved on project 1
    p2 = org.new_project()
    outsider = project_user(org, p2)
    attack = {
        "project_id": p2,
        "records": [_usage("steal-1", billed_cost="0.01", x_request_id=str(req["id"]))],
    }
    r = org.post("/usage", outsider, attack)
    assert r.status_code == 200 and r.json()["inserted"] == 0 and r.json()["rejected"] == 1, r.text
    # without project_id, and naming the request in a tag: refused too
    tagged = {
        "records": [_usage("steal-2", billed_cost="0.01", tags={"flopwise_request": f"req-{req['id']}"})]
    }
    r2 = org.post("/usage", outsider, tagged)
    assert r2.status_code in (200, 403) and (r2.status_code == 403 or r2.json()["inserted"] == 0), r2.text
    shown = org.get(f"/budgets/{budget['id']}", "admin").json()
    assert Decimal(shown["reserved"]) == 400 and Decimal(shown["settled"]) == 0


# ---------------------------------------------------------------------------------------------- D4


def test_d4_lists_show_exactly_what_single_reads_allow(org: Org) -> None:
    p2 = org.new_project()
    mine = project_user(org, p2)
    hidden_budget = make_budget(org, org.project_id, "1000")
    visible_budget = make_budget(org, p2, "1000")
    hidden = org.post("/requests", "member", plan_request(org.project_id, hours="1")).json()
    shown = org.post("/requests", mine, plan_request(p2, hours="1")).json()
    assert org.get(f"/requests/{hidden['id']}", mine).status_code == 403
    assert org.get(f"/budgets/{hidden_budget['id']}", mine).status_code == 403
    assert [r["id"] for r in org.get("/requests", mine).json()] == [shown["id"]]
    assert [b["id"] for b in org.get("/budgets", mine).json()] == [visible_budget["id"]]
    assert [r["id"] for r in org.get("/requests", mine, params={"project_id": org.project_id}).json()] == []
    # every list: each item it shows, its single read allows
    for item in org.get("/requests", mine).json():
        assert org.get(f"/requests/{item['id']}", mine).status_code == 200
    for item in org.get("/budgets", mine).json():
        assert org.get(f"/budgets/{item['id']}", mine).status_code == 200
    for item in org.get("/projects", mine).json():
        assert org.get(f"/projects/{item['id']}", mine).status_code == 200
    for item in org.get("/teams", mine).json():
        assert org.get(f"/teams/{item['id']}", mine).status_code == 200
    org_quota = org.post("/quotas", "admin", {"scope_kind": "org", "scope_id": org.org_id, "match_on": "device_type",
                                              "device": "h100*", "max_concurrent_devices": 64})  # fmt: skip
    assert org_quota.status_code == 201, org_quota.text
    assert org.get("/quotas", mine).json() == []
    assert [q["id"] for q in org.get("/quotas", "viewer").json()] == [org_quota.json()["id"]]


# ---------------------------------------------------------------------------------------------- D5


def _job(project_id: int, job_id: str, devices: int = 1, hours: str = "10") -> dict:
    return {"engine": "slurm", "engine_job_id": job_id, "project_id": project_id, "device": "h100-sxm",
            "device_count": devices, "max_duration_h": hours, "usd_per_device_h": "3.00"}  # fmt: skip


def test_d5_admission_is_keyed_per_organization_and_a_changed_repeat_is_409(org: Org) -> None:
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    first = org.post("/admission/decide", "member", _job(org.project_id, job_id))
    assert first.status_code == 200 and first.json()["admitted"], first.text
    again = org.post("/admission/decide", "member", _job(org.project_id, job_id))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    bigger = org.post("/admission/decide", "member", _job(org.project_id, job_id, devices=1000, hours="1000"))
    assert bigger.status_code == 409, bigger.text
    assert "device_count" in bigger.text and "max_duration_h" in bigger.text
    # another organization's same id is its own job: neither revealed nor blocked
    from flopwise.store import Project, Team, write_session

    with write_session(org.gov.app.state.db) as s:
        from flopwise.store import User

        stranger = s.get_one(User, _user_id_of_token(org, "other_org"))
        team = Team(org_id=stranger.org_id, name="t")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="p")
        s.add(project)
        s.flush()
        other_project = project.id
    theirs = org.post("/admission/decide", "other_org", _job(other_project, job_id))
    assert theirs.status_code == 200 and theirs.json()["id"] != first.json()["id"], theirs.text
    assert org.get(f"/admission/slurm/{job_id}", "other_org").json()["id"] == theirs.json()["id"]
    # a member without a role on the job's project can neither read it nor repeat it
    p2 = org.new_project()
    outsider = project_user(org, p2)
    assert org.get(f"/admission/slurm/{job_id}", outsider).status_code == 403
    repeat = org.post("/admission/decide", outsider, _job(p2, job_id))
    assert repeat.status_code == 403, repeat.text


def _user_id_of_token(o: Org, who: str) -> int:
    me = o.get("/me", who)
    assert me.status_code == 200, me.text
    return me.json()["user_id"]


# ---------------------------------------------------------------------------------------------- D6


def test_d6_params_model_is_never_a_server_path(org: Org, tmp_path) -> None:
    import json

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 128,
    }))  # fmt: skip
    for model in (str(folder), str(folder / "config.json"), "/etc/passwd", "../../etc/passwd", "./x"):
        body = {"project_id": org.project_id, "workload": "train", "device": "h100-sxm",
                "params": {"model": model, "tokens": 1e6}}  # fmt: skip
        r = org.post("/requests", "member", body)
        assert r.status_code == 422, (model, r.text)
        assert "params.model" in r.text and "registry" in r.text, r.text
    # the same config uploaded as a body is estimated
    config = json.loads((folder / "config.json").read_text())
    body = {"project_id": org.project_id, "workload": "train", "device": "h100-sxm",
            "params": {"config": config, "tokens": 1e6}}  # fmt: skip
    r = org.post("/requests", "member", body)
    assert r.status_code == 201 and r.json()["estimated_flops"] > 0, r.text


# ---------------------------------------------------------------------------------------------- D7, D10


def test_d7_org_id_is_covered_by_the_audit_hash(org: Org) -> None:
    from sqlalchemy import update

    from flopwise.store import AuditLog, write_session

    make_budget(org, org.project_id, "1")
    entry = _audit_actions(org, "budget.create")[-1]
    assert org.get("/audit/verify", "admin").json()["is_ok"] is True
    with write_session(org.gov.app.state.db) as s:
        other = _user_org(org, "other_org")
        s.execute(update(AuditLog).where(AuditLog.seq == entry["seq"]).values(org_id=other))
    try:
        assert org.get("/audit/verify", "admin").json()["is_ok"] is False
        assert org.get("/audit/verify", "other_org").json()["is_ok"] is False
    finally:
        with write_session(org.gov.app.state.db) as s:
            s.execute(update(AuditLog).where(AuditLog.seq == entry["seq"]).values(org_id=org.org_id))
    assert org.get("/audit/verify", "admin").json()["is_ok"] is True


def test_d7_entries_with_seq_at_or_below_zero_are_verified(org: Org) -> None:
    from flopwise.govern.audit import GENESIS_HASH
    from flopwise.store import AuditLog, write_session

    make_budget(org, org.project_id, "1")
    with write_session(org.gov.app.state.db) as s:
        s.add(AuditLog(seq=-7 - org.org_id, at=org.gov.clock.now, org_id=org.org_id, actor="system",
                       action="forged", payload={}, prev_hash=GENESIS_HASH, hash=uuid.uuid4().hex))  # fmt: skip
    try:
        result = org.get("/audit/verify", "admin").json()
        assert result["is_ok"] is False and result["first_bad_seq"] == -7 - org.org_id, result
    finally:
        from sqlalchemy import delete

        with write_session(org.gov.app.state.db) as s:
            s.execute(delete(AuditLog).where(AuditLog.seq == -7 - org.org_id))


def test_d10_audit_verify_counts_only_the_callers_organization(org: Org) -> None:
    make_budget(org, org.project_id, "1")
    mine = org.get("/audit/verify", "admin").json()
    theirs = org.get("/audit/verify", "other_org").json()
    assert mine["is_ok"] and theirs["is_ok"]
    assert mine["checked"] == len(_audit_actions(org, None))
    assert theirs["checked"] == 0  # the other organization has written nothing


def _user_org(o: Org, who: str) -> int:
    return o.get("/me", who).json()["org_id"]


# ---------------------------------------------------------------------------------------------- D8


def test_d8_request_body_limit_is_enforced_while_reading(org: Org) -> None:
    big = b'{"records": [' + b" " * (2 * 1024 * 1024) + b"]}"
    r = org.gov.client.post(
        "/api/v1/usage", content=big, headers={**org.h("member"), "Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert "1048576" in r.text or "1 MB" in r.text or "1 MiB" in r.text

    def chunks():
        yield b'{"records": ['
        for _ in range(64):
            yield b" " * 32768
        yield b"]}"

    r = org.gov.client.post(
        "/api/v1/usage", content=chunks(), headers={**org.h("member"), "Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text


# ---------------------------------------------------------------------------------------------- D9


def test_d9_same_status_for_the_same_input_on_both_databases(org: Org) -> None:
    # NUL in any text of a body is a 422 naming the field, on SQLite as on PostgreSQL
    r = org.post("/teams", "admin", {"name": "a\x00b"})
    assert r.status_code == 422 and "name" in r.text, r.text
    # an after_seq beyond the store's ids is a 422 naming after_seq
    r = org.get("/audit", "admin", params={"after_seq": 2**62})
    assert r.status_code == 422 and "after_seq" in r.text, r.text
    # money with more places than the store keeps is refused, never rounded to 0
    r = org.post("/budgets", "admin", {"name": "tiny", "scope_kind": "project", "scope_id": org.project_id,
                                       "period": "month", "unit": "usd", "amount": "0.0000005"})  # fmt: skip
    assert r.status_code == 422 and "amount" in r.text and "6 decimal places" in r.text, r.text
    ok = org.post("/budgets", "admin", {"name": "small", "scope_kind": "project", "scope_id": org.project_id,
                                        "period": "month", "unit": "usd", "amount": "0.000001"})  # fmt: skip
    assert ok.status_code == 201 and ok.json()["amount"] == "0.000001", ok.text
