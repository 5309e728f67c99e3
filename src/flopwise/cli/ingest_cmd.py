"""``flopwise ingest SOURCE FILE|URL``: meter a usage file or endpoint into the ledger of the governance store.

Exit codes (the table in ``cli/_common.py``): 0 the run ended ``ok``; 5 ``partial`` (some rows rejected, listed,
the others stored); 2 every row rejected, the input could not be understood at all (the run ``failed``; nothing
of it was kept), or bad arguments (unknown source or region); 1 a URL that could not be fetched or a database
that cannot be reached.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from flopwise.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    CatalogDir,
    JsonFlag,
    fmt_num,
    handle_errors,
    print_json,
)

_SHOWN_REJECTS = 10


def _check_source(value: str) -> str:
    from flopwise.errors import InputError
    from flopwise.vocab import FILE_SOURCES, ingest_source

    try:
        return ingest_source(value, allowed=FILE_SOURCES)
    except InputError as err:
        raise typer.BadParameter(f"{value!r} is not a source; {err.accepted}") from None


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    from flopwise.errors import InputError

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            "--scraped-at", value, "give an ISO 8601 time with a zone, e.g. 2025-01-31T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise InputError("--scraped-at", value, "give a time with a zone, e.g. 2025-01-31T12:00:00Z")
    return parsed


@handle_errors
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
            help="When a DCGM scrape file was taken (default: its modification time).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Records per write transaction.", min=1)
    ] = 5000,
    no_burn: Annotated[
        bool,
        typer.Option(
            "--no-burn",
            help="Skip the step after ingesting: attribution rules, settling requests with actuals, budget alerts "
            "(delivered to the organization's webhooks) and forecasts.",
        ),
    ] = False,
    catalog_dir: CatalogDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest usage from a file or URL into the ledger: idempotent (the same input twice adds nothing), with
    every rejected row listed by line and reason."""
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
        batch_size=batch_size,
    )
    catalog = load_catalog(catalog_dir)
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        factory = make_session_factory(engine)
        with httpx.Client(timeout=30.0, follow_redirects=True) as client, _progress_bar(target) as progress:
            result = ingest_source(
                factory,
                source,
                target,
                catalog=catalog,
                options=options,
                http_client=client,
                progress=progress,
            )
            burn = None if no_burn or result.status == "failed" else _burn(factory, client)
    finally:
        engine.dispose()
    if as_json:
        print_json({**result.to_dict(), "burn": burn})
    else:
        _render(result)
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
        stored = result.records_inserted + result.records_duplicate
        return EXIT_BAD_INPUT if stored == 0 else EXIT_PARTIAL
    return EXIT_OK


def _burn(factory: Any, client: Any) -> dict[str, int]:
    """Attribute, settle requests with actuals, raise budget alerts (once per threshold and window), then deliver
    pending alerts to webhooks outside the write transaction (``meter.burn``, ``meter.alerts``)."""
    from flopwise.meter.alerts import deliver_pending_alerts
    from flopwise.meter.burn import apply_actuals
    from flopwise.store import write_session
    from flopwise.store.types import utcnow

    with write_session(factory) as session:
        result = apply_actuals(session, utcnow())
    deliveries = deliver_pending_alerts(factory, client, utcnow())
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
        ("duplicates (already in the ledger)", result.records_duplicate),
        ("rows rejected", result.rows_rejected),
        ("rows rolled up into another record", result.rows_rolled_up),
        ("records expanded from one row", result.records_expanded),
        ("reconciles", result.reconciles),
        ("cost of these records (USD)", result.cost_usd),
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
