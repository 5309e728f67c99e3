"""Hourly usage rollups on SQLite and PostgreSQL: answers read from the rollups equal the answers read from the
ledger, on random windows, groupings and filters (Hypothesis), after ingestion of real files, after a restatement
that moves a charge to another hour, after re-attribution and after an undone run; a refresh recomputes only the
changed hours, is idempotent, and gives the same rollups as a rebuild from scratch. Until refreshed, readers fall
back to the ledger and say so.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from flopwise.catalog import load_catalog
from flopwise.meter.burn import apply_actuals
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.ledger_write import undo_run
from flopwise.store import Organization, Project, Team, UsageRecordRow, read_session, write_session
from flopwise.store.explore import DIMENSIONS, STEPS, usage_explore, utilization_histogram
from flopwise.store.ledger import UsageRecordHistory
from flopwise.store.reports import CONCENTRATION_BY, GROUP_BY, concentration_report, usage_report
from flopwise.store.rollups import (
    UsageRollup,
    UsageRollupDaily,
    UsageRollupDirty,
    rebuild_rollups,
    refresh_rollups,
    rollup_coverage,
)

CAT = load_catalog()
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BILL = ROOT / "tests" / "fixtures" / "meter" / "focus-gpu-handmade.csv"
FILES = (  # the options tests/meter/test_ingest.py reads them with
    ("focus", DATA / "focus" / "focus-1.0-sample.csv", {"assume_tz": "UTC"}),
    ("slurm", DATA / "slurm" / "hb-jobinfo-sacct.txt",
     {"assume_tz": "Europe/Amsterdam", "fields": "hb-jobinfo", "cluster": "hb", "region": "country:NL"}),
    ("slurm", DATA / "slurm" / "xdmod-accounting-logs-with-job-arrays.log", {"assume_tz": "UTC", "fields": "xdmod"}),
    ("aws-cur", DATA / "focus" / "aws-cur-anonymous-sample.csv", {"assume_tz": "UTC"}),
    ("dcgm", DATA / "dcgm" / "h100x8-dcgm-exporter-scrape.prom",
     {"scraped_at": datetime(2025, 6, 1, 12, 0, tzinfo=UTC), "region": "country:US"}),
    ("focus", BILL, {}),
)  # fmt: skip
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)


def _rollup_rows(factory) -> list[list[tuple]]:
    """Both rollup tables' contents without ids, sorted (floats rounded: sums may add in another order)."""
    tables = []
    with read_session(factory) as s:
        for table in (UsageRollup, UsageRollupDaily):
            rows = s.execute(select(*[c for c in table.__table__.c if c.name != "id"])).all()
            out = [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]
            tables.append(sorted(out, key=repr))
    return tables


@pytest.fixture(scope="module")
def filled(factory) -> dict[str, Any]:
    """The ledger filled from real files, part of it attributed to an organization's teams, rollups refreshed."""
    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))
        org = Organization(name="rollup-org")
        s.add(org)
        s.flush()
        teams = [Team(org_id=org.id, name=n) for n in ("research", "prod")]
        s.add_all(teams)
        s.flush()
        project = Project(team_id=teams[0].id, name="llm")
        s.add(project)
        s.flush()
        ids = {"org": org.id, "teams": [t.id for t in teams], "project": project.id}
    for source, path, opts in FILES:
        result = ingest_source(factory, source, path, catalog=CAT, options=IngestOptions(**opts))
        assert result.status in ("ok", "partial"), result
    with write_session(factory) as s:  # attribute every other row, as rules would (an UPDATE: a trigger marks it)
        row_ids = list(s.scalars(select(UsageRecordRow.id).order_by(UsageRecordRow.id)))
        for i, rid in enumerate(row_ids[::2]):
            team = ids["teams"][i % 2]
            s.execute(
                update(UsageRecordRow)
                .where(UsageRecordRow.id == rid)
                .values(org_id=ids["org"], team_id=team, project_id=ids["project"] if i % 2 == 0 else None)
            )
    with write_session(factory) as s:
        refresh_rollups(s)
    with read_session(factory) as s:
        lo, hi = s.execute(
            select(func.min(UsageRecordRow.charge_period_start), func.max(UsageRecordRow.charge_period_start))
        ).one()
        values = {
            "provider": sorted(set(s.scalars(select(UsageRecordRow.provider_name).distinct())) - {None}),
            "device": sorted(set(s.scalars(select(UsageRecordRow.x_device_type).distinct())) - {None}),
            "source": sorted(set(s.scalars(select(UsageRecordRow.source).distinct()))),
        }
    return {**ids, "lo": lo.replace(hour=0, minute=0, second=0, microsecond=0), "hi": hi, "values": values}


def _same(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats to a relative 1e-9 (sums added in another order), everything else exactly."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (path, a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            if k not in ("source", "notes"):
                _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def _by_key(groups: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {g[key] if not isinstance(g[key], list) else repr(g[key]): g for g in groups}


def _window(filled: dict[str, Any], start_h: int | None, span_h: int | None) -> tuple[datetime | None, ...]:
    from_ = None if start_h is None else filled["lo"] + timedelta(hours=start_h)
    to = None if span_h is None else (from_ or filled["lo"]) + timedelta(hours=span_h)
    return from_, to


# whole days half of the time (the daily rollups answer), else whole hours (the hourly ones)
HOURS = st.one_of(st.none(), st.integers(-48, 24 * 400), st.integers(-2, 400).map(lambda d: 24 * d))
SPANS = st.one_of(st.none(), st.integers(1, 24 * 500), st.integers(1, 500).map(lambda d: 24 * d))


def test_the_filled_ledger_is_read_from_rollups(factory, filled) -> None:
    with read_session(factory) as s:
        report = usage_report(s, "provider")
        assert report["source"] == "daily rollups" and report["notes"] == []
        assert report["total"]["records"] == s.scalar(select(func.count()).select_from(UsageRecordRow)) > 100
        assert s.scalar(select(func.count()).select_from(UsageRollup)) < report["total"]["records"]
        hourly = usage_report(s, "provider", filled["lo"] + timedelta(hours=1))
        assert hourly["source"] == "hourly rollups"


@SETTINGS
@given(
    group_by=st.sampled_from((None, *GROUP_BY)),
    start_h=HOURS,
    span_h=SPANS,
    by_org=st.booleans(),
)
def test_usage_report_from_rollups_equals_the_ledger(factory, filled, group_by, start_h, span_h, by_org) -> None:
    from_, to = _window(filled, start_h, span_h)
    org = filled["org"] if by_org else None
    with read_session(factory) as s:
        fast = usage_report(s, group_by, from_, to, org)
        slow = usage_report(s, group_by, from_, to, org, use_rollups=False)
    assert fast["source"].endswith(" rollups") and slow["source"] == "ledger"
    _same(fast["total"], slow["total"], "total")
    _same(_by_key(fast["groups"], "key"), _by_key(slow["groups"], "key"), "groups")


@SETTINGS
@given(
    dims=st.lists(st.sampled_from(DIMENSIONS), max_size=2, unique=True),
    step=st.sampled_from(STEPS),
    start_h=HOURS,
    span_h=SPANS,
    filter_on=st.sampled_from((None, "provider", "device", "source", "team", "org")),
    pick=st.integers(0, 10),
    unknown=st.booleans(),
)
def test_explorer_from_rollups_equals_the_ledger(factory, filled, dims, step, start_h, span_h, filter_on, pick,
                                                 unknown) -> None:  # fmt: skip
    from_, to = _window(filled, start_h, span_h)
    filters: dict[str, str] = {}
    if filter_on in ("team", "org"):
        options = [str(t) for t in filled["teams"]] if filter_on == "team" else [str(filled["org"])]
        filters[filter_on] = "unattributed" if unknown else options[pick % len(options)]
    elif filter_on is not None:
        options = filled["values"][filter_on]
        filters[filter_on] = "unknown" if unknown or not options else options[pick % len(options)]
    with read_session(factory) as s:
        fast = usage_explore(s, filled["org"] if pick % 3 == 0 else None, from_, to, step=step, group_by=dims,
                             filters=filters)  # fmt: skip
        slow = usage_explore(s, filled["org"] if pick % 3 == 0 else None, from_, to, step=step, group_by=dims,
                             filters=filters, use_rollups=False)  # fmt: skip
    assert fast["source"].endswith(" rollups") and slow["source"] == "ledger"
    _same(fast["total"], slow["total"], "total")
    _same(
        {(r["period"], r["group"]): r for r in fast["series"]},
        {(r["period"], r["group"]): r for r in slow["series"]},
        "series",
    )
    _same(_by_key(fast["groups"], "group"), _by_key(slow["groups"], "group"), "groups")


@SETTINGS
@given(by=st.sampled_from(CONCENTRATION_BY), measure=st.sampled_from(("cost_usd", "device_hours")),
       start_h=HOURS, span_h=SPANS)  # fmt: skip
def test_concentration_and_histogram_from_rollups_equal_the_ledger(factory, filled, by, measure, start_h,
                                                                    span_h) -> None:  # fmt: skip
    from_, to = _window(filled, start_h, span_h)
    with read_session(factory) as s:
        fast = concentration_report(s, by, measure, from_, to)
        slow = concentration_report(s, by, measure, from_, to, use_rollups=False)
        _same(fast, slow, "concentration")
        _same(utilization_histogram(s, None, from_, to), utilization_histogram(s, None, from_, to, use_rollups=False))


def test_a_window_off_the_hour_reads_the_ledger_and_says_so(factory, filled) -> None:
    with read_session(factory) as s:
        odd = filled["lo"] + timedelta(minutes=30)
        report = usage_report(s, "team", odd)
        assert report["source"] == "ledger" and "whole UTC hour" in report["notes"][0]
        _same(report, usage_report(s, "team", odd, use_rollups=False))
        assert rollup_coverage(s, None, None, as_of=1)[0] is False


def _bill(tmp_path: Path, name: str, cost: str, start: str | None = None) -> Path:
    """The handmade FOCUS bill, its first row restated to *cost* (and moved to *start*, an ISO time)."""
    rows = list(csv.DictReader(io.StringIO(BILL.read_text(encoding="utf-8"))))
    rows[0]["BilledCost"] = rows[0]["EffectiveCost"] = cost
    if start is not None:
        rows[0]["ChargePeriodStart"] = start
    out = tmp_path / name
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_restatement_refresh_equals_the_ledger_and_a_rebuild(factory, filled, tmp_path) -> None:
    """A restatement that changes a charge's cost (and one that moves it to an earlier hour) leaves the rollups
    stale until the post-ingest step refreshes exactly the touched hours; then rollups == ledger == rebuild."""
    restated = ingest_source(factory, "focus", _bill(tmp_path, "v2.csv", "1234.5"), catalog=CAT,
                             options=IngestOptions(exported_at=datetime(2030, 1, 1, tzinfo=UTC)))  # fmt: skip
    assert restated.records_replaced == 1
    with read_session(factory) as s:
        stale = usage_report(s, "provider")
        assert stale["source"] == "ledger" and "changed since" in stale["notes"][0]
    with write_session(factory) as s:
        apply_actuals(s, datetime(2030, 1, 1, tzinfo=UTC), touched=restated.touched, run_id=restated.run_id)
    with read_session(factory) as s:
        fresh = usage_report(s, "provider")
        assert fresh["source"] == "daily rollups"
        _same(fresh, usage_report(s, "provider", use_rollups=False))
        assert s.scalar(select(func.count()).select_from(UsageRollupDirty)) == 0
    # moved: its ChargePeriodStart an hour earlier (the old and the new bucket both change)
    rows = list(csv.DictReader(io.StringIO(BILL.read_text(encoding="utf-8"))))
    earlier = (datetime.fromisoformat(rows[0]["ChargePeriodStart"].replace("Z", "+00:00")) - timedelta(hours=1))
    moved = ingest_source(
        factory, "focus", _bill(tmp_path, "v3.csv", "77", earlier.strftime("%Y-%m-%dT%H:%M:%SZ")), catalog=CAT,
        options=IngestOptions(exported_at=datetime(2031, 1, 1, tzinfo=UTC)),
    )  # fmt: skip
    with write_session(factory) as s:
        recomputed = refresh_rollups(s)
        assert 1 <= recomputed <= 4  # only the hours the restatement touched
    with read_session(factory) as s:
        _same(usage_report(s, "day"), usage_report(s, "day", use_rollups=False))
    incremental = _rollup_rows(factory)
    with write_session(factory) as s:
        assert refresh_rollups(s) == 0  # idempotent: nothing is dirty
    assert _rollup_rows(factory) == incremental
    with write_session(factory) as s:
        rebuild_rollups(s)
    assert _rollup_rows(factory) == incremental
    # undoing the run restores the old values (UPDATE) - the rollups follow after a refresh
    with write_session(factory) as s:
        undo_run(s, moved.run_id)
    with write_session(factory) as s:
        refresh_rollups(s)
    with read_session(factory) as s:
        _same(usage_report(s, "day"), usage_report(s, "day", use_rollups=False))


def test_deleting_and_adding_rows_by_hand_is_seen(factory, filled) -> None:
    """Rows written by no flopwise path (SQL by hand) are seen too: deletes by trigger, inserts by id or trigger."""
    with write_session(factory) as s:
        top = s.scalar(select(func.max(UsageRecordRow.id)))
        row = s.get(UsageRecordRow, top)
        copy = {c.name: getattr(row, c.name) for c in UsageRecordRow.__table__.c if c.name != "id"}
        s.execute(delete(UsageRecordRow).where(UsageRecordRow.id == top))
    with read_session(factory) as s:
        assert usage_report(s)["source"] == "ledger"
    with write_session(factory) as s:
        refresh_rollups(s)
    with write_session(factory) as s:  # SQLite hands the deleted id out again
        s.execute(UsageRecordRow.__table__.insert().values(**{**copy, "source_key": copy["source_key"] + "#2",
                                                               "cost_usd": Decimal("5.5")}))  # fmt: skip
    with read_session(factory) as s:
        assert usage_report(s)["source"] == "ledger"
    with write_session(factory) as s:
        refresh_rollups(s)
    with read_session(factory) as s:
        report = usage_report(s, "source")
        assert report["source"] == "daily rollups"
        _same(report, usage_report(s, "source", use_rollups=False))


@pytest.mark.parametrize("unit", ["usd", "device_hours", "kwh", "co2e_kg"])
def test_budget_scope_sums_from_rollups_equal_the_ledger(factory, filled, unit) -> None:
    """What budget draw-down reads (meter.burn.metered_unreserved): a scope's usage in a window, less the usage
    of held requests, from the rollups equals the ledger's sum."""
    from flopwise.meter.burn import UNIT_COLUMNS
    from flopwise.store.rollups import scope_sum

    column = getattr(UsageRecordRow, UNIT_COLUMNS[unit])
    window = (filled["lo"], filled["lo"] + timedelta(days=400))
    scopes = [("org", filled["org"]), ("team", filled["teams"][0]), ("team", filled["teams"][1]),
              ("project", filled["project"])]  # fmt: skip
    with read_session(factory) as s:
        for kind, scope_id in scopes:
            scope_column = {"org": UsageRecordRow.org_id, "team": UsageRecordRow.team_id,
                            "project": UsageRecordRow.project_id}[kind]  # fmt: skip
            ledger = s.scalar(select(func.sum(column)).where(
                scope_column == scope_id, UsageRecordRow.charge_period_start >= window[0],
                UsageRecordRow.charge_period_start < window[1]))  # fmt: skip
            held = select(UsageRecordRow.request_id).where(UsageRecordRow.request_id.is_not(None))
            fast = scope_sum(s, unit, kind, scope_id, window, held)
            if unit == "usd":
                assert fast == (ledger or 0)
            else:
                assert math.isclose(fast, ledger or 0.0, rel_tol=1e-9, abs_tol=1e-9)
        assert scope_sum(s, unit, "org", filled["org"], (window[0] + timedelta(minutes=1), window[1])) is None


@pytest.mark.parametrize("unit", ["usd", "device_hours", "kwh", "co2e_kg"])
def test_budget_usage_sums_answer_as_the_reads_they_replace(factory, filled, unit) -> None:
    """``budget_usage_sums`` (the decision hot path: one statement) gives the metered usage that
    ``metered_unreserved`` reads in two or three (rollup freshness, then the rollups or the ledger), for daily
    and hourly windows; a window off the hour, or a ledger changed since the refresh, is left to the ledger."""
    from types import SimpleNamespace

    from flopwise.meter.burn import metered_unreserved
    from flopwise.store.rollups import UsageRollupDirty, budget_usage_sums, scope_sum

    lo = filled["lo"]
    windows = [(lo, lo + timedelta(days=400)), (lo + timedelta(hours=5), lo + timedelta(days=40, hours=3))]
    scopes = [("org", filled["org"]), ("team", filled["teams"][0]), ("project", filled["project"])]
    with read_session(factory) as s:
        for kind, scope_id in scopes:
            budget = SimpleNamespace(id=10**9, unit=unit, scope_kind=kind, scope_id=scope_id)
            for window in windows:
                by_state, fast = budget_usage_sums(s, budget, window)
                assert by_state == {}  # no reservation on this budget
                assert fast is not None
                fast = fast if isinstance(fast, Decimal) else Decimal(repr(float(fast)))
                assert math.isclose(fast, metered_unreserved(s, budget, window), rel_tol=1e-9, abs_tol=1e-6)
        off = (lo + timedelta(minutes=1), lo + timedelta(days=2))
        assert budget_usage_sums(s, budget, off)[1] is None
    with write_session(factory) as s:  # an hour marked changed (as the ledger's triggers do): stale until refreshed
        s.add(UsageRollupDirty(hour=lo + timedelta(hours=7)))
    try:
        with read_session(factory) as s:
            assert scope_sum(s, unit, "org", filled["org"], windows[0]) is None
            assert budget_usage_sums(s, budget, windows[0])[1] is None
    finally:
        with write_session(factory) as s:
            refresh_rollups(s)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migration_backfills_the_rollups_of_an_existing_ledger(backend, tmp_path_factory) -> None:
    """A ledger written at 0007 (before rollups) is read from rollups right after ``upgrade`` to 0008, and the
    downgrade removes the tables and triggers (a ledger write after it still works)."""
    from flopwise.store import downgrade, make_engine, make_session_factory, upgrade
    from pgutil import throwaway_database_url

    with throwaway_database_url(backend, tmp_path_factory, "rollmig") as url:
        upgrade(url, "0007_settle_price")
        engine = make_engine(url)
        factory = make_session_factory(engine)
        ingest_source(factory, "focus", DATA / "focus" / "focus-1.0-sample.csv", catalog=CAT,
                      options=IngestOptions(assume_tz="UTC"))  # fmt: skip
        upgrade(url)
        with read_session(factory) as s:
            fast = usage_report(s, "service")
            assert fast["source"] == "daily rollups" and fast["total"]["records"] == 1000
            _same(fast, usage_report(s, "service", use_rollups=False))
        downgrade(url, "0007_settle_price")
        with write_session(factory) as s:
            s.execute(delete(UsageRecordRow).where(UsageRecordRow.id == 1))
        engine.dispose()
