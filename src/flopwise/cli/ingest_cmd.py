"""``flopwise ingest SOURCE FILE|URL``: meter a usage file or endpoint into the ledger of the governance store;
``flopwise ingest runs`` and ``flopwise ingest show RUN``: what past runs did, and every row they rejected.

``ingest`` is a group whose default command is ``from``: ``flopwise ingest slurm x.txt`` is ``flopwise ingest from
slurm x.txt``. Exit codes (the table in ``cli/_common.py``): 0 the run ended ``ok``; 5 ``partial`` (some rows
rejected, listed, the others stored); 2 every row rejected, the input could not be understood at all (the run
``failed``; nothing of it was kept), or bad arguments (unknown source or region); 1 a URL that could not be
fetched or a database that cannot be reached; 130 interrupted (Ctrl-C or SIGTERM; nothing of it was kept).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from flopwise.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    CatalogDir,
    JsonFlag,
    fmt_num,
    handle_errors,
    print_json,
)


class _DefaultFrom(TyperGroup):
    """``flopwise ingest SOURCE ...`` runs ``ingest from SOURCE ...``: arguments that do not start with a
    sub-command (``runs``, ``show``, ``from``) or ``--help`` go to ``from``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["from", *args]  # options may come first too: ingest --json slurm x.txt
        return super().parse_args(ctx, args)


def _database_errors(func: Any) -> Any:
    """A database that cannot be reached, or is full, is one red line and exit 1, not a traceback (a run that
    failed on it was undone before the error got here)."""
    from flopwise.cli.scope_cmd import _database_errors as wrap

    return wrap(func)


app = typer.Typer(
    cls=_DefaultFrom,
    help="Meter usage into the ledger: `flopwise ingest SOURCE FILE|URL` (the `from` may be left out); list past "
    "runs and show their rejects.",
    no_args_is_help=True,
)

_SHOWN_REJECTS = 10


def _check_source(value: str) -> str:
    from flopwise.errors import InputError
    from flopwise.vocab import FILE_SOURCES, ingest_source

    try:
        return ingest_source(value, allowed=FILE_SOURCES)
    except InputError as err:
        raise typer.BadParameter(f"{value!r} is not a source; {err.accepted}") from None


def _parse_time(value: str | None, option: str = "--scraped-at") -> datetime | None:
    if value is None:
        return None
    from flopwise.errors import InputError

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            option, value, "give an ISO 8601 time with a zone, e.g. 2025-01-31T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise InputError(option, value, "give a time with a zone, e.g. 2025-01-31T12:00:00Z")
    return parsed


@app.command("from")
@handle_errors
@_database_errors
def ingest(
    source: Annotated[
        str,
        typer.Argument(
            help="What the input is: slurm, focus, aws-cur, azure, oci, dcgm, nvidia-smi or opencost.",
            callback=_check_source,
            show_default=False,
        ),
    ],
    target: Annotated[
        str,
        typer.Argument(
            help="A file (.gz is read too; FOCUS may be .parquet) or an http(s) URL.", show_default=False
        ),
    ],
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="FLOPWISE_DATABASE_URL",
            help="The store to write into (default: the per-user SQLite file the server uses).",
            show_default=False,
        ),
    ] = None,
    assume_tz: Annotated[
        str | None,
        typer.Option(
            "--assume-tz",
            help="IANA zone of timestamps written without one (sacct, nvidia-smi).",
            show_default=False,
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster", help="Slurm cluster name when sacct output has no Cluster field.", show_default=False
        ),
    ] = None,
    fields: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Field list of header-less input: sacct's --format list (or 'hb-jobinfo', 'xdmod') or "
            "nvidia-smi's --query-gpu list.",
            show_default=False,
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option("--delimiter", help="Field delimiter when it cannot be sniffed.", show_default=False),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            help="Catalog region of usage that names none (e.g. country:NL), for CO2e of on-prem usage.",
            show_default=False,
        ),
    ] = None,
    scraped_at: Annotated[
        str | None,
        typer.Option(
            "--scraped-at",
            help="When a DCGM scrape file was taken (default: its samples' timestamps, else its modification "
            "time, with the scrape's content as its identity).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Records per write transaction.", min=1)
    ] = 5000,
    exported_at: Annotated[
        str | None,
        typer.Option(
            "--exported-at",
            help="When the input was exported (default: the file's modification time); a charge the ledger "
            "holds from a later export is not restated by an older one.",
            show_default=False,
        ),
    ] = None,
    org: Annotated[
        str | None,
        typer.Option(
            "--org",
            envvar="FLOPWISE_ORG",
            help="The organization (name or id) the usage belongs to; its attribution rules give each record a "
            "team and project. Default: the only organization in the database, if there is exactly one.",
            show_default=False,
        ),
    ] = None,
    no_burn: Annotated[
        bool,
        typer.Option(
            "--no-burn",
            help="Skip the step after ingesting: attribution rules, settling requests with actuals, budget alerts "
            "(delivered to the organization's webhooks) and forecasts.",
        ),
    ] = False,
    overlap: Annotated[
        bool | None,
        typer.Option(
            "--overlap/--no-overlap",
            help="PostgreSQL: write each batch in a background thread while the next one is read (the same "
            "ledger either way; needs a free core). Default: on for PostgreSQL. SQLite always writes in one thread.",
            show_default=False,
        ),
    ] = None,
    catalog_dir: CatalogDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest usage from a file or URL into the ledger: idempotent (the same input twice adds nothing); a restated
    charge replaces the old value (kept as history); every rejected row listed by line and reason."""
    import getpass

    import httpx

    from flopwise.catalog import load_catalog
    from flopwise.meter.ingest import IngestOptions, ingest_source
    from flopwise.store import make_engine, make_session_factory, upgrade

    options = IngestOptions(
        assume_tz=assume_tz,
        cluster=cluster,
        fields=fields,
        delimiter=delimiter,
        region=region,
        scraped_at=_parse_time(scraped_at),
        exported_at=_parse_time(exported_at, "--exported-at"),
        batch_size=batch_size,
        actor=_actor(getpass),
        **({} if overlap is None else {"overlap": overlap}),
    )
    catalog = load_catalog(catalog_dir)
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        factory = make_session_factory(engine)
        attribute = _attributor(factory, org)
        with (
            httpx.Client(timeout=30.0, follow_redirects=True) as client,
            _progress_bar(target) as progress,
            _sigterm_as_interrupt() as stop,
        ):
            result = _run_interruptible(
                ingest_source,
                factory,
                source,
                target,
                catalog=catalog,
                options=options,
                http_client=client,
                progress=stop.checked(progress),
                attribute=attribute,
            )
            burn = None if no_burn or result.status == "failed" else _burn(factory, client, result)
        unattributed = None if result.status == "failed" else _unattributed(factory, result.run_id)
    finally:
        engine.dispose()
    if as_json:
        print_json({**result.to_dict(), "burn": burn, "unattributed": unattributed})
    else:
        _render(result)
        if unattributed:
            from flopwise.cli.scope_cmd import warn_unattributed

            warn_unattributed(unattributed, "of this run")
        if burn:
            from flopwise.cli._common import stderr_console

            stderr_console().print(
                f"after ingest: {burn['attributed_by_rule']} records attributed by rule, "
                f"{burn['attributed_by_request']} by request, {burn['unattributed']} unattributed; "
                f"{burn['settled_requests']} requests settled with actuals; {burn['new_alerts']} budget alerts, "
                f"{burn['alerts_delivered']} of {burn['alert_deliveries']} webhook deliveries succeeded",
                highlight=False,
            )
    raise typer.Exit(ingest_exit_code(result))


def ingest_exit_code(result: Any) -> int:
    """The exit code of an ingest run: ok 0; partial 5, or 2 when every row was rejected; failed 2 (the input),
    or 1 when a URL could not be fetched (the server, not the input)."""
    if result.status == "failed":
        fetch = "could not fetch" in (result.message or "")
        return EXIT_FAILURE if fetch else EXIT_BAD_INPUT
    if result.status == "partial":
        stored = result.records_inserted + result.records_duplicate + result.records_replaced
        return EXIT_BAD_INPUT if stored == 0 else EXIT_PARTIAL
    return EXIT_OK


def _attributor(factory: Any, org: str | None) -> Any:
    """(org, team, project) of each record from *org*'s attribution rules; *org* None: the only organization
    when the database has exactly one, else None (records stay unattributed until a rule matches them)."""
    from sqlalchemy import func, select

    from flopwise.meter.attribution import attribute
    from flopwise.meter.burn import _rules
    from flopwise.store import Organization, read_session
    from flopwise.store.directory import resolve_org

    with read_session(factory) as s:
        if org is not None:
            org_id = resolve_org(s, org).id
        elif s.scalar(select(func.count()).select_from(Organization)) == 1:
            org_id = s.scalar(select(Organization.id))
        else:
            return None
        rules = _rules(s, org_id)

    def owner(record: Any) -> tuple[int, int | None, int | None]:
        found = attribute(record, rules, {})
        if found.scope is None:
            return (org_id, None, None)
        return (org_id, found.scope.team_id, found.scope.project_id)

    return owner


def _unattributed(factory: Any, run_id: int) -> dict[str, Any]:
    from flopwise.store import read_session
    from flopwise.store.reports import unattributed_usage

    with read_session(factory) as s:
        return unattributed_usage(s, run_id=run_id)


def _actor(getpass: Any) -> str | None:
    """The OS user running the CLI (who ran the ingest, kept on the run and on the rows it restates)."""
    try:
        return str(getpass.getuser())[:200]
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return None


def _burn(factory: Any, client: Any, run: Any) -> dict[str, int]:
    """Attribute, settle requests with actuals, raise budget alerts (once per threshold and window), then deliver
    pending alerts to webhooks outside the write transaction (``meter.burn``, ``meter.alerts``). Incremental:
    only the rows *run* wrote, the requests they name and the budgets of their organizations, in the windows
    they fall in (and the current one). Each stage is shown on a terminal."""
    from flopwise.cli._common import stderr_console
    from flopwise.meter.alerts import deliver_pending_alerts
    from flopwise.meter.burn import apply_actuals
    from flopwise.store import write_session
    from flopwise.store.types import utcnow

    console = stderr_console()
    status = console.status("after ingest: starting") if console.is_terminal else None
    if status is not None:
        status.start()
    try:

        def progress(stage: str) -> None:
            if status is not None:
                status.update(f"after ingest: {stage}")

        with write_session(factory) as session:
            result = apply_actuals(
                session, utcnow(), touched=run.touched, run_id=run.run_id, progress=progress
            )
        progress("delivering alerts")
        deliveries = deliver_pending_alerts(factory, client, utcnow())
    finally:
        if status is not None:
            status.stop()
    return {
        "attributed_by_rule": result.attribution.by_rule,
        "attributed_by_request": result.attribution.by_request,
        "unattributed": result.attribution.unattributed,
        "settled_requests": len(result.settled),
        "new_alerts": len(result.alerts),
        "alert_deliveries": len(deliveries),
        "alerts_delivered": sum(1 for d in deliveries if d.is_delivered),
    }


class _progress_bar:  # noqa: N801 - used as a context manager, named like one
    """A Rich progress bar on stderr (bytes read / size) when stderr is a terminal; a no-op otherwise."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        from flopwise.cli._common import stderr_console

        console = stderr_console()
        if not console.is_terminal:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("ingesting"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=console
        )
        self._bar.start()
        self._task = self._bar.add_task("ingest", total=None)
        return self._update

    def _update(self, done: int, total: int | None) -> None:
        self._bar.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _render(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from flopwise.cli._common import stderr_console, stdout_console

    err = stderr_console()
    if result.status == "failed":
        err.print(
            f"[red]error:[/red] {escape(result.message or 'ingest failed')}", highlight=False, soft_wrap=True
        )
        err.print("nothing of this input was kept in the ledger")
        return
    colour = {"ok": "green", "partial": "yellow"}[result.status]
    table = Table(title=f"ingest {result.source} (run {result.run_id}): [{colour}]{result.status}[/{colour}]")
    table.add_column("")
    table.add_column("count", justify="right")
    for label, value in (
        ("rows read", result.rows_read),
        ("records inserted", result.records_inserted),
        ("records replaced (restated: new values, old kept as history)", result.records_replaced),
        ("unchanged (already in the ledger)", result.records_duplicate),
        ("  of which older than the ledger's export (not restated)", result.records_stale),
        ("rows rejected", result.rows_rejected),
        ("rows rolled up into another record", result.rows_rolled_up),
        ("records expanded from one row", result.records_expanded),
        ("reconciles", result.reconciles),
        ("cost of the inserted records (USD)", result.cost_usd),
        ("change made by the restated records (USD)", result.restated_cost_usd),
        ("device-hours", result.device_hours),
        ("energy (kWh)", result.energy_kwh),
    ):
        table.add_row(label, fmt_num(value))
    stdout_console().print(table)
    for r in result.rejects[:_SHOWN_REJECTS]:
        err.print(f"  line {r.line}: {escape(r.reason)}", highlight=False, soft_wrap=True)
    if result.rows_rejected > _SHOWN_REJECTS:
        err.print(
            f"  ... and {result.rows_rejected - _SHOWN_REJECTS} more (run {result.run_id} in ingest_rejects)"
        )


def _run_interruptible(func: Any, *args: Any, **kwargs: Any) -> Any:
    """*func*; on Ctrl-C (or SIGTERM) one line saying the run was interrupted and undone, and exit 130."""
    from flopwise.meter.ingest import IngestInterrupted

    try:
        return func(*args, **kwargs)
    except IngestInterrupted as stop:
        from flopwise.cli._common import stderr_console

        stderr_console().print(
            f"[yellow]interrupted:[/yellow] run {stop.run_id} is marked interrupted and nothing of it was kept; "
            "run the same command again to ingest the input",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


class _sigterm_as_interrupt:  # noqa: N801 - a context manager, named like one
    """While ingesting, SIGTERM (``kill PID``) stops the run like Ctrl-C does, so it is undone and marked
    ``interrupted``; the previous handler comes back afterwards. (SIGKILL cannot be caught: such a run is closed
    by the next ``flopwise ingest``.)"""

    def __enter__(self) -> _sigterm_as_interrupt:
        import signal
        import threading

        self._previous = None
        self.requested = False
        if threading.current_thread() is threading.main_thread():

            def interrupt(signum: int, frame: Any) -> None:
                self.requested = True
                raise KeyboardInterrupt

            self._previous = signal.signal(signal.SIGTERM, interrupt)
        return self

    def checked(self, progress: Any) -> Any:
        """*progress* (or nothing), after raising the interrupt a SIGTERM asked for if the handler's own raise was
        lost: CPython prints and drops an exception raised while it runs a weakref or import-lock callback (seen:
        a SIGTERM during a lazy import let a run finish). The ingest reports progress after every batch."""

        def report(done: int, total: int | None) -> None:
            if self.requested:
                raise KeyboardInterrupt
            if progress is not None:
                progress(done, total)

        return report

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FLOPWISE_DATABASE_URL",
        help="The store (default: the per-user SQLite file the server uses).",
        show_default=False,
    ),
]


def _run_dict(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "source": run.source,
        "path": run.path,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "rows_read": run.rows_read,
        "records_inserted": run.records_inserted,
        "records_replaced": run.records_replaced,
        "records_unchanged": run.records_duplicate,
        "rows_rejected": run.rows_rejected,
        "rows_rolled_up": run.rows_rolled_up,
        "actor": run.actor,
        "message": run.message,
    }


def _plain_times(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in info.items()}


@app.command("runs")
@handle_errors
@_database_errors
def runs(
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many of the latest runs.")] = 50,
    source: Annotated[
        str | None, typer.Option("--source", help="Only runs of this source.", show_default=False)
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """List ingest runs, latest first, with their counts and status (runs whose process died are closed first)."""
    from sqlalchemy import select

    from flopwise.meter.ingest import close_stale_runs
    from flopwise.store import make_engine, make_session_factory, read_session, upgrade
    from flopwise.store.ledger import IngestRun

    if source is not None:
        _check_source(source)
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        factory = make_session_factory(engine)
        close_stale_runs(factory)
        with read_session(factory) as s:
            stmt = select(IngestRun).order_by(IngestRun.id.desc()).limit(limit)
            if source is not None:
                stmt = stmt.where(IngestRun.source == source)
            rows = [_run_dict(r) for r in s.scalars(stmt)]
    finally:
        engine.dispose()
    if as_json:
        print_json([_plain_times(r) for r in rows])
        return
    from rich.table import Table

    from flopwise.cli._common import stdout_console

    table = Table(title="ingest runs")
    for name in (
        "run",
        "source",
        "status",
        "started",
        "read",
        "new",
        "replaced",
        "unchanged",
        "rejected",
        "path",
    ):
        table.add_column(name, justify="right" if name in ("run", "read", "new", "replaced", "unchanged",
                                                             "rejected") else "left")  # fmt: skip
    for r in rows:
        table.add_row(
            str(r["id"]), r["source"], r["status"], r["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
            fmt_num(r["rows_read"]), fmt_num(r["records_inserted"]), fmt_num(r["records_replaced"]),
            fmt_num(r["records_unchanged"]), fmt_num(r["rows_rejected"]), r["path"],
        )  # fmt: skip
    stdout_console().print(table)


@app.command("show")
@handle_errors
@_database_errors
def show(
    run: Annotated[int, typer.Argument(help="The run id (see `flopwise ingest runs`).", show_default=False)],
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print every reject as CSV (line, reason, raw) on stdout.")
    ] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """One run: its counts, and every row it rejected with its line and reason (streamed, all of them)."""
    import csv
    import sys

    from sqlalchemy import select

    from flopwise.errors import InputError
    from flopwise.store import make_engine, make_session_factory, read_session, upgrade
    from flopwise.store.ledger import IngestReject, IngestRun

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with read_session(make_session_factory(engine)) as s:
            row = s.get(IngestRun, run)
            if row is None:
                raise InputError(
                    "RUN", run, "no ingest run has this id; list them with `flopwise ingest runs`"
                )
            info = _run_dict(row)
            rejects = s.execute(
                select(IngestReject.line, IngestReject.reason, IngestReject.raw)
                .where(IngestReject.ingest_run_id == run)
                .order_by(IngestReject.line, IngestReject.id)
                .execution_options(yield_per=2000)
            )
            if as_csv:
                writer = csv.writer(sys.stdout, lineterminator="\n")
                writer.writerow(["line", "reason", "raw"])
                for line, reason, raw in rejects:
                    writer.writerow([line, reason, raw])
                return
            if as_json:
                print_json(
                    {
                        **_plain_times(info),
                        "rejects": [{"line": ln, "reason": r, "raw": w} for ln, r, w in rejects],
                    }
                )
                return
            _render_run(info, rejects)
    finally:
        engine.dispose()


def _render_run(info: dict[str, Any], rejects: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from flopwise.cli._common import stdout_console

    out = stdout_console()
    table = Table(title=f"ingest run {info['id']}: {info['status']}")
    table.add_column("")
    table.add_column("value")
    for key, value in info.items():
        if key != "id":
            table.add_row(key.replace("_", " "), fmt_num(value) if not isinstance(value, str) else value)
    out.print(table)
    for line, reason, _raw in rejects:
        out.print(f"line {line}: {escape(reason)}", highlight=False, soft_wrap=True)
