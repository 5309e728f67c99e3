"""`flopwise report usage|concentration|export-focus`: reports over the usage ledger in the local store.

The store is ``--database-url`` (or ``$FLOPWISE_DATABASE_URL``; default the per-user SQLite file that
``flopwise ingest`` and the server use). Stdout carries only data: a table, ``--json`` or ``--csv``.
Exit codes: 0 ok; 2 bad input (an unknown group, a time without a zone).
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from flopwise.cli._common import EXIT_FAILURE, JsonFlag, fmt_num, handle_errors, print_json, stderr_console

app = typer.Typer(
    help="Reports over the usage ledger: usage by group, concentration, FOCUS export.", no_args_is_help=True
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FLOPWISE_DATABASE_URL",
        help="The store to read (default: the per-user SQLite file the server uses).",
        show_default=False,
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Start (inclusive), ISO 8601 with a zone or a date (UTC): 2025-03-01.",
        show_default=False,
    ),
]
ToOpt = Annotated[
    str | None,
    typer.Option(
        "--to", help="End (exclusive), ISO 8601 with a zone or a date (UTC): 2025-04-01.", show_default=False
    ),
]
GROUPS = (
    "org", "team", "project", "device", "provider", "region", "source", "day", "month",
    "service", "service_category", "charge_category", "sub_account",
)  # fmt: skip
COLUMNS = (
    "key", "label", "records", "device_hours", "cost_usd", "energy_kwh", "co2e_kg", "idle_device_hours",
    "idle_cost_usd", "utilization_frac", "idle_frac", "uncosted_records", "billed_cost", "effective_cost",
    "node_energy_kwh", "facility_energy_kwh", "device_co2e_kg", "node_co2e_kg", "facility_co2e_kg",
)  # fmt: skip


def parse_time(name: str, text: str | None) -> datetime | None:
    """``2025-03-01`` (midnight UTC) or an ISO 8601 time with a zone; InputError otherwise."""
    from datetime import UTC

    from flopwise.errors import InputError

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--{name}", text, "give a date (2025-03-01) or an ISO 8601 time with a zone"
        ) from None
    if len(text.strip()) == 10:  # a bare date: midnight UTC
        return value.replace(tzinfo=UTC)
    if value.tzinfo is None:
        raise InputError(
            f"--{name}", text, "add a zone, e.g. 2025-03-01T00:00:00Z (or give a bare date, read as UTC)"
        )
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _session(database_url: str | None):
    from flopwise.store import make_engine, make_session_factory, read_session, upgrade

    engine = make_engine(database_url, must_exist=True)
    upgrade(engine)
    return engine, read_session(make_session_factory(engine))


@app.command("usage")
@handle_errors
def usage(
    group_by: Annotated[
        str | None,
        typer.Option("--group-by", help=f"One of {', '.join(GROUPS)}.", show_default=False),
    ] = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    org_id: Annotated[int | None, typer.Option("--org-id", help="Only this organization's usage.")] = None,
    as_json: JsonFlag = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV (the groups, or the total) on stdout.")
    ] = False,
    as_of: Annotated[
        int | None,
        typer.Option(
            "--as-of",
            help="The ledger as it stood when this ingest run ended (restated charges at their value then); "
            "run ids: `flopwise ingest runs`.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Device-hours, cost, energy, CO2e, idle and utilization, in total and per group."""
    from flopwise.errors import InputError
    from flopwise.store.reports import usage_report

    if group_by is not None and group_by not in GROUPS:
        raise InputError("--group-by", group_by, f"use one of {', '.join(GROUPS)}")
    from flopwise.api import DEFAULT_COUNTRY_REGION
    from flopwise.catalog import load_catalog

    start, end = parse_time("from", from_), parse_time("to", to)
    default_region = dict(load_catalog().regions).get(DEFAULT_COUNTRY_REGION)
    engine, session_cm = _session(database_url)
    try:
        with session_cm as session:
            report = usage_report(
                session, group_by, start, end, org_id, default_region=default_region, as_of=as_of
            )
    finally:
        engine.dispose()
    for warning in report["warnings"]:
        stderr_console().print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if not as_json and not as_csv and report["total"]["energy_kwh"]:
        b = report["energy_boundaries"]
        stderr_console().print(
            f"energy boundaries: node = {b['node']}; facility = {b['facility']}", highlight=False, soft_wrap=True
        )
    for note in report["notes"]:
        stderr_console().print(f"note: {note}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(_plain(report))
        return
    rows = report["groups"] or [{"key": "total", "label": "total", **report["total"]}]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        for g in rows:
            writer.writerow(["" if g.get(c) is None else _plain(g.get(c)) for c in COLUMNS])
        return
    _render_usage(report, rows)


def _render_usage(report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from flopwise.cli._common import stdout_console

    as_of = f" as of ingest run {report['as_of']}" if report.get("as_of") is not None else ""
    table = Table(title=f"usage by {report['group_by'] or 'total'}{as_of}")
    for name in (
        "group",
        "records",
        "device-h",
        "cost $",
        "billed $",
        "effective $",
        "kWh device / node / facility",
        "CO2e kg device / node / facility",
        "idle device-h",
        "idle $",
        "util",
    ):
        table.add_column(name, justify="left" if name == "group" else "right")
    for g in [*rows, *([{"label": "total", **report["total"]}] if report["groups"] else [])]:
        util = g.get("utilization_frac")
        table.add_row(
            str(g["label"]),
            f"{g['records']:,}",
            fmt_num(g["device_hours"]),
            fmt_num(g["cost_usd"]),
            fmt_num(g["billed_cost"]),
            fmt_num(g["effective_cost"]),
            " / ".join(fmt_num(g[f]) for f in ("energy_kwh", "node_energy_kwh", "facility_energy_kwh")),
            " / ".join(fmt_num(g[f]) for f in ("device_co2e_kg", "node_co2e_kg", "facility_co2e_kg")),
            fmt_num(g["idle_device_hours"]),
            fmt_num(g["idle_cost_usd"]),
            "-" if util is None else f"{util:.0%}",
        )
    stdout_console().print(table)


@app.command("concentration")
@handle_errors
def concentration(
    by: Annotated[str, typer.Option("--by", help="provider, vendor, device or region.")] = "provider",
    measure: Annotated[str, typer.Option("--measure", help="cost_usd or device_hours.")] = "cost_usd",
    from_: FromOpt = None,
    to: ToOpt = None,
    org_id: Annotated[int | None, typer.Option("--org-id", help="Only this organization's usage.")] = None,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """How concentrated spending is: Herfindahl-Hirschman index (0-10,000) and the largest share."""
    from flopwise.store.reports import catalog_vendor_of, concentration_report

    start, end = parse_time("from", from_), parse_time("to", to)
    engine, session_cm = _session(database_url)
    try:
        with session_cm as session:
            report = concentration_report(session, by, measure, start, end, org_id, catalog_vendor_of(by))
    finally:
        engine.dispose()
    if as_json:
        print_json(_plain(report))
        return
    from rich.table import Table

    from flopwise.cli._common import stdout_console

    table = Table(title=f"{measure} by {by}: HHI {report['hhi']:,.0f} ({report['level']})")
    table.add_column(by)
    table.add_column(measure, justify="right")
    table.add_column("share", justify="right")
    for s in report["shares"]:
        table.add_row(str(s["name"]), fmt_num(s["amount"]), f"{s['share_frac']:.1%}")
    stdout_console().print(table)


@app.command("export-focus")
@handle_errors
def export_focus(
    file: Annotated[Path, typer.Argument(help="The CSV file to write ('-' for stdout).", show_default=False)],
    from_: FromOpt = None,
    to: ToOpt = None,
    org_id: Annotated[int | None, typer.Option("--org-id", help="Only this organization's usage.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the ledger as a FOCUS CSV (FOCUS column names plus x_ columns), streamed."""
    from flopwise.cli._common import stderr_console
    from flopwise.errors import InputError
    from flopwise.meter.export import export_focus_csv

    if str(file) != "-" and (not file.name or file.is_dir()):
        raise InputError("FILE", str(file), "give the path of a CSV file to write, or '-' for stdout")
    if str(file) != "-" and not file.parent.is_dir():
        raise InputError("FILE", str(file), f"the directory {file.parent} does not exist")
    start, end = parse_time("from", from_), parse_time("to", to)
    engine, session_cm = _session(database_url)
    try:
        with session_cm as session:
            if str(file) == "-":
                n = export_focus_csv(session, sys.stdout, start, end, org_id)
            else:
                tmp = file.with_name(file.name + ".part")
                with tmp.open("w", encoding="utf-8", newline="") as out:
                    n = export_focus_csv(session, out, start, end, org_id)
                tmp.replace(file)  # nothing half-written is left under the final name
    finally:
        engine.dispose()
    if str(file) != "-":
        stderr_console().print(f"wrote {n:,} records to {file}")


@app.command("rebuild-rollups")
@handle_errors
def rebuild_rollups_cmd(
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute the hourly usage rollups that reports and the dashboard read, from the whole ledger.

    Ingestion keeps them current on its own; use this after writing the ledger by other means (SQL by hand, a
    restore) or after `ingest --no-burn`, when reports say they were answered from the ledger.
    """
    import time

    from flopwise.store import make_engine, make_session_factory, upgrade, write_session
    from flopwise.store.rollups import rebuild_rollups

    engine = make_engine(database_url, must_exist=True)
    try:
        upgrade(engine)
        started = time.perf_counter()
        with write_session(make_session_factory(engine)) as session:
            buckets = rebuild_rollups(session)
        elapsed_s = time.perf_counter() - started
    finally:
        engine.dispose()
    if as_json:
        print_json({"rollup_rows": buckets, "elapsed_s": round(elapsed_s, 3)})
    else:
        stderr_console().print(f"rebuilt the usage rollups: {buckets:,} rows in {elapsed_s:.1f} s", highlight=False)


@app.command("history")
@handle_errors
def history(
    key: Annotated[
        str, typer.Argument(help="The charge's ledger key (x_SourceKey in an export).", show_default=False)
    ],
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Every version of one charge: each restatement's run, time, author and cost, then the current value."""
    from rich.table import Table

    from flopwise.cli._common import stdout_console
    from flopwise.store.reports import charge_history

    engine, session_cm = _session(database_url)
    try:
        with session_cm as session:
            report = charge_history(session, key)
    finally:
        engine.dispose()
    if as_json:
        print_json(_plain(report))
        return
    table = Table(
        title=f"{key} ({report['source']}, {report['charge_period_start']:%Y-%m-%d %H:%M} - "
        f"{report['charge_period_end']:%Y-%m-%d %H:%M} UTC)"
    )
    for name in ("run", "billed $", "effective $", "cost $", "replaced by run", "at", "by", "changed"):
        table.add_column(name)
    for v in report["versions"]:
        table.add_row(
            str(v["run_id"] or "-"),
            fmt_num(v["billed_cost"]),
            fmt_num(v["effective_cost"]),
            fmt_num(v["cost_usd"]),
            "current" if v["replaced_by_run"] is None else str(v["replaced_by_run"]),
            "" if v["replaced_at"] is None else f"{v['replaced_at']:%Y-%m-%d %H:%M:%S}",
            v["replaced_by"] or "",
            ", ".join(v["changed"]),
        )
    stdout_console().print(table)


alerts_app = typer.Typer(
    help="Budget alerts: deliver pending ones to the organizations' webhooks.", no_args_is_help=True
)


@alerts_app.command("deliver")
@handle_errors
def deliver(
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry alerts whose delivery failed.")
    ] = False,
    database_url: DatabaseUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """Raise any budget alerts that actuals crossed, then POST pending alerts (HMAC-signed) to every webhook.

    Exits 1 when a delivery failed after its retries.
    """
    import httpx

    from flopwise.meter.alerts import deliver_pending_alerts
    from flopwise.meter.burn import apply_actuals
    from flopwise.store import make_engine, make_session_factory, upgrade, write_session
    from flopwise.store.types import utcnow

    engine = make_engine(database_url, must_exist=True)
    try:
        upgrade(engine)
        factory = make_session_factory(engine)
        with write_session(factory) as session:
            burn = apply_actuals(session, utcnow())
        with httpx.Client(timeout=10.0) as client:
            deliveries = deliver_pending_alerts(factory, client, utcnow(), include_failed=retry_failed)
    finally:
        engine.dispose()
    rows = [
        {"alert_id": d.alert_id, "channel_id": d.channel_id, "url": d.url, "is_delivered": d.is_delivered,
         "attempts": d.attempts, "http_status": d.http_status, "error": d.error}
        for d in deliveries
    ]  # fmt: skip
    failed = [r for r in rows if not r["is_delivered"]]
    if json_out:
        print_json({"new_alerts": len(burn.alerts), "deliveries": rows})
    else:
        stderr_console().print(
            f"{len(burn.alerts)} new alerts; {len(rows) - len(failed)} of {len(rows)} deliveries succeeded",
            highlight=False,
        )
        for r in failed:
            stderr_console().print(f"[red]failed[/red] alert {r['alert_id']} -> {r['url']}: "
                                   f"{r['error'] or r['http_status']}", highlight=False)  # fmt: skip
    if failed:
        raise typer.Exit(EXIT_FAILURE)
