"""Bench: ``report usage --group-by provider`` over a 10M-row ledger, from the rollups against the raw ledger.

For each database (a fresh SQLite file, and a throwaway schema on the PostgreSQL server of ``--postgres-url``
unless ``--no-postgres``), the ledger is migrated and filled in the database itself (``generate_series`` on
PostgreSQL, a recursive CTE on SQLite, in chunks) with ``--rows`` rows of synthetic hourly usage: one year
(8,760 UTC hours) of 1 hour per resource, ``rows / 8760`` resources (1,141 at 10M: an hourly FOCUS-style export
of a fleet of that size); resource k belongs to user ``k % 64``, which fixes its project (16), team (4),
sub-account, provider (4) and region (8); its device is one of 6 types (``k % 6``); on-prem (Slurm) or cloud
(FOCUS) by provider; cost, utilization, energy and CO2e vary per row. Then the rollups are rebuilt (timed), and
``usage_report(group_by="provider")`` is timed in one process from the rollups (median of ``--repeat``) and
from the raw ledger (``use_rollups=False``, the baseline, median of ``--baseline-repeat``), side by side with
the ratio; the same answer both ways is checked. The CLI (``flopwise report usage --group-by provider``, a
fresh interpreter, imports included) is timed too, beside the same command on the empty ledger (what the
interpreter, imports and schema check cost whatever the ledger holds), and an incremental refresh after one new
row.

Run: ``.venv/bin/python bench/bench_report.py [--rows 10000000] [--no-postgres]`` (10M rows: ~10-20 min on two
busy cores, mostly filling the ledger; ``--rows 1000000`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

TARGET_S = 1.0
HOURS = 8760
CHUNK = 1_000_000
PG_URL = os.environ.get("FLOPWISE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_COMMON = (
    "source, source_key, charge_period_start, charge_period_end, cost_usd, billed_cost, effective_cost, cost_basis, "
    "provider_name, region_id, service_category, tags, x_device_type, x_device_count, x_device_hours, "
    "x_gpu_utilization, x_energy_kwh, energy_basis, x_co2e_kg, idle_device_hours, idle_cost_usd, x_user, x_account, "
    "x_extra, org_id, team_id, project_id, ingested_at"
)


def _values(dialect: str) -> str:
    """The SELECT list generating row i (``n.i``) in *dialect*; money in the ledger's storage (micro-dollars on
    SQLite, NUMERIC on PostgreSQL)."""
    k = f"(n.i / {HOURS})"
    user = f"({k} % 64)"
    provider = f"(CASE {user} % 4 WHEN 0 THEN 'AWS' WHEN 1 THEN 'Microsoft' WHEN 2 THEN 'Google Cloud' ELSE 'onprem' END)"
    device = f"(CASE {k} % 6 WHEN 0 THEN 'h100-sxm' WHEN 1 THEN 'a100-sxm-80gb' WHEN 2 THEN 'l4' WHEN 3 THEN 'h200-sxm' WHEN 4 THEN 'l40s' ELSE 'mi300x' END)"
    util = "((n.i * 37) % 101) / 100.0"
    if dialect == "sqlite":
        start = f"strftime('%Y-%m-%d %H:%M:%S.000000', '2025-01-01', '+' || (n.i % {HOURS}) || ' hours')"
        end = f"strftime('%Y-%m-%d %H:%M:%S.000000', '2025-01-01', '+' || (n.i % {HOURS} + 1) || ' hours')"
        cost = "(1000000 + (n.i % 97) * 100000)"
        idle_cost = "(100000 + (n.i % 13) * 10000)"
        now = "'2026-01-01 00:00:00.000000'"
    else:
        start = f"(timestamptz '2025-01-01 00:00:00+00' + (n.i % {HOURS}) * interval '1 hour')"
        end = f"(timestamptz '2025-01-01 00:00:00+00' + (n.i % {HOURS} + 1) * interval '1 hour')"
        cost = "(1 + (n.i % 97) / 10.0)::numeric(20, 6)"
        idle_cost = "(0.1 + (n.i % 13) / 100.0)::numeric(20, 6)"
        now = "timestamptz '2026-01-01 00:00:00+00'"
    cloud = f"{user} % 4 <> 3"
    return ", ".join([
        f"CASE WHEN {cloud} THEN 'focus' ELSE 'slurm' END",
        "'bench-' || " + ("printf('%010d', n.i)" if dialect == "sqlite" else "lpad(n.i::text, 10, '0')"),
        start, end, cost,
        f"CASE WHEN {cloud} THEN {cost} END", f"CASE WHEN {cloud} THEN {cost} END",
        f"CASE WHEN {cloud} THEN 'billed' ELSE 'catalog-onprem' END",
        provider,
        f"'region-' || ({user} % 8)",
        "'AI and Machine Learning'",
        "'{}'",
        device, "1.0", "1.0", util, "0.7", "'estimated'", "0.25",
        f"1.0 - {util}", idle_cost,
        f"'user-' || {user}",
        f"'acct-' || ({user} % 16)",
        '\'{"ServiceName": "Compute", "ChargeCategory": "Usage"}\'',
        "1", f"1 + ({user} % 16) % 4", f"1 + {user} % 16",
        now,
    ])  # fmt: skip


def fill(engine, rows: int) -> float:
    """Insert *rows* generated rows in chunks; returns the seconds it took."""
    from sqlalchemy import text

    dialect = engine.dialect.name
    t = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO organizations (id, name, created_at) VALUES (1, 'bench', CURRENT_TIMESTAMP)"))
        for i in range(1, 5):
            conn.execute(text(f"INSERT INTO teams (id, org_id, name, created_at) VALUES ({i}, 1, 'team-{i}', "
                              "CURRENT_TIMESTAMP)"))  # fmt: skip
        for i in range(1, 17):
            conn.execute(text(f"INSERT INTO projects (id, team_id, name, created_at) VALUES ({i}, {1 + i % 4}, "
                              f"'project-{i}', CURRENT_TIMESTAMP)"))  # fmt: skip
    for lo in range(0, rows, CHUNK):  # keys in insert order, so the unique index grows at its end
        hi = min(rows, lo + CHUNK)
        if dialect == "sqlite":
            series = f"WITH RECURSIVE n(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM n WHERE i < {hi - 1}) "
            sql = f"{series}INSERT INTO usage_records ({_COMMON}) SELECT {_values(dialect)} FROM n"
        else:
            sql = f"INSERT INTO usage_records ({_COMMON}) SELECT {_values(dialect)} FROM generate_series({lo}, {hi - 1}) AS n(i)"
        with engine.begin() as conn:
            if dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA cache_size = -1000000")  # 1 GB of page cache for the bulk insert
            conn.execute(text(sql))
        print(f"  filled {hi:,} rows ({time.perf_counter() - t:.0f} s)", flush=True)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE" if dialect == "sqlite" else "ANALYZE usage_records"))
    return time.perf_counter() - t


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(url: str, rows: int, repeat: int, baseline_repeat: int, src: Path) -> dict:
    from sqlalchemy import func, select

    from flopwise.store import make_engine, make_session_factory, read_session, upgrade, write_session
    from flopwise.store.ledger import UsageRecordRow
    from flopwise.store.reports import usage_report
    from flopwise.store.rollups import UsageRollup, UsageRollupDaily, rebuild_rollups, refresh_rollups

    upgrade(url)
    cli = [sys.executable, "-c", "import sys; from flopwise.cli.main import run; sys.argv = ['flopwise', "
           "*sys.argv[1:]]; run()", "report", "usage", "--group-by", "provider", "--json", "--database-url", url]
    env = {**os.environ, "PYTHONPATH": str(src)}
    t = time.perf_counter()
    subprocess.run(cli, capture_output=True, env=env, timeout=600, check=True)
    startup_s = time.perf_counter() - t  # the same command on the empty ledger: interpreter, imports, schema check
    engine = make_engine(url)
    factory = make_session_factory(engine)
    name = engine.dialect.name
    print(f"{name}: filling {rows:,} rows", flush=True)
    fill_s = fill(engine, rows)
    t = time.perf_counter()
    with write_session(factory) as s:
        rebuild_rollups(s)
    rebuild_s = time.perf_counter() - t
    with read_session(factory) as s:
        n_rows = s.scalar(select(func.count()).select_from(UsageRecordRow))
        hourly = s.scalar(select(func.count()).select_from(UsageRollup))
        daily = s.scalar(select(func.count()).select_from(UsageRollupDaily))

    def fast():
        with read_session(factory) as s:
            return usage_report(s, "provider")

    def slow():
        with read_session(factory) as s:
            return usage_report(s, "provider", use_rollups=False)

    fast_s, fast_r = _timed(fast, repeat)
    slow_s, slow_r = _timed(slow, baseline_repeat)
    assert fast_r["source"] != "ledger" and slow_r["source"] == "ledger"
    assert {g["key"]: g["cost_usd"] for g in fast_r["groups"]} == {g["key"]: g["cost_usd"] for g in slow_r["groups"]}
    assert fast_r["total"]["records"] == slow_r["total"]["records"] == n_rows
    t = time.perf_counter()
    done = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=600)
    cli_s = time.perf_counter() - t
    assert done.returncode == 0, done.stderr
    # one new usage row, then the post-ingest refresh of its hour and day
    with write_session(factory) as s:
        row = s.get(UsageRecordRow, 1)
        copy = {c.name: getattr(row, c.name) for c in UsageRecordRow.__table__.c if c.name != "id"}
        s.execute(UsageRecordRow.__table__.insert().values(**{**copy, "source_key": "bench-one-more"}))
    t = time.perf_counter()
    with write_session(factory) as s:
        refresh_rollups(s)
    refresh_s = time.perf_counter() - t
    engine.dispose()
    return {"db": name, "rows": n_rows, "fill_s": fill_s, "rebuild_s": rebuild_s, "hourly": hourly, "daily": daily,
            "fast_s": fast_s, "slow_s": slow_s, "cli_s": cli_s, "startup_s": startup_s,
            "refresh_s": refresh_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-repeat", type=int, default=2)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--postgres-url", default=PG_URL)
    args = parser.parse_args()
    src = Path(__file__).resolve().parents[1] / "src"
    results = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
            results.append(run(f"sqlite:///{Path(tmp) / 'ledger.db'}", args.rows, args.repeat,
                               args.baseline_repeat, src))  # fmt: skip
        _print(results[-1:])
    if not args.no_postgres:
        import psycopg
        from sqlalchemy.engine import make_url

        schema = f"bench_report_{uuid.uuid4().hex[:8]}"
        base = make_url(args.postgres_url)
        plain = base.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
            results.append(run(url, args.rows, args.repeat, args.baseline_repeat, src))
        finally:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
        _print(results[-1:])


def _print(results: list[dict]) -> None:
    print()
    print(f"report usage --group-by provider over the ledger ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores), target < {TARGET_S:.0f} s")  # fmt: skip
    head = (f"{'db':<11}{'rows':>12}{'rollups h/d':>18}{'rollups s':>11}{'ledger s':>10}{'ratio':>8}"
            f"{'CLI s':>8}{'(empty)':>10}{'rebuild s':>11}{'+1 row refresh s':>18}")  # fmt: skip
    print(head)
    for r in results:
        print(f"{r['db']:<11}{r['rows']:>12,}{r['hourly']:>10,}/{r['daily']:<7,}{r['fast_s']:>11.3f}{r['slow_s']:>10.2f}"
              f"{r['slow_s'] / r['fast_s']:>7.0f}x{r['cli_s']:>8.2f}{r['startup_s']:>10.2f}{r['rebuild_s']:>11.1f}"
              f"{r['refresh_s']:>18.3f}  {'ok' if r['fast_s'] < TARGET_S else 'OVER'}", flush=True)  # fmt: skip

if __name__ == "__main__":
    main()
