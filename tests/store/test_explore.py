"""The dashboard's queries (store.explore) on the demo ledger, on SQLite and PostgreSQL: the explorer's cells,
groups and total agree with each other and with ``usage_report``; weeks start on Monday (UTC); filters; errors."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from flopwise.errors import InputError
from flopwise.store.explore import (
    DIMENSIONS,
    METRICS,
    data_freshness,
    ingest_runs,
    usage_explore,
    utilization_histogram,
)
from flopwise.store.reports import usage_report

NOW = datetime(2026, 2, 20, 15, 30, tzinfo=UTC)
START = datetime(2025, 11, 21, tzinfo=UTC)
_FLOATS = ("device_hours", "idle_device_hours", "energy_kwh", "co2e_kg")


@pytest.fixture(scope="module")
def demo_org(engine, factory) -> int:
    from flopwise.catalog import load_catalog
    from flopwise.server.demo import build_demo
    from flopwise.server.settings import Settings
    from flopwise.store import upgrade

    upgrade(engine)
    return build_demo(factory, load_catalog(), Settings(database_url="sqlite://"), NOW).org_id


def _close(a, b) -> bool:
    if isinstance(a, Decimal):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_explorer_total_matches_usage_report(factory, demo_org) -> None:
    from flopwise.store import read_session

    with read_session(factory) as s:
        ex = usage_explore(s, demo_org, START, NOW, step="day", group_by=("team",))
        report = usage_report(s, "team", START, NOW, demo_org)
    assert ex["total"]["records"] == report["total"]["records"] > 1000
    assert ex["total"]["cost_usd"] == report["total"]["cost_usd"]
    assert _close(ex["total"]["device_hours"], report["total"]["device_hours"])
    assert {g["group"]: g["cost_usd"] for g in ex["groups"]} == {g["label"]: g["cost_usd"] for g in report["groups"]}


@pytest.mark.parametrize(("step", "pair"), list(itertools.product(("day", "week", "month"), [
    ("team",), ("project", "device"), ("user",), ("provider", "service"), ("region", "source"), ("org", "team"),
])))  # fmt: skip
def test_cells_sum_to_groups_and_groups_to_total(factory, demo_org, step, pair) -> None:
    from flopwise.store import read_session

    with read_session(factory) as s:
        ex = usage_explore(s, demo_org, START, NOW, step=step, group_by=pair)
    for metric in METRICS:
        assert _close(sum((g[metric] for g in ex["groups"]), Decimal(0) if metric not in _FLOATS and metric !=
                          "records" else 0), ex["total"][metric]), metric  # fmt: skip
        for g in ex["groups"]:
            cells = [c[metric] for c in ex["series"] if c["group"] == g["group"]]
            assert _close(sum(cells, type(g[metric])(0)), g[metric]), (metric, g["group"])
    if step == "week":
        assert all(date.fromisoformat(c["period"]).weekday() == 0 for c in ex["series"])
    if step == "month":
        assert all(len(c["period"]) == 7 for c in ex["series"])


def test_filters_narrow_and_unattributed_is_null(factory, demo_org) -> None:
    from flopwise.store import read_session

    with read_session(factory) as s:
        all_ = usage_explore(s, demo_org, START, NOW, group_by=("team",))
        team = next(g for g in all_["groups"] if g["keys"][0]["key"] is not None)
        one = usage_explore(s, demo_org, START, NOW, group_by=("project",),
                            filters={"team": str(team["keys"][0]["key"])})  # fmt: skip
        assert one["total"]["cost_usd"] == team["cost_usd"]
        none = usage_explore(s, demo_org, START, NOW, filters={"team": "unattributed"})
        assert none["total"]["records"] == 0  # the demo attributes every row
        slurm = usage_explore(s, demo_org, START, NOW, filters={"source": "slurm", "device": "unknown"})
        assert slurm["total"]["records"] == 0  # every replayed job names its GPU
        with pytest.raises(InputError, match="team"):
            usage_explore(s, demo_org, START, NOW, filters={"team": "research"})
        with pytest.raises(InputError, match="at most two"):
            usage_explore(s, demo_org, START, NOW, group_by=DIMENSIONS[:3])
        with pytest.raises(InputError, match="step"):
            usage_explore(s, demo_org, START, NOW, step="hour")
        with pytest.raises(InputError):
            usage_explore(s, demo_org, START, NOW, group_by=("colour",))


def test_histogram_freshness_and_runs(factory, demo_org) -> None:
    from flopwise.store import read_session

    with read_session(factory) as s:
        bins = utilization_histogram(s, demo_org, START, NOW)
        ex = usage_explore(s, demo_org, START, NOW)
        fresh = data_freshness(s, demo_org)
        runs = [r.records_inserted for r in ingest_runs(s, demo_org)]
        assert ingest_runs(s, demo_org + 1000) == []
    assert len(bins) == 10 and sum(b["records"] for b in bins) > 0
    assert sum(b["device_hours"] for b in bins) <= ex["total"]["device_hours"] + 1e-6
    assert fresh["covers_until"] is not None and fresh["covers_until"] <= NOW
    assert fresh["ingested_at"] is not None
    assert runs == [ex["total"]["records"]]
