"""Bench: SQLite writers of one process, first come first served (``SqliteWriterQueue``) against SQLite's busy
handler (the queue off, as before it), side by side in one process.

The ASGI app (``create_app``, as ``flopwise serve`` builds it, with its write threads) is driven in-process by
``--concurrency`` asyncio clients (no HTTP, as ``bench/bench_hot_path.py`` drives it) on a fresh SQLite file with
the governance of ``bench/bench_server.py``, ``POST /requests`` (a chosen plan) and ``POST /admission/decide``
(a new job id each). Rounds alternate the queue on and off; per variant the script prints the median over the
rounds of requests/s (wall clock), the p50 / p99 / max latency of the requests of all rounds, and this process's
CPU ms per request (``time.process_time``, which includes SQLite's own work), with the load average: on a busy
machine compare CPU, and the tail, not req/s.

Run: ``.venv/bin/python bench/bench_sqlite_writers.py [--count 800] [--rounds 3] [--concurrency 16,64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_hot_path as H  # noqa: E402 - the in-process ASGI client
import bench_server as B  # noqa: E402 - the seeding, policy and plan of the HTTP bench

from flopwise.store.session import SqliteWriterQueue  # noqa: E402

API = "/api/v1"


async def _setup(app: Any, token: str, org_id: int) -> None:
    for method, path, body in (
        ("POST", "/budgets", {"name": "bench-month", "scope_kind": "org", "scope_id": org_id, "period": "month",
                              "unit": "usd", "amount": "1000000000", "is_hard": True}),
        ("POST", "/policies", {"yaml": B.POLICY_YAML}),
    ):  # fmt: skip
        status, text = await H._call(app, token, method, API + path, body)
        assert status == 201, text
    status, text = await H._call(app, token, "POST", API + "/aup", {"text": "Use compute for work only."})
    if status == 201:
        import json

        version = json.loads(text).get("version", 1)
        assert (await H._call(app, token, "POST", f"{API}/aup/{version}/accept"))[0] < 300


async def _round(
    app: Any, token: str, path: str, body: Any, count: int, concurrency: int
) -> tuple[float, float, list[float]]:
    """(wall s, CPU s, latencies s) of *count* requests from *concurrency* clients."""
    latencies: list[float] = []

    async def client(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            status, text = await H._call(app, token, "POST", path, body())
            latencies.append(time.perf_counter() - t0)
            assert status < 300, text

    per = count // concurrency
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(per) for _ in range(concurrency)))
    return time.perf_counter() - wall0, time.process_time() - cpu0, latencies


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _bench(app: Any, token: str, org_id: int, project_id: int, args: argparse.Namespace) -> list[str]:
    await _setup(app, token, org_id)
    plan = {**B.PLAN_BODY, "project_id": project_id}
    job = {"engine": "slurm", "project_id": project_id, "device": "h100-sxm", "device_count": 8,
           "max_duration_h": "10", "usd_per_device_h": "2.50"}  # fmt: skip
    phases = [
        ("POST /requests", API + "/requests", lambda: plan),
        ("POST /admission/decide", API + "/admission/decide",
         lambda: {**job, "engine_job_id": uuid.uuid4().hex}),
    ]  # fmt: skip
    lines = []
    for concurrency in args.concurrency:
        for name, path, body in phases:
            # warm: the token cached, the catalog loaded, the threads started
            for _ in range(2 * concurrency):
                assert (await H._call(app, token, "POST", path, body()))[0] < 300
            results: dict[bool, list[tuple[float, float, list[float]]]] = {True: [], False: []}
            for r in range(args.rounds):
                for enabled in (False, True) if r % 2 == 0 else (True, False):
                    SqliteWriterQueue.enabled = enabled
                    results[enabled].append(await _round(app, token, path, body, args.count, concurrency))
            SqliteWriterQueue.enabled = True
            for enabled, label in ((False, "busy handler (before)"), (True, "writer queue")):
                runs = results[enabled]
                done = args.count // concurrency * concurrency
                rates = [done / wall for wall, _cpu, _lat in runs]
                cpus = [cpu / done * 1e3 for _wall, cpu, _lat in runs]
                lat = [x * 1e3 for _w, _c, lats in runs for x in lats]
                lines.append(
                    f"{concurrency:>7} {name:<24} {label:<22} {statistics.median(rates):>7.1f} "
                    f"{_quantile(lat, 0.5):>8.1f} {_quantile(lat, 0.99):>8.1f} {max(lat):>8.1f} "
                    f"{statistics.median(cpus):>7.2f} ({min(cpus):.2f}-{max(cpus):.2f})"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=800, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each variant, alternating")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated requests in flight")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    from flopwise.server import Settings, create_app

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"SQLite writers in one process, in-process ASGI: {args.count} requests per round, {args.rounds} rounds "
          f"of each variant alternating; load average at start {load}")  # fmt: skip
    with B.database("sqlite") as url:
        token, org_id, project_id = B.seed(url)
        app = create_app(Settings(database_url=url))
        try:
            lines = asyncio.run(_bench(app, token, org_id, project_id, args))
        finally:
            app.state.engine.dispose()
    print(f"\n{'clients':>7} {'operation':<24} {'variant':<22} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'CPU ms per request (range)'}")  # fmt: skip
    print("\n".join(lines))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at end {load}")


if __name__ == "__main__":
    main()
