"""The audit log over HTTP on SQLite and PostgreSQL: every change made through the identity routes is
appended with actor, time and payload; organizations see only their own entries; ``/audit/verify`` finds an
edited, a deleted and an inserted entry, and names the first bad one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, insert, select, update
from srvutil import API, auth


def _json(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def test_changes_are_audited_with_actor_and_payload(client, seed):
    admin = seed.headers("admin")
    admin_id = seed.user_ids["admin"]
    before = _json(client.get(f"{API}/audit", params={"limit": 1000}, headers=admin))["entries"]
    team = _json(client.post(f"{API}/teams", json={"name": "audited"}, headers=admin), 201)
    user = _json(client.post(f"{API}/users", json={"name": "audited-user"}, headers=admin), 201)
    token = _json(client.post(f"{API}/tokens", json={"user_id": user["id"]}, headers=admin), 201)
    _json(client.delete(f"{API}/tokens/{token['id']}", headers=admin))
    _json(client.post(f"{API}/aup", json={"text": "Rules."}, headers=admin), 201)
    after_seq = before[-1]["seq"]
    new = _json(client.get(f"{API}/audit", params={"after_seq": after_seq}, headers=admin))["entries"]
    assert [e["action"] for e in new] == [
        "team.create",
        "user.create",
        "token.create",
        "token.revoke",
        "aup.publish",
    ]
    assert {e["actor"] for e in new} == {f"user:{admin_id}"}
    assert new[0]["payload"] == {"team_id": team["id"], "name": "audited"}
    assert new[2]["payload"]["prefix"] == token["prefix"] and token["token"] not in str(new)
    assert all(e["org_id"] == seed.org_id for e in new)
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(new, new[1:], strict=False))
    # the bootstrap and the seed's own changes came first, from the system and the bootstrap admin
    assert before[0]["action"] == "org.bootstrap" and before[0]["actor"] == "system"
    # filters and paging
    tokens_only = _json(client.get(f"{API}/audit", params={"action": "token."}, headers=admin))["entries"]
    assert {e["action"] for e in tokens_only} == {"token.create", "token.revoke"}
    exact = _json(client.get(f"{API}/audit", params={"action": "team.create"}, headers=admin))["entries"]
    assert {e["action"] for e in exact} == {"team.create"}
    page = _json(client.get(f"{API}/audit", params={"limit": 2}, headers=admin))
    assert len(page["entries"]) == 2 and page["next_after_seq"] == page["entries"][-1]["seq"]
    rest = _json(client.get(f"{API}/audit", params={"after_seq": page["next_after_seq"]}, headers=admin))
    assert rest["entries"][0]["seq"] > page["next_after_seq"]


def test_each_organization_sees_its_own_entries(client, seed):
    mine = _json(client.get(f"{API}/audit", params={"limit": 1000}, headers=seed.headers("admin")))["entries"]
    theirs = _json(client.get(f"{API}/audit", params={"limit": 1000}, headers=auth(seed.other_admin_token)))
    assert {e["org_id"] for e in mine} == {seed.org_id}
    assert {e["org_id"] for e in theirs["entries"]} == {seed.other_org_id}
    assert client.get(f"{API}/audit", headers=seed.headers("approver")).status_code == 403


def test_audit_time_is_the_app_clock_in_utc(client, clock, seed):
    from flopwise.store import utcnow

    then = (utcnow() + timedelta(days=3)).replace(microsecond=123456)
    clock(then)
    _json(client.post(f"{API}/teams", json={"name": "clocked"}, headers=seed.headers("admin")), 201)
    last = _json(client.get(f"{API}/audit", params={"action": "team.create"}, headers=seed.headers("admin")))
    at = last["entries"][-1]["at"]
    assert at.endswith(("+00:00", "Z")) and at.startswith(then.strftime("%Y-%m-%dT%H:%M:%S.123456"))


def _verify(client, seed) -> dict:
    return _json(client.get(f"{API}/audit/verify", headers=seed.headers("admin")))


@pytest.fixture
def chain(app, client, seed):
    """A verified chain and a way to tamper with its rows; every row is put back afterwards."""
    from flopwise.store import AuditLog, read_session, write_session

    assert _verify(client, seed)["is_ok"]
    with read_session(app.state.db) as s:
        saved = [
            {c.name: getattr(r, c.key) for c in AuditLog.__table__.columns}
            for r in s.scalars(select(AuditLog).order_by(AuditLog.seq))
        ]

    def tamper(stmt) -> None:
        with write_session(app.state.db) as s:
            s.execute(stmt)

    yield saved, tamper
    with write_session(app.state.db) as s:
        s.execute(delete(AuditLog))
        s.execute(insert(AuditLog), saved)
    assert _verify(client, seed)["is_ok"]


def test_verify_detects_an_edited_entry(client, seed, chain):
    from flopwise.store import AuditLog

    saved, tamper = chain
    mine = [r for r in saved if r["org_id"] == seed.org_id]  # the organization's own chain
    target = mine[len(mine) // 2]
    tamper(
        update(AuditLog).where(AuditLog.seq == target["seq"]).values(payload={**target["payload"], "x": 1})
    )
    result = _verify(client, seed)
    assert not result["is_ok"] and result["first_bad_seq"] == target["seq"]
    assert "edited" in result["reason"] and result["checked"] == len(mine) // 2


def test_verify_detects_a_deleted_entry(client, seed, chain):
    from flopwise.store import AuditLog

    saved, tamper = chain
    mine = [r for r in saved if r["org_id"] == seed.org_id]
    target = mine[len(mine) // 2]["seq"]
    after = mine[len(mine) // 2 + 1]["seq"]  # chains are per organization: the next entry no longer links
    tamper(delete(AuditLog).where(AuditLog.seq == target))
    result = _verify(client, seed)
    assert not result["is_ok"] and result["first_bad_seq"] == after and "missing" in result["reason"]


def test_verify_detects_an_inserted_entry(client, seed, chain):
    from flopwise.store import AuditLog

    saved, tamper = chain
    # make room after entry k, then insert a forged entry that even links to entry k's hash
    mine = [r for r in saved if r["org_id"] == seed.org_id]
    k = mine[len(mine) // 2]
    for row in reversed([r for r in saved if r["seq"] > k["seq"]]):
        tamper(update(AuditLog).where(AuditLog.seq == row["seq"]).values(seq=row["seq"] + 1))
    forged = {**k, "seq": k["seq"] + 1, "action": "budget.delete", "prev_hash": k["hash"], "hash": "f" * 64}
    tamper(insert(AuditLog).values(**forged))
    result = _verify(client, seed)
    assert not result["is_ok"] and result["first_bad_seq"] == k["seq"] + 1
