"""Bench: what the three energy boundaries cost the usage report, side by side in one process.

Builds a SQLite ledger of N usage rows (default 200,000; device types, providers and regions drawn from the
catalog, energy and CO2e on every row), then times ``usage_report`` per grouping (the full report: the metrics
query plus the boundary query) against its baseline, the metrics query alone (``_metrics`` grouped the same way,
what the report ran before the boundaries), fastest of REPEAT runs each, and prints both and the ratio.

Run: ``python bench/bench_usage_report.py [N] [--database-url URL]`` (a PostgreSQL URL benches that backend; its
usage_records table is filled with N rows, so give an empty scratch database).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from flopwise.catalog import load_catalog
from flopwise.store import make_engine, make_session_factory, read_session, upgrade, write_session
from flopwise.store.ledger import UsageRecordRow
from flopwise.store.reports import _group_columns, _metrics, _where, usage_report

REPEAT = 3
GROUPS = (None, "device", "region", "month")


def fill(factory, rows: int) -> None:
    rng = random.Random(7)
    devices = ["h100-sxm", "a100-sxm-80gb", "l40s", "rtx-4090", "b200"]
    places = [("AWS", "us-east-1"), ("Google Cloud", "europe-west4"), ("on-prem", None), ("Azure", "westeurope")]
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    batch = []
    with write_session(factory) as s:
        for i in range(rows):
            provider, region = rng.choice(places)
            start = t0 + timedelta(hours=rng.randrange(24 * 365))
            kwh = rng.uniform(0.1, 5.0)
            batch.append({
                "source": "dcgm", "source_key": f"bench:{i}", "charge_period_start": start,
                "charge_period_end": start + timedelta(hours=1), "provider_name": provider, "region_id": region,
                "x_device_type": rng.choice(devices), "x_device_hours": 1.0, "x_energy_kwh": kwh,
                "energy_basis": "measured", "x_co2e_kg": None if region is None else kwh * 0.4, "tags": {},
                "x_extra": {},
            })  # fmt: skip
            if len(batch) == 10_000:
                s.execute(insert(UsageRecordRow), batch)
                batch.clear()
        if batch:
            s.execute(insert(UsageRecordRow), batch)


def metrics_only(session, group_by):
    """The report's metrics query alone (the baseline: the report without the boundary query)."""
    stmt = select(*_metrics(UsageRecordRow)).select_from(UsageRecordRow)
    session.execute(_where(stmt, None, None, None)).one()
    if group_by is not None:
        columns, joins = _group_columns(session, group_by, UsageRecordRow)
        stmt = select(*columns, *_metrics(UsageRecordRow)).select_from(UsageRecordRow)
        for target, on in joins:
            stmt = stmt.outerjoin(target, on)
        keys = [c.element if hasattr(c, "element") else c for c in columns]
        list(session.execute(_where(stmt, None, None, None).group_by(*dict.fromkeys(keys))))


def best(fn) -> float:
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="?", type=int, default=200_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        t = time.perf_counter()
        fill(factory, args.rows)
        print(f"{args.rows:,} usage rows written in {time.perf_counter() - t:.1f} s ({engine.dialect.name})")
        catalog = load_catalog()
        print(f"{'group by':10s} {'report s':>10s} {'metrics only s':>15s} {'ratio':>7s}")
        for g in GROUPS:
            with read_session(factory) as s:
                full = best(lambda: usage_report(s, g, catalog=catalog))  # noqa: B023
                base = best(lambda: metrics_only(s, g))  # noqa: B023
            print(f"{g or 'total':10s} {full:10.3f} {base:15.3f} {full / base:7.2f}")
        engine.dispose()


if __name__ == "__main__":
    main()
