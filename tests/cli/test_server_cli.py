"""`flopwise admin bootstrap`, `flopwise serve --get` and `flopwise audit verify` on a SQLite file: the token is
printed once and works, a second bootstrap is refused, --get exits 1 on non-2xx, a tampered audit log exits 1
naming the entry; and none of these commands' --help imports SQLAlchemy or FastAPI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from flopwise.cli.main import app

runner = CliRunner()


@pytest.fixture
def db_url(tmp_path) -> str:
    return "sqlite:///" + (tmp_path / "flopwise.db").as_posix()


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_bootstrap_prints_the_token_once_and_it_works(db_url):
    result = _run("admin", "bootstrap", "--org", "acme", "--admin", "ada", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("fw_") and "\n" not in token
    me = _run("serve", "--database-url", db_url, "--get", "/api/v1/me", "--token", token)
    assert me.exit_code == 0, me.output
    assert json.loads(me.stdout)["user_name"] == "ada"

    again = _run("admin", "bootstrap", "--org", "acme2", "--database-url", db_url)
    assert again.exit_code == 2 and "already has an organization ('acme')" in again.stderr

    second = _run(
        "admin", "bootstrap", "--org", "beta", "--allow-existing", "--json", "--database-url", db_url
    )
    assert second.exit_code == 0, second.output
    made = json.loads(second.stdout)
    assert (
        made["org"]["name"] == "beta" and made["user"]["name"] == "admin" and made["token"].startswith("fw_")
    )
    assert made["token_expires_at"]
    dup = _run("admin", "bootstrap", "--org", "beta", "--allow-existing", "--database-url", db_url)
    assert dup.exit_code == 2 and "choose another name" in dup.stderr


def test_serve_get_works_where_an_event_loop_already_runs(db_url):
    """`serve --get` called from code that runs an event loop in its thread (a notebook, a sync Playwright session:
    pytest-playwright keeps one running for the whole test session) answers instead of failing with
    "asyncio.run() cannot be called from a running event loop"."""
    import asyncio

    async def inside_a_loop():
        return _run("serve", "--database-url", db_url, "--get", "/api/v1/health")

    try:  # the browser tests' sync Playwright session, when they ran first, keeps a loop running in this thread
        asyncio.get_running_loop()
    except RuntimeError:
        health = asyncio.run(inside_a_loop())
    else:
        health = _run("serve", "--database-url", db_url, "--get", "/api/v1/health")
    assert health.exit_code == 0, health.output
    assert json.loads(health.stdout)["database"] == "sqlite"


def test_serve_get_exit_codes(db_url):
    health = _run("serve", "--database-url", db_url, "--get", "/api/v1/health")
    assert health.exit_code == 0, health.output
    assert json.loads(health.stdout)["database"] == "sqlite"
    denied = _run("serve", "--database-url", db_url, "--get", "api/v1/me")
    assert denied.exit_code == 1
    assert json.loads(denied.stdout)["status"] == 401 and "answered 401" in denied.stderr
    assert _run("serve", "--database-url", db_url, "--get", "/api/v1/nope").exit_code == 1


def test_bad_database_url_is_one_line_not_a_traceback():
    result = _run("audit", "verify", "--database-url", "mysql://x@y/z")
    assert result.exit_code == 2 and "flopwise supports SQLite" in result.stderr
    assert "Traceback" not in result.output


def test_audit_verify_ok_tampered_and_anchor(db_url):
    from sqlalchemy import create_engine, text

    token = _run("admin", "bootstrap", "--database-url", db_url).stdout.strip()
    assert _run("serve", "--database-url", db_url, "--get", "/api/v1/me", "--token", token).exit_code == 0
    from flopwise.server import Settings, create_app

    with_app = create_app(Settings(database_url=db_url))
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient
        with TestClient(with_app) as client:
            for name in ("a", "b", "c"):
                response = client.post(
                    "/api/v1/teams", json={"name": name}, headers={"Authorization": f"Bearer {token}"}
                )
                assert response.status_code == 201
    finally:
        with_app.state.engine.dispose()

    ok = _run("audit", "verify", "--database-url", db_url, "--json")
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["is_ok"] and report["checked"] == 4 and report["head_seq"] == 4
    anchor = f"{report['head_seq']}:{report['head_hash']}"
    human = _run("audit", "verify", "--database-url", db_url, "--anchor", anchor)
    assert human.exit_code == 0 and "4 entries verified" in human.stdout
    assert _run("audit", "verify", "--database-url", db_url, "--anchor", "4:zz").exit_code == 2

    engine = create_engine(db_url)
    with engine.begin() as conn:  # someone edits a payload behind flopwise's back
        conn.execute(text('UPDATE audit_log SET payload = \'{"team_id": 99, "name": "x"}\' WHERE seq = 3'))
    broken = _run("audit", "verify", "--database-url", db_url)
    assert broken.exit_code == 1
    assert "audit log broken at entry 3" in broken.stderr and "edited" in broken.stderr
    as_json = _run("audit", "verify", "--database-url", db_url, "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["first_bad_seq"] == 3

    with engine.begin() as conn:  # deleting the tail: the organization's chain head no longer matches
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 3"))
    cut = _run("audit", "verify", "--database-url", db_url)
    assert cut.exit_code == 1 and "deleted" in cut.stderr
    cut = _run("audit", "verify", "--database-url", db_url, "--anchor", anchor)
    assert cut.exit_code == 1 and "deleted" in cut.stderr
    engine.dispose()


def test_verify_on_a_database_without_schema(tmp_path):
    url = "sqlite:///" + (tmp_path / "empty.db").as_posix()
    missing = _run("audit", "verify", "--database-url", url)
    assert missing.exit_code == 2 and "no database file" in missing.stderr  # a read creates no file
    assert not (tmp_path / "empty.db").exists()
    (tmp_path / "empty.db").touch()  # an empty file is an empty SQLite database
    result = _run("audit", "verify", "--database-url", url)
    assert result.exit_code == 1 and "no flopwise schema" in result.stderr


PROBE = """
import sys
from flopwise.cli.main import app
try:
    app(args={args!r}, standalone_mode=False)
except SystemExit:
    pass
print("\\nMODULES=" + ",".join(m for m in ("sqlalchemy", "fastapi", "uvicorn") if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args", [["serve", "--help"], ["admin", "bootstrap", "--help"], ["audit", "verify", "--help"]]
)
def test_help_imports_nothing_heavy(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60
    )
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("MODULES=")][-1]
    assert line == "MODULES=", f"{args} imported {line}"


def test_listening_socket_gives_accepted_connections_tcp_nodelay():
    """asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP; without it a response written as
    headers then body waits for the client's delayed ACK (40 ms a request on Linux)."""
    import asyncio
    import concurrent.futures
    import socket

    from flopwise.cli.server_cmd import bind_listening_socket

    sock = bind_listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[override]
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    # in a thread of its own: the browser tests' sync Playwright session, when they ran first, keeps a loop
    # running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main()).result()
    assert seen and seen[0] != 0


@pytest.mark.parametrize("workers", [1, 2])
def test_keep_alive_requests_do_not_wait_for_delayed_acks(tmp_path, workers):
    """A real ``flopwise serve``: sequential keep-alive GETs on one connection answer in about a millisecond, not
    the 40 ms of a Nagle / delayed-ACK stall (the median of 30 must stay under 25 ms even on a loaded machine)."""
    import http.client
    import time

    from served import served

    with served("sqlite:///" + (tmp_path / "f.db").as_posix(), tmp_path, workers=workers) as (base, _token):
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        times_ms = []
        for _ in range(30):
            start = time.perf_counter()
            conn.request("GET", "/api/v1/health")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            times_ms.append((time.perf_counter() - start) * 1000)
        conn.close()
    times_ms.sort()
    assert times_ms[15] < 25, times_ms


@pytest.mark.parametrize(("workers", "options", "logged"), [(1, (), True), (1, ("--no-access-log",), False),
                                                             (2, ("--no-access-log",), False)])  # fmt: skip
def test_access_log_on_by_default_and_off_with_no_access_log(tmp_path, workers, options, logged):
    """One access-log line per request (on stdout) by default; ``--no-access-log`` (one process or several)
    leaves it out while startup is still logged."""
    import time

    import httpx

    from served import served

    with served(
        "sqlite:///" + (tmp_path / "f.db").as_posix(), tmp_path, workers=workers, options=options
    ) as (
        base,
        _token,
    ):
        assert httpx.get(f"{base}/api/v1/me", timeout=10).status_code == 401
        time.sleep(0.5)  # the log line is written after the response
    log = (tmp_path / "serve.log").read_text()
    assert "Uvicorn running" in log or "Application startup complete" in log, log
    assert ('"GET /api/v1/me HTTP/1.1" 401' in log) is logged, log


def test_write_threads_sizes_the_write_limiter_and_refuses_zero(db_url):
    """``--write-threads N`` (``FLOPWISE_WRITE_THREADS``, ``Settings.write_threads``) is how many request creations
    and admission decisions a worker runs at once; 0 is bad input (exit 2), not a server that never writes."""
    from flopwise.server import Settings, create_app

    bad = _run("serve", "--database-url", db_url, "--write-threads", "0", "--get", "/api/v1/health")
    assert bad.exit_code == 2, bad.output
    ok = _run("serve", "--database-url", db_url, "--write-threads", "3", "--get", "/api/v1/health")
    assert ok.exit_code == 0, ok.output
    app = create_app(Settings(database_url=db_url, write_threads=3))
    try:
        assert app.state.write_limiter.total_tokens == 3
    finally:
        app.state.engine.dispose()
    default = create_app(Settings(database_url=db_url))
    try:
        assert default.state.write_limiter.total_tokens == 40  # SQLite: anyio's pool size, as before the limit
    finally:
        default.state.engine.dispose()


def test_write_threads_default_on_postgresql_is_shared_out_among_the_workers():
    """On PostgreSQL the default (4) is the server's in all: ``--workers 2`` gives each worker 2, at least 1."""
    from flopwise.server import Settings

    settings = Settings(database_url="postgresql+psycopg://flopwise@db.invalid/flopwise")
    assert [settings.resolved_write_threads(w) for w in (1, 2, 3, 8)] == [4, 2, 1, 1]
    assert settings.model_copy(update={"write_threads": 3}).resolved_write_threads(2) == 3


@pytest.mark.parametrize(("options", "expected"), [((), 40), (("--workers", "2"), 40),
                                                   (("--workers", "2", "--write-threads", "3"), 3)])  # fmt: skip
def test_serve_passes_the_write_threads_on(db_url, monkeypatch, options, expected):
    """``flopwise serve`` builds the app with the threads per worker: given, or the database's default."""
    import flopwise.server

    seen = []
    real = flopwise.server.create_app

    def spy(settings=None):
        seen.append(settings.write_threads)
        return real(settings)

    monkeypatch.delenv("FLOPWISE_WRITE_THREADS", raising=False)
    monkeypatch.setattr(flopwise.server, "create_app", spy)
    result = _run("serve", "--database-url", db_url, *options, "--get", "/api/v1/health")
    assert result.exit_code == 0, result.output
    assert seen == [expected]
