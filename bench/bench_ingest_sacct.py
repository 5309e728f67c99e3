"""The sacct columnar path against the row path, paired and alternating in one process: rows/s and CPU seconds of
``ingest_source`` into a fresh database (SQLite and PostgreSQL), and the CPU split (reading, checking, building and
costing the records without a database, against the write).

    python bench/bench_ingest_sacct.py --rows 100000 --repeats 3
    python bench/bench_ingest_sacct.py --rows 100000 --databases sqlite

Input: ``bench_ingest.write_sacct_from_sample`` (the hb-jobinfo dump repeated with new job ids, ``--parsable2``
with a header, ``|``), ingested with ``--assume-tz Europe/Amsterdam --cluster hb --region country:NL``. Each repeat
runs the columnar path and the row path (``IngestOptions(columnar=False)``: the parser, Coster and ``write_batch``
row by row) once each, in alternating order, each into its own empty database; medians and their ratio are
printed with the load average. CPU seconds are the process's (all threads), which the other processes on a busy
machine do not inflate as they do wall-clock time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import OPTIONS, PG_URL, machine, write_sacct_from_sample  # noqa: E402

from flopwise.catalog import load_catalog  # noqa: E402
from flopwise.meter.costing import Coster, CostingOptions  # noqa: E402
from flopwise.meter.ingest import ingest_source  # noqa: E402
from flopwise.meter.ingest_parse import _parse  # noqa: E402
from flopwise.meter.ingest_sacct_columnar import SacctCounts, sacct_column_batches, sacct_plan  # noqa: E402
from flopwise.meter.ledger_write import _row_values  # noqa: E402
from flopwise.store import make_engine, make_session_factory, upgrade  # noqa: E402


def parse_only(path: Path, catalog, columnar: bool) -> int:
    """Records read, checked, built and costed, without a database (the reading side of the CPU split)."""
    options = OPTIONS["slurm"]
    coster = Coster(catalog, CostingOptions(default_region=options.region))
    n = 0
    if columnar:
        planned, why = sacct_plan(str(path), catalog, options)
        assert planned is not None, why
        for table, _dropped in sacct_column_batches(
            str(path), *planned, coster=coster, counts=SacctCounts(), rejected=[]
        ):
            n += table.num_rows
        return n
    parsed = _parse("slurm", str(path), catalog=catalog, options=options, client=None, progress=None)
    now = datetime.now(UTC)
    for record in parsed.records:
        _row_values(coster.cost(record), None, now, None)
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=PG_URL)
    args = parser.parse_args()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "sacct.txt"
        write_sacct_from_sample(path, args.rows)
        parse_only(path, catalog, True)  # warm up: imports, the catalog's indexes
        parse_only(path, catalog, False)
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for k in range(args.repeats):
            for columnar in (True, False) if k % 2 == 0 else (False, True):
                t = time.process_time()
                parse_only(path, catalog, columnar)
                cpu[columnar].append(time.process_time() - t)
        col, row = statistics.median(cpu[True]), statistics.median(cpu[False])
        print(f"read+check+build+cost, no database: columnar CPU {col:.2f} s, row path CPU {row:.2f} s "
              f"(median of {args.repeats}), row / columnar = {row / col:.2f}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
        for database in args.databases.split(","):
            bench_database(database, path, catalog, args, tmp)


def bench_database(database: str, path: Path, catalog, args, tmp: Path) -> None:
    results: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    schemas: list[str] = []
    try:
        for k in range(args.repeats):
            for columnar in (True, False) if k % 2 == 0 else (False, True):
                if database == "sqlite":
                    url = f"sqlite:///{tmp / f'{k}-{columnar}.db'}"
                else:
                    import psycopg

                    schema = f"bench_sacct_{os.getpid()}_{k}_{int(columnar)}"
                    with psycopg.connect(args.postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
                        conn.execute(f"CREATE SCHEMA {schema}")
                    schemas.append(schema)
                    url = f"{args.postgres_url}?options=-csearch_path%3D{schema}"
                engine = make_engine(url)
                upgrade(engine)
                factory = make_session_factory(engine)
                options = replace(OPTIONS["slurm"], columnar=columnar)
                t, cpu = time.perf_counter(), time.process_time()
                r = ingest_source(factory, "slurm", path, catalog=catalog, options=options)
                dt, cpu = time.perf_counter() - t, time.process_time() - cpu
                assert r.reconciles
                results[columnar].append((r.rows_read / dt, cpu, r.records_inserted))
                engine.dispose()
    finally:
        if schemas:
            import psycopg

            with psycopg.connect(args.postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    med = {c: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), v[0][2])
           for c, v in results.items()}  # fmt: skip
    for columnar, (rate, cpu, inserted) in med.items():
        name = "columnar" if columnar else "row path"
        print(f"{database:10} sacct {name:9} {args.rows:>9,} lines {rate:>9,.0f} rows/s (median of {args.repeats}) "
              f"CPU {cpu:5.2f} s  inserted {inserted:,}")  # fmt: skip
    print(f"{database:10} sacct columnar / row path: {med[True][0] / med[False][0]:.2f}x rows/s, CPU "
          f"{med[False][1] / med[True][1]:.2f}x less, load {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
