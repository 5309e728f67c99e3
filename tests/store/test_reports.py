"""Ledger reports, checked as OpenCost's integration suite checks its allocations: invariants on real data.

The ledger is filled from the real samples in tests/data (the hb-jobinfo sacct output, the FOCUS 1.0 sample)
and the handmade DCGM scrapes, inserted with ``ON CONFLICT (source_key) DO NOTHING`` as ingestion does, and
attributed with rules. Then, on SQLite and PostgreSQL:

* totals equal the sum of their parts under every grouping (money exactly, floats to rtol 1e-9);
* no negative device-hours, energy, CO2e, idle hours or idle cost (negative cost only where the bill has a credit);
* loading the same records again changes no report (re-ingestion never double counts);
* every parsed record is in the ledger exactly once: parsed == rows, per source.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from flopwise.catalog import load_catalog
from flopwise.errors import InputError
from flopwise.meter.attribution import AttributionRule, Scope, attribute
from flopwise.meter.dcgm import dcgm_usage, parse_dcgm_scrape
from flopwise.meter.export import export_focus_csv
from flopwise.meter.focus import parse_focus_file
from flopwise.meter.record import FOCUS_NAMES, RejectedRow, UsageRecord
from flopwise.meter.sacct import parse_sacct
from flopwise.store import Organization, Project, Team, read_session, write_session
from flopwise.store.ledger import UsageRecordRow
from flopwise.store.reports import (
    BOUNDARY_FIELDS,
    GROUP_BY,
    UNATTRIBUTED,
    concentration_report,
    herfindahl_hirschman,
    usage_report,
)
from flopwise.store.types import to_money

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
FIXTURES = ROOT / "tests" / "fixtures" / "meter"
RTOL = 1e-9
ONPREM_USD_PER_DEVICE_H = Decimal("2.10")  # a flat test price for usage without a bill


def _need(path: Path) -> Path:
    assert path.exists(), f"sample file {path.name} not found in {path.parent}"
    return path


def _records() -> dict[str, list[UsageRecord]]:
    catalog = load_catalog()
    rejected: list[RejectedRow] = []
    with _need(DATA / "slurm" / "hb-jobinfo-sacct.txt").open(encoding="utf-8") as f:
        slurm = list(parse_sacct(f, rejected=rejected, fields="hb-jobinfo", assume_tz="UTC", catalog=catalog))
    focus = list(
        parse_focus_file(_need(DATA / "focus" / "focus-1.0-sample.csv"), assume_tz="UTC", catalog=catalog)
    )
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    scrapes = []
    times = (
        ("dcgm-scrape-t0-handmade.prom", t0),
        ("dcgm-scrape-t1-handmade.prom", t0 + timedelta(minutes=1)),
    )
    for name, at in times:
        with (FIXTURES / name).open(encoding="utf-8") as f:
            scrapes.append(parse_dcgm_scrape(f, scraped_at=at, rejected=rejected, path=name, catalog=catalog))
    dcgm = list(dcgm_usage(scrapes))
    return {"slurm": slurm, "focus": focus, "dcgm": dcgm}


def _row(record: UsageRecord, scope: Scope | None) -> dict:
    """A ledger row for *record*, priced as ingestion does: the bill when there is one, else a flat device-hour price."""
    values = {k: getattr(record, k) for k in FOCUS_NAMES}
    values.update(source_key=record.source_key, x_user=record.x_user, x_account=record.x_account, x_extra={})
    hours = record.x_device_hours or 0.0
    if record.billed_cost is not None:
        values.update(cost_usd=record.billed_cost, cost_basis="billed")
    elif hours > 0:
        values.update(cost_usd=(ONPREM_USD_PER_DEVICE_H * Decimal(repr(hours))).quantize(Decimal("0.000001")))
        values.update(cost_basis="catalog-onprem")
    if record.x_gpu_utilization is not None and hours > 0:
        idle = hours * (1.0 - record.x_gpu_utilization)
        values["idle_device_hours"] = idle
        if values.get("cost_usd") is not None:
            values["idle_cost_usd"] = (
                values["cost_usd"] * Decimal(repr(1.0 - record.x_gpu_utilization))
            ).quantize(Decimal("0.000001"))
    values["energy_basis"] = "measured" if record.x_energy_kwh is not None else "none"
    if record.x_energy_kwh is not None:
        values["x_co2e_kg"] = record.x_energy_kwh * 0.4
    if scope is not None:
        values.update(org_id=scope.org_id, team_id=scope.team_id, project_id=scope.project_id)
    return values


def load(session: Session, records: list[UsageRecord], rules: list[AttributionRule]) -> int:
    """Insert *records* with ON CONFLICT (source_key) DO NOTHING; returns how many were new."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    inserted = 0
    for record in records:
        stmt = insert(UsageRecordRow).values(**_row(record, attribute(record, rules).scope))
        new_id = session.execute(
            stmt.on_conflict_do_nothing(index_elements=["source_key"]).returning(UsageRecordRow.id)
        ).scalar()
        inserted += new_id is not None
    return inserted


@pytest.fixture(scope="module")
def ledger(factory: sessionmaker[Session]):
    tag = uuid.uuid4().hex[:8]
    with write_session(factory) as s:
        org = Organization(name=f"reports-{tag}")
        s.add(org)
        s.flush()
        gpu_team, cpu_team = Team(org_id=org.id, name="gpu"), Team(org_id=org.id, name="cpu")
        s.add_all([gpu_team, cpu_team])
        s.flush()
        llm = Project(team_id=gpu_team.id, name="llm")
        s.add(llm)
        s.flush()
        gpu = Scope(org.id, gpu_team.id, llm.id)
        cpu = Scope(org.id, cpu_team.id, None)
        rules = [
            AttributionRule(1, 10, {"partition": "gpu*"}, gpu),
            AttributionRule(2, 20, {"partition": "regular*"}, cpu),
            AttributionRule(3, 30, {"source": "focus", "tags": {"env": "*"}}, cpu),
            AttributionRule(4, 40, {"namespace": "*"}, gpu),
        ]
    records = _records()
    counts = {}
    with write_session(factory) as s:
        for source, recs in records.items():
            counts[source] = load(s, recs, rules)
    return {"org_id": org.id, "records": records, "rules": rules, "inserted": counts}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9)


def test_counts_reconcile_every_parsed_record_is_one_ledger_row(ledger, factory):
    records = ledger["records"]
    assert {k: len(v) for k, v in records.items()} == ledger["inserted"]
    assert ledger["inserted"]["slurm"] == 87 and ledger["inserted"]["focus"] == 1000
    with read_session(factory) as s:
        for source, recs in records.items():
            keys = {r.source_key for r in recs}
            n = s.scalar(select(func.count()).where(UsageRecordRow.source_key.in_(keys)))
            assert n == len(keys) == len(recs), source


@pytest.mark.parametrize("group_by", GROUP_BY)
def test_totals_equal_the_sum_of_their_parts_under_every_grouping(ledger, factory, group_by):
    with read_session(factory) as s:
        report = usage_report(s, group_by)
    total, groups = report["total"], report["groups"]
    assert groups
    assert sum(g["records"] for g in groups) == total["records"]
    assert sum((g["cost_usd"] for g in groups), Decimal(0)) == total["cost_usd"]  # exact
    assert sum((g["idle_cost_usd"] for g in groups), Decimal(0)) == total["idle_cost_usd"]
    for metric in ("device_hours", "energy_kwh", "co2e_kg", "idle_device_hours", *BOUNDARY_FIELDS):
        assert _close(sum(g[metric] for g in groups), total[metric]), metric
    assert len({g["key"] for g in groups}) == len(groups)


def test_no_negative_quantities_and_credits_only_from_the_bill(ledger, factory):
    for group_by in GROUP_BY:
        with read_session(factory) as s:
            report = usage_report(s, group_by)
        for g in [*report["groups"], report["total"]]:
            for metric in ("device_hours", "energy_kwh", "co2e_kg", "idle_device_hours"):
                assert g[metric] >= 0, (group_by, g)
            assert g["idle_cost_usd"] >= 0
            assert g["idle_device_hours"] <= g["device_hours"] + 1e-9
    with read_session(factory) as s:
        negative = s.execute(
            select(UsageRecordRow.cost_basis, UsageRecordRow.billed_cost).where(UsageRecordRow.cost_usd < 0)
        ).all()
    assert negative and all(basis == "billed" and billed < 0 for basis, billed in negative)  # FOCUS credits


def test_unattributed_usage_is_its_own_group_and_never_dropped(ledger, factory):
    with read_session(factory) as s:
        by_team = usage_report(s, "team")
        total_rows = s.scalar(select(func.count()).select_from(UsageRecordRow))
        null_rows = s.scalar(select(func.count()).where(UsageRecordRow.team_id.is_(None)))
    unattributed = [g for g in by_team["groups"] if g["key"] is None]
    assert len(unattributed) == 1 and unattributed[0]["label"] == UNATTRIBUTED
    assert unattributed[0]["records"] == null_rows > 0
    assert by_team["total"]["records"] == total_rows
    labels = {g["label"] for g in by_team["groups"]}
    assert {"gpu", "cpu"} <= labels


def test_reingesting_the_same_records_changes_nothing(ledger, factory):
    with read_session(factory) as s:
        before = {g: usage_report(s, g) for g in ("project", "day", "provider")}
    with write_session(factory) as s:
        again = {src: load(s, recs, ledger["rules"]) for src, recs in ledger["records"].items()}
    assert again == {src: 0 for src in ledger["records"]}
    with read_session(factory) as s:
        after = {g: usage_report(s, g) for g in ("project", "day", "provider")}
    assert after == before


def test_day_and_month_groups_are_utc_calendar_periods(ledger, factory):
    with read_session(factory) as s:
        months = usage_report(s, "month", org_id=None)
        sept = usage_report(
            s, "day", from_=datetime(2024, 9, 1, tzinfo=UTC), to=datetime(2024, 10, 1, tzinfo=UTC)
        )
    assert "2024-09" in {g["key"] for g in months["groups"]}
    days = {g["key"] for g in sept["groups"]}
    assert days and all(k.startswith("2024-09-") and len(k) == 10 for k in days)
    start, end = datetime(2024, 9, 1, tzinfo=UTC), datetime(2024, 10, 1, tzinfo=UTC)
    in_sept = [r for recs in ledger["records"].values() for r in recs if start <= r.charge_period_start < end]
    assert sept["total"]["records"] == len(in_sept) >= 1000
    costs = [_row(r, None).get("cost_usd") for r in in_sept]
    assert sept["total"]["cost_usd"] == sum((to_money(c) for c in costs if c is not None), Decimal(0))


def test_org_filter_and_utilization(ledger, factory):
    with read_session(factory) as s:
        mine = usage_report(s, "project", org_id=ledger["org_id"])
        everything = usage_report(s)
    assert mine["total"]["records"] <= everything["total"]["records"]
    assert all(g["key"] is not None or g["label"] == UNATTRIBUTED for g in mine["groups"])
    util = mine["total"]["utilization_frac"]
    assert util is None or 0.0 <= util <= 1.0


def test_bad_arguments_are_input_errors(factory):
    with read_session(factory) as s:
        with pytest.raises(InputError, match="group_by"):
            usage_report(s, "week")
        with pytest.raises(InputError, match="timezone-aware"):
            usage_report(s, from_=datetime(2024, 1, 1))
        with pytest.raises(InputError, match="after from"):
            usage_report(s, from_=datetime(2024, 2, 1, tzinfo=UTC), to=datetime(2024, 1, 1, tzinfo=UTC))
        with pytest.raises(InputError, match="by"):
            concentration_report(s, by="planet")


def test_herfindahl_hirschman_textbook_values():
    assert herfindahl_hirschman({"a": 1})[0] == pytest.approx(10_000)
    assert herfindahl_hirschman({"a": 1, "b": 1, "c": 1, "d": 1})[0] == pytest.approx(2_500)
    hhi, shares = herfindahl_hirschman({"a": 30, "b": 30, "c": 20, "d": 20})  # 900+900+400+400
    assert hhi == pytest.approx(2_600) and shares[0] == ("a", 0.3)
    assert herfindahl_hirschman({"a": 0}) == (0.0, [])


def test_provider_concentration_on_the_focus_sample(ledger, factory):
    focus = ledger["records"]["focus"]
    with read_session(factory) as s:
        report = concentration_report(s, by="provider", measure="cost_usd")
        by_vendor = concentration_report(
            s, by="vendor", measure="device_hours", vendor_of=lambda d: load_catalog().device(d).vendor
        )
    shares = {x["name"]: x["share_frac"] for x in report["shares"]}
    assert math.isclose(sum(shares.values()), 1.0, rel_tol=1e-12)
    assert 0 < report["hhi"] <= 10_000 and report["largest"]["name"] in shares
    assert report["largest"]["share_frac"] == max(shares.values())
    aws = sum((r.billed_cost for r in focus if r.provider_name == "AWS" and r.billed_cost > 0), Decimal(0))
    assert aws > 0
    assert by_vendor["shares"] and math.isclose(sum(x["share_frac"] for x in by_vendor["shares"]), 1.0)


def test_focus_export_round_trips_through_the_focus_parser(ledger, factory, tmp_path):
    out = tmp_path / "ledger-focus.csv"
    with read_session(factory) as s, out.open("w", encoding="utf-8", newline="") as f:
        written = export_focus_csv(s, f, org_id=ledger["org_id"])
        expected = usage_report(s, org_id=ledger["org_id"])["total"]
    assert written == expected["records"] > 0
    with out.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert set(FOCUS_NAMES.values()) <= set(header)
    reparsed = list(parse_focus_file(out, assume_tz="UTC"))
    assert len(reparsed) == written
    assert sum((r.billed_cost or Decimal(0) for r in reparsed), Decimal(0)) == expected["cost_usd"]
    assert math.isclose(sum(r.x_device_hours or 0 for r in reparsed), expected["device_hours"], rel_tol=RTOL)
    text = io.StringIO()
    with read_session(factory) as s:
        assert export_focus_csv(s, text, from_=datetime(2030, 1, 1, tzinfo=UTC)) == 0
    assert text.getvalue().startswith("ChargePeriodStart,")


def test_energy_boundary_and_measured_share(ledger, factory):
    """The ledger's energy is the device boundary; the measured part (DCGM/NVML counters) is reported apart."""
    with read_session(factory) as s:
        report = usage_report(s, "provider")
        measured = s.scalar(
            select(func.coalesce(func.sum(UsageRecordRow.x_energy_kwh), 0.0)).where(
                UsageRecordRow.energy_basis == "measured"
            )
        )
    total = report["total"]
    assert total["energy_boundary"] == "device"
    assert total["measured_energy_kwh"] == pytest.approx(float(measured))
    assert 0 <= total["measured_energy_kwh"] <= total["energy_kwh"] + 1e-9
    assert sum(g["measured_energy_kwh"] for g in report["groups"]) == pytest.approx(total["measured_energy_kwh"])


def test_usage_report_states_its_energy_and_co2e_boundaries(tmp_path):
    """A reader of the report is told which boundary each figure covers, not left to assume facility energy."""
    from flopwise.store import make_engine, make_session_factory, read_session, upgrade
    from flopwise.store.reports import usage_report

    url = f"sqlite:///{tmp_path / 'b.db'}"
    upgrade(url)
    engine = make_engine(url)
    with read_session(make_session_factory(engine)) as s:
        total = usage_report(s)["total"]
    engine.dispose()
    assert total["energy_boundary"] == "device"
    assert "no host share" in total["co2e_boundary"]


def test_three_energy_and_co2e_boundaries_side_by_side(tmp_path):
    """Device (the ledger's), node (device x (1 + the estimator's host share)) and facility (node x the region's
    PUE) energy and CO2e, per record's device and region; a record with no region takes the default region's PUE."""
    from flopwise.estimate.energy import HOST_POWER_FRAC
    from flopwise.store import make_engine, make_session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'three.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    catalog = load_catalog()
    aws, default = catalog.region("aws:us-east-1"), catalog.region("country:US")
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    rows = [  # (key, provider, region, device, device kWh, ledger CO2e = kWh x PUE x grid as the meter prices it)
        ("a", "AWS", "us-east-1", "h100-sxm", 100.0, 100.0 * aws.pue * aws.grid_gco2e_per_kwh / 1e3),
        ("b", "on-prem", None, "h100-sxm", 50.0, None),
    ]
    with write_session(factory) as s:
        for key, provider, region, device, kwh, co2e in rows:
            s.add(UsageRecordRow(
                source="dcgm", source_key=key, charge_period_start=t0, charge_period_end=t0 + timedelta(hours=1),
                provider_name=provider, region_id=region, x_device_type=device, x_device_hours=1.0,
                x_energy_kwh=kwh, energy_basis="measured", x_co2e_kg=co2e, tags={}, x_extra={},
            ))  # fmt: skip
    with read_session(factory) as s:
        report = usage_report(s, "region", default_region=default, catalog=catalog)
    engine.dispose()
    host = HOST_POWER_FRAC["datacenter"]
    total = report["total"]
    assert total["energy_kwh"] == pytest.approx(150.0)
    assert total["node_energy_kwh"] == pytest.approx(150.0 * (1 + host))
    assert total["facility_energy_kwh"] == pytest.approx((100.0 * aws.pue + 50.0 * default.pue) * (1 + host))
    device_co2e = (100.0 * aws.grid_gco2e_per_kwh + 50.0 * default.grid_gco2e_per_kwh) / 1e3
    assert total["device_co2e_kg"] == pytest.approx(device_co2e)
    assert total["node_co2e_kg"] == pytest.approx(device_co2e * (1 + host))
    facility = (100.0 * aws.grid_gco2e_per_kwh * aws.pue + 50.0 * default.grid_gco2e_per_kwh * default.pue) / 1e3
    assert total["facility_co2e_kg"] == pytest.approx(facility * (1 + host))
    by_region = {g["key"]: g for g in report["groups"]}
    assert by_region["us-east-1"]["facility_energy_kwh"] == pytest.approx(100.0 * (1 + host) * aws.pue)
    assert by_region[None]["facility_energy_kwh"] == pytest.approx(50.0 * (1 + host) * default.pue)
    basis = report["energy_boundaries"]
    assert basis["host_power_frac"] == {"h100-sxm": host} and basis["pue"] == {aws.id: aws.pue}
    assert basis["energy_default_pue_kwh"] == pytest.approx(50.0) and "country:US" in basis["facility"]
    for f in BOUNDARY_FIELDS:
        assert sum(g[f] for g in report["groups"]) == pytest.approx(total[f]), f
