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

    t = Table(title=f"{len(rows)} offerings (USD per instance-hour)")
    for col in ("provider", "instance", "region", "device", "count", "on-demand", "spot", "reserved"):
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
            fmt_num(o.reserved_usd_per_h) + (f" ({o.reserved_term})" if o.reserved_usd_per_h else ""),
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
