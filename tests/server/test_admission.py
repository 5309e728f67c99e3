"""Admission for schedulers over real HTTP: decide (idempotent, worst case reserved), commit, release, settle."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import gov_fixtures
from gov_fixtures import Org, make_budget

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org


def _job(
    o: Org, job_id: str, *, devices: int = 4, hours: str = "10", price: str = "3.00", **extra: object
) -> dict:
    return {
        "engine": "slurm",
        "engine_job_id": job_id,
        "project_id": o.project_id,
        "device": "h100-sxm",
        "device_count": devices,
        "max_duration_h": hours,
        "usd_per_device_h": price,
        **extra,
    }


def _used(o: Org, budget_id: int) -> dict[str, Decimal]:
    body = o.get(f"/budgets/{budget_id}", "admin").json()
    return {k: Decimal(body[k]) for k in ("reserved", "committed", "settled", "used")}


def test_decide_reserves_the_worst_case_and_is_idempotent(org: Org) -> None:
    usd = make_budget(org, org.project_id, "1000")
    hours = make_budget(org, org.project_id, "100", unit="device_hours")
    r = org.post("/admission/decide", "member", _job(org, "1001"))
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["admitted"] is True and job["state"] == "admitted"
    # worst case: 4 devices x 10 h x $3.00 = $120 and 40 device-hours
    assert Decimal(job["worst_case_cost_usd"]) == 120 and Decimal(job["worst_case_device_hours"]) == 40
    assert {(x["budget_id"], Decimal(x["amount"])) for x in job["reservations"]} == {
        (usd["id"], Decimal(120)),
        (hours["id"], Decimal(40)),
    }
    # H100 at 989.4 TFLOP/s bf16 dense is the fp8 1978.9 peak x 4 devices: the cluster is far below 1e20 op/s
    assert Decimal(job["worst_case_kwh"]) > 0
    again = org.post("/admission/decide", "member", _job(org, "1001"))
    assert again.json()["id"] == job["id"]
    assert _used(org, usd["id"])["reserved"] == 120  # not reserved twice


def test_commit_then_settle_replaces_the_reservation_by_actual_usage(org: Org) -> None:
    usd = make_budget(org, org.project_id, "1000")
    org.post("/admission/decide", "member", _job(org, "2001"))
    committed = org.post("/admission/slurm/2001/commit", "member")
    assert committed.status_code == 200 and committed.json()["state"] == "committed"
    assert _used(org, usd["id"]) == {"reserved": 0, "committed": 120, "settled": 0, "used": 120}
    assert org.post("/admission/slurm/2001/commit", "member").status_code == 200  # repeated: harmless
    settled = org.post("/admission/slurm/2001/settle", "member", {"actual_duration_h": "2.5"})
    assert settled.status_code == 200, settled.text
    row = settled.json()["reservations"][0]
    # actual: 4 x 2.5 h x $3 = $30 replaces the $120 worst case, which stays as reserved_amount
    assert (Decimal(row["amount"]), Decimal(row["reserved_amount"]), row["state"]) == (30, 120, "settled")
    assert _used(org, usd["id"]) == {"reserved": 0, "committed": 0, "settled": 30, "used": 30}
    assert org.post("/admission/slurm/2001/release", "member").status_code == 409  # it ran
    explicit = org.post("/admission/decide", "member", _job(org, "2002"))
    assert explicit.json()["admitted"]
    out = org.post("/admission/slurm/2002/settle", "member", {"actual_duration_h": "1", "cost_usd": "11.50"})
    assert Decimal(out.json()["reservations"][0]["amount"]) == Decimal("11.50")


def test_release_when_the_job_never_ran(org: Org) -> None:
    usd = make_budget(org, org.project_id, "1000")
    org.post("/admission/decide", "member", _job(org, "3001"))
    released = org.post("/admission/slurm/3001/release", "member")
    assert (
        released.json()["state"] == "released" and released.json()["reservations"][0]["state"] == "released"
    )
    assert _used(org, usd["id"])["used"] == 0
    assert org.post("/admission/slurm/3001/commit", "member").status_code == 409
    assert org.post("/admission/slurm/3001/settle", "member", {"actual_duration_h": "1"}).status_code == 409


def test_hard_budget_rejects_the_worst_case_and_approval_policies_reject(org: Org) -> None:
    make_budget(org, org.project_id, "100")
    rejected = org.post("/admission/decide", "member", _job(org, "4001")).json()  # $120 > $100
    assert (
        rejected["admitted"] is False and rejected["state"] == "rejected" and rejected["reservations"] == []
    )
    assert any("is hard" in r for r in rejected["reasons"])
    assert org.post("/admission/slurm/4001/commit", "member").status_code == 409
    policy = "name: gate\nrules:\n  - id: all\n    effect: require_approval\n"
    assert org.post("/policies", "admin", {"yaml": policy}).status_code == 201
    gated = org.post("/admission/decide", "member", _job(org, "4002", devices=1, hours="1")).json()
    assert gated["admitted"] is False and gated["decision_trace"]["policy_outcome"] == "require_approval"
    assert any("file a compute request" in r for r in gated["reasons"])


def test_quota_limits_concurrent_devices(org: Org) -> None:
    q = org.post(
        "/quotas",
        "admin",
        {"scope_kind": "team", "scope_id": org.team_id, "match_on": "device_class", "device": "gpu",
         "max_concurrent_devices": "6"},
    )  # fmt: skip
    assert q.status_code == 201, q.text
    assert org.post("/admission/decide", "member", _job(org, "5001", devices=4)).json()["admitted"]
    over = org.post("/admission/decide", "member", _job(org, "5002", devices=4)).json()
    assert not over["admitted"] and any("quota" in r for r in over["reasons"])
    org.post("/admission/slurm/5001/release", "member")
    assert org.post("/admission/decide", "member", _job(org, "5003", devices=4)).json()["admitted"]


def test_admission_authorization_and_bad_input(org: Org) -> None:
    for who, status in [
        ("none", 401),
        ("revoked", 401),
        ("other_org", 404),
        ("viewer", 403),
        ("member", 200),
    ]:
        assert org.post("/admission/decide", who, _job(org, f"6-{who}")).status_code == status, who
    assert org.get("/admission/slurm/6-member", "viewer").status_code == 200
    assert org.get("/admission/slurm/6-member", "other_org").status_code == 404
    assert org.post("/admission/slurm/6-member/commit", "viewer").status_code == 403
    assert org.post("/admission/slurm/nope/commit", "member").status_code == 404
    for body, field in [
        (_job(org, "7", devices=0), "device_count"),
        (_job(org, "7", hours="0"), "max_duration_h"),
        (_job(org, "7", engine="SLURM!"), "engine"),
        (_job(org, "7", device="h1000"), "device"),
    ]:
        r = org.post("/admission/decide", "member", body)
        assert r.status_code == 422 and any(e["field"] == field for e in r.json()["errors"]), r.text
    bad = org.post("/admission/slurm/6-member/settle", "member", {"actual_duration_h": "-1"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "actual_duration_h"


def test_a_reservation_made_at_one_price_and_settled_at_another_shows_both(org: Org) -> None:
    usd = make_budget(org, org.project_id, "1000")
    job = org.post("/admission/decide", "member", _job(org, "7001", devices=4, hours="10")).json()
    res = job["reservations"][0]
    # a price the caller gave has no catalog date
    assert (Decimal(res["reserved_usd_per_device_h"]), res["price_retrieved"]) == (Decimal("3.00"), None)
    assert res["settled_usd_per_device_h"] is None and res["price_change_usd_per_device_h"] is None
    out = org.post("/admission/slurm/7001/settle", "member", {"actual_duration_h": "1", "cost_usd": "11.50"})
    row = next(r for r in out.json()["reservations"] if r["budget_id"] == usd["id"])
    # metered: $11.50 over 4 devices x 1 h = $2.875 per device-hour, $0.125 below the $3.00 it was reserved at
    assert Decimal(row["reserved_usd_per_device_h"]) == Decimal("3.00")
    assert Decimal(row["settled_usd_per_device_h"]) == Decimal("2.875")
    assert Decimal(row["price_change_usd_per_device_h"]) == Decimal("-0.125")
    shown = org.get(f"/budgets/{usd['id']}", "admin").json()
    # the 4 metered device-hours at the reserved $3.00 would have cost $12.00: $0.50 of the settlement is price
    assert Decimal(shown["settled"]) == Decimal("11.50")
    assert Decimal(shown["settled_at_reserved_prices"]) == Decimal("12.00")
    assert Decimal(shown["settled_price_difference"]) == Decimal("-0.50")
    shown_again = org.get("/admission/slurm/7001", "member").json()["reservations"][0]
    assert Decimal(shown_again["settled_usd_per_device_h"]) == Decimal("2.875")


def test_a_catalog_price_is_reserved_with_its_catalog_date(org: Org) -> None:
    make_budget(org, org.project_id, "100000")
    body = _job(org, "7002", devices=8, hours="1")
    del body["usd_per_device_h"]
    job = org.post("/admission/decide", "member", body).json()
    assert job["admitted"], job
    res = job["reservations"][0]
    from flopwise.catalog import load_catalog

    # the cheapest on-demand H100 SXM offering's per-device price and the date its row was retrieved
    offers = [o for o in load_catalog().offerings if o.device_id == "h100-sxm" and o.on_demand_usd_per_h]
    best = min(offers, key=lambda o: (o.on_demand_usd_per_h / o.device_count, o.id))
    assert res["price_retrieved"] == best.retrieved
    assert Decimal(res["reserved_usd_per_device_h"]) == Decimal(job["worst_case_cost_usd"]) / 8
    assert org.get("/admission/slurm/7002", "member").json()["reservations"][0]["price_retrieved"] == best.retrieved


def test_list_filters_pages_and_shows_reservations(org: Org) -> None:
    """``GET /admission``: newest first with each job's reservations (read for the whole page at once), by
    state (``holding``: admitted or committed), engine and project, paged by ``before_id``."""
    make_budget(org, org.project_id, "100000")
    p2 = org.new_project()
    make_budget(org, p2, "100000")
    for job_id in ("L1", "L2", "L3", "L4"):
        assert org.post("/admission/decide", "member", _job(org, job_id)).status_code == 200
    ray = {**_job(org, "L5"), "engine": "ray", "project_id": p2}
    assert org.post("/admission/decide", "admin", ray).status_code == 200
    assert org.post("/admission/slurm/L2/commit", "member").status_code == 200
    assert org.post("/admission/slurm/L3/release", "member").status_code == 200
    assert org.post("/admission/slurm/L4/settle", "member", {"actual_duration_h": "1"}).status_code == 200

    def ids(who: str = "admin", **params: object) -> list[str]:
        r = org.get("/admission", who, params=params)
        assert r.status_code == 200, r.text
        return [job["engine_job_id"] for job in r.json()]

    assert ids() == ["L5", "L4", "L3", "L2", "L1"]
    assert ids(state="holding") == ["L5", "L2", "L1"]
    assert ids(state="committed") == ["L2"] and ids(state="released") == ["L3"] and ids(state="settled") == ["L4"]
    assert ids(engine="ray") == ["L5"] and ids(project_id=p2) == ["L5"]
    first = org.get("/admission", "admin", params={"limit": 2}).json()
    assert [j["engine_job_id"] for j in first] == ["L5", "L4"]
    assert ids(limit=2, before_id=first[-1]["id"]) == ["L3", "L2"]
    listed = {job["engine_job_id"]: job for job in org.get("/admission", "admin").json()}
    for job_id, job in listed.items():  # the same job and reservations as its own page shows
        shown = org.get(f"/admission/{job['engine']}/{job_id}", "admin").json()
        assert job == shown, job_id
    assert [(r["state"], Decimal(r["amount"])) for r in listed["L4"]["reservations"]] == [("settled", Decimal(12))]
    assert listed["L2"]["ends_by"] is not None and listed["L1"]["ends_by"] is None  # started vs not yet
    bad = org.get("/admission", "admin", params={"state": "running"})
    assert bad.status_code == 422 and "state" in bad.text


def test_overdue_lists_committed_jobs_past_their_maximum_duration(org: Org) -> None:
    """A committed job whose end was never reported keeps its reservation counting in full; ``overdue`` finds the
    ones past start + maximum duration (``ends_by``), which are settled or released by hand."""
    make_budget(org, org.project_id, "100000")
    for job_id, hours in (("O1", "2"), ("O2", "10"), ("O3", "2")):
        assert org.post("/admission/decide", "member", _job(org, job_id, hours=hours)).status_code == 200
    started = org.gov.clock.now
    for job_id in ("O1", "O2"):
        assert org.post(f"/admission/slurm/{job_id}/commit", "member").status_code == 200
    shown = org.get("/admission/slurm/O1", "admin").json()
    assert shown["ends_by"].startswith((started + timedelta(hours=2)).isoformat()[:19])

    def overdue() -> list[str]:
        r = org.get("/admission", "viewer", params={"overdue": "true"})
        assert r.status_code == 200, r.text
        return [job["engine_job_id"] for job in r.json()]

    assert overdue() == []
    org.gov.clock.advance(hours=2)  # O1's two hours are up (O3 was never started: not overdue)
    assert overdue() == ["O1"]
    # a page of one: the newest committed job (O2) is not overdue, so the list reads on past it to O1
    one = org.get("/admission", "viewer", params={"overdue": "true", "limit": 1})
    assert [j["engine_job_id"] for j in one.json()] == ["O1"]
    org.gov.clock.advance(hours=9)
    assert overdue() == ["O2", "O1"]
    assert [j["engine_job_id"] for j in org.get("/admission", "admin", params={"overdue": "true", "limit": 1}).json()] == ["O2"]
    assert org.post("/admission/slurm/O1/settle", "member", {"actual_duration_h": "2"}).status_code == 200
    assert overdue() == ["O2"]
    refused = org.get("/admission", "admin", params={"overdue": "true", "state": "settled"})
    assert refused.status_code == 422 and "overdue" in refused.text
