"""Bench: a quota check's "devices held now" as an organization's requests pile up.

A request that a quota covers is decided on the devices its organization holds now: pending and approved
requests within their duration, and admitted or running admission jobs
(``flopwise.server.decisions.deciding._devices_held``). Approved is a final state, so an organization that has
worked for a year has every approved request it ever made in that state. Before revision 0011 the check read all
of them (``org_id, state``) and dropped the ones whose duration was over in Python, under the quota's row lock,
on every write. Since 0011 each request stores ``holds_until`` (``created_at + duration_h``) and the check reads
by ``(org_id, state, holds_until)`` the requests that hold devices now, summed in the database.

On a fresh database with the governance of ``bench/bench_budget_sums.py`` plus a quota on the organization
(every device class), the script adds approved requests whose duration is long over (one ``INSERT`` each size),
and at each of ``--sizes`` prints:

* ``held ms``: one ``_devices_held`` call (client and database, wall time; mean of ``--repeat`` calls);
* ``scan ms``: the baseline, the devices held read as before 0011 (every pending or approved request of the
  organization, filtered in Python), in blocks alternating with blocks of the ones above; the two answers are
  checked equal;
* ``create ms``: one request creation under the quota, end to end, in-process, one in flight (mean of 100).

Run: ``.venv/bin/python bench/bench_quota_held.py [--sizes 0,10000,50000] [--repeat 50]
[--databases postgresql,sqlite]``. PostgreSQL as in ``bench/bench_server.py``; skipped with the reason if
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_budget_sums as S  # noqa: E402 - the governed app and per-database loop of the budget-sums bench
import bench_hot_path as H  # noqa: E402 - the in-process ASGI client


async def _quota(app: Any, token: str, org_id: int) -> None:
    body = {"scope_kind": "org", "scope_id": org_id, "match_on": "device_class", "device": "*",
            "max_concurrent_devices": "999999999"}  # fmt: skip
    status, text = await H._call(app, token, "POST", H.API + "/quotas", body)
    assert status == 201, text


def _add_finished(app: Any, org_id: int, project_id: int, n: int) -> None:
    """*n* approved requests of 8 H100s for 10 hours, made on 2026-01-01 (their duration long over)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from flopwise.store import ComputeRequest, User, write_session

    at = datetime(2026, 1, 1, tzinfo=UTC)
    with write_session(app.state.db) as session:
        user_id = session.scalars(select(User.id).where(User.org_id == org_id)).first()
        rows = [
            {"org_id": org_id, "requester_id": user_id, "project_id": project_id, "workload_kind": "train",
             "inputs": {}, "device_type": "h100-sxm", "device_count": 8, "duration_h": Decimal(10),
             "state": "approved", "created_at": at, "updated_at": at}
            for _ in range(n)
        ]  # fmt: skip
        for start in range(0, n, 5000):
            session.execute(insert(ComputeRequest), rows[start : start + 5000])


def _held_before_0011(session: Any, catalog: Any, scope: Any, now: Any) -> dict[Any, Decimal]:
    """The devices held as the quota check read them before revision 0011 (the baseline): every pending or approved
    request of the organization, its duration checked in Python (admission jobs as now)."""
    from sqlalchemy import select

    from flopwise.store import AdmissionJob, ComputeRequest, Project

    held: dict[Any, Decimal] = {}

    def add(team_id: int, project_id: int, device_type: str | None, count: int) -> None:
        if device_type:
            device = catalog.devices.get(device_type)
            key = ((team_id, project_id), device_type, device.kind if device else "")
            held[key] = held.get(key, Decimal(0)) + Decimal(count)

    requests = session.execute(
        select(ComputeRequest.device_type, ComputeRequest.device_count, ComputeRequest.created_at,
               ComputeRequest.duration_h, Project.team_id, Project.id)
        .join(Project, Project.id == ComputeRequest.project_id)
        .where(ComputeRequest.org_id == scope.org_id, ComputeRequest.state.in_(("pending", "approved")))
    ).all()  # fmt: skip
    for device_type, count, created_at, duration_h, team_id, project_id in requests:
        if duration_h is not None and created_at + timedelta(hours=float(duration_h)) <= now:
            continue
        add(team_id, project_id, device_type, count)
    jobs = session.execute(
        select(AdmissionJob.device_type, AdmissionJob.device_count, Project.team_id, Project.id)
        .join(Project, Project.id == AdmissionJob.project_id)
        .where(AdmissionJob.org_id == scope.org_id, AdmissionJob.state.in_(("admitted", "committed")))
    ).all()  # fmt: skip
    for device_type, count, team_id, project_id in jobs:
        add(team_id, project_id, device_type, count)
    return held


def _held_s(app: Any, project_id: int, user_id: int, repeat: int) -> tuple[float, float]:
    """Mean wall seconds of one ``_devices_held`` call and of the baseline read, in alternating blocks."""
    from flopwise.server.decisions.deciding import _devices_held
    from flopwise.server.decisions.facts import load_scope
    from flopwise.store import read_session
    from flopwise.store.types import utcnow

    catalog = app.state.catalog
    with read_session(app.state.db) as session:
        scope = load_scope(session, project_id, user_id)
        now = utcnow()
        assert _devices_held(session, catalog, scope, now, (None, None)) == _held_before_0011(
            session, catalog, scope, now
        )
        held_s = scan_s = 0.0
        block = max(1, repeat // 4)
        for _ in range(4):  # blocks of each, alternating (a scan call leaves the caches cold for the call after it)
            t0 = time.perf_counter()
            for _ in range(block):
                _devices_held(session, catalog, scope, now, (None, None))
            t1 = time.perf_counter()
            for _ in range(block):
                _held_before_0011(session, catalog, scope, now)
            t2 = time.perf_counter()
            held_s += t1 - t0
            scan_s += t2 - t1
        return held_s / (4 * block), scan_s / (4 * block)


def _bench(url: str, sizes: list[int], repeat: int) -> list[tuple[int, float, float, float]]:
    from sqlalchemy import select

    from flopwise.store import User, read_session

    rows = []
    with S.governed_app(url) as (app, token, org_id, project_id, plan):
        asyncio.run(_quota(app, token, org_id))
        asyncio.run(S._create(app, token, plan, 10))  # warm: the catalog loaded, the statements prepared
        with read_session(app.state.db) as session:
            user_id = session.scalars(select(User.id).where(User.org_id == org_id)).first()
        made = 0
        for size in sizes:
            _add_finished(app, org_id, project_id, size - made)
            made = size
            held, scan = _held_s(app, project_id, user_id, repeat)
            create = asyncio.run(S._create(app, token, plan, 100)) / 100
            rows.append((size, held, scan, create))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,10000,50000", help="approved requests whose duration is over")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls of each read at each size")
    parser.add_argument("--databases", default="postgresql,sqlite")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(f"flopwise quota check: devices held now, with a number of finished approved requests in the "
          f"organization; mean of {args.repeat} reads and of 100 creations, wall ms")  # fmt: skip
    for kind, rows in S.per_database(args.databases, lambda url: _bench(url, sizes, args.repeat)):
        base_create = rows[0][3]
        print(f"\n{kind:<11} {'finished':>9} {'held ms':>9} {'scan ms':>9} {'x scan':>7} {'create ms':>10} "
              f"{'x first':>8}")  # fmt: skip
        for size, held, scan, create in rows:
            print(f"{kind:<11} {size:>9,} {held * 1e3:9.3f} {scan * 1e3:9.3f} {held / scan:7.3f} "
                  f"{create * 1e3:10.2f} {create / base_create:8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
