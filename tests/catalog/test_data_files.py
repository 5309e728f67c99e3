"""Every built-in catalog data file: schema, unique keys, positive values, plausible ranges, provenance, references.

The loader enforces these rules and raises CatalogFileError (tests/catalog/test_loader.py proves each one on
broken copies); this module checks the shipped files again, independently of the loader, reading the CSVs
with the csv module so a loosened loader cannot let a bad row through.
"""

from __future__ import annotations

import csv
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from flopwise.catalog import BUILTIN_DATA_DIR, load_catalog
from flopwise.catalog.loader import (
    BASIS_VALUES,
    DEVICE_COLUMNS,
    OFFERING_COLUMNS,
    ONPREM_COLUMNS,
    REGION_COLUMNS,
    SEGMENTS,
    read_devices,
    read_offerings,
    read_onprem,
    read_regions,
)
from flopwise.catalog.types import DEVICE_KINDS, DTYPES

DEVICE_FILES = sorted((BUILTIN_DATA_DIR / "devices").glob("*.csv"))
OFFERING_FILES = sorted((BUILTIN_DATA_DIR / "offerings").glob("*.csv"))
ONPREM_FILE = BUILTIN_DATA_DIR / "onprem.csv"
REGIONS_FILE = BUILTIN_DATA_DIR / "regions.csv"
ALL_FILES = [
    *DEVICE_FILES,
    *OFFERING_FILES,
    *([ONPREM_FILE] if ONPREM_FILE.is_file() else []),
    *([REGIONS_FILE] if REGIONS_FILE.is_file() else []),
]
SCHEMAS = {
    "devices": DEVICE_COLUMNS,
    "offerings": OFFERING_COLUMNS,
    "onprem": ONPREM_COLUMNS,
    "regions": REGION_COLUMNS,
}

# Device ids fixed by convention (docs: catalog/data/SOURCES.md); the catalog must contain each of them.
_REQUIRED_DEVICE_IDS_TEXT = """
v100-sxm2-16gb v100-sxm2-32gb v100-pcie-16gb t4 a10 a10g a40 a100-sxm-40gb a100-sxm-80gb a100-pcie-40gb
a100-pcie-80gb a800-sxm-80gb l4 l40 l40s h100-sxm h100-pcie h100-nvl h800-sxm h20 h200-sxm h200-nvl gh200 b200
gb200 b300 gb300 rtx-a4000 rtx-a5000 rtx-a6000 rtx-4000-ada rtx-5000-ada rtx-6000-ada rtx-pro-6000-blackwell
rtx-3060 rtx-3060-ti rtx-3070 rtx-3070-ti rtx-3080-10gb rtx-3080-12gb rtx-3080-ti rtx-3090 rtx-3090-ti rtx-4060
rtx-4060-ti-8gb rtx-4060-ti-16gb rtx-4070 rtx-4070-super rtx-4070-ti rtx-4070-ti-super rtx-4080 rtx-4080-super
rtx-4090 rtx-5070 rtx-5070-ti rtx-5080 rtx-5090 jetson-agx-orin-64gb jetson-orin-nano-8gb
mi210 mi250x mi300x mi325x mi355x radeon-rx-7900-xtx gaudi2 gaudi3 tpu-v4 tpu-v5e tpu-v5p tpu-v6e
trainium1 trainium2 inferentia2 apple-m1-8c apple-m1-pro-16c apple-m1-max-32c apple-m1-ultra-64c apple-m2-10c
apple-m2-pro-19c apple-m2-max-38c apple-m2-ultra-76c apple-m3-10c apple-m3-pro-18c apple-m3-max-40c apple-m4-10c
apple-m4-pro-20c apple-m4-max-40c xeon-8480plus xeon-8592plus xeon-6980p epyc-9654 epyc-9965 epyc-9755 graviton3
graviton4 grace ryzen-9-7950x ryzen-9-9950x core-i9-13900k core-i9-14900k raspberry-pi-5-8gb snapdragon-8-elite
"""
REQUIRED_DEVICE_IDS = _REQUIRED_DEVICE_IDS_TEXT.split()

URL_RE = re.compile(r"^https?://[^\s/]+\.[^\s/]+(/\S*)?$")
PEAKS = [f"peak_{d}_tflop_per_s" for d in DTYPES]
SPARSE = [f"sparse_{d}_tflop_per_s" for d in ("bf16", "fp8", "int8", "fp4")]


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _schema_for(path: Path) -> tuple[str, ...]:
    key = path.parent.name if path.parent.name in ("devices", "offerings") else path.stem
    return SCHEMAS[key]


def _num(row: dict[str, str], column: str) -> float | None:
    return float(row[column]) if row[column].strip() else None


def _where(path: Path, i: int) -> str:
    return f"{path.name}:{i + 2}"


def test_there_are_data_files():
    assert DEVICE_FILES, f"no device files under {BUILTIN_DATA_DIR / 'devices'}"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_schema_and_provenance(path: Path):
    header, rows = _read(path)
    assert tuple(header) == _schema_for(path), f"{path.name}: columns differ from the schema"
    assert rows, f"{path.name} has no rows"
    for i, row in enumerate(rows):
        where = _where(path, i)
        assert None not in row and all(v is not None for v in row.values()), f"{where}: wrong number of cells"
        urls = [u.strip() for u in row["source_url"].split("|")]
        assert all(URL_RE.match(u) for u in urls), f"{where}: source_url {row['source_url']!r}"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["retrieved"]), (
            f"{where}: retrieved {row['retrieved']!r}"
        )
        date.fromisoformat(row["retrieved"])
        assert row["basis"] in BASIS_VALUES, f"{where}: basis {row['basis']!r}"
        if row["basis"] == "derived":
            assert row["note"].strip(), f"{where}: a derived row must say how in note"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_loader_accepts_file(path: Path):
    reader = {
        "devices": read_devices,
        "offerings": read_offerings,
        "onprem": read_onprem,
        "regions": read_regions,
    }[path.parent.name if path.parent.name in ("devices", "offerings") else path.stem]
    assert reader(path)


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_device_values(path: Path):
    _, rows = _read(path)
    for i, row in enumerate(rows):
        where = f"{_where(path, i)} {row['id']}"
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", row["id"]), where
        assert row["kind"] in DEVICE_KINDS and row["segment"] in SEGMENTS, where
        assert 0 < float(row["memory_gb"]) <= 16384, where
        assert 1 <= float(row["memory_bandwidth_gb_per_s"]) <= 20000, where
        assert _num(row, "peak_fp32_tflop_per_s") is not None, f"{where}: fp32 peak is required"
        for column in PEAKS + SPARSE:
            value = _num(row, column)
            assert value is None or 0 < value <= 50000, f"{where}: {column} = {value}"
        bf16 = _num(row, "peak_bf16_tflop_per_s")
        assert bf16 is None or bf16 <= 10000, f"{where}: bf16 {bf16}"
        for dtype in ("bf16", "fp8", "int8", "fp4"):
            dense, sparse = _num(row, f"peak_{dtype}_tflop_per_s"), _num(row, f"sparse_{dtype}_tflop_per_s")
            if dense is not None and sparse is not None:
                assert dense < sparse, f"{where}: dense {dtype} {dense} >= sparse {sparse}"
        tdp, idle = float(row["tdp_w"]), float(row["idle_w"])
        assert 1 <= tdp <= 2000, f"{where}: tdp_w {tdp}"
        assert 0 < idle < tdp, f"{where}: idle_w {idle}"
        ic = float(row["interconnect_gb_per_s"])
        assert 0 <= ic <= 5000 and (ic == 0) == (row["interconnect"] == "none"), f"{where}: interconnect"
        assert 2010 <= int(row["release_year"]) <= 2030, where
        assert row["name"].strip() and row["vendor"].strip(), where


def test_device_ids_unique_across_files():
    seen: dict[str, str] = {}
    for path in DEVICE_FILES:
        for i, row in enumerate(_read(path)[1]):
            assert row["id"] not in seen, f"{_where(path, i)}: {row['id']!r} also in {seen.get(row['id'])}"
            seen[row["id"]] = _where(path, i)


def test_aliases_do_not_collide_across_devices():
    cat = load_catalog()
    owner: dict[str, str] = {}
    for device in cat.devices.values():
        for label in {device.id, device.name, *device.aliases}:
            key = re.sub(r"[^a-z0-9]", "", label.lower().replace("+", "plus"))
            assert owner.setdefault(key, device.id) == device.id, f"{label!r}: {owner[key]} and {device.id}"


def test_required_device_ids_present():
    cat = load_catalog()
    missing = [d for d in REQUIRED_DEVICE_IDS if d not in cat.devices]
    assert not missing, f"catalog lacks {missing}"


def test_offering_values_and_references():
    if not OFFERING_FILES:
        pytest.skip("no offerings files")
    cat = load_catalog()
    seen: set[str] = set()
    for path in OFFERING_FILES:
        for i, row in enumerate(_read(path)[1]):
            where = f"{_where(path, i)} {row['id']}"
            assert row["id"] not in seen, f"{where}: duplicate id"
            seen.add(row["id"])
            assert row["id"].startswith(f"{row['provider']}:{row['instance_type']}:"), where
            assert row["device_id"] in cat.devices, f"{where}: device {row['device_id']!r}"
            assert row["region"] in cat.regions, f"{where}: region {row['region']!r}"
            assert int(row["device_count"]) >= 1 and int(row["vcpus"]) >= 1 and float(row["ram_gb"]) > 0, (
                where
            )
            prices = {
                c: Decimal(row[c])
                for c in ("on_demand_usd_per_h", "spot_usd_per_h", "reserved_usd_per_h")
                if row[c]
            }
            assert prices, f"{where}: no price"
            assert all(p >= 0 for p in prices.values()), where
            if "on_demand_usd_per_h" in prices and "spot_usd_per_h" in prices:
                assert prices["on_demand_usd_per_h"] >= prices["spot_usd_per_h"], (
                    f"{where}: spot above on-demand"
                )
            assert (row["reserved_term"] in ("1y", "3y")) == ("reserved_usd_per_h" in prices), (
                f"{where}: reserved"
            )


def test_onprem_values_and_references():
    if not ONPREM_FILE.is_file():
        pytest.skip("no onprem.csv")
    cat = load_catalog()
    _, rows = _read(ONPREM_FILE)
    assert len({r["device_id"] for r in rows}) == len(rows), "duplicate device_id in onprem.csv"
    for i, row in enumerate(rows):
        where = _where(ONPREM_FILE, i)
        assert row["device_id"] in cat.devices, f"{where}: device {row['device_id']!r}"
        assert Decimal(row["purchase_usd"]) > 0 and Decimal(row["electricity_usd_per_kwh"]) > 0, where
        assert 1.0 <= float(row["pue"]) <= 3.0 and 0 < float(row["lifetime_years"]) <= 15, where
        assert 0 <= float(row["server_overhead_frac"]) <= 3, where


def test_region_values():
    if not REGIONS_FILE.is_file():
        pytest.skip("no regions.csv")
    _, rows = _read(REGIONS_FILE)
    assert len({r["id"] for r in rows}) == len(rows), "duplicate id in regions.csv"
    for i, row in enumerate(rows):
        where = f"{_where(REGIONS_FILE, i)} {row['id']}"
        assert row["id"].split(":", 1)[0] == row["provider"], where
        assert re.fullmatch(r"[A-Z]{2,3}", row["country"]), where
        assert 0 <= float(row["grid_gco2e_per_kwh"]) <= 1500 and 1.0 <= float(row["pue"]) <= 3.0, where


def test_countries_are_regions():
    if not REGIONS_FILE.is_file():
        pytest.skip("no regions.csv")
    cat = load_catalog()
    countries = [r for r in cat.regions.values() if r.provider == "country"]
    assert countries, "regions.csv has no country:XX rows for on-prem use"
    assert all(r.id == f"country:{r.country}" for r in countries)


def test_sources_md_lists_every_file():
    text = (BUILTIN_DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    assert "Schema version: 1" in text
    for path in ALL_FILES:
        rel = path.relative_to(BUILTIN_DATA_DIR).as_posix()
        group = f"{path.parent.name}/*.csv"
        assert rel in text or group in text, f"SOURCES.md does not describe {rel}"
    for column in {*DEVICE_COLUMNS, *OFFERING_COLUMNS, *ONPREM_COLUMNS, *REGION_COLUMNS}:
        assert f"`{column}`" in text, f"SOURCES.md has no row for column {column}"
