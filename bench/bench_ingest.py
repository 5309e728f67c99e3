"""Ingestion throughput: a generated FOCUS CSV and sacct file, ingested on SQLite and PostgreSQL.

    python bench/bench_ingest.py                      # 1,000,000 rows each (the issue's figure)
    python bench/bench_ingest.py --rows 100000 --naive-rows 2000 --postgres-url postgresql+psycopg://...

Prints, for each source: the parser alone (rows/s, the ceiling of the pipeline), then per database the rows/s of
``ingest_source`` (parse, cost, bulk write: SQLite ``executemany``, PostgreSQL ``COPY`` + ``INSERT ... SELECT ...
ON CONFLICT DO NOTHING``) and of re-ingesting the same file (every record a duplicate), against a naive row-by-row
ORM insert (one ``session.add`` + commit per record) of the same records, run on the first *naive_rows* rows and
extrapolated to *rows* (labelled so); and the latency of a usage report query (cost, device-hours and energy by
provider) over the ledger.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from flopwise.catalog import load_catalog
from flopwise.meter.costing import Coster
from flopwise.meter.focus import parse_focus
from flopwise.meter.ingest import IngestOptions, costed_row, ingest_source
from flopwise.meter.sacct import parse_sacct
from flopwise.store import UsageRecordRow, make_engine, make_session_factory, read_session, upgrade

FOCUS_HEADER = (
    "BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ProviderName,RegionId,ResourceId,ServiceCategory,"
    "SkuId,EffectiveCost,ListCost,ConsumedQuantity,ConsumedUnit,ResourceType,Tags"
)
SACCT_FIELDS = "JobID|Cluster|Partition|Account|User|State|Start|End|Elapsed|AllocTRES"


def write_focus(path: Path, rows: int) -> None:
    rng = random.Random(1)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as f:
        f.write(FOCUS_HEADER + "\n")
        for i in range(rows):
            start = t0 + timedelta(hours=i % 8760)
            gpu = i % 4 == 0
            cost = f"{rng.uniform(0.01, 99):.6f}"
            f.write(
                f"{cost},USD,{start:%Y-%m-%dT%H:%M:%SZ},{start + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ},AWS,"
                f"us-east-1,i-{i:012x},Compute,{'p5.48xlarge' if gpu else 'm5.large'},{cost},{cost},1,Hours,"
                f'{"p5.48xlarge" if gpu else "m5.large"},"{{""team"": ""t{i % 17}""}}"\n'
            )


def write_sacct(path: Path, rows: int) -> None:
    t0 = datetime(2025, 1, 1)
    with path.open("w", encoding="utf-8") as f:
        f.write(SACCT_FIELDS + "\n")
        for i in range(rows):
            start = t0 + timedelta(minutes=i % 500000)
            end = start + timedelta(hours=2)
            tres = f"billing=8,cpu=8,gres/gpu:a100={1 + i % 8},gres/gpu={1 + i % 8},mem=64G,node=1"
            f.write(f"{1000000 + i}|bench|gpu|acct{i % 13}|u{i % 101}|COMPLETED|{start:%Y-%m-%dT%H:%M:%S}|"
                    f"{end:%Y-%m-%dT%H:%M:%S}|02:00:00|{tres}\n")  # fmt: skip


def parse_records(source: str, lines, path: Path, catalog):
    """The records of *lines* of the generated *source* file (as ``ingest_source`` parses them)."""
    if source == "focus":
        return parse_focus(lines, path=str(path), catalog=catalog)
    return parse_sacct(lines, rejected=[], path=str(path), catalog=catalog, assume_tz="UTC")


def parse_rows_per_s(source: str, path: Path, catalog) -> float:
    """The parser alone (no costing, no database): the ceiling of end-to-end throughput."""
    t = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as f:
        count = sum(1 for _ in parse_records(source, f, path, catalog))
    return count / (time.perf_counter() - t)


def naive_rows_per_s(factory, source: str, path: Path, n: int, catalog) -> float:
    """One ORM object and one commit per record, on the first *n* rows of *path*."""
    coster = Coster(catalog)
    with path.open(encoding="utf-8", newline="") as f:
        records = parse_records(
            source, (line for _, line in zip(range(n + 1), f, strict=False)), path, catalog
        )
        t = time.perf_counter()
        count = 0
        for rec in records:
            row = costed_row(coster.cost(rec), None)
            row["source_key"] += ":naive"
            with factory() as s:
                s.add(UsageRecordRow(**row))
                s.commit()
            count += 1
    return count / (time.perf_counter() - t)


def bench(url: str, files: dict[str, Path], rows: int, naive_rows: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    factory = make_session_factory(engine)
    catalog = load_catalog()
    backend = engine.dialect.name
    for source, options in (("focus", IngestOptions()), ("slurm", IngestOptions(assume_tz="UTC"))):
        path = files[source]
        t = time.perf_counter()
        r = ingest_source(factory, source, path, catalog=catalog, options=options)
        dt = time.perf_counter() - t
        print(f"{backend:10} {source:6} ingest     {r.rows_read:>9,} rows {dt:>7,.1f} s {r.rows_read / dt:>9,.0f} rows/s  "
              f"inserted {r.records_inserted:,} rejected {r.rows_rejected:,} reconciles={r.reconciles}")  # fmt: skip
        t = time.perf_counter()
        r2 = ingest_source(factory, source, path, catalog=catalog, options=options)
        dt = time.perf_counter() - t
        print(f"{backend:10} {source:6} re-ingest  {r2.rows_read:>9,} rows {dt:>7,.1f} s {r2.rows_read / dt:>9,.0f} rows/s  "
              f"duplicates {r2.records_duplicate:,} reconciles={r2.reconciles}")  # fmt: skip
        naive = naive_rows_per_s(factory, source, path, naive_rows, catalog)
        print(f"{backend:10} {source:6} naive ORM  {naive_rows:>9,} rows measured {naive:>9,.0f} rows/s  "
              f"-> {rows:,} rows would take {rows / naive:,.0f} s (extrapolated)")  # fmt: skip
    with read_session(factory) as s:
        t = time.perf_counter()
        s.execute(
            select(UsageRecordRow.provider_name, func.sum(UsageRecordRow.cost_usd),
                   func.sum(UsageRecordRow.x_device_hours), func.sum(UsageRecordRow.x_energy_kwh))
            .where(UsageRecordRow.charge_period_start >= datetime(2025, 1, 1, tzinfo=UTC))
            .group_by(UsageRecordRow.provider_name)
        ).all()  # fmt: skip
        total = s.scalar(select(func.count()).select_from(UsageRecordRow))
        print(f"{backend:10} usage report by provider over {total:,} records: "
              f"{(time.perf_counter() - t) * 1000:,.0f} ms")  # fmt: skip
    engine.dispose()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=5_000)
    parser.add_argument("--postgres-url", default=os.environ.get("FLOPWISE_TEST_POSTGRES_URL",
                                                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"))  # fmt: skip
    args = parser.parse_args()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        files = {"focus": Path(tmp) / "focus.csv", "slurm": Path(tmp) / "sacct.txt"}
        write_focus(files["focus"], args.rows)
        write_sacct(files["slurm"], args.rows)
        for source, path in files.items():
            print(f"{'parser':10} {source:6} parse only {args.rows:>9,} rows "
                  f"{parse_rows_per_s(source, path, catalog):>17,.0f} rows/s")  # fmt: skip
        bench(f"sqlite:///{Path(tmp) / 'bench.db'}", files, args.rows, args.naive_rows)
        import psycopg

        schema = f"bench_{os.getpid()}"
        try:
            with psycopg.connect(args.postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
                print(f"PostgreSQL {conn.info.server_version // 10000}.{conn.info.server_version % 10000}")
                conn.execute(f"CREATE SCHEMA {schema}")
        except psycopg.Error as err:
            print(f"postgresql skipped: {err}")
            return
        try:
            bench(f"{args.postgres_url}?options=-csearch_path%3D{schema}", files, args.rows, args.naive_rows)
        finally:
            with psycopg.connect(args.postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
