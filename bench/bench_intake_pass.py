"""Bench: the post-ingest pass of ``POST /api/v1/usage`` as an organization's ledger grows.

After a POST inserts records, the server attributes, settles and checks budgets (``meter.burn.apply_actuals``).
Until this round the pass ran over the whole organization: every unattributed record it ever received was
examined again, every request with usage settled again, on every POST. It now covers the POST's own run, as
after ``flopwise ingest``.

On a fresh database with the governance of ``bench/bench_budget_sums.py``, the script POSTs ``--per`` records
that no rule attributes (they stay unattributed below the organization; 2,000 a POST), ``--posts`` times, and at each
ledger size prints:

* ``post ms``: one POST of one record, end to end, in-process (the pass on its run included);
* ``run pass ms``: the pass on that POST's run alone (what the server runs now), in a transaction rolled back;
* ``org pass ms``: the baseline, the pass over the whole organization (what the server ran before), the same
  way, right after it in the same process.

Run: ``.venv/bin/python bench/bench_intake_pass.py [--posts 5] [--per 4000] [--databases postgresql,sqlite]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_budget_sums as S  # noqa: E402 - the governed app and per-database loop
import bench_hot_path as H  # noqa: E402 - the in-process ASGI client


def _records(n: int) -> dict[str, Any]:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    return {"records": [
        {"source": "focus", "source_key": f"bench:{uuid.uuid4().hex}",
         "charge_period_start": (start + timedelta(minutes=i % 5000)).isoformat(),
         "charge_period_end": (start + timedelta(minutes=i % 5000, hours=1)).isoformat(),
         "billed_cost": "1.25", "billing_currency": "USD", "x_device_type": "h100-sxm", "x_device_count": 1,
         "x_device_hours": 1, "x_account": "nobody-attributes-this"}
        for i in range(n)
    ]}  # fmt: skip


def _post(app: Any, token: str, n: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    status, text = asyncio.run(H._call(app, token, "POST", H.API + "/usage", _records(n)))
    assert status == 200, text[:300]
    return time.perf_counter() - t0, int(json.loads(text)["ingest_run_id"])


def _pass_s(app: Any, org_id: int, run_id: int | None) -> float:
    """Wall seconds of one post-ingest pass (on *run_id*, or the whole organization), rolled back."""
    from flopwise.meter.burn import apply_actuals
    from flopwise.store.session import begin_write

    with app.state.db() as session:
        begin_write(session)
        t0 = time.perf_counter()
        apply_actuals(session, app.state.clock(), org_id, run_id=run_id)
        elapsed = time.perf_counter() - t0
        session.rollback()
    return elapsed


def _bench(url: str, posts: int, per: int) -> list[tuple[int, float, float, float]]:
    rows = []
    with S.governed_app(url) as (app, token, org_id, _project_id, _plan):
        ledger = 0
        for _ in range(posts):
            for start in range(0, per, 2000):  # under the 1 MB body limit
                _post(app, token, min(2000, per - start))
            post_s, run_id = _post(app, token, 1)
            ledger += per + 1
            rows.append((ledger, post_s, _pass_s(app, org_id, run_id), _pass_s(app, org_id, None)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=5, help="ledger sizes (a POST of --per records each)")
    parser.add_argument("--per", type=int, default=4000, help="unattributed records added per ledger size")
    parser.add_argument("--databases", default="postgresql,sqlite")
    args = parser.parse_args()
    print("flopwise usage intake: the post-ingest pass of a one-record POST as the organization's unattributed "
          "records grow; wall ms")  # fmt: skip
    for kind, rows in S.per_database(args.databases, lambda url: _bench(url, args.posts, args.per)):
        print(f"\n{kind:<11} {'ledger':>8} {'post ms':>9} {'run pass ms':>12} {'org pass ms':>12} {'x org':>7}")
        for ledger, post, run, org in rows:
            print(f"{kind:<11} {ledger:>8,} {post * 1e3:9.1f} {run * 1e3:12.1f} {org * 1e3:12.1f} "
                  f"{run / org:7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
