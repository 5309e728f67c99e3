"""Bench: every dashboard page rendered on a ledger of 1M usage rows, against a 300 ms budget per page.

Builds the demo organization (``flopwise.server.demo``) in a fresh SQLite file (or, with ``--database-url``, a
PostgreSQL database), then grows its ledger to ``--rows`` (default 1,000,000) by copying the demo's usage rows
in SQL with new ``source_key``s (``INSERT ... SELECT``: the copies keep the demo's teams, devices, times and
costs, so each day holds ~250x the demo's usage). Each page is then requested in-process (no socket) by a
logged-in admin ``--repeat`` times after one warm-up; the script prints the median and max time per page,
which includes routing, authentication, the queries, chart specs and template rendering.

The usage sums come from the hourly rollups (``flopwise.store.rollups``), rebuilt after the ledger is grown
(timed). Baselines, measured side by side in the same process: each page with the rollups switched off (every
sum read from the ledger, as before them), and the usage explorer's numbers computed the naive way (every row of
the window fetched into Python). The Overview's page weight is its HTML plus every static file it references.

Run: ``.venv/bin/python bench/bench_dashboard.py [--rows 1000000] [--repeat 5] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

BUDGET_MS = 300.0
NOW = datetime(2026, 2, 20, 15, 30, tzinfo=UTC)
PAGES = (
    "/",
    "/?period=quarter",
    "/usage",
    "/usage?g1=team&g2=device&step=week&from=2025-11-22&to=2026-02-20",
    "/usage?g1=project&f_team=1&measure=device_hours",
    "/budgets",
    "/budgets/1",
    "/budgets/3",
    "/requests",
    "/requests/1",
    "/estimate?model=llama-3.1-8b&device=L4&quant=Q4_K_M",
    "/plan?model=llama-3.1-8b&rps=20&input_tokens=1000&output_tokens=200&ttft_p95_ms=1000&tpot_p95_ms=100",
    "/efficiency",
    "/catalog",
    "/quotas",
    "/sources",
    "/audit",
)
COLUMNS = (
    "source, charge_period_start, charge_period_end, billed_cost, effective_cost, list_cost, cost_usd, cost_basis, "
    "billing_currency, provider_name, region_id, resource_id, service_category, sku_id, tags, x_device_type, "
    "x_device_count, x_device_hours, x_gpu_utilization, x_energy_kwh, energy_basis, x_co2e_kg, idle_device_hours, "
    "idle_cost_usd, x_job_id, x_request_id, x_user, x_account, x_extra, org_id, team_id, project_id, request_id, "
    "ingest_run_id, ingested_at"
)


def grow_ledger(engine, rows: int) -> int:
    """Copy the demo's usage rows in SQL until the ledger holds *rows* rows; returns the count."""
    from sqlalchemy import text

    with engine.begin() as conn:
        base = conn.execute(text("SELECT count(*) FROM usage_records")).scalar_one()
        copies = max(0, -(-rows // base) - 1)
        series = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :copies) SELECT i FROM n"
            if engine.dialect.name == "sqlite"
            else "SELECT generate_series(1, :copies) AS i"
        )
        conn.execute(
            text(
                f"INSERT INTO usage_records (source_key, {COLUMNS}) "
                f"SELECT u.source_key || '-copy-' || n.i, {', '.join('u.' + c.strip() for c in COLUMNS.split(','))} "
                f"FROM usage_records u CROSS JOIN ({series}) n "
                "WHERE u.id <= :base"
            ),
            {"copies": copies, "base": base},
        )
        conn.execute(text(f"DELETE FROM usage_records WHERE id > {rows}"))
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE usage_records"))
        else:
            conn.execute(text("ANALYZE"))
        return conn.execute(text("SELECT count(*) FROM usage_records")).scalar_one()


def naive_usage(app, org_id: int, start: datetime, end: datetime) -> dict:
    """The explorer's per-team totals computed by fetching every row of the window into Python (the baseline)."""
    from sqlalchemy import select

    from flopwise.store import read_session
    from flopwise.store.ledger import UsageRecordRow as U

    totals: dict = {}
    with read_session(app.state.db) as s:
        stmt = select(U.team_id, U.charge_period_start, U.cost_usd, U.idle_cost_usd, U.x_device_hours).where(
            U.org_id == org_id, U.charge_period_start >= start, U.charge_period_start < end
        )
        for team, when, cost, idle, hours in s.execute(stmt):
            cell = totals.setdefault((team, when.date()), [0, 0, 0.0])
            cell[0] += cost or 0
            cell[1] += idle or 0
            cell[2] += hours or 0.0
    return totals


@contextlib.contextmanager
def ledger_only():
    """Answer every report, explorer and budget sum from the ledger, as before the rollups (the baseline)."""
    import flopwise.store.explore as explore
    import flopwise.store.reports as reports
    import flopwise.store.rollups as rollups

    def never(*_args, **_kwargs):
        return None, "baseline: rollups switched off"

    saved = [(m, m.choose_rollup) for m in (explore, reports, rollups)]
    for m, _f in saved:
        m.choose_rollup = never
    try:
        yield
    finally:
        for m, f in saved:
            m.choose_rollup = f


def page_weight(client, path: str) -> dict:
    """Bytes of a page's HTML and of every static file it references (scripts, stylesheets, images)."""
    html = client.get(path).content
    assets = sorted(set(re.findall(rb'(?:src|href)="(/static/[^"?#]+)', html)))
    static = sum(len(client.get(a.decode()).content) for a in assets)
    return {"html": len(html), "static": static, "assets": len(assets), "total": len(html) + static}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="an empty database (default: a fresh SQLite file)")
    parser.add_argument("--no-baseline", action="store_true", help="skip timing each page without the rollups")
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from flopwise.catalog import load_catalog
    from flopwise.server import Settings, create_app
    from flopwise.server.demo import build_demo

    tmp = tempfile.TemporaryDirectory(prefix="bench-dashboard-")
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    app = create_app(Settings(database_url=url))
    app.state.clock = lambda: NOW
    t0 = time.perf_counter()
    demo = build_demo(app.state.db, load_catalog(), app.state.settings, NOW)
    t1 = time.perf_counter()
    count = grow_ledger(app.state.engine, args.rows)
    t2 = time.perf_counter()
    print(f"database {app.state.engine.dialect.name}; demo built in {t1 - t0:.1f} s; ledger grown to {count:,} rows "
          f"in {t2 - t1:.1f} s")  # fmt: skip

    from flopwise.store import write_session
    from flopwise.store.rollups import rebuild_rollups

    t = time.perf_counter()
    with write_session(app.state.db) as s:
        buckets = rebuild_rollups(s)
    print(f"rollups rebuilt: {buckets:,} rows for {count:,} ledger rows in {time.perf_counter() - t:.1f} s")

    client = TestClient(app)
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post("/login", data={"token": demo.tokens["ada"], "csrf": csrf}, follow_redirects=False).status_code == 303

    def timed(path: str) -> list[float]:
        response = client.get(path)  # warm-up (catalog load, template compile)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - start) * 1000)
        return times

    print(f"{'page':<100} {'median ms':>9} {'max ms':>7} {'ledger ms':>9} {'ratio':>6}  budget {BUDGET_MS:.0f} ms")
    worst = 0.0
    for path in PAGES:
        times = timed(path)
        with ledger_only():  # the baseline: the same page with the rollups switched off (every sum from the ledger)
            base = statistics.median(timed(path)) if not args.no_baseline else float("nan")
        med = statistics.median(times)
        worst = max(worst, med)
        flag = "ok" if med < BUDGET_MS else "OVER"
        print(f"{path:<100} {med:9.1f} {max(times):7.1f} {base:9.1f} {base / med:5.1f}x  {flag}")

    weight = page_weight(client, "/")
    print(f"Overview page weight: {weight['total'] / 1024:,.0f} KiB = HTML {weight['html'] / 1024:,.0f} KiB + "
          f"{weight['assets']} static files {weight['static'] / 1024:,.0f} KiB (budget 1 MiB: "
          f"{'within' if weight['total'] < 1024 * 1024 else 'OVER'})")  # fmt: skip

    start_w = NOW - timedelta(days=29)
    start_w = start_w.replace(hour=0, minute=0, second=0, microsecond=0)
    end_w = NOW.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    t = time.perf_counter()
    cells = naive_usage(app, demo.org_id, start_w, end_w)
    naive_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    client.get("/usage")
    page_ms = (time.perf_counter() - t) * 1000
    print(f"baseline: usage explorer numbers by fetching rows into Python {naive_ms:.0f} ms ({len(cells)} cells); "
          f"the /usage page (GROUP BY in the database, whole page) {page_ms:.0f} ms: {naive_ms / page_ms:.1f}x")  # fmt: skip
    print(f"slowest page median {worst:.1f} ms: {'within' if worst < BUDGET_MS else 'OVER'} the {BUDGET_MS:.0f} ms budget")
    app.state.engine.dispose()
    tmp.cleanup()


if __name__ == "__main__":
    main()
