"""Usage reports, plan vs actual, alerts, alert channels and attribution rules over real HTTP, SQLite and PostgreSQL.

The ledger holds the real hb-jobinfo sacct sample (attributed with a rule posted through the API) plus usage of
an approved compute request; ``apply_actuals`` burns a budget and raises its alerts.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.meter.burn import apply_actuals
from flopwise.meter.record import RejectedRow
from flopwise.meter.sacct import parse_sacct
from flopwise.store import Budget, ComputeRequest, write_session
from flopwise.store.ledger import UsageRecordRow

API = "/api/v1"
SLURM = Path(__file__).resolve().parents[1] / "data" / "slurm" / "hb-jobinfo-sacct.txt"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def loaded(app, client, seed):
    """The sacct sample and one request's usage in the ledger, attributed, with a budget burned and alerted."""
    assert SLURM.exists(), f"sample file {SLURM.name} not found in {SLURM.parent}"
    rejected: list[RejectedRow] = []
    with SLURM.open(encoding="utf-8") as f:
        records = list(
            parse_sacct(f, rejected=rejected, fields="hb-jobinfo", assume_tz="UTC", catalog=load_catalog())
        )
    admin = _auth(seed.tokens["admin"])
    rule = client.post(
        f"{API}/attribution-rules",
        json={"priority": 5, "match": {"partition": "gpu*"}, "project_id": seed.project_id},
        headers=admin,
    )
    assert rule.status_code == 201, rule.text
    tag = uuid.uuid4().hex[:8]
    now = datetime(2025, 3, 20, tzinfo=UTC)
    with write_session(app.state.db) as s:
        for r in records:
            s.add(UsageRecordRow(
                source=r.source, source_key=f"{tag}:{r.source_key}", charge_period_start=r.charge_period_start,
                charge_period_end=r.charge_period_end, cost_usd=Decimal("2.5") * Decimal(repr(r.x_device_hours or 0)),
                cost_basis="catalog-onprem", tags=r.tags, x_device_type="a100-sxm-80gb" if r.x_device_hours else None,
                x_device_hours=r.x_device_hours, x_extra=r.x_extra, x_user=r.x_user, provider_name="hb-cluster",
            ))  # fmt: skip
        req = ComputeRequest(
            org_id=seed.org_id, requester_id=seed.user_ids["member"], project_id=seed.project_id,
            workload_kind="train", inputs={}, device_type="h100-sxm", device_count=8, state="approved",
            estimated_device_hours=Decimal("80"), estimated_cost_usd=Decimal("240"), estimated_kwh=Decimal("56"),
        )  # fmt: skip
        s.add(req)
        s.flush()
        s.add(UsageRecordRow(
            source="dcgm", source_key=f"{tag}:req", charge_period_start=now - timedelta(days=2),
            charge_period_end=now - timedelta(days=1), cost_usd=Decimal("300"), cost_basis="catalog-onprem",
            x_device_type="h100-sxm", x_device_hours=96.0, x_energy_kwh=70.0, energy_basis="measured",
            x_gpu_utilization=0.75, idle_device_hours=24.0, idle_cost_usd=Decimal("75"), tags={}, x_extra={},
            x_request_id=str(req.id), provider_name="on-prem",
        ))  # fmt: skip
        s.add(Budget(org_id=seed.org_id, name=f"march-{tag}", scope_kind="project", scope_id=seed.project_id,
                     period="month", unit="usd", amount=Decimal("450"), alert_thresholds=["0.5", "0.8"]))  # fmt: skip
        s.flush()
        result = apply_actuals(s, now, seed.org_id)
        request_id = req.id
    return {"records": records, "request_id": request_id, "result": result, "now": now}


def test_usage_report_groups_sum_to_the_total_and_money_is_exact(client, seed, loaded):
    gpu_jobs = [r for r in loaded["records"] if r.tags.get("partition", "").startswith("gpu")]
    response = client.get(
        f"{API}/reports/usage", params={"group_by": "project"}, headers=_auth(seed.tokens["viewer"])
    )
    assert response.status_code == 200, response.text
    body = response.json()
    total = body["total"]
    assert total["records"] == len(gpu_jobs) + 1  # the org's rows only: the GPU jobs and the request's usage
    assert isinstance(total["cost_usd"], str)
    assert sum(Decimal(g["cost_usd"]) for g in body["groups"]) == Decimal(total["cost_usd"])
    assert total["idle_device_hours"] == pytest.approx(24.0) and Decimal(total["idle_cost_usd"]) == Decimal(
        "75"
    )
    by_month = client.get(
        f"{API}/reports/usage",
        params={"group_by": "month", "from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"},
        headers=_auth(seed.tokens["viewer"]),
    ).json()
    assert [g["key"] for g in by_month["groups"]] == ["2025-03"] and by_month["total"]["records"] == 1


def test_usage_report_as_csv(client, seed, loaded):
    response = client.get(
        f"{API}/reports/usage",
        params={"group_by": "device", "format": "csv"},
        headers=_auth(seed.tokens["member"]),
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["key"] for r in rows} >= {"h100-sxm"}
    assert (
        sum(int(r["records"]) for r in rows)
        == len([r for r in loaded["records"] if r.tags.get("partition", "").startswith("gpu")]) + 1
    )


def test_other_organizations_see_none_of_it(client, seed, loaded):
    body = client.get(f"{API}/reports/usage", headers=_auth(seed.other_admin_token)).json()
    assert body["total"]["records"] == 0 and body["groups"] == []
    assert client.get(f"{API}/alerts", headers=_auth(seed.other_admin_token)).json() == {"alerts": []}
    assert client.get(f"{API}/attribution-rules", headers=_auth(seed.other_admin_token)).json() == {
        "rules": []
    }


def test_bad_report_parameters_are_422_in_the_one_error_shape(client, seed, loaded):
    for params in (
        {"group_by": "week"},
        {"from": "2025-03-01T00:00:00"},
        {"from": "2025-03-02T00:00:00Z", "to": "2025-03-01T00:00:00Z"},
    ):
        response = client.get(f"{API}/reports/usage", params=params, headers=_auth(seed.tokens["viewer"]))
        assert response.status_code == 422, (params, response.text)
        assert response.json()["ok"] is False and response.json()["error"]


def test_concentration(client, seed, loaded):
    body = client.get(
        f"{API}/reports/concentration", params={"by": "provider"}, headers=_auth(seed.tokens["viewer"])
    )
    assert body.status_code == 200
    report = body.json()
    assert {s["name"] for s in report["shares"]} == {"hb-cluster", "on-prem"}
    assert sum(s["share_frac"] for s in report["shares"]) == pytest.approx(1.0)
    assert report["largest"]["share_frac"] == max(s["share_frac"] for s in report["shares"])
    vendor = client.get(
        f"{API}/reports/concentration", params={"by": "vendor", "measure": "device_hours"},
        headers=_auth(seed.tokens["viewer"]),
    ).json()  # fmt: skip
    assert [s["name"] for s in vendor["shares"]] == ["nvidia"] or vendor["shares"][0][
        "name"
    ].lower() == "nvidia"
    assert vendor["hhi"] == pytest.approx(10_000)


def test_plan_vs_actual(client, seed, loaded):
    rows = client.get(f"{API}/reports/plan-vs-actual", headers=_auth(seed.tokens["viewer"])).json()[
        "requests"
    ]
    (row,) = [r for r in rows if r["request_id"] == loaded["request_id"]]
    assert row["estimated_device_hours"] == 80 and row["actual_device_hours"] == 96
    assert row["device_hours_error_frac"] == pytest.approx((80 - 96) / 96)
    assert Decimal(row["actual_cost_usd"]) == Decimal("300") and row["cost_error_frac"] == pytest.approx(-0.2)


def test_alerts_listed_with_forecast(client, seed, clock, loaded):
    clock(loaded["now"])
    alerts = client.get(f"{API}/alerts", headers=_auth(seed.tokens["viewer"])).json()["alerts"]
    # 300 of 450 used: past 50%, short of 80%
    assert sorted(Decimal(a["threshold_frac"]) for a in alerts) == [Decimal("0.5")]
    (alert,) = alerts
    assert Decimal(alert["used_amount"]) == Decimal("300") and alert["delivery_status"] == "pending"
    assert alert["forecast"]["is_projected_over"] is True and alert["forecast"]["runs_out_at"]


def test_alert_channel_and_rules(client, seed, loaded):
    admin = _auth(seed.tokens["admin"])
    made = client.post(f"{API}/alert-channels", json={"url": "https://hooks.example.org/x"}, headers=admin)
    assert made.status_code == 201 and len(made.json()["secret"]) >= 32
    bad = client.post(f"{API}/alert-channels", json={"url": "not a url"}, headers=admin)
    assert bad.status_code == 422
    rules = client.get(f"{API}/attribution-rules", headers=_auth(seed.tokens["viewer"])).json()["rules"]
    assert rules[0]["match"] == {"partition": "gpu*"} and rules[0]["team_id"] == seed.team_id
    for body in (
        {"match": {"acount": "x"}, "project_id": seed.project_id},
        {"match": {"account": "x"}},
        {"match": {"account": "x"}, "project_id": seed.project_id, "team_id": seed.other_team_id},
    ):
        response = client.post(f"{API}/attribution-rules", json=body, headers=admin)
        assert response.status_code in (404, 422), (body, response.text)
        assert response.json()["ok"] is False
    foreign = client.post(
        f"{API}/attribution-rules",
        json={"match": {"account": "x"}, "project_id": seed.other_project_id},
        headers=admin,
    )
    assert foreign.status_code == 404
