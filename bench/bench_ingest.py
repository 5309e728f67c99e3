"""Ingestion throughput and memory: FOCUS and sacct files made from the real samples' shape, ingested on SQLite
and PostgreSQL, beside the baselines, in one process.

    python bench/bench_ingest.py                      # 1,000,000 rows per source (the issue's figure)
    python bench/bench_ingest.py --rows 100000 --postgres-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/bench_ingest.py --memory-rows 10000000   # peak RSS while ingesting a 10M-row FOCUS file
    python bench/bench_ingest.py --memory-file big.csv    # the same on a FOCUS CSV made before

Inputs: ``focus``: the 1,000 rows of the FOCUS 1.0 sample (tests/data/focus/focus-1.0-sample.csv) repeated with
their charge periods shifted by one hour per copy (every row a distinct charge); ``slurm``: the 242 lines of the
hb-jobinfo sacct dump (tests/data/slurm/hb-jobinfo-sacct.txt: jobs, steps, never-started and running jobs)
repeated with new job ids, as ``sacct --parsable2`` with a header and ``|`` as delimiter.

For each source and database it prints rows/s of:

* ``flopwise``: ``ingest_source`` end to end (read, check, key, cost, write, run bookkeeping; FOCUS CSV and
  ``|``-delimited sacct take the columnar paths), then the same file again (every record unchanged), with the ingesting
  process's CPU seconds (all its threads);
* ``1 thread``: the same first ingest into a second, empty database with ``IngestOptions(overlap=False)`` (the
  default on PostgreSQL writes each batch in a background thread while the next is read; on SQLite both are the
  same one-thread ingest, and the ratio says how much two runs differ by noise alone);
* ``row path``: the same first ingest with ``IngestOptions(columnar=False)`` into a third empty database (the
  parser, :class:`Coster` and ``write_batch`` row by row: the code before the columnar paths), with the ratio;
* ``COPY raw``: PostgreSQL ``COPY ... FROM STDIN (FORMAT csv)`` of the raw file into a table of text columns
  (no parsing, no checks: the floor of any loader);
* ``executemany``: Python's csv reader and one prepared ``INSERT`` per batch (``executemany``) into a table of text
  columns with a unique key (the naive bulk loader);
* ``pandas to_sql`` when pandas is installed;

with the ratio of each baseline to flopwise, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import re
import resource
import sqlite3
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flopwise.catalog import load_catalog
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.sacct import SACCT_FORMATS
from flopwise.store import make_engine, make_session_factory, upgrade

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
FOCUS_SAMPLE = DATA / "focus" / "focus-1.0-sample.csv"
SACCT_SAMPLE = DATA / "slurm" / "hb-jobinfo-sacct.txt"
FOCUS_HEADER = (
    "BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ProviderName,RegionId,ResourceId,ServiceCategory,"
    "SkuId,EffectiveCost,ListCost,ConsumedQuantity,ConsumedUnit,ResourceType,Tags"
)
BATCH = 50_000


#: the PostgreSQL server the benches use (as the tests: trust auth on the local server)
PG_URL = os.environ.get("FLOPWISE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

def write_focus(path: Path, rows: int) -> None:
    """A synthetic FOCUS CSV of *rows* hourly AWS charges (a quarter on p5.48xlarge GPU instances), used by
    bench_post_ingest.py to build its ledger."""
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


def write_focus_from_sample(path: Path, rows: int) -> None:
    """*rows* rows of the FOCUS 1.0 sample, copy k with every time column shifted by k hours."""
    with FOCUS_SAMPLE.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        sample = list(reader)
    times = [i for i, h in enumerate(header) if h in ("ChargePeriodStart", "ChargePeriodEnd")]
    parsed = [[datetime.fromisoformat(r[i]) for i in times] for r in sample]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for n in range(rows):
            copy, k = divmod(n, len(sample))
            row = list(sample[k])
            for i, t in zip(times, parsed[k], strict=True):
                row[i] = (t + timedelta(hours=copy)).strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow(row)


def write_sacct_from_sample(path: Path, rows: int) -> None:
    """About *rows* lines of the hb-jobinfo sacct dump, copy k with its job ids raised by k x 10^7, as
    ``--parsable2`` output with a header and ``|`` delimiters."""
    lines = SACCT_SAMPLE.read_text(encoding="utf-8").splitlines()
    job = re.compile(r"^(\d+)")
    with path.open("w", encoding="utf-8") as f:
        f.write("|".join(SACCT_FORMATS["hb-jobinfo"]) + "\n")
        written = 0
        copy = 0
        while written < rows:
            for line in lines:
                if written >= rows:
                    break
                fields = line.split("☃")[:-1]  # --parsable: a trailing delimiter
                m = job.match(fields[0])
                if m:
                    fields[0] = str(int(m.group(1)) + copy * 10**7) + fields[0][m.end() :]
                f.write("|".join(fields) + "\n")
                written += 1
            copy += 1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _csv_rows(source: str, path: Path):
    delimiter = "," if source == "focus" else "|"
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader)
        yield header
        yield from reader


def executemany_rows_per_s(url: str, source: str, path: Path) -> float:
    """csv reader + one prepared INSERT per batch into a text table with a unique key (the naive bulk load)."""
    rows = _csv_rows(source, path)
    header = next(rows)
    cols = ", ".join(f"c{i} TEXT" for i in range(len(header)))
    names = ", ".join(f"c{i}" for i in range(len(header)))
    t = time.perf_counter()
    count = 0
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.execute("DROP TABLE IF EXISTS bench_em")
        con.execute(f"CREATE TABLE bench_em (line INTEGER PRIMARY KEY, {cols})")
        sql = f"INSERT INTO bench_em (line, {names}) VALUES ({', '.join('?' * (len(header) + 1))})"
        batch = []
        for count, row in enumerate(rows, start=1):
            batch.append((count, *row[: len(header)], *[None] * (len(header) - len(row))))
            if len(batch) == BATCH:
                con.executemany(sql, batch)
                con.commit()
                batch = []
        con.executemany(sql, batch)
        con.commit()
        con.close()
    else:
        import psycopg

        with psycopg.connect(_pg(url)) as con:
            con.execute("DROP TABLE IF EXISTS bench_em")
            con.execute(f"CREATE TABLE bench_em (line INTEGER PRIMARY KEY, {cols})")
            con.commit()
            sql = f"INSERT INTO bench_em (line, {names}) VALUES ({', '.join(['%s'] * (len(header) + 1))})"
            batch = []
            with con.cursor() as cur:
                for count, row in enumerate(rows, start=1):
                    batch.append((count, *row[: len(header)], *[None] * (len(header) - len(row))))
                    if len(batch) == BATCH:
                        cur.executemany(sql, batch)
                        con.commit()
                        batch = []
                cur.executemany(sql, batch)
                con.commit()
    return count / (time.perf_counter() - t)


def copy_rows_per_s(url: str, source: str, path: Path) -> float:
    """PostgreSQL COPY of the raw file (FORMAT csv) into a table of text columns."""
    import psycopg

    delimiter = "," if source == "focus" else "|"
    with path.open(encoding="utf-8") as f:
        header = next(csv.reader([f.readline()], delimiter=delimiter))
    with psycopg.connect(_pg(url)) as con:
        con.execute("DROP TABLE IF EXISTS bench_copy")
        con.execute(f"CREATE TABLE bench_copy ({', '.join(f'c{i} TEXT' for i in range(len(header)))})")
        con.commit()
        t = time.perf_counter()
        with con.cursor() as cur, path.open("rb") as f:
            with cur.copy(
                f"COPY bench_copy FROM STDIN (FORMAT csv, HEADER true, DELIMITER '{delimiter}')"
            ) as cp:
                while chunk := f.read(1 << 20):
                    cp.write(chunk)
            con.commit()
            dt = time.perf_counter() - t
            count = cur.execute("SELECT count(*) FROM bench_copy").fetchone()[0]
    return count / dt


def pandas_rows_per_s(url: str, source: str, path: Path) -> float | None:
    try:
        import pandas as pd
    except ImportError:
        return None
    from sqlalchemy import create_engine

    t = time.perf_counter()
    engine = create_engine(url)
    count = 0
    for chunk in pd.read_csv(path, sep="," if source == "focus" else "|", dtype=str, chunksize=BATCH):
        chunk.to_sql("bench_pandas", engine, if_exists="append", index=False, method=None)
        count += len(chunk)
    engine.dispose()
    return count / (time.perf_counter() - t)


def _pg(url: str) -> str:
    return url.replace("+psycopg", "").replace("?options=-csearch_path%3D", "?options=-csearch_path%3D")


OPTIONS = {
    "focus": IngestOptions(),
    "slurm": IngestOptions(assume_tz="Europe/Amsterdam", cluster="hb", region="country:NL"),
}


def bench(url: str, files: dict[str, Path], catalog, overlap_url: str, row_url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    factory = make_session_factory(engine)
    seq_engine = make_engine(overlap_url)
    upgrade(seq_engine)
    seq_factory = make_session_factory(seq_engine)
    row_engine = make_engine(row_url)
    upgrade(row_engine)
    row_factory = make_session_factory(row_engine)
    backend = engine.dialect.name
    for source, path in files.items():
        t, cpu = time.perf_counter(), time.process_time()
        r = ingest_source(factory, source, path, catalog=catalog, options=OPTIONS[source])
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        ours = r.rows_read / dt
        print(f"{backend:10} {source:6} flopwise      {r.rows_read:>10,} rows {dt:>7,.1f} s {ours:>9,.0f} rows/s  "
              f"CPU {cpu:,.1f} s inserted {r.records_inserted:,} rejected {r.rows_rejected:,} "
              f"reconciles={r.reconciles} peak RSS {peak_rss_mb():,.0f} MB")  # fmt: skip
        t, cpu = time.perf_counter(), time.process_time()
        r2 = ingest_source(factory, source, path, catalog=catalog, options=OPTIONS[source])
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(f"{backend:10} {source:6} flopwise again{r2.rows_read:>10,} rows {dt:>7,.1f} s "
              f"{r2.rows_read / dt:>9,.0f} rows/s  CPU {cpu:,.1f} s unchanged {r2.records_duplicate:,}")  # fmt: skip
        t, cpu = time.perf_counter(), time.process_time()
        one_thread = replace(OPTIONS[source], overlap=False)
        r3 = ingest_source(seq_factory, source, path, catalog=catalog, options=one_thread)
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(f"{backend:10} {source:6} 1 thread      {r3.rows_read:>10,} rows {dt:>7,.1f} s "
              f"{r3.rows_read / dt:>9,.0f} rows/s  CPU {cpu:,.1f} s  flopwise / 1 thread = "
              f"{ours / (r3.rows_read / dt):.2f}")  # fmt: skip
        # the row path (columnar=False: the parser, Coster and write_batch), into a third empty database
        t, cpu = time.perf_counter(), time.process_time()
        r4 = ingest_source(
            row_factory, source, path, catalog=catalog, options=replace(OPTIONS[source], columnar=False)
        )
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(f"{backend:10} {source:6} row path      {r4.rows_read:>10,} rows {dt:>7,.1f} s "
              f"{r4.rows_read / dt:>9,.0f} rows/s  CPU {cpu:,.1f} s  flopwise / row path = "
              f"{ours / (r4.rows_read / dt):.2f}")  # fmt: skip
        baselines = [("executemany", executemany_rows_per_s(url if backend == "postgresql" else
                                                            str(engine.url), source, path))]  # fmt: skip
        if backend == "postgresql":
            baselines.insert(0, ("COPY raw", copy_rows_per_s(url, source, path)))
        pandas = pandas_rows_per_s(str(engine.url) if backend == "sqlite" else url, source, path)
        baselines.append(("pandas to_sql", pandas))
        for name, value in baselines:
            if value is None:
                print(f"{backend:10} {source:6} {name:13} (pandas is not installed)")
                continue
            print(f"{backend:10} {source:6} {name:13} {'':>10} {'':>12} {value:>9,.0f} rows/s  "
                  f"flopwise / {name} = {ours / value:.2f}")  # fmt: skip
    engine.dispose()
    seq_engine.dispose()
    row_engine.dispose()


#: the issue's target: "Memory stays flat (under 500 MB) for a 10M-row file"
MEMORY_TARGET_MB = 500


def memory_check(rows: int, tmp: Path, catalog, path: Path | None = None) -> None:
    """Ingest a *rows*-row FOCUS file (or the FOCUS CSV at *path*) into SQLite: the RSS before the ingest, at each
    tenth of the file (right after a batch is written and its memory given back) with the highest RSS seen since the
    previous tenth (a thread reads /proc/self/status every 10 ms) and the Arrow memory allocated then, and the
    process's peak RSS (``ru_maxrss``) against the target."""
    import threading

    import pyarrow as pa

    if path is None:
        path = tmp / "focus-big.csv"
        t = time.perf_counter()
        write_focus_from_sample(path, rows)
        print(
            f"wrote {rows:,} rows ({path.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:,.0f} s"
        )
    else:
        print(f"reading {path} ({path.stat().st_size / 2**20:,.0f} MiB)")
    engine = make_engine(f"sqlite:///{tmp / 'mem.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    marks = iter(range(1, 11))
    mark = [next(marks)]
    highest = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            highest[0] = max(highest[0], current_rss_mb())

    def progress(read: int, total: int | None) -> None:
        if total and read * 10 >= total * mark[0]:
            now = current_rss_mb()
            print(f"  {mark[0] * 10:>3}% read: RSS {now:,.0f} MB, highest since the last tenth "
                  f"{max(highest[0], now):,.0f} MB, Arrow {pa.total_allocated_bytes() / 2**20:,.0f} MiB",
                  flush=True)  # fmt: skip
            highest[0] = 0.0
            mark[0] = next(marks, 11)

    start_rss = current_rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t, cpu = time.perf_counter(), time.process_time()
    try:
        r = ingest_source(
            factory, "focus", path, catalog=catalog, options=OPTIONS["focus"], progress=progress
        )
    finally:
        done.set()
        sampler.join()
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = peak_rss_mb()
    print(f"memory: {r.rows_read:,} rows in {dt:,.0f} s ({r.rows_read / dt:,.0f} rows/s, CPU {cpu:,.0f} s), "
          f"reconciles={r.reconciles}; RSS before the ingest {start_rss:,.0f} MB (imports, catalog, schema), "
          f"after {current_rss_mb():,.0f} MB")  # fmt: skip
    print(f"memory: peak RSS {peak:,.0f} MB, target < {MEMORY_TARGET_MB} MB: "
          f"{'met' if peak < MEMORY_TARGET_MB else 'NOT met'} ({MEMORY_TARGET_MB - peak:+,.0f} MB)")  # fmt: skip
    engine.dispose()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} cores ({cpu}), load {load:.1f}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sources", default="focus,slurm", help="comma-separated: focus, slurm")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument(
        "--memory-rows", type=int, default=0, help="only the memory check, on a file of N rows"
    )
    parser.add_argument(
        "--memory-file", type=Path, help="the memory check on this FOCUS CSV instead of a new file"
    )
    parser.add_argument("--postgres-url", default=PG_URL)
    args = parser.parse_args()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.memory_rows or args.memory_file:
            memory_check(args.memory_rows, tmp, catalog, args.memory_file)
            return
        writers = {"focus": write_focus_from_sample, "slurm": write_sacct_from_sample}
        files = {}
        for source in args.sources.split(","):
            files[source] = tmp / f"{source}.csv"
            writers[source](files[source], args.rows)
        # warm up (imports, the catalog's indexes, first-use caches) on a throwaway database, so that neither
        # the first timed ingest nor the one-thread one pays for them
        warm = make_session_factory(make_engine(f"sqlite:///{tmp / 'warm.db'}"))
        upgrade(warm.kw["bind"])
        for source in files:
            head = tmp / f"{source}-head.csv"
            with files[source].open(encoding="utf-8") as f, head.open("w", encoding="utf-8") as out:
                out.writelines(line for _, line in zip(range(2000), f, strict=False))
            ingest_source(warm, source, head, catalog=catalog, options=OPTIONS[source])
        warm.kw["bind"].dispose()
        databases = args.databases.split(",")
        if "sqlite" in databases:
            bench(f"sqlite:///{tmp / 'bench.db'}", files, catalog, f"sqlite:///{tmp / 'bench-overlap.db'}",
                  f"sqlite:///{tmp / 'bench-row.db'}")  # fmt: skip
        if "postgresql" not in databases:
            return
        import psycopg

        schema = f"bench_{os.getpid()}"
        try:
            with psycopg.connect(args.postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
                print(f"PostgreSQL {conn.info.server_version // 10000}.{conn.info.server_version % 10000}")
                conn.execute(f"CREATE SCHEMA {schema}")
                conn.execute(f"CREATE SCHEMA {schema}_1")
                conn.execute(f"CREATE SCHEMA {schema}_2")
        except psycopg.Error as err:
            print(f"postgresql skipped: {err}")
            return
        try:
            bench(f"{args.postgres_url}?options=-csearch_path%3D{schema}", files, catalog,
                  f"{args.postgres_url}?options=-csearch_path%3D{schema}_1",
                  f"{args.postgres_url}?options=-csearch_path%3D{schema}_2")  # fmt: skip
        finally:
            with psycopg.connect(args.postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
                conn.execute(f"DROP SCHEMA IF EXISTS {schema}_1 CASCADE")
                conn.execute(f"DROP SCHEMA IF EXISTS {schema}_2 CASCADE")


if __name__ == "__main__":
    main()
