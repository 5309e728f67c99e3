"""``POST /api/v1/usage`` over real HTTP on SQLite and PostgreSQL: idempotent re-posts, who may post, field-level
422s, attribution to a project, rejects that reconcile.

The records are what the agent sends: the recorded NVML samples in tests/fixtures/meter aggregated per minute
by :func:`flopwise.meter.nvml.aggregate_samples` and encoded by :func:`flopwise.meter.agent.record_to_json`.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flopwise.catalog import load_catalog
from flopwise.meter.agent import record_to_json
from flopwise.meter.nvml import ReplaySampler, aggregate_samples
from flopwise.store import read_session
from flopwise.store.ledger import IngestReject, IngestRun, UsageRecordRow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "nvml-samples-handmade.csv"
URL = "/api/v1/usage"


def _records(prefix: str | None = None) -> list[dict]:
    """The fixture's samples as the agent would push them, under a fresh host name so tests never collide."""
    sampler = ReplaySampler(FIXTURE.read_text().splitlines(True), path=str(FIXTURE))
    records = aggregate_samples(sampler.samples(), 60.0, max_gap_s=300.0, source_prefix=prefix or uuid.uuid4().hex,
                                catalog=load_catalog())  # fmt: skip
    return [record_to_json(r) for r in records]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _rows(app, org_id: int) -> list:
    """The organization's ledger rows (plain rows: they outlive the session)."""
    table = UsageRecordRow.__table__
    with read_session(app.state.db) as s:
        return list(s.execute(select(table).where(table.c.org_id == org_id)).all())


def _count(app) -> int:
    with read_session(app.state.db) as s:
        return s.scalar(select(func.count()).select_from(UsageRecordRow))


def test_post_inserts_costs_and_reposting_changes_nothing(app, client, seed):
    records = _records()
    n = len(records)
    assert n == 4  # 2 GPUs x 2 minutes in the fixture
    r = client.post(URL, json={"records": records}, headers=seed.headers("member"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["received"], body["inserted"], body["duplicate"], body["rejected"]) == (n, n, 0, 0)
    before = _count(app)

    again = client.post(URL, json={"records": records}, headers=seed.headers("member"))
    assert again.status_code == 200, again.text
    assert (again.json()["inserted"], again.json()["duplicate"]) == (0, n)
    assert _count(app) == before  # the same batch twice changes nothing

    keys = {f"org:{seed.org_id}:{rec['source_key']}" for rec in records}
    rows = [row for row in _rows(app, seed.org_id) if row.source_key in keys]
    assert len(rows) == n
    for row in rows:
        assert row.source == "nvml" and row.team_id is None and row.project_id is None  # org known, no rule
        assert row.x_device_type in {"h100-sxm", "a100-sxm-80gb"}
        assert row.cost_basis in {"catalog-onprem", "catalog-cloud"} and row.cost_usd > 0
        assert row.x_gpu_utilization is not None and row.idle_device_hours >= 0
    h100 = [
        row for row in rows if row.x_device_type == "h100-sxm" and row.x_extra["energy_basis"] == "counter"
    ]
    assert h100 and all(row.energy_basis == "measured" for row in h100)
    sent = {rec["source_key"]: rec for rec in records}
    for row in rows:  # energy and device-hours arrive exactly as the agent measured them
        rec = sent[row.source_key.split(":", 2)[2]]
        assert math.isclose(row.x_device_hours, rec["x_device_hours"], rel_tol=1e-12)
        if rec["x_energy_kwh"] is not None:
            assert math.isclose(row.x_energy_kwh, rec["x_energy_kwh"], rel_tol=1e-12)

    table = IngestRun.__table__
    with read_session(app.state.db) as s:
        ids = [body["ingest_run_id"], again.json()["ingest_run_id"]]
        runs = s.execute(select(table).where(table.c.id.in_(ids))).all()
    for run in runs:  # every POST is an ingest run whose counts reconcile
        assert run.status == "ok" and run.source == "nvml"
        assert run.rows_read == run.records_inserted + run.records_duplicate + run.rows_rejected == n


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("malformed", 401), ("expired", 401), ("revoked", 401), ("viewer", 403), ("member", 200),
     ("approver", 200), ("admin", 200)],
)  # fmt: skip
def test_who_may_post(app, client, seed, who, status):
    tokens = {"malformed": "not-a-token", "expired": seed.expired_token, "revoked": seed.revoked_token}
    headers = {} if who is None else _auth(tokens.get(who) or seed.tokens[who])
    before = _count(app)
    r = client.post(URL, json={"records": _records()}, headers=headers)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["ok"] is False and r.json()["status"] == status
        assert _count(app) == before


def test_organizations_are_isolated(app, client, seed):
    records = _records()
    n = len(records)
    assert client.post(URL, json={"records": records}, headers=seed.headers("member")).json()["inserted"] == n
    # another organization posting the same keys shadows nothing: its records are its own
    other = client.post(URL, json={"records": records}, headers=_auth(seed.other_admin_token))
    assert other.status_code == 200 and other.json()["inserted"] == n, other.text
    assert (
        len([r for r in _rows(app, seed.other_org_id) if r.source_key.endswith(records[0]["source_key"])])
        == 1
    )
    # and it cannot post into a project of the first organization (not revealed: 404)
    r = client.post(URL, json={"records": _records(), "project_id": seed.project_id},
                    headers=_auth(seed.other_admin_token))  # fmt: skip
    assert r.status_code == 404, r.text


def test_project_id_attributes_the_records(app, client, seed):
    records = _records()
    r = client.post(
        URL, json={"records": records, "project_id": seed.project_id}, headers=seed.headers("member")
    )
    assert r.status_code == 200 and r.json()["unattributed"] == 0, r.text
    keys = {f"org:{seed.org_id}:{rec['source_key']}" for rec in records}
    rows = [row for row in _rows(app, seed.org_id) if row.source_key in keys]
    assert len(rows) == len(records) and {(row.team_id, row.project_id) for row in rows} == {
        (seed.team_id, seed.project_id)
    }


def test_bad_records_are_422_with_field_messages_and_nothing_is_written(app, client, seed):
    good = _records()
    cases = {
        "records.0.charge_period_start": {**good[0], "charge_period_start": "2024-05-01T12:00:00"},
        "records.0.x_device_hours": {**good[0], "x_device_hours": -1.0},
        "records.0.x_gpu_utilization": {**good[0], "x_gpu_utilization": 87},
        "records.0.source": {**good[0], "source": "pigeon"},
        "records.0.billed_cost": {**good[0], "billed_cost": "twelve"},
        "records.0.list_cost": {**good[0], "list_cost": "1e40"},
        "records.0.surprise": {**good[0], "surprise": 1},
        "records.0": {**good[0], "charge_period_end": "2024-05-01T11:00:00+00:00"},
    }
    before = _count(app)
    for field, bad in cases.items():
        r = client.post(URL, json={"records": [bad, *good[1:]]}, headers=seed.headers("member"))
        assert r.status_code == 422, (field, r.text)
        body = r.json()
        assert body["ok"] is False and body["status"] == 422
        assert any(e["field"].startswith(field) for e in body["errors"]), (field, body)
        assert all(e["message"] for e in body["errors"])
    end_first = client.post(
        URL, json={"records": [cases["records.0"]]}, headers=seed.headers("member")
    ).json()
    assert "before charge_period_start" in end_first["error"]
    empty = client.post(URL, json={"records": []}, headers=seed.headers("member"))
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "records"
    assert client.post(URL, content=b"{not json", headers=seed.headers("member")).status_code == 422
    assert _count(app) == before


def test_a_record_naming_another_organizations_request_is_rejected_alone(app, client, seed):
    records = _records()
    records[1] = {**records[1], "x_request_id": "999999999"}
    r = client.post(URL, json={"records": records}, headers=seed.headers("member"))
    assert r.status_code == 200, r.text
    body = r.json()
    n = len(records)
    assert (body["received"], body["inserted"], body["duplicate"], body["rejected"]) == (n, n - 1, 0, 1)
    assert (
        body["rejects"][0]["index"] == 1 and "not found in your organization" in body["rejects"][0]["reason"]
    )
    with read_session(app.state.db) as s:
        run = s.get(IngestRun, body["ingest_run_id"])
        assert run.status == "partial" and run.rows_read == n == run.records_inserted + run.rows_rejected
        rejects = s.scalars(select(IngestReject).where(IngestReject.ingest_run_id == run.id)).all()
        assert [(x.line, x.raw) for x in rejects] == [(1, records[1]["source_key"])]


def test_a_post_attributes_its_own_records_not_the_organizations_earlier_ones(app, client, seed):
    """The pass after a POST covers that POST's run, as after ``flopwise ingest``: a rule added later attributes
    the new records, while the organization's earlier unattributed records wait for an attribution pass of their
    own (``flopwise attribution apply``). Each POST re-examined every unattributed row of the organization
    before, so a one-record POST grew with the ledger (1.6 s over 20,000 such rows, `bench` in the note)."""
    from flopwise.store import write_session
    from flopwise.store.ledger import AttributionRule

    account = f"acct-{uuid.uuid4().hex[:8]}"
    earlier = [{**rec, "x_account": account} for rec in _records()]
    assert client.post(URL, json={"records": earlier}, headers=seed.headers("member")).json()["unattributed"] == 4
    with write_session(app.state.db) as s:
        s.add(AttributionRule(org_id=seed.org_id, priority=1, match={"account": account},
                              project_id=seed.project_id))  # fmt: skip
    later = [{**rec, "x_account": account} for rec in _records()]
    r = client.post(URL, json={"records": later}, headers=seed.headers("member"))
    assert r.status_code == 200 and r.json()["inserted"] == 4, r.text
    projects = {}
    for row in _rows(app, seed.org_id):
        for name, recs in (("earlier", earlier), ("later", later)):
            if any(row.source_key.endswith(rec["source_key"]) for rec in recs):
                projects.setdefault(name, set()).add(row.project_id)
    assert projects == {"earlier": {None}, "later": {seed.project_id}}
