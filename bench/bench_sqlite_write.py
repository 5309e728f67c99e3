"""The SQLite write of a FOCUS ingest, before and after issue #10's SQLite pass, side by side in one process.

    python bench/bench_sqlite_write.py                  # 100,000 rows, 3 rounds
    python bench/bench_sqlite_write.py --rows 50000 --rounds 5

The input is bench_ingest.py's FOCUS file (the FOCUS 1.0 sample repeated, every row a distinct charge). Each round
ingests it with ``ingest_source`` into two fresh SQLite databases, in alternating order:

* ``before``: a database file made with SQLite's default 4 KiB pages, and every column of every row bound as a
  parameter of ``executemany`` (the insert as it was before: ``ledger_write._sqlite_params``);
* ``now``: the database as ``make_engine`` creates it (``SQLITE_PAGE_SIZE`` pages), and the batch's constant columns
  (all NULL, one integer or one text) written into the statement as literals (``ledger_write._sqlite_insert``).

It prints, per variant, the medians of the whole ingest's process CPU seconds and wall-clock rows/s, the same for
the same file ingested again (every record unchanged: the known keys go through the staging table), the CPU
seconds the first ingest spent inside ``write_columns`` (the SQLite write: the existing-key lookup, the parameters, ``executemany``;
the commits and their WAL checkpoints are outside it, in the process's CPU), and the ratios now/before; then checks that both ledgers hold the same rows (every column but
``id`` and ``ingested_at``, values and SQLite storage types). The load average is printed beside the figures: on a
busy machine compare CPU seconds, not wall-clock.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ingest  # noqa: E402

from flopwise.catalog import load_catalog  # noqa: E402
from flopwise.meter import ledger_write  # noqa: E402
from flopwise.meter.ingest import ingest_source  # noqa: E402
from flopwise.store import make_engine, make_session_factory, upgrade  # noqa: E402


def _bound_insert(table, positions=None):
    """The insert before: every column a parameter on every row (into the staging table with *positions*)."""
    names = ", ".join(ledger_write._COLUMNS)
    marks = ", ".join("?" for _ in ledger_write._COLUMNS)
    if positions is not None:
        sql = f"INSERT INTO {ledger_write._STAGE} (_idx, {names}) VALUES (?, {marks})"
    else:
        sql = f"INSERT INTO usage_records ({names}) VALUES ({marks}) ON CONFLICT (source_key) DO NOTHING"
    return sql, ledger_write._sqlite_params(table, positions)


class _Timed:
    """Accumulates the process CPU seconds spent in write_columns."""

    def __init__(self) -> None:
        self.write_s = 0.0

    def install(self):
        original = ledger_write.write_columns

        def write_columns(*a, **k):
            t = time.process_time()
            try:
                return original(*a, **k)
            finally:
                self.write_s += time.process_time() - t

        ledger_write.write_columns = write_columns
        return original


def one(variant: str, path: Path, tmp: Path, catalog) -> dict[str, float]:
    db = tmp / f"{variant}-{time.monotonic_ns()}.db"
    if variant == "before":
        con = sqlite3.connect(db)
        con.execute("PRAGMA page_size=4096")
        con.execute("PRAGMA journal_mode=WAL")
        con.close()
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    factory = make_session_factory(engine)
    timed = _Timed()
    original_write = timed.install()
    original_insert = ledger_write._sqlite_insert
    if variant == "before":
        ledger_write._sqlite_insert = _bound_insert
    try:
        c0, w0 = time.process_time(), time.perf_counter()
        result = ingest_source(factory, "focus", path, catalog=catalog, options=bench_ingest.OPTIONS["focus"])
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        write_s, timed.write_s = timed.write_s, 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        again = ingest_source(factory, "focus", path, catalog=catalog, options=bench_ingest.OPTIONS["focus"])
        again_cpu, again_wall = time.process_time() - c0, time.perf_counter() - w0
        assert again.records_inserted == 0
    finally:
        ledger_write.write_columns = original_write
        ledger_write._sqlite_insert = original_insert
    engine.dispose()
    with sqlite3.connect(db) as con:
        page = con.execute("PRAGMA page_size").fetchone()[0]
    return {
        "cpu_s": cpu,
        "rows_per_s": result.rows_read / wall,
        "again_cpu_s": again_cpu,
        "again_rows_per_s": again.rows_read / again_wall,
        "write_cpu_s": write_s,  # the first ingest's
        "page_size": page,
        "db": str(db),
        "rows": result.records_inserted,
    }


def same_ledger(a: str, b: str) -> int:
    """How many rows differ between the two ledgers (by source_key; every column but id and ingested_at)."""
    con = sqlite3.connect(a)
    con.execute("ATTACH ? AS b", (b,))
    columns = [c for c in ledger_write._COLUMNS if c not in ("ingested_at",)]
    differs = " OR ".join(f"u.{c} IS NOT v.{c} OR typeof(u.{c}) != typeof(v.{c})" for c in columns)
    n_a = con.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    n_b = con.execute("SELECT count(*) FROM b.usage_records").fetchone()[0]
    joined = con.execute(
        f"SELECT count(*), sum({differs}) FROM usage_records u JOIN b.usage_records v USING (source_key)"
    ).fetchone()
    return (n_a - joined[0]) + (n_b - joined[0]) + int(joined[1] or 0)


KEYS = ("cpu_s", "rows_per_s", "again_cpu_s", "again_rows_per_s", "write_cpu_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flopwise-sqlite-write-"))
    path = tmp / "focus.csv"
    bench_ingest.write_focus_from_sample(path, args.rows)
    catalog = load_catalog()
    # warm: imports, the catalog's caches, pyarrow's kernels
    head = tmp / "head.csv"
    bench_ingest.write_focus_from_sample(head, 2000)
    one("now", head, tmp, catalog)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "now": []}
    loads = []
    for r in range(args.rounds):
        order = ("before", "now") if r % 2 == 0 else ("now", "before")
        for variant in order:
            loads.append(os.getloadavg()[0])
            runs[variant].append(one(variant, path, tmp, catalog))
    med = {v: {k: statistics.median(x[k] for x in runs[v]) for k in KEYS} for v in runs}
    print(f"{args.rows:,} FOCUS rows, {args.rounds} alternating rounds, SQLite {sqlite3.sqlite_version}, "
          f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    head = ("page", "CPU s", "rows/s", "again: CPU s", "again: rows/s", "write_columns CPU s")
    print(f"{'':10s}" + "".join(f"{h:>20s}" for h in head))
    for v in ("before", "now"):
        m = med[v]
        cells = [
            f"{runs[v][0]['page_size']:d}",
            f"{m['cpu_s']:.2f}",
            f"{m['rows_per_s']:,.0f}",
            f"{m['again_cpu_s']:.2f}",
        ]
        cells += [f"{m['again_rows_per_s']:,.0f}", f"{m['write_cpu_s']:.2f}"]
        print(f"{v:10s}" + "".join(f"{c:>20s}" for c in cells))
    ratios = [""] + [f"{med['now'][k] / med['before'][k]:.2f}x" for k in KEYS]
    print(f"{'now/before':10s}" + "".join(f"{c:>20s}" for c in ratios))
    differ = same_ledger(runs["before"][0]["db"], runs["now"][0]["db"])
    print(f"ledgers: {runs['now'][0]['rows']:,} rows each, {differ} differ")
    if differ:
        raise SystemExit("the two ledgers differ")


if __name__ == "__main__":
    main()
