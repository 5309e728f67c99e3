"""`flopwise catalog devices|offerings|regions`: browse the built-in (and your) hardware catalog."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from flopwise.cli._common import (
    CatalogDir,
    JsonFlag,
    check_choice,
    fmt_num,
    handle_errors,
    print_json,
    stdout_console,
)

app = typer.Typer(
    help="Browse the hardware catalog: devices, cloud offerings, regions.", no_args_is_help=True
)


def _load(catalog_dir: str | None):
    from flopwise.catalog import load_catalog

    return load_catalog(catalog_dir)


@app.command("devices")
@handle_errors
def devices(
    kind: Annotated[str | None, typer.Option(help="gpu, cpu, tpu, npu or soc.")] = None,
    vendor: Annotated[str | None, typer.Option(help="e.g. nvidia, amd, apple.")] = None,
    segment: Annotated[str | None, typer.Option(help="datacenter, workstation, consumer, edge, ...")] = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """List devices with dense peak FLOP/s, memory, bandwidth and power."""
    cat = _load(catalog_dir)
    kind = check_choice("--kind", kind, (d.kind for d in cat.devices.values()))
    vendor = check_choice("--vendor", vendor, (d.vendor.lower() for d in cat.devices.values()))
    segment = check_choice("--segment", segment, (d.segment for d in cat.devices.values()))
    rows = [
        d
        for d in cat.devices.values()
        if (kind is None or d.kind == kind)
        and (vendor is None or d.vendor.lower() == vendor)
        and (segment is None or d.segment == segment)
    ]
    if json_out:
        print_json({"devices": [asdict(d) for d in rows]})
        return
    from rich.table import Table

    t = Table(title=f"{len(rows)} devices (dense peaks; sparse figures in --json)")
    for col in (
        "id",
        "name",
        "kind",
        "memory GB",
        "GB/s",
        "bf16 TFLOP/s",
        "fp8 TFLOP/s",
        "int8 TOP/s",
        "TDP W",
        "year",
    ):
        t.add_column(col, justify="left" if col in ("id", "name", "kind") else "right", no_wrap=col == "id")
    for d in rows:
        t.add_row(
            d.id,
            d.name,
            d.kind,
            fmt_num(d.memory_gb),
            fmt_num(d.memory_bandwidth_gb_per_s),
            fmt_num(d.peak_bf16_tflop_per_s),
            fmt_num(d.peak_fp8_tflop_per_s),
            fmt_num(d.peak_int8_tflop_per_s),
            fmt_num(d.tdp_w),
            str(d.release_year),
        )
    stdout_console().print(t)


@app.command("offerings")
@handle_errors
def offerings(
    provider: Annotated[str | None, typer.Option(help="e.g. aws, gcp, azure, lambda.")] = None,
    device: Annotated[
        str | None, typer.Option(help="Only offerings of this device (any name that resolves).")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Only offerings in this region.")] = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """List cloud instances with on-demand, spot and reserved prices per hour."""
    cat = _load(catalog_dir)
    provider = check_choice("--provider", provider, (o.provider for o in cat.offerings))
    device_id = cat.device(device).id if device else None
    region_id = cat.region(region).id if region else None
    rows = [
        o
        for o in cat.offerings
        if (provider is None or o.provider == provider)
        and (device_id is None or o.device_id == device_id)
        and (region_id is None or o.region == region_id)
    ]
    if json_out:
        print_json({"offerings": [asdict(o) for o in rows]})
        return
    from rich.table import Table

    from flopwise.catalog.fetch.skypilot import SPOT_RULE_NOTE
    from flopwise.catalog.staleness import is_stale, stale_days_setting

    days = stale_days_setting()
    stale = sum(is_stale(o.retrieved, stale_days=days) for o in rows)
    by_rule = {o.id for o in rows if o.spot_usd_per_h is not None and SPOT_RULE_NOTE in o.note}
    captions = []
    if stale:
        captions.append(
            f"[yellow]{stale} of {len(rows)} prices retrieved over {days} days ago (STALE); run "
            "`flopwise catalog refresh`[/yellow]"
        )
    if by_rule:
        captions.append(
            f"spot basis 'rule' ({len(by_rule)} rows): derived from the provider's published preemptible discount, "
            "a fixed discount rather than a market price (the rule and its source are in each row's --json note)"
        )
    t = Table(title=f"{len(rows)} offerings (USD per instance-hour)", caption="\n".join(captions) or None)
    for col in (
        "provider",
        "instance",
        "region",
        "device",
        "count",
        "on-demand",
        "spot",
        *(["spot basis"] if by_rule else []),
        "reserved",
        "retrieved",
    ):
        t.add_column(
            col,
            justify="right" if col in ("count", "on-demand", "spot", "reserved") else "left",
            no_wrap=col in ("instance", "device"),
        )
    for o in rows:
        t.add_row(
            o.provider,
            o.instance_type,
            o.region,
            o.device_id,
            str(o.device_count),
            fmt_num(o.on_demand_usd_per_h),
            fmt_num(o.spot_usd_per_h),
            *([("rule" if o.id in by_rule else "market" if o.spot_usd_per_h is not None else "")] if by_rule else []),
            fmt_num(o.reserved_usd_per_h) + (f" ({o.reserved_term})" if o.reserved_usd_per_h else ""),
            o.retrieved + (" STALE" if is_stale(o.retrieved, stale_days=days) else ""),
        )
    stdout_console().print(t)


@app.command("regions")
@handle_errors
def regions(
    provider: Annotated[str | None, typer.Option(help="aws, gcp, azure, ..., or country.")] = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """List regions and countries with grid carbon intensity and PUE."""
    cat = _load(catalog_dir)
    provider = check_choice("--provider", provider, (r.provider for r in cat.regions.values()))
    rows = [r for r in cat.regions.values() if provider is None or r.provider == provider]
    if json_out:
        print_json({"regions": [asdict(r) for r in rows]})
        return
    from rich.table import Table

    t = Table(title=f"{len(rows)} regions")
    for col in ("id", "name", "country", "gCO2e/kWh", "PUE"):
        t.add_column(col, justify="right" if col in ("gCO2e/kWh", "PUE") else "left", no_wrap=col == "id")
    for r in rows:
        t.add_row(r.id, r.name, r.country, fmt_num(r.grid_gco2e_per_kwh), fmt_num(r.pue))
    stdout_console().print(t)


from flopwise.catalog.staleness import STALE_DAYS_ENV  # noqa: E402

StaleDays = Annotated[
    int,
    typer.Option(
        "--stale-days",
        envvar=STALE_DAYS_ENV,
        min=1,
        help="A price or intensity retrieved more than this many days ago is reported as stale.",
    ),
]


@app.command("refresh")
@handle_errors
def refresh(
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="Only these sources (repeatable); default: all but the second opinions azure-retail and "
            "aws-pricelist, read only when named, which compare the Azure rows with Azure's Retail Prices API and "
            "the AWS on-demand rows with the AWS Price List. See `catalog status`.",
        ),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Read the source files from this folder or base URL, laid out as skypilot/v9-aws-vms.csv, "
            "carbon/gcp-region-carbon-2025.csv ... (default: the upstream URLs).",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 when the shipped catalog differs from the fetched one."
        ),
    ] = False,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """Fetch public prices, spot prices and grid intensities into your catalog directory (--catalog DIR or
    FLOPWISE_CATALOG_DIR), atomically, keeping the previous files under history/; print what changed."""
    from pathlib import Path

    from flopwise.catalog.fetch.shell import refresh as run_refresh
    from flopwise.errors import InputError

    if not check and not catalog_dir:
        raise InputError(
            "--catalog",
            None,
            "refresh writes into your catalog directory, never the installed package; give --catalog DIR or set "
            "FLOPWISE_CATALOG_DIR (or use --check to only compare)",
        )
    if from_ and not from_.startswith(("http://", "https://")) and not Path(from_).is_dir():
        raise InputError("--from", from_, "give a folder that exists or an http(s) base URL")
    target = Path(catalog_dir) if catalog_dir else None
    if target is not None:
        from flopwise.catalog.loader import BUILTIN_DATA_DIR

        if target.resolve() == BUILTIN_DATA_DIR.resolve():
            raise InputError(
                "--catalog",
                catalog_dir,
                "is the installed package's data folder; give your own catalog directory",
            )
        if target.exists() and not target.is_dir():
            raise InputError("--catalog", catalog_dir, "is a file; give a catalog directory (it is created if absent)")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError("--catalog", catalog_dir, f"cannot create the directory ({err.strerror})") from None
    result = run_refresh(target, source or None, from_, check=check)
    if json_out:
        print_json({**result.to_dict(), "differs": result.differs, "check": check})
    else:
        _print_refresh(result, check)
    if check and result.differs:
        raise typer.Exit(1)


def _print_refresh(result, check: bool) -> None:
    from rich.table import Table

    out = stdout_console()
    t = Table(
        title=f"catalog refresh ({'check against the shipped catalog' if check else 'written'}; {result.retrieved})"
    )
    for col in (
        "source",
        "file",
        "source lines",
        "rows",
        "added",
        "removed",
        "price moved >5%",
        "other changes",
    ):
        t.add_column(col, justify="left" if col in ("source", "file") else "right")
    by_output = {s.output: s for s in result.sources}
    for rel, d in result.diffs.items():
        s = by_output[rel]
        t.add_row(
            s.name, rel, str(s.source_lines), str(s.rows), str(len(d.added)), str(len(d.removed)),
            str(len(d.moved)), str(len(d.changed)),
        )  # fmt: skip
    if result.diffs:
        out.print(t)
    for o in result.opinions:
        skipped = ", ".join(f"{n} {why}" for why, n in o.skipped.most_common()) or "none"
        out.print(
            f"{o.source} (second opinion, writes nothing): {o.items} items read, skipped: {skipped}; "
            f"{len(o.prices)} comparable, {o.not_in_catalog} not in the catalog, {o.compared} compared, "
            f"{o.agree} agree within 1%, {len(o.disagreements)} disagree"
        )
        for d in o.disagreements[:50]:
            out.print(
                f"  {d.offering_id} {d.column}: catalog {d.catalog_usd_per_h}, {o.source} {d.retail_usd_per_h} "
                f"({d.frac:.1%}, item {d.item})"
            )
    for rel, d in result.diffs.items():
        for i, column, old, new, frac in d.moved[:20]:
            change = f"{frac:+.0%}" if frac is not None else "appeared" if not old else "disappeared"
            out.print(f"  {rel}: {i} {column} {old or '-'} -> {new or '-'} ({change})", highlight=False)
        if len(d.moved) > 20:
            out.print(f"  {rel}: ... and {len(d.moved) - 20} more price moves (see --json)", highlight=False)
        for i in d.removed[:10]:
            out.print(f"  {rel}: removed {i}", highlight=False)
        if len(d.removed) > 10:
            out.print(f"  {rel}: ... and {len(d.removed) - 10} more removed", highlight=False)
    for s in result.sources:
        if s.skipped:
            parts = ", ".join(f"{n} {reason}" for reason, n in sorted(s.skipped.items()))
            out.print(f"  {s.name}: skipped source lines: {parts}", highlight=False)
    if result.history:
        out.print(f"previous files kept in {result.history}", highlight=False)


@app.command("status")
@handle_errors
def status(
    stale_days: StaleDays = 90,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """Per source: the date its prices or intensities were retrieved, the row count and the age in days."""
    from flopwise.catalog.staleness import source_status

    rows = source_status(_load(catalog_dir), stale_days=stale_days)
    if json_out:
        print_json({"stale_days": stale_days, "sources": rows})
        return
    from rich.table import Table

    t = Table(title=f"catalog sources (stale after {stale_days} days)")
    for col in ("kind", "provider", "retrieved", "rows", "age days", "stale", "source"):
        t.add_column(col, justify="right" if col in ("rows", "age days") else "left", overflow="fold")
    for r in rows:
        t.add_row(
            r["kind"], r["provider"], r["retrieved"], str(r["rows"]), str(r["age_days"]),
            "[yellow]STALE[/yellow]" if r["stale"] else "", r["source_url"],
        )  # fmt: skip
    stdout_console().print(t)


@app.command("diff")
@handle_errors
def diff(
    old: Annotated[
        str | None,
        typer.Option(
            "--old", help="A snapshot under history/ (its folder name, a date) ; default: the newest."
        ),
    ] = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """What changed between a previous snapshot (kept by `catalog refresh` under history/) and the current files."""
    from pathlib import Path

    from flopwise.catalog.fetch.diff import diff_rows
    from flopwise.catalog.fetch.shell import read_csv_rows
    from flopwise.errors import InputError, suggest

    if not catalog_dir:
        raise InputError("--catalog", None, "give the catalog directory that `catalog refresh` writes into")
    root = Path(catalog_dir)
    snapshots = (
        sorted(p.name for p in (root / "history").iterdir() if p.is_dir())
        if (root / "history").is_dir()
        else []
    )
    if not snapshots:
        raise InputError("--catalog", catalog_dir, "holds no history/ yet; it appears after a second refresh")
    if old is None:
        old = snapshots[-1]
    if old not in snapshots:
        hint = suggest(old, snapshots)
        raise InputError(
            "--old",
            old,
            (f"did you mean {hint[0]!r}? " if hint else "") + f"snapshots: {', '.join(snapshots)}",
        )
    base = root / "history" / old
    rels = sorted(str(p.relative_to(base)) for p in base.rglob("*.csv"))
    result = {
        rel: diff_rows(read_csv_rows(base / rel), read_csv_rows(root / rel), ignore=("retrieved",))
        for rel in rels
    }
    if json_out:
        print_json({"old": old, "changes": {k: d.to_dict() for k, d in result.items()}})
        return
    out = stdout_console()
    for rel, d in result.items():
        out.print(
            f"{rel} ({old} -> now): {len(d.added)} added, {len(d.removed)} removed, {len(d.moved)} price moves >5%, "
            f"{len(d.changed)} other changes",
            highlight=False,
        )
        for i, column, o, n, frac in d.moved:
            change = f"{frac:+.0%}" if frac is not None else "appeared" if not o else "disappeared"
            out.print(f"  {i} {column} {o or '-'} -> {n or '-'} ({change})", highlight=False)
