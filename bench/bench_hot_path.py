"""Bench: the server's own CPU per request on the write path, in-process, beside ``/health`` in the same process.

The ASGI app (``create_app``, as ``flopwise serve`` builds it) is driven directly by one asyncio client (no HTTP
server, no client processes), on a fresh SQLite file and on a fresh PostgreSQL schema, with the governance of
``bench/bench_server.py`` (a hard org budget, the bench policy, the acceptable-use policy accepted). For
``GET /health`` (the baseline), ``POST /requests`` (a chosen plan) and ``POST /admission/decide`` (a new job id
each) it prints the CPU time of this process per request (``time.process_time``: what a busy shared machine
inflates far less than wall time; on SQLite it includes the database's own work, which runs in-process) and the
SQL statements per request (transaction control left out; the once-a-second expiry pass adds a little to
the average), best of ``--rounds`` rounds of ``--count`` requests, with ``--concurrency``
requests in flight. ``bench/bench_server.py`` measures the same paths over real HTTP with concurrent clients.

``--compare`` alternates each round with the baseline of the prepared statements: the same requests with every
``flopwise.store.session.PreparedStatement`` run through SQLAlchemy (as before them), in the same process, and
prints its CPU per request and the ratio (on SQLite both run through SQLAlchemy: a ratio near 1).

Run: ``.venv/bin/python bench/bench_hot_path.py [--count 200] [--rounds 3] [--concurrency 1]
[--databases sqlite,postgresql] [--compare]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_server as B  # noqa: E402 - the seeding, policy and plan of the HTTP bench

API = "/api/v1"


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip


async def _call(app: Any, token: str, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    data = b"" if body is None else json.dumps(body).encode()
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(data)).encode())]  # fmt: skip
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        await asyncio.sleep(3600)  # never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(_scope(method, path, headers), receive, send)
    return status, b"".join(chunks)


async def _bench(app: Any, token: str, org_id: int, project_id: int, args: argparse.Namespace) -> list[str]:
    from sqlalchemy import event

    for method, path, body in (
        ("POST", "/budgets", {"name": "bench-month", "scope_kind": "org", "scope_id": org_id, "period": "month",
                              "unit": "usd", "amount": "1000000000", "is_hard": True}),
        ("POST", "/policies", {"yaml": B.POLICY_YAML}),
    ):  # fmt: skip
        status, text = await _call(app, token, method, API + path, body)
        assert status == 201, text
    status, text = await _call(app, token, "POST", API + "/aup", {"text": "Use compute for work only."})
    if status == 201:
        version = json.loads(text).get("version", 1)
        assert (await _call(app, token, "POST", f"{API}/aup/{version}/accept"))[0] < 300
    plan = {**B.PLAN_BODY, "project_id": project_id}
    job = {"engine": "slurm", "project_id": project_id, "device": "h100-sxm", "device_count": 8,
           "max_duration_h": "10", "usd_per_device_h": "2.50"}  # fmt: skip
    phases = [
        ("GET /health", "GET", API + "/health", lambda: None),
        ("POST /requests", "POST", API + "/requests", lambda: plan),
        ("POST /admission/decide", "POST", API + "/admission/decide",
         lambda: {**job, "engine_job_id": uuid.uuid4().hex}),
    ]  # fmt: skip
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # as tests/server/test_hot_path.py counts: transaction control is not a statement
        if not statement.lstrip().upper().startswith(("BEGIN", "PRAGMA", "SAVEPOINT", "RELEASE")):
            statements.append(statement)

    from flopwise.store.session import PreparedStatement

    lines = []
    for name, method, path, body in phases:
        for _ in range(10):  # warm: the token cached, statements prepared, the catalog loaded
            status, text = await _call(app, token, method, path, body())
            assert status < 300, text
        best_cpu, best_statements = float("inf"), 0
        best_baseline = float("inf")
        modes = (True, False) if args.compare else (True,)
        for on_driver in modes * args.rounds:  # --compare: alternate rounds with the baseline
            PreparedStatement.on_driver = on_driver
            statements.clear()
            event.listen(app.state.engine, "before_cursor_execute", count)
            cpu0 = time.process_time()

            async def client(n: int, method: str = method, path: str = path, body: Any = body) -> None:
                for _ in range(n):
                    status, text = await _call(app, token, method, path, body())
                    assert status < 300, text

            per = args.count // args.concurrency
            await asyncio.gather(*(client(per) for _ in range(args.concurrency)))
            cpu = (time.process_time() - cpu0) / (per * args.concurrency)
            event.remove(app.state.engine, "before_cursor_execute", count)
            if not on_driver:
                best_baseline = min(best_baseline, cpu)
            elif cpu < best_cpu:
                best_cpu, best_statements = cpu, len(statements) / (per * args.concurrency)
        PreparedStatement.on_driver = True
        line = f"{name:<26} {best_cpu * 1e3:9.2f} {best_statements:11.1f}"
        if args.compare:
            line += f" {best_baseline * 1e3:13.2f} {best_cpu / best_baseline:7.2f}"
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per phase (the best is shown)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="alternate each round with the hot path's statements run through SQLAlchemy (PreparedStatement off: "
        "the baseline, same process) and print both",
    )
    args = parser.parse_args()
    from flopwise.server import Settings, create_app

    print(f"flopwise hot path, in-process ASGI: {args.count} requests x best of {args.rounds} rounds, "
          f"{args.concurrency} in flight; CPU ms of this process per request")  # fmt: skip
    for kind in args.databases.split(","):
        try:
            with B.database(kind) as url:
                token, org_id, project_id = B.seed(url)
                app = create_app(Settings(database_url=url))
                try:
                    lines = asyncio.run(_bench(app, token, org_id, project_id, args))
                finally:
                    app.state.engine.dispose()
        except RuntimeError as err:  # PostgreSQL unreachable
            print(f"\n{kind}: skipped ({err})")
            continue
        extra = f" {'via SQLAlchemy':>13} {'ratio':>7}" if args.compare else ""
        print(f"\n{kind:<26} {'CPU ms':>9} {'statements':>11}{extra}")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
