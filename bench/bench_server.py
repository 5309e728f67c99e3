"""Bench: the governance server over loopback, on SQLite and on PostgreSQL, with concurrent HTTP clients.

For each database and worker count the script starts ``flopwise serve --workers N`` in a child process on
127.0.0.1 (a fresh SQLite file, or a fresh PostgreSQL schema), seeds an organization, a team, a project and an admin token through the store, then applies
a budget and a policy through the API, accepts the acceptable-use policy if one is required, and drives:

* ``GET /api/v1/health`` - the baseline: HTTP, routing and JSON, no authentication, no database;
* ``GET /api/v1/me`` - bearer token lookup (sha256, prefix index) and role bindings: a read transaction;
* ``POST /api/v1/requests`` - request creation with a chosen plan: policy, budget locks, reservation and the
  audit entry in one write transaction (the write path; ``--estimate`` makes the server estimate the workload
  from a model and tokens instead, which adds the estimator's CPU);
* ``POST /api/v1/admission/decide`` - a scheduler job's worst case decided and reserved (a new job id each).

Each phase sends ``--count`` requests from ``--concurrency`` concurrent clients, after a short warm-up. The
clients are spread over ``--client-processes`` processes (threads in each, one keep-alive ``http.client``
connection per client, the standard library's lean HTTP client), so the client side is not one GIL-bound Python
process that saturates before the server: the baseline ``/health`` is measured by the same clients in the same
run. The table gives requests/s, the p50/p99 latency the clients saw, the ratio of req/s to ``/health`` on the
same server, and CPU per request of the three parties (user + system time from ``/proc``): the server's own
(the ``flopwise serve`` processes), which does not depend on how much CPU the clients took; PostgreSQL's (the
backends serving the server, found by ``application_name`` and sampled through the phase, so a connection the
server's pool closes meanwhile still counts: :class:`BackendCpu`); and the clients' (the client processes over
the timed part). Client, server and PostgreSQL share this machine's cores: where their CPU per request adds up to
the cores' time per request, the machine, not the server, sets req/s, and req/s and latencies are a floor for a
server with cores of its own.

Run: ``.venv/bin/python bench/bench_server.py [--count 400] [--concurrency 16,64] [--workers 1,2]
[--databases sqlite,postgresql] [--client-processes 4] [--estimate] [--operations health,me,create,decide]
[--serve-options '--no-access-log']``.
PostgreSQL: ``$FLOPWISE_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; skipped
with the reason if unreachable.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PG_URL = os.environ.get("FLOPWISE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
STARTUP_TIMEOUT_S = 60.0
WARMUP_PER_CLIENT = 3

POLICY_YAML = """\
name: bench
default: allow
rules:
  - id: big-runs
    description: runs over $1M need an approver
    when: {field: cost_usd, gt: 1000000}
    effect: require_approval
    approvals: 1
    role: approver
  - id: no-restricted-on-spot
    when: {all: [{field: data_classification, eq: restricted}, {field: pricing, eq: spot}]}
    effect: deny
    message: Restricted data may not run on spot capacity.
"""

#: the write path: a chosen plan (8 H100 x 10 h at $2.50), policy, budgets, reservation, audit
PLAN_BODY = {
    "workload": "train",
    "device": "h100-sxm",
    "device_count": 8,
    "usd_per_device_h": "2.50",
    "plan": {"duration_h": "10", "flops": 1e20},
}
#: with --estimate: the server estimates a LoRA fine-tune of Llama 3.1 8B on 8 H100s
REQUEST_BODY = {
    "workload": "fine-tune",
    "device": "h100-sxm",
    "device_count": 8,
    "pricing": "on_demand",
    "data_classification": "internal",
    "params": {"model": "llama-3.1-8b", "tokens": 2e9, "method": "lora"},
}


@dataclass(frozen=True)
class PhaseResult:
    name: str
    count: int
    concurrency: int
    wall_s: float
    latencies_s: tuple[float, ...]
    errors: dict[int, int]  # status -> count; 0 -> requests never answered (a client connection failed)
    server_cpu_s: float = float("nan")
    client_cpu_s: float = float("nan")  # the client processes, over the timed part
    db_cpu_s: float = float("nan")  # the PostgreSQL backends serving the server (NaN on SQLite)

    def per_request_ms(self, cpu_s: float) -> float:
        return cpu_s / self.count * 1e3 if self.count else float("nan")

    @property
    def server_cpu_ms_per_request(self) -> float:
        return self.per_request_ms(self.server_cpu_s)

    @property
    def requests_per_s(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else float("nan")

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] * 1e3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_reason_and_schema() -> tuple[str | None, Callable[[str], None] | None]:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    kwargs = {
        "host": url.host,
        "port": url.port or 5432,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    try:
        psycopg.connect(connect_timeout=3, **kwargs).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} unreachable ({exc.__class__.__name__})", None

    def admin(sql: str) -> None:
        with psycopg.connect(autocommit=True, **kwargs) as conn:
            conn.execute(sql)

    return None, admin


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, empty database URL of *kind* (``sqlite`` or ``postgresql``), removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="flopwise-bench-") as tmp:
            yield "sqlite:///" + (Path(tmp) / "flopwise.db").as_posix()
        return
    reason, admin = _pg_reason_and_schema()
    if reason or admin is None:
        raise RuntimeError(reason or "PostgreSQL unavailable")
    schema = f"flopwise_bench_{uuid.uuid4().hex[:10]}"
    admin(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        # application_name: the server's backends are found by it to read their CPU (other sessions share the
        # same PostgreSQL)
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        admin(f"DROP SCHEMA {schema} CASCADE")


def seed(database_url: str) -> tuple[str, int, int]:
    """Migrate, then add an organization, a team and project, an admin and their token: (token, org id, project id)."""
    from flopwise.server.auth import mint_token
    from flopwise.store import (
        ApiToken,
        Organization,
        Project,
        RoleBinding,
        Team,
        User,
        make_engine,
        make_session_factory,
        upgrade,
        write_session,
    )

    engine = make_engine(database_url)
    upgrade(engine)
    token, prefix, token_hash = mint_token()
    with write_session(make_session_factory(engine)) as s:
        org = Organization(name="bench")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="research")
        user = User(org_id=org.id, name="bench-admin", email="bench@example.org")
        s.add_all([team, user])
        s.flush()
        project = Project(team_id=team.id, name="llm")
        s.add(project)
        s.add(RoleBinding(user_id=user.id, role="admin", scope_kind="org", scope_id=org.id))
        s.add(ApiToken(user_id=user.id, name="bench", prefix=prefix, token_hash=token_hash))
        s.flush()
        ids = (org.id, project.id)
    engine.dispose()
    return token, ids[0], ids[1]


@contextmanager
def server(database_url: str, workers: int = 1, options: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """``flopwise serve --workers N [options]`` on a free loopback port; yields its base URL and process id."""
    port = _free_port()
    argv = ["flopwise", "serve", "--port", str(port), "--workers", str(workers), *options]
    code = f"import sys; from flopwise.cli.main import run; sys.argv = {argv!r}; run()"
    env = {**os.environ, "FLOPWISE_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(base + "/api/v1/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def setup_governance(base: str, token: str, org_id: int, project_id: int) -> list[str]:
    """A hard budget large enough for every request, the bench policy, and the AUP accepted; what was done."""
    headers = {"Authorization": f"Bearer {token}"}
    done: list[str] = []
    with httpx.Client(base_url=base + "/api/v1", headers=headers, timeout=30) as http:
        paths = http.get("/openapi.json").json().get("paths", {})
        if "/api/v1/budgets" in paths:
            r = http.post(
                "/budgets",
                json={
                    "name": "bench-month",
                    "scope_kind": "org",
                    "scope_id": org_id,
                    "period": "month",
                    "unit": "usd",
                    "amount": "1000000000",
                    "is_hard": True,
                },
            )
            r.raise_for_status()
            done.append("hard budget $1e9/month on the org")
        if "/api/v1/policies" in paths:
            r = http.post("/policies", json={"yaml": POLICY_YAML})
            r.raise_for_status()
            done.append("policy with 2 rules")
        if "/api/v1/aup" in paths:
            r = http.post("/aup", json={"text": "Use compute for the organization's work only."})
            if r.status_code == 201:
                version = r.json().get("version", 1)
                http.post(f"/aup/{version}/accept").raise_for_status()
                done.append("AUP published and accepted")
    return done


def _cpu_of(pid: int) -> float | None:
    """User + system CPU seconds of process *pid* (Linux ``/proc``), None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving *database_url* (found by its ``application_name``) over a
    phase, sampled every *interval_s* by a thread from :meth:`start` to :meth:`stop`; NaN for SQLite (its work is
    in the server's CPU) or when the backends are not on this host.

    Sampled, not read only at both ends: a backend that leaves during the phase (the connection pool closes its
    overflow connections when more than ``pool_size`` were in use) would otherwise take its CPU with it, and a
    server holding many connections at once would look cheaper on PostgreSQL than one holding few. A backend
    counts from its CPU at the first sample (from its start, when it came during the phase) to its last sample,
    so at most *interval_s* of a leaving backend's work is missed.
    """

    def __init__(self, database_url: str, interval_s: float = 0.05) -> None:
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        self._name = url.query.get("application_name")
        self._enabled = url.get_backend_name() == "postgresql" and bool(self._name)
        self._kwargs = {"host": url.host, "port": url.port or 5432, "user": url.username,
                        "password": url.password, "dbname": url.database}  # fmt: skip
        self._interval_s = interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def _sample(self, baseline: bool) -> None:
        pids = [r[0] for r in self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self._name,)
        )]  # fmt: skip
        for pid in pids:
            cpu = _cpu_of(pid)
            if cpu is None:
                continue
            self._first.setdefault(pid, cpu if baseline else 0.0)
            self._last[pid] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample(baseline=False)

    def start(self) -> None:
        if not self._enabled:
            return
        import psycopg

        self._conn = psycopg.connect(autocommit=True, **self._kwargs)
        self._sample(baseline=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        if not self._enabled or self._thread is None:
            return float("nan")
        self._stop.set()
        self._thread.join()
        self._sample(baseline=False)
        self._conn.close()
        if not self._last:
            return float("nan")  # no backend's CPU could be read (PostgreSQL on another host)
        return sum(self._last[pid] - self._first[pid] for pid in self._last)


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process *pid* and its descendants (Linux ``/proc``; NaN elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, cpu seconds)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    if pid not in stats:
        return float("nan")
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _cpu) in stats.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(stats[p][1] for p in tree)


def _client_process(
    base: str, token: str, method: str, path: str, body: Any, job_ids: bool, threads: int, share: list[int],
    tag: str, barrier: Any, results: Any,
) -> None:  # fmt: skip
    """One client process: *threads* keep-alive connections, each sending its *share* of requests after a
    warm-up and the common start barrier; puts (latencies, errors, first start, last end) on *results*."""
    host, port = base.removeprefix("http://").split(":")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[int, int] = {}
    marks: list[float] = []
    local_barrier = threading.Barrier(threads + 1)

    def payload(i: int) -> bytes | None:
        if body is None:
            return None
        if job_ids:
            return json.dumps({**body, "engine_job_id": f"{tag}-{i}"}).encode()
        return json.dumps(body).encode()

    def call(conn: http.client.HTTPConnection, i: int) -> int:
        data = payload(i)
        for attempt in (1, 2):
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                response.read()
                return response.status
            except (ConnectionError, http.client.RemoteDisconnected):
                # the server closed an idle keep-alive connection (while other clients warmed up): reconnect
                conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def worker(w: int, n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        for i in range(WARMUP_PER_CLIENT):
            call(conn, -1 - w * 1000 - i)
        local_barrier.wait()
        mine: list[float] = []
        bad: dict[int, int] = {}
        for i in range(n):
            t0 = time.perf_counter()
            status = call(conn, w * 1_000_000 + i)
            mine.append(time.perf_counter() - t0)
            if status >= 300:
                bad[status] = bad.get(status, 0) + 1
        end = time.perf_counter()
        conn.close()
        with lock:
            latencies.extend(mine)
            marks.append(end)
            for k, v in bad.items():
                errors[k] = errors.get(k, 0) + v

    pool = [threading.Thread(target=worker, args=(w, n)) for w, n in enumerate(share)]
    for t in pool:
        t.start()
    local_barrier.wait()  # every connection warm
    barrier.wait()  # every process warm
    start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
    cpu0 = time.process_time()
    for t in pool:
        t.join()
    cpu_s = time.process_time() - cpu0
    results.put((latencies, errors, start, max(marks) if marks else start, cpu_s))


def run_phase(
    name: str,
    base: str,
    token: str,
    method: str,
    path: str,
    body: Any,
    count: int,
    concurrency: int,
    *,
    server_pid: int | None = None,
    database_url: str | None = None,
    client_processes: int = 4,
    job_ids: bool = False,
) -> PhaseResult:
    """*count* calls of ``method path`` from *concurrency* clients spread over *client_processes* processes;
    latencies as the clients saw them, and the server's CPU over the phase. With *job_ids* each call's body gets
    a new ``engine_job_id``."""
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    procs_n = max(1, min(client_processes, concurrency))
    per_client = [count // concurrency + (1 if c < count % concurrency else 0) for c in range(concurrency)]
    shares = [per_client[p::procs_n] for p in range(procs_n)]
    barrier = ctx.Barrier(procs_n + 1)
    results = ctx.Queue()
    run_tag = uuid.uuid4().hex[:8]
    procs = [
        ctx.Process(
            target=_client_process,
            args=(base, token, method, path, body, job_ids, len(share), share, f"{run_tag}-{p}", barrier, results),
        )
        for p, share in enumerate(shares)
    ]  # fmt: skip
    for proc in procs:
        proc.start()
    barrier.wait()
    cpu0 = process_tree_cpu_s(server_pid) if server_pid else float("nan")
    backends = BackendCpu(database_url) if database_url else None
    if backends is not None:
        backends.start()
    collected = [results.get(timeout=600) for _ in procs]
    cpu1 = process_tree_cpu_s(server_pid) if server_pid else float("nan")
    db_cpu_s = backends.stop() if backends is not None else float("nan")
    for proc in procs:
        proc.join()
    latencies = [x for lat, _e, _s, _t, _c in collected for x in lat]
    errors: dict[int, int] = {}
    for _l, errs, _s, _t, _c in collected:
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
    if len(latencies) < count:  # a client thread died: say so in the table instead of a wrong req/s
        errors[0] = count - len(latencies)
    wall_s = max(t for _l, _e, _s, t, _c in collected) - min(s0 for _l, _e, s0, _t, _c in collected)
    client_cpu_s = sum(c for *_x, c in collected)
    return PhaseResult(
        name, count, concurrency, wall_s, tuple(latencies), errors, cpu1 - cpu0, client_cpu_s, db_cpu_s
    )


#: the phases, in the order they run (``--operations``)
OPERATIONS = ("health", "me", "create", "decide")


def bench_database(
    kind: str,
    count: int,
    clients: list[int],
    workers: int,
    estimate: bool,
    client_processes: int,
    serve_options: tuple[str, ...] = (),
    operations: tuple[str, ...] = OPERATIONS,
) -> tuple[list[PhaseResult], list[str]]:
    with database(kind) as url:
        token, org_id, project_id = seed(url)
        with server(url, workers, serve_options) as (base, pid):
            notes = setup_governance(base, token, org_id, project_id)
            create_body = {**(REQUEST_BODY if estimate else PLAN_BODY), "project_id": project_id}
            decide_body = {"engine": "slurm", "project_id": project_id, "device": "h100-sxm", "device_count": 8,
                           "max_duration_h": "10", "usd_per_device_h": "2.50"}  # fmt: skip
            options = {"server_pid": pid, "database_url": url, "client_processes": client_processes}
            phases: list[PhaseResult] = []
            for concurrency in clients:
                calls = {  # operation: (phase name, method, path, body, new job ids)
                    "health": ("GET /health", "GET", "/api/v1/health", None, False),
                    "me": ("GET /me", "GET", "/api/v1/me", None, False),
                    "create": ("POST /requests" + (" (estimate)" if estimate else ""), "POST", "/api/v1/requests",
                               create_body, False),
                    "decide": ("POST /admission/decide", "POST", "/api/v1/admission/decide", decide_body, True),
                }  # fmt: skip
                for op in OPERATIONS:
                    if op in operations:
                        name, method, path, body, job_ids = calls[op]
                        phases.append(
                            run_phase(name, base, token, method, path, body, count, concurrency, job_ids=job_ids,
                                      **options)
                        )  # fmt: skip
            notes.append(overspend_check(url))
            return phases, notes


def overspend_check(database_url: str) -> str:
    """Every hard budget's active reservations against its amount, read from the database after the run."""
    from sqlalchemy import func, select

    from flopwise.store import SPENDING_STATES, Budget, BudgetReservation, make_engine, make_session_factory

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as s:
            rows = s.execute(
                select(Budget.id, Budget.amount, func.coalesce(func.sum(BudgetReservation.amount), 0))
                .outerjoin(
                    BudgetReservation,
                    (BudgetReservation.budget_id == Budget.id) & BudgetReservation.state.in_(SPENDING_STATES),
                )
                .where(Budget.is_hard.is_(True))
                .group_by(Budget.id, Budget.amount)
            ).all()
    finally:
        engine.dispose()
    over = [f"budget {i}: {spent} > {amount}" for i, amount, spent in rows if spent > amount]
    return "hard budgets overspent: " + ("; ".join(over) if over else "none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400, help="requests per phase")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated concurrent client counts")
    parser.add_argument("--workers", default="1,2", help="comma-separated server worker process counts")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=4,
        help="client processes the concurrent clients are spread over",
    )
    parser.add_argument("--estimate", action="store_true", help="requests estimated by the server")
    parser.add_argument(
        "--serve-options",
        default="",
        help="extra options of flopwise serve, space-separated (e.g. '--no-access-log')",
    )
    parser.add_argument(
        "--operations",
        default=",".join(OPERATIONS),
        help="comma-separated phases to run: " + ", ".join(OPERATIONS) + " (the ratio needs health)",
    )
    args = parser.parse_args(argv)
    serve_options = tuple(args.serve_options.split())
    operations = tuple(o.strip() for o in args.operations.split(",") if o.strip())
    unknown = sorted(set(operations) - set(OPERATIONS))
    if unknown:
        parser.error(f"--operations: unknown {', '.join(unknown)}; give some of {', '.join(OPERATIONS)}")
    clients = [int(c) for c in args.concurrency.split(",") if c.strip()]
    print(
        f"flopwise server bench: {args.count} requests per phase, {os.cpu_count()} CPUs shared by the clients and "
        f"the server (flopwise serve{''.join(' ' + o for o in serve_options)} on 127.0.0.1) and "
        f"{args.client_processes} client processes"
    )
    header = (
        f"{'database':<11} {'workers':>7} {'clients':>7} {'operation':<28} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'x health':>8} {'srv CPU ms':>10} {'db CPU ms':>9} {'cli CPU ms':>10}  non-2xx"
    )
    for kind in [k.strip() for k in args.databases.split(",") if k.strip()]:
        for workers in [int(w) for w in args.workers.split(",") if w.strip()]:
            try:
                phases, notes = bench_database(
                    kind, args.count, clients, workers, args.estimate, args.client_processes, serve_options,
                    operations,
                )  # fmt: skip
            except RuntimeError as exc:
                print(f"{kind}: skipped ({exc})")
                continue
            print()
            for note in notes:
                print(f"{kind}: {note}")
            print(header)
            health: dict[int, float] = {}
            for p in phases:
                if p.name == "GET /health":
                    health[p.concurrency] = p.requests_per_s
                ratio = (
                    p.requests_per_s / health[p.concurrency] if health.get(p.concurrency) else float("nan")
                )
                errs = ", ".join(f"{k}x{v}" for k, v in sorted(p.errors.items())) or "-"
                print(
                    f"{kind:<11} {workers:>7} {p.concurrency:>7} {p.name:<28} {p.requests_per_s:>8.1f} "
                    f"{p.quantile_ms(0.50):>8.1f} {p.quantile_ms(0.99):>8.1f} {ratio:>8.2f} "
                    f"{p.server_cpu_ms_per_request:>10.2f} {p.per_request_ms(p.db_cpu_s):>9.2f} "
                    f"{p.per_request_ms(p.client_cpu_s):>10.2f}  {errs}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
