"""Bench: two PostgreSQL-side costs of a write, each beside its alternative, alternating in one process.

1. **The budget lock's plan.** ``store.queries.lock_budget_rows`` binds one parameter per budget id
   (``id IN ($1)``, a prepared statement per count up to eight); before, it bound one ``INTEGER[]``
   (``id = ANY($1)``), which psycopg's prepared statement had PostgreSQL plan anew on every execution. Both
   statements are flopwise's own (``_LOCK_BUDGET_ROWS``: the per-count one and the array one, still used beyond
   eight ids), run on one pooled connection of a migrated schema in ``--repeat`` write transactions each (lock
   one budget, commit), in alternating blocks. Printed: the backend's CPU ms per lock and commit (``/proc`` of
   the backend serving the engine's one connection), the wall ms, and ``pg_prepared_statements``' generic and custom plan
   counts of each.
2. **TOAST on the request row.** A request's decision trace is about 2.6 KB of JSON, so its row passes
   PostgreSQL's 2 KB TOAST threshold and the trace is compressed on every insert. Two copies of
   ``compute_requests`` (``LIKE ... INCLUDING ALL``, no foreign keys), one with ``toast_tuple_target = 8160``
   (rows up to a page stay uncompressed), take the same row (the inputs, estimate and trace of a request made
   through the in-process app) ``--repeat`` times each, one transaction per insert, in alternating blocks.
   Printed: the backend's CPU ms per insert and commit, and the table's size.

Run: ``.venv/bin/python bench/bench_pg_plans.py [--repeat 4000] [--rounds 3]``. PostgreSQL:
``$FLOPWISE_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; skipped with the
reason if unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_budget_sums as S  # noqa: E402 - the governance of the write-path benches
import bench_server as B  # noqa: E402 - the seeding, policy and plan of the HTTP bench


def _timed(pid: int, repeat: int, one: Any) -> tuple[float, float]:
    """(backend CPU s, wall s) of *repeat* calls of *one*."""
    cpu0, wall0 = B._cpu_of(pid), time.perf_counter()
    for _ in range(repeat):
        one()
    return B._cpu_of(pid) - cpu0, time.perf_counter() - wall0


def _bench(url: str, args: argparse.Namespace) -> list[str]:
    """The two comparisons on the fresh, governed database *url*: the lines to print."""
    from sqlalchemy import text

    from flopwise.store import make_engine, make_session_factory, write_session
    from flopwise.store.queries import _LOCK_BUDGET_ROWS

    lines: list[str] = []
    with S.governed_app(url) as (app, token, _org_id, _project_id, plan):
        asyncio.run(S._create(app, token, plan, 3))  # request rows with their decision traces
    engine = make_engine(url, pool_size=1, max_overflow=0)  # one connection: the backend measured serves all
    factory = make_session_factory(engine)
    try:
        with write_session(factory) as s:
            budget_id = s.execute(text("SELECT min(id) FROM budgets")).scalar_one()
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()

        # 1. the budget lock
        def lock(statement: Any, params: dict[str, Any]) -> Any:
            def one() -> None:
                with write_session(factory) as s:
                    assert len(statement.execute(s, params)) == 1

            return one

        variants = {
            "id IN ($1) (now)": lock(_LOCK_BUDGET_ROWS[1][1], {"id_0": budget_id}),
            "id = ANY($1::INTEGER[]) (before)": lock(_LOCK_BUDGET_ROWS[2], {"ids": [budget_id]}),
        }
        lines += _report("budget lock + commit", variants, pid, args)
        with engine.connect() as c:
            plans = c.execute(
                text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                     "WHERE statement LIKE '%FROM budgets%FOR UPDATE%'")  # fmt: skip
            ).all()
        for statement, generic, custom in plans:
            form = "ANY" if "ANY" in statement else "IN"
            lines.append(f"  plans of the {form} form: {generic} generic, {custom} custom")

        # 2. TOAST on the request row
        with write_session(factory) as s:
            request_id, trace_bytes = s.execute(
                text("SELECT min(id), min(octet_length(decision_trace::text)) FROM compute_requests")
            ).one()
            columns = ", ".join(
                s.scalars(
                    text("SELECT column_name FROM information_schema.columns WHERE table_name = 'compute_requests' "
                         "AND table_schema = current_schema() AND column_name NOT IN ('id', 'idempotency_key') "
                         "ORDER BY ordinal_position")  # fmt: skip
                )
            )
            for name in ("toast_default", "toast_8160"):
                s.execute(text(f"CREATE TABLE {name} (LIKE compute_requests INCLUDING ALL)"))
            s.execute(text("ALTER TABLE toast_8160 SET (toast_tuple_target = 8160)"))

        def insert(table: str) -> Any:
            statement = text(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM compute_requests WHERE id = :request_id"
            )

            def one() -> None:
                with write_session(factory) as s:
                    s.execute(statement, {"request_id": request_id})

            return one

        lines.append(f"\n  the decision trace: {trace_bytes} bytes of JSON")
        lines += _report("request row insert + commit", {"TOAST threshold (now)": insert("toast_default"),
                                                          "toast_tuple_target 8160": insert("toast_8160")},
                         pid, args)  # fmt: skip
        with engine.connect() as c:
            for name in ("toast_default", "toast_8160"):
                size = c.execute(text(f"SELECT pg_size_pretty(pg_total_relation_size('{name}'))")).scalar_one()
                lines.append(f"  {name}: {size}")
    finally:
        engine.dispose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4000, help="transactions per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks of each variant, alternating")
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"PostgreSQL statements of a write, {args.repeat} transactions a block, {args.rounds} blocks of each "
          f"variant alternating; load average {load}\n")  # fmt: skip
    for _kind, lines in S.per_database("postgresql", lambda url: _bench(url, args)):
        print("\n".join(lines))


def _report(what: str, variants: dict[str, Any], pid: int, args: argparse.Namespace) -> list[str]:
    """The lines of one comparison: each variant's median backend CPU ms (and every block's), wall ms, and the
    first variant's ratio to each other one. A warm-up block of each runs first, uncounted."""
    totals: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    names = list(variants)
    for name in names:  # warm: statements prepared, caches filled; not counted
        _timed(pid, min(args.repeat, 500), variants[name])
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            totals[name].append(_timed(pid, args.repeat, variants[name]))
    lines = [f"{what:<30} {'backend CPU ms':>15} {'(blocks)':<24} {'wall ms':>8}"]
    base = None
    for name in names:
        cpus = [cpu / args.repeat * 1e3 for cpu, _ in totals[name]]
        walls = sorted(wall / args.repeat * 1e3 for _, wall in totals[name])
        median = sorted(cpus)[len(cpus) // 2]
        ratio = "" if base is None else f"  now / this = {base / median:.2f}"
        base = median if base is None else base
        blocks = ", ".join(f"{c:.3f}" for c in cpus)
        lines.append(f"  {name:<28} {median:>15.3f} ({blocks:<22}) {walls[len(walls) // 2]:>8.3f}{ratio}")
    return lines


if __name__ == "__main__":
    main()
