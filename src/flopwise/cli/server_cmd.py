"""`flopwise serve`, `flopwise admin bootstrap`, `flopwise audit verify`: run and administer the governance server.

Nothing heavy is imported here at module level (SQLAlchemy, FastAPI and uvicorn load inside the commands), so
`flopwise --help` stays fast. These commands talk to the database directly; the client commands (`flopwise
request ...`) talk to a running server instead.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from flopwise.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    JsonFlag,
    _fail,
    handle_errors,
    print_json,
    stderr_console,
)

__all__ = ["admin_app", "audit_app", "bootstrap_cmd", "demo_cmd", "serve", "verify_cmd"]

admin_app = typer.Typer(help="Administer the governance server's database directly.", no_args_is_help=True)
audit_app = typer.Typer(help="Inspect the hash-chained audit log.", no_args_is_help=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FLOPWISE_DATABASE_URL",
        help="SQLAlchemy URL (sqlite:///file.db or postgresql+psycopg://user@host/db); default: flopwise.db in "
        "the per-user data directory.",
        show_default=False,
    ),
]


def _database_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """A database that cannot be reached or read is one red line and exit code 1, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(*args, **kwargs)
        except SQLAlchemyError as err:
            first = str(getattr(err, "orig", None) or err).strip().splitlines()
            _fail(
                f"database error: {first[0] if first else type(err).__name__}. Check --database-url "
                "(or FLOPWISE_DATABASE_URL) and that the database server is running.",
                EXIT_FAILURE,
            )

    return wrapper


def _settings(database_url: str | None):
    from flopwise.server import Settings

    return Settings(database_url=database_url) if database_url else Settings()


def _shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _get_once(app: Any, path: str, token: str | None) -> tuple[int, str, str]:
    """One in-process request (no socket), the datasette ``--get`` trick: (status, content type, body)."""
    import asyncio

    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flopwise.local") as client:
            return await client.get(path, headers=headers)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        response = asyncio.run(go())
    else:  # called where an event loop already runs in this thread (a notebook, a sync Playwright session)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            response = pool.submit(asyncio.run, go()).result()
    return response.status_code, response.headers.get("content-type", ""), response.text


@handle_errors
@_database_errors
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    get: Annotated[
        str | None,
        typer.Option(
            "--get",
            help="Send one GET to this path in-process (e.g. /api/v1/health), print the response and exit: 0 on "
            "a 2xx status, 1 otherwise. No port is opened.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="FLOPWISE_TOKEN", help="Bearer token sent with --get.", show_default=False
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Serve a fresh demo organization (a quarter of usage, budgets, pending requests) from a temporary "
            "SQLite file, deleted on exit; the users' login tokens are printed.",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Worker processes (each with its own connection pool; use PostgreSQL for >1)."
        ),
    ] = 1,
    write_threads: Annotated[
        int | None,
        typer.Option(
            "--write-threads",
            min=1,
            max=64,
            envvar="FLOPWISE_WRITE_THREADS",
            help="Threads each worker runs request creations and admission decisions in at once; more wait their "
            "turn. Default on PostgreSQL: 4 shared out among the workers (2 each with --workers 2, at least 1); on "
            "SQLite 40 (see docs/server.md).",
            show_default=False,
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request to standard output (uvicorn's access log); off saves the server CPU "
            "of formatting and writing it (see docs/server.md). Startup and errors go to stderr either way.",
        ),
    ] = True,
) -> None:
    """Run the governance API (under /api/v1) and the web dashboard (at /), migrating the database first."""
    from flopwise.server import create_app

    tmp_dir = None
    if demo:
        import tempfile
        from pathlib import Path

        if workers > 1:
            _fail("--demo serves the dashboard from one process: leave out --workers", EXIT_BAD_INPUT)
        if database_url:
            _fail(
                "--demo builds its own temporary database: leave out --database-url (or run `flopwise demo`)",
                EXIT_BAD_INPUT,
            )
        tmp_dir = tempfile.TemporaryDirectory(prefix="flopwise-demo-")
        database_url = f"sqlite:///{Path(tmp_dir.name) / 'demo.db'}"
    settings = _settings(database_url)
    # per worker: the default (PostgreSQL) is the server's in all, shared out among the workers
    write_threads = write_threads or settings.resolved_write_threads(workers)
    settings = settings.model_copy(update={"write_threads": write_threads})
    app = create_app(settings)
    if demo:
        _print_demo(_fill_demo(app), f"http://{host}:{port}/")
    try:
        if get is not None:
            path = get if get.startswith("/") else "/" + get
            status, content_type, body = _get_once(app, path, token)
            if "json" in content_type:
                with contextlib.suppress(ValueError):
                    body = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
            sys.stdout.write(body + ("\n" if not body.endswith("\n") else ""))
            if not 200 <= status < 300:
                stderr_console().print(f"[red]GET {path} answered {status}[/red]", highlight=False)
                raise typer.Exit(EXIT_FAILURE)
            return
        import uvicorn

        sock = bind_listening_socket(host, port)  # before anything says the server is up
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="info", access_log=access_log)
        )
        stderr_console().print(
            f"flopwise dashboard on http://{host}:{port}/, API on http://{host}:{port}/api/v1 (docs /api/v1/docs), database "
            f"{_shown_url(settings.resolved_database_url())}",
            highlight=False,
        )
        if workers > 1:
            # several processes (dashboard sessions are rows of the database, so a login works on every one) on the socket bound above: each builds its app from the environment; the
            # database is migrated already (above)
            import os

            os.environ["FLOPWISE_DATABASE_URL"] = settings.resolved_database_url()
            os.environ["FLOPWISE_MIGRATE_ON_START"] = "false"
            if settings.catalog_dir:
                os.environ["FLOPWISE_CATALOG_DIR"] = settings.catalog_dir
            os.environ["FLOPWISE_MAX_BODY_BYTES"] = str(settings.max_body_bytes)
            os.environ["FLOPWISE_WRITE_THREADS"] = str(settings.write_threads)
            app.state.engine.dispose()
            from uvicorn.supervisors import Multiprocess

            # the bound socket itself goes to the workers (not its fd number: uvicorn rebuilds an fd as an AF_UNIX
            # socket, and asyncio then leaves TCP_NODELAY off on every connection it accepts)
            config = uvicorn.Config(
                "flopwise.server.app:app_from_env", factory=True, workers=workers, log_level="info",
                access_log=access_log,
            )  # fmt: skip
            try:
                Multiprocess(config, sockets=[sock]).run()
            except KeyboardInterrupt:
                pass
            finally:
                sock.close()
            return
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
        if not server.started:
            _fail("the API did not start (see the log above)", EXIT_FAILURE)
    finally:
        app.state.engine.dispose()
        if tmp_dir is not None:
            tmp_dir.cleanup()


def _fill_demo(app: Any) -> Any:
    from flopwise.server.demo import build_demo, demo_now
    from flopwise.server.deps import get_catalog

    class _Request:  # get_catalog reads request.app.state
        pass

    request = _Request()
    request.app = app  # type: ignore[attr-defined]
    return build_demo(app.state.db, get_catalog(request), app.state.settings, demo_now())


def _print_demo(result: Any, url: str) -> None:
    console = stderr_console()
    console.print(
        f"Demo organization 'acme' (id {result.org_id}): {result.usage_records:,} usage records over the last "
        f"quarter, requests {', '.join(f'{n} {s}' for s, n in sorted(result.requests.items()))}.\n"
        f"Open {url} and log in with one of these API tokens (each user has a different role):",
        highlight=False,
        soft_wrap=True,
    )
    for name, token in result.tokens.items():
        sys.stdout.write(f"{name:4} {result.roles[name]:26} {token}\n")
    sys.stdout.flush()


@handle_errors
@_database_errors
def demo_cmd(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Where to build the demo (SQLAlchemy URL); default: flopwise-demo.db in the per-user data "
            "directory. It must hold no organization yet.",
            show_default=False,
        ),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the default demo file first and build it again.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Build a demo organization (teams, users per role, budgets, a quarter of usage, pending requests) and print
    how to open it in the dashboard."""
    from sqlalchemy import select

    from flopwise.server import create_app
    from flopwise.store import Organization, read_session, user_data_dir

    if database_url is None:
        path = user_data_dir() / "flopwise-demo.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        if reset and path.exists():
            path.unlink()
        database_url = f"sqlite:///{path}"
    elif reset:
        _fail(
            "--reset only deletes the default demo file; for --database-url, drop that database yourself",
            EXIT_BAD_INPUT,
        )
    app = create_app(_settings(database_url))
    try:
        with read_session(app.state.db) as s:
            existing = s.scalar(select(Organization.name).limit(1))
        if existing is not None:
            _fail(
                f"{_shown_url(database_url)} already holds organization {existing!r}; the demo needs an empty "
                "database: run `flopwise demo --reset` (default file) or give another --database-url",
                EXIT_BAD_INPUT,
            )
        result = _fill_demo(app)
    finally:
        app.state.engine.dispose()
    if json_out:
        print_json(
            {
                "database_url": _shown_url(database_url),
                "org_id": result.org_id,
                "usage_records": result.usage_records,
                "requests": result.requests,
                "users": [{"name": n, "role": result.roles[n], "token": t} for n, t in result.tokens.items()],
            }
        )
        return
    _print_demo(result, "http://127.0.0.1:8000/ (after `flopwise serve --database-url " + database_url + "`)")


def bind_listening_socket(host: str, port: int) -> Any:
    """A TCP socket bound to (*host*, *port*) as uvicorn binds it; a port in use or an address this machine does
    not have is one line and exit 1 (a failure, not bad input: the same command works once the port is free)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        _fail(f"cannot listen on {host}:{port}: unknown host ({err.strerror})", EXIT_FAILURE)
    # proto=IPPROTO_TCP as uvicorn's own bind: asyncio sets TCP_NODELAY only on accepted sockets whose proto says
    # TCP, and without it every response written in two parts (headers, then body) waits for the client's delayed
    # ACK, 40 ms on Linux (measured: 44 ms per keep-alive GET /api/v1/health before, under 1 ms after)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        reason = "the port is in use by another process" if err.errno == errno.EADDRINUSE else err.strerror
        _fail(f"cannot listen on {host}:{port}: {reason}; stop that process or pass --port", EXIT_FAILURE)
    sock.set_inheritable(True)
    return sock


@admin_app.command("bootstrap")
@handle_errors
@_database_errors
def bootstrap_cmd(
    org: Annotated[str, typer.Option("--org", help="Name of the first organization.")] = "default",
    admin: Annotated[str, typer.Option("--admin", help="Name of its admin user.")] = "admin",
    email: Annotated[str | None, typer.Option(help="The admin's email address.", show_default=False)] = None,
    ttl_days: Annotated[
        float,
        typer.Option("--ttl-days", min=0.001, max=3650, help="Lifetime of the admin's token, in days."),
    ] = 90.0,
    allow_existing: Annotated[
        bool,
        typer.Option(
            "--allow-existing",
            help="Create another, separate organization when the database has one already.",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """Create the first organization, its admin and the admin's API token, and print the token (shown once)."""
    from flopwise.server.bootstrap import bootstrap
    from flopwise.store import make_engine, make_session_factory, upgrade, utcnow

    url = _settings(database_url).resolved_database_url()
    engine = make_engine(url)
    try:
        upgrade(engine)
        now = utcnow()
        org_row, user, token = bootstrap(
            make_session_factory(engine),
            org,
            admin,
            now,
            allow_existing=allow_existing,
            token_ttl_days=ttl_days,
            email=email,
        )
    finally:
        engine.dispose()
    from datetime import timedelta

    expires_at = (now + timedelta(days=ttl_days)).isoformat()
    if json_out:
        print_json(
            {
                "org": {"id": org_row.id, "name": org_row.name},
                "user": {"id": user.id, "name": user.name},
                "token": token,
                "token_expires_at": expires_at,
                "database_url": _shown_url(url),
            }
        )
        return
    console = stderr_console()
    console.print(
        f"Created organization {org_row.name!r} (id {org_row.id}) and its admin {user.name!r} (id {user.id}) in "
        f"{_shown_url(url)}.\nThe admin's API token follows; it expires {expires_at} and is shown only now:",
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.write(token + "\n")


def _parse_anchor(anchor: str | None) -> tuple[int, str] | None:
    from flopwise.errors import InputError

    if anchor is None:
        return None
    seq_text, _, digest = anchor.partition(":")
    if not seq_text.isdigit() or int(seq_text) < 1 or len(digest) != 64:
        raise InputError(
            "--anchor", anchor, "give SEQ:HASH, e.g. '42:' followed by the entry's 64-hex-digit hash"
        )
    return int(seq_text), digest.lower()


@audit_app.command("verify")
@handle_errors
@_database_errors
def verify_cmd(
    database_url: DatabaseUrl = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="SEQ:HASH of an entry recorded earlier outside the database (a previous run's head); then a "
            "deleted or rewritten tail is detected too.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Recompute the audit log's hash chain; exit 1 naming the first edited, inserted or deleted entry."""
    from flopwise.server.api.audit import verify_audit_log
    from flopwise.store import current_revision, make_engine, make_session_factory, read_session

    expected_head = _parse_anchor(anchor)
    url = _settings(database_url).resolved_database_url()
    engine = make_engine(url, must_exist=True)
    try:
        if current_revision(engine) is None:
            _fail(
                f"{_shown_url(url)} has no flopwise schema; run `flopwise admin bootstrap` or `flopwise serve` "
                "on it first, or give the right --database-url",
                EXIT_FAILURE,
            )
        with read_session(make_session_factory(engine)) as s:
            result = verify_audit_log(s, expected_head)
    finally:
        engine.dispose()
    payload = {
        "is_ok": result.is_ok,
        "checked": result.checked,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "head_seq": result.head_seq,
        "head_hash": result.head_hash,
    }
    if json_out:
        print_json(payload)
    elif result.is_ok:
        sys.stdout.write(
            f"audit log OK: {result.checked} entries verified; head {result.head_seq}:{result.head_hash}\n"
        )
    if not result.is_ok:
        stderr_console().print(
            f"[red]error:[/red] audit log broken at entry {result.first_bad_seq}: {result.reason} "
            f"({result.checked} entries before it verified)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILURE)
