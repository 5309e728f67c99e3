"""Adding one record to a large ledger: ingest plus the post-ingest step, incremental against the full pass.

    python bench/bench_post_ingest.py                       # a 1,000,000-record ledger (the issue's figure)
    python bench/bench_post_ingest.py --rows 200000 --postgres-url postgresql+psycopg://postgres@127.0.0.1/test

Builds a ledger of *rows* FOCUS records (a year of hourly charges) of one organization with an org, a team and a
project budget and two attribution rules, a quarter of the records left without a project. Then, on each database,
ingests a one-record file and times, side by side in the same process on the same ledger:

* ``ingest_source`` of the one record (parse, cost, look up its key, write);
* the post-ingest step as ``flopwise ingest`` runs it now (``apply_actuals(..., run_id=...)``: that run's rows,
  the requests they name, the budgets of their organization in the windows they fall in);
* the baseline: the same step over the whole ledger (``apply_actuals`` without ``run_id``, what every ingest did
  before: every unattributed row re-examined, every request settled).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import write_focus  # noqa: E402

from flopwise.catalog import load_catalog  # noqa: E402
from flopwise.meter.burn import apply_actuals  # noqa: E402
from flopwise.meter.ingest import IngestOptions, ingest_source  # noqa: E402
from flopwise.store import (  # noqa: E402
    Budget,
    Organization,
    Project,
    Team,
    make_engine,
    make_session_factory,
    upgrade,
    write_session,
)
from flopwise.store.ledger import AttributionRule  # noqa: E402

NOW = datetime(2025, 6, 15, tzinfo=UTC)


def _setup(factory) -> tuple[int, int, int]:
    with write_session(factory) as s:
        org = Organization(name="bench")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="ml")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="llm")
        s.add(project)
        s.flush()
        for kind, scope in (("org", org.id), ("team", team.id), ("project", project.id)):
            s.add(
                Budget(org_id=org.id, name=f"{kind}-month", scope_kind=kind, scope_id=scope, period="month",
                       unit="usd", amount=Decimal("1000000"), is_hard=False, alert_thresholds=["0.5", "0.9"])
            )  # fmt: skip
        for i, team_tag in enumerate(("t1", "t2")):
            s.add(AttributionRule(org_id=org.id, priority=100 + i, match={"tag": {"team": team_tag}},
                                  team_id=team.id, project_id=project.id))  # fmt: skip
        return org.id, team.id, project.id


def bench(url: str, rows: int, tmp: Path, catalog) -> None:
    engine = make_engine(url)
    upgrade(engine)
    factory = make_session_factory(engine)
    org_id, team_id, project_id = _setup(factory)
    big = tmp / "ledger.csv"
    write_focus(big, rows)
    # three in four records belong to the project, one in four to the organization only (left unattributed)
    scoped = (org_id, team_id, project_id)

    def owner(record):
        return scoped if record.tags.get("team", "t0") != "t3" else (org_id, None, None)

    t0 = time.perf_counter()
    built = ingest_source(factory, "focus", big, catalog=catalog, attribute=owner)
    build_s = time.perf_counter() - t0
    one = tmp / "one.csv"
    one.write_text(
        big.read_text(encoding="utf-8").splitlines(keepends=True)[0]
        + "12.5,USD,2025-06-14T10:00:00Z,2025-06-14T11:00:00Z,AWS,us-east-1,i-new,Compute,p5.48xlarge,12.5,12.5,1,"
        'Hours,p5.48xlarge,"{""team"": ""t1""}"\n',
        encoding="utf-8",
    )
    t0 = time.perf_counter()
    run = ingest_source(factory, "focus", one, catalog=catalog, options=IngestOptions(), attribute=owner)
    ingest_s = time.perf_counter() - t0
    assert run.records_inserted == 1, run
    t0 = time.perf_counter()
    with write_session(factory) as s:
        apply_actuals(s, NOW, touched=run.touched, run_id=run.run_id)
    incremental_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with write_session(factory) as s:
        apply_actuals(s, NOW, touched=run.touched)
    full_s = time.perf_counter() - t0
    name = url.split(":", 1)[0]
    print(f"{name}: ledger of {built.records_inserted:,} records built in {build_s:.1f} s")
    print(f"  add 1 record, ingest:                               {ingest_s * 1000:8.1f} ms")
    print(f"  post-ingest, incremental (this run's rows, budgets): {incremental_s * 1000:8.1f} ms")
    print(f"  post-ingest, whole ledger (before, baseline):        {full_s * 1000:8.1f} ms")
    print(f"  total with the incremental step: {ingest_s + incremental_s:.2f} s "
          f"(baseline {ingest_s + full_s:.2f} s, {full_s / incremental_s:.0f}x)")  # fmt: skip
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default=os.environ.get("FLOPWISE_BENCH_POSTGRES_URL"))
    args = parser.parse_args()
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{Path(tmp) / 'bench.db'}", args.rows, Path(tmp), catalog)
        if args.postgres_url:
            bench(args.postgres_url, args.rows, Path(tmp), catalog)


if __name__ == "__main__":
    main()
