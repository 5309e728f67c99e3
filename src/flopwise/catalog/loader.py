"""Read and validate the catalog CSV files (devices, offerings, on-prem profiles, regions).

Layout of a catalog directory (the built-in one is ``flopwise/catalog/data``; a user directory given by
``--catalog DIR`` or ``FLOPWISE_CATALOG_DIR`` has the same layout)::

    devices/<vendor-or-group>.csv     one row per device            (DEVICE_COLUMNS)
    offerings/<provider>.csv          one row per instance + region (OFFERING_COLUMNS)
    onprem.csv                        one row per purchasable device (ONPREM_COLUMNS)
    regions.csv                       one row per region or country  (REGION_COLUMNS)

Any of them may be missing (read as empty). Every row is checked here, and a bad value raises
:class:`~flopwise.errors.CatalogFileError` with the file, the line, the field, the value and what to do.
User rows whose key (``id``; ``device_id`` for ``onprem.csv``) equals a built-in one replace it; new keys add.
The column schemas are described in ``catalog/data/SOURCES.md`` (schema version ``CATALOG_SCHEMA_VERSION``).

Standard library only: loading the built-in catalog must stay fast and must not import numpy.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gc
import io
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from itertools import compress, count, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from flopwise.catalog.types import DEVICE_KINDS, DTYPES, Device, Offering, OnPremProfile, Region
from flopwise.errors import CatalogFileError

__all__ = [
    "BASIS_VALUES",
    "BUILTIN_DATA_DIR",
    "CATALOG_DIR_ENV",
    "CATALOG_SCHEMA_VERSION",
    "DEVICE_COLUMNS",
    "OFFERING_COLUMNS",
    "ONPREM_COLUMNS",
    "REGION_COLUMNS",
    "SEGMENTS",
    "CatalogData",
    "read_catalog_dir",
    "read_devices",
    "read_offerings",
    "read_onprem",
    "read_regions",
]

#: Version of the column schemas below. Bump it (and SOURCES.md) when a column is added, removed or renamed.
CATALOG_SCHEMA_VERSION = 1

BUILTIN_DATA_DIR = Path(__file__).resolve().parent / "data"
CATALOG_DIR_ENV = "FLOPWISE_CATALOG_DIR"

BASIS_VALUES = ("datasheet", "measured", "derived")
SEGMENTS = ("datacenter", "workstation", "consumer", "server-cpu", "desktop-cpu", "edge", "mobile", "apple")
RESERVED_TERMS = ("1y", "3y")

PROVENANCE_COLUMNS = ("source_url", "retrieved", "basis", "note")
_PEAK_COLUMNS = tuple(f"peak_{d}_tflop_per_s" for d in DTYPES)
_SPARSE_DTYPES = ("bf16", "fp8", "int8", "fp4")
_SPARSE_COLUMNS = tuple(f"sparse_{d}_tflop_per_s" for d in _SPARSE_DTYPES)

DEVICE_COLUMNS = (
    "id",
    "name",
    "vendor",
    "kind",
    "segment",
    "memory_gb",
    "memory_bandwidth_gb_per_s",
    *_PEAK_COLUMNS,
    *_SPARSE_COLUMNS,
    "interconnect",
    "interconnect_gb_per_s",
    "tdp_w",
    "idle_w",
    "release_year",
    "aliases",
    *PROVENANCE_COLUMNS,
)
OFFERING_COLUMNS = (
    "id",
    "provider",
    "instance_type",
    "region",
    "device_id",
    "device_count",
    "vcpus",
    "ram_gb",
    "on_demand_usd_per_h",
    "spot_usd_per_h",
    "reserved_usd_per_h",
    "reserved_term",
    *PROVENANCE_COLUMNS,
)
ONPREM_COLUMNS = (
    "device_id",
    "purchase_usd",
    "server_overhead_frac",
    "lifetime_years",
    "electricity_usd_per_kwh",
    "pue",
    *PROVENANCE_COLUMNS,
)
REGION_COLUMNS = (
    "id",
    "provider",
    "name",
    "country",
    "grid_gco2e_per_kwh",
    "pue",
    "aliases",
    *PROVENANCE_COLUMNS,
)

# Plausible ranges (inclusive). A value outside is almost certainly a unit slip (MB/s for GB/s, kW for W).
MEMORY_GB_RANGE = (0.1, 16384.0)
MEMORY_BANDWIDTH_GB_PER_S_RANGE = (1.0, 20000.0)
PEAK_BF16_MAX_TFLOP_PER_S = 10000.0
PEAK_ANY_MAX_TFLOP_PER_S = 50000.0
INTERCONNECT_GB_PER_S_RANGE = (0.0, 5000.0)
TDP_W_RANGE = (1.0, 2000.0)
RELEASE_YEAR_RANGE = (2010, 2030)
DEVICE_COUNT_RANGE = (1, 1024)
VCPUS_RANGE = (1, 4096)
RAM_GB_RANGE = (0.5, 65536.0)
PUE_RANGE = (1.0, 3.0)
GRID_GCO2E_PER_KWH_RANGE = (0.0, 1500.0)
LIFETIME_YEARS_RANGE = (0.5, 15.0)
SERVER_OVERHEAD_FRAC_RANGE = (0.0, 3.0)
ELECTRICITY_USD_PER_KWH_RANGE = (Decimal("0.005"), Decimal("2"))
PRICE_USD_PER_H_MAX = Decimal("10000")

_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_REGION_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*:[A-Za-z0-9][A-Za-z0-9._-]*$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2,3}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_URL_RE = re.compile(r"^https?://[^\s/]+\.[^\s/]+(?:/\S*)?$")


# --------------------------------------------------------------------------------------------- rows


class _Row:
    """One CSV record: its cells by column name, and where it came from (for error messages).

    A plain slotted class (not a frozen dataclass): thousands are built per catalog load.
    """

    __slots__ = ("cells", "line", "path")

    def __init__(self, path: str, line: int, cells: dict[str, str]) -> None:
        self.path = path
        self.line = line
        self.cells = cells

    def fail(self, column: str | None, message: str) -> CatalogFileError:
        return CatalogFileError(self.path, self.line, column, message)

    def text(self, column: str, *, required: bool = True) -> str:
        value = self.cells[column].strip()
        if required and not value:
            raise self.fail(column, "is empty; every row needs a value here")
        return value

    def number(
        self, column: str, lo: float, hi: float, *, required: bool = True, lo_open: bool = False
    ) -> float | None:
        raw = self.cells[column].strip()
        if not raw:
            if required:
                raise self.fail(column, f"is empty; give a number in [{lo:g}, {hi:g}]")
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(
                column, f"{raw!r} is not a number; write a plain decimal such as 312 or 19.5"
            ) from None
        if math.isnan(value) or math.isinf(value):
            raise self.fail(column, f"{raw!r} is not a finite number")
        too_low = value <= lo if lo_open else value < lo
        if too_low or value > hi:
            bound = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
            raise self.fail(
                column, f"{raw!r} is outside the plausible range {bound}; check the unit in the column name"
            )
        return value

    def integer(self, column: str, lo: int, hi: int) -> int:
        raw = self.cells[column].strip()
        if not raw.isdigit() and not re.fullmatch(r"-?\d+", raw):
            raise self.fail(column, f"{raw!r} is not a whole number; write digits only, e.g. 8")
        value = int(raw)
        if not lo <= value <= hi:
            raise self.fail(column, f"{raw!r} is outside the plausible range [{lo}, {hi}]")
        return value

    def money(self, column: str, lo: Decimal, hi: Decimal, *, required: bool = True) -> Decimal | None:
        raw = self.cells[column].strip()
        if not raw:
            if required:
                raise self.fail(column, "is empty; give an amount in USD such as 1.23")
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise self.fail(
                column, f"{raw!r} is not an amount; write a plain decimal such as 98.32"
            ) from None
        if not value.is_finite() or value < lo or value > hi:
            raise self.fail(column, f"{raw!r} is outside the plausible range [{lo}, {hi}] USD")
        return value

    def aliases(self, column: str = "aliases") -> tuple[str, ...]:
        return tuple(a.strip() for a in self.cells[column].split("|") if a.strip())

    def provenance(self) -> dict[str, Any]:
        """``source_url``, ``retrieved``, ``basis`` and ``note``, validated."""
        url = self.text("source_url")
        retrieved = self.text("retrieved")
        basis = self.text("basis")
        note = self.cells["note"].strip()
        problem = _provenance_problem(url, retrieved, basis, bool(note))
        if problem is not None:
            raise self.fail(*problem)
        return {"source_url": url, "retrieved": retrieved, "basis": basis, "note": note}


@functools.lru_cache(maxsize=1024)
def _provenance_problem(url: str, retrieved: str, basis: str, has_note: bool) -> tuple[str, str] | None:
    """(column, message) of the first bad provenance cell, or None. Cached: a fetched file repeats one URL and
    date on every row."""
    for part in url.split("|"):
        if not _URL_RE.match(part.strip()):
            return (
                "source_url",
                f"{part.strip()!r} is not an http(s) URL; link the datasheet or page the row is from",
            )
    try:
        if not _DATE_RE.match(retrieved):
            raise ValueError
        date.fromisoformat(retrieved)
    except ValueError:
        return ("retrieved", f"{retrieved!r} is not an ISO date; write YYYY-MM-DD")
    if basis not in BASIS_VALUES:
        return ("basis", f"{basis!r} is not one of {', '.join(BASIS_VALUES)}")
    if basis == "derived" and not has_note:
        return ("note", "is empty but basis is 'derived'; say how the value was derived")
    return None


def _read_rows(path: Path, columns: tuple[str, ...]) -> Iterator[_Row]:
    """Yield the records of *path*, after checking that its header is exactly *columns*."""
    where = str(path)
    for line, cells in _read_cells(path, columns):
        yield _Row(where, line, dict(zip(columns, cells, strict=True)))


def _split_records(text: str) -> list[list[str]] | None:
    """The cells of every line of *text* (header included; line n is item n - 1), as ``csv.reader`` (excel
    dialect) reads them, or None when only the csv module can tell (a carriage return, a NUL, a quoted cell
    spanning lines). A blank line gives ``[]`` or ``['']``; both are skipped as blank.

    ``str.split`` on the lines without a quote (nearly every line of a fetched file; several times faster than
    the csv module, and run as C-level ``map``), one csv reader over the lines with one (each given its own
    newline, so each is one record unless a quote stays open). A quoted cell still open at the end of its line is
    what a multi-line record looks like: it merges lines (fewer records than lines) or, on the last such line,
    keeps the newline in its cell; then the whole file goes to the csv module."""
    if "\r" in text or "\0" in text:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no record
    rows = list(map(str.split, lines, repeat(",")))
    quoted = list(compress(count(), map(str.__contains__, lines, repeat('"'))))
    if quoted:
        records = list(csv.reader(map("{}\n".format, map(lines.__getitem__, quoted))))
        if len(records) != len(quoted) or any(map(str.__contains__, records[-1], repeat("\n"))):
            return None
        deque(map(rows.__setitem__, quoted, records), maxlen=0)
    return rows


def _read_table(path: Path, columns: tuple[str, ...]) -> tuple[list[int], list[list[str]]]:
    """The line numbers and cells of *path*'s data lines (each as wide as the header; blank lines skipped),
    after checking that its header is exactly *columns*."""
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CatalogFileError(
            where, None, None, f"cannot be read ({err.strerror}); check the path"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CatalogFileError(
            where, line, None, f"is not UTF-8 text (byte {err.start}); save the file as UTF-8"
        ) from None
    rows = _split_records(text)
    if rows is None:
        reader = csv.reader(io.StringIO(text, newline=""))
        rows, numbers = [], []
        for cells in reader:
            rows.append(cells)
            numbers.append(reader.line_num)
    else:
        numbers = list(range(1, len(rows) + 1))
    if not rows:
        raise CatalogFileError(where, 1, None, "is empty; the first line must be the header")
    header = [h.strip() for h in rows[0]]
    if header == [""]:
        header = []  # a blank first line: the csv module reads [], str.split ['']
    if tuple(header) != columns:
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if extra:
            detail.append(f"unexpected {', '.join(extra)}")
        if not detail:
            detail.append("columns are out of order")
        raise CatalogFileError(
            where,
            1,
            None,
            f"header does not match the schema ({'; '.join(detail)}); expected: {','.join(columns)}",
        )
    width = len(columns)
    body, numbers = rows[1:], numbers[1:]
    if all(map(width.__eq__, map(len, body))) and all(map(itemgetter(0), body)):
        return numbers, body
    kept_numbers, kept = [], []
    for line, cells in zip(numbers, body, strict=True):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != width:
            raise CatalogFileError(
                where,
                line,
                None,
                f"has {len(cells)} cells but the header has {len(columns)}; quote cells that contain commas",
            )
        kept_numbers.append(line)
        kept.append(cells)
    return kept_numbers, kept


def _read_cells(path: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """``(line, cells)`` of *path*'s data lines: :func:`_read_table` as pairs."""
    return list(zip(*_read_table(path, columns), strict=True))


# ------------------------------------------------------------------------------------------ devices


def _device_from_row(row: _Row) -> Device:
    device_id = row.text("id")
    if not _SLUG_RE.match(device_id):
        raise row.fail(
            "id", f"{device_id!r} is not a lowercase slug; use letters, digits and '-', e.g. 'h100-sxm'"
        )
    kind = row.text("kind")
    if kind not in DEVICE_KINDS:
        raise row.fail("kind", f"{kind!r} is not one of {', '.join(DEVICE_KINDS)}")
    segment = row.text("segment")
    if segment not in SEGMENTS:
        raise row.fail("segment", f"{segment!r} is not one of {', '.join(SEGMENTS)}")
    peaks: dict[str, Any] = {}
    for column in _PEAK_COLUMNS + _SPARSE_COLUMNS:
        hi = PEAK_BF16_MAX_TFLOP_PER_S if column.endswith("_bf16_tflop_per_s") else PEAK_ANY_MAX_TFLOP_PER_S
        peaks[column] = row.number(column, 0.0, hi, required=column == "peak_fp32_tflop_per_s", lo_open=True)
    for dtype in _SPARSE_DTYPES:
        dense, sparse = peaks[f"peak_{dtype}_tflop_per_s"], peaks[f"sparse_{dtype}_tflop_per_s"]
        if dense is not None and sparse is not None and not dense < sparse:
            raise row.fail(
                f"sparse_{dtype}_tflop_per_s",
                f"{sparse:g} is not above the dense peak {dense:g}; peak_* columns are dense (halve a sparse headline)",
            )
    interconnect = row.text("interconnect")
    interconnect_gb_per_s = row.number("interconnect_gb_per_s", *INTERCONNECT_GB_PER_S_RANGE)
    assert interconnect_gb_per_s is not None
    if interconnect == "none" and interconnect_gb_per_s != 0:
        raise row.fail(
            "interconnect_gb_per_s", f"{interconnect_gb_per_s:g} but interconnect is 'none'; write 0"
        )
    tdp_w = row.number("tdp_w", *TDP_W_RANGE)
    idle_w = row.number("idle_w", 0.0, TDP_W_RANGE[1], lo_open=True)
    assert tdp_w is not None and idle_w is not None
    if not idle_w < tdp_w:
        raise row.fail(
            "idle_w", f"{idle_w:g} is not below tdp_w {tdp_w:g}; idle draw must be less than the TDP"
        )
    memory_gb = row.number("memory_gb", *MEMORY_GB_RANGE)
    bandwidth = row.number("memory_bandwidth_gb_per_s", *MEMORY_BANDWIDTH_GB_PER_S_RANGE)
    fp32 = peaks.pop("peak_fp32_tflop_per_s")
    assert memory_gb is not None and bandwidth is not None and fp32 is not None
    return Device(
        id=device_id,
        name=row.text("name"),
        vendor=row.text("vendor"),
        kind=kind,
        segment=segment,
        memory_gb=memory_gb,
        memory_bandwidth_gb_per_s=bandwidth,
        peak_fp32_tflop_per_s=fp32,
        **peaks,
        interconnect=interconnect,
        interconnect_gb_per_s=interconnect_gb_per_s,
        tdp_w=tdp_w,
        idle_w=idle_w,
        release_year=row.integer("release_year", *RELEASE_YEAR_RANGE),
        aliases=row.aliases(),
        **row.provenance(),
    )


def read_devices(path: str | os.PathLike[str]) -> list[tuple[Device, str, int]]:
    """Read one ``devices/*.csv`` file: ``(device, path, line)`` per row. Raises CatalogFileError."""
    out = []
    for row in _read_rows(Path(path), DEVICE_COLUMNS):
        out.append((_device_from_row(row), row.path, row.line))
    return out


# ---------------------------------------------------------------------------------------- offerings


_GOOD_SLUGS: set[str] = (
    set()
)  # provider slugs and region ids already validated (thousands of rows repeat them)
_GOOD_REGION_IDS: set[str] = set()
_ZERO = Decimal(0)


def _offering_from_row(row: _Row) -> Offering:
    provider = row.text("provider")
    if provider not in _GOOD_SLUGS and not _SLUG_RE.match(provider):
        raise row.fail("provider", f"{provider!r} is not a lowercase slug such as 'aws' or 'lambda'")
    instance_type = row.text("instance_type")
    offering_id = row.text("id")
    prefix = f"{provider}:{instance_type}:"
    if not offering_id.startswith(prefix) or len(offering_id) == len(prefix):
        raise row.fail(
            "id", f"{offering_id!r} must be 'provider:instance_type:region', starting with {prefix!r}"
        )
    region = row.text("region")
    if region not in _GOOD_REGION_IDS:
        if not _REGION_ID_RE.match(region):
            raise row.fail(
                "region", f"{region!r} is not a region id such as 'aws:us-east-1'; see regions.csv"
            )
        _GOOD_REGION_IDS.add(region)
    _GOOD_SLUGS.add(provider)
    zero, top = _ZERO, PRICE_USD_PER_H_MAX
    on_demand = row.money("on_demand_usd_per_h", zero, top, required=False)
    spot = row.money("spot_usd_per_h", zero, top, required=False)
    reserved = row.money("reserved_usd_per_h", zero, top, required=False)
    if on_demand is None and spot is None and reserved is None:
        raise row.fail(
            "on_demand_usd_per_h", "is empty and so are spot and reserved; give at least one price"
        )
    if on_demand is not None and spot is not None and spot > on_demand:
        raise row.fail(
            "spot_usd_per_h", f"{spot} is above the on-demand price {on_demand}; check the columns"
        )
    term = row.text("reserved_term", required=False)
    if term and term not in RESERVED_TERMS:
        raise row.fail("reserved_term", f"{term!r} is not one of {', '.join(RESERVED_TERMS)}")
    if reserved is not None and not term:
        raise row.fail("reserved_term", "is empty but reserved_usd_per_h is set; write 1y or 3y")
    if term and reserved is None:
        raise row.fail(
            "reserved_usd_per_h", f"is empty but reserved_term is {term!r}; give the price or clear the term"
        )
    return Offering(
        id=offering_id,
        provider=provider,
        instance_type=instance_type,
        region=region,
        device_id=row.text("device_id"),
        device_count=row.integer("device_count", *DEVICE_COUNT_RANGE),
        vcpus=row.integer("vcpus", *VCPUS_RANGE),
        ram_gb=row.number("ram_gb", *RAM_GB_RANGE),  # type: ignore[arg-type]
        on_demand_usd_per_h=on_demand,
        spot_usd_per_h=spot,
        reserved_usd_per_h=reserved,
        reserved_term=term,
        **row.provenance(),
    )


def _fast_offering(cells: list[str]) -> Offering | None:
    """The offering of a well-formed row, or None when any check fails (then the validating path re-reads the
    row and raises the precise error). Accepts exactly what :func:`_offering_from_row` accepts, only faster:
    a catalog holds thousands of fetched rows that repeat their provider, region and provenance."""
    try:
        (
            oid,
            provider,
            it,
            region,
            device_id,
            count,
            vcpus,
            ram,
            od,
            sp,
            rs,
            term,
            url,
            retrieved,
            basis,
            note,
        ) = [c.strip() for c in cells]
        if provider not in _GOOD_SLUGS or region not in _GOOD_REGION_IDS or not device_id:
            return None
        if not it or len(oid) <= len(provider) + len(it) + 2 or not oid.startswith(f"{provider}:{it}:"):
            return None
        if not (count.isdigit() and vcpus.isdigit()):
            return None
        n, v, r = int(count), int(vcpus), float(ram)
        if not (
            DEVICE_COUNT_RANGE[0] <= n <= DEVICE_COUNT_RANGE[1]
            and VCPUS_RANGE[0] <= v <= VCPUS_RANGE[1]
            and RAM_GB_RANGE[0] <= r <= RAM_GB_RANGE[1]
        ):
            return None
        prices = [Decimal(p) if p else None for p in (od, sp, rs)]
        if all(p is None for p in prices):
            return None
        for p in prices:
            if p is not None and not (p.is_finite() and _ZERO <= p <= PRICE_USD_PER_H_MAX):
                return None
        on_demand, spot, reserved = prices
        if on_demand is not None and spot is not None and spot > on_demand:
            return None
        if (term or reserved is not None) and (term not in RESERVED_TERMS or reserved is None):
            return None
        if not url or not retrieved or not basis or _provenance_problem(url, retrieved, basis, bool(note)):
            return None
    except (ValueError, ArithmeticError):
        return None
    return Offering(
        id=oid,
        provider=provider,
        instance_type=it,
        region=region,
        device_id=device_id,
        device_count=n,
        vcpus=v,
        ram_gb=r,
        on_demand_usd_per_h=on_demand,
        spot_usd_per_h=spot,
        reserved_usd_per_h=reserved,
        reserved_term=term,
        source_url=url,
        retrieved=retrieved,
        basis=basis,
        note=note,
    )


_OFFERING_FIELDS = tuple(f.name for f in dataclasses.fields(Offering))
assert _OFFERING_FIELDS == OFFERING_COLUMNS, "Offering's fields and OFFERING_COLUMNS must stay in one order"


def _strip_repeated(col: tuple[str, ...]) -> tuple[str, ...]:
    """*col* with each cell stripped, for a column that repeats a few values: each distinct value is stripped
    once, and a column with nothing to strip is returned as it is."""
    stripped = {raw: raw.strip() for raw in set(col)}
    if all(map(str.__eq__, stripped, stripped.values())):
        return col
    return tuple(map(stripped.__getitem__, col))


def _fast_offerings(rows: list[list[str]]) -> list[Offering] | None:
    """The offerings of a whole file's rows, checked column by column, or None when any check fails (then each
    row goes through :func:`_fast_offering` / :func:`_offering_from_row`, which raise the precise error).

    Accepts exactly what :func:`_offering_from_row` accepts. A fetched file repeats its provider, regions,
    counts, prices and provenance on thousands of rows, so each distinct value is stripped, parsed and checked
    once (Decimal built once per distinct price string), and the per-row work runs as C-level ``map``/``zip``:
    only the per-row text columns (id, instance type, note) are stripped cell by cell."""
    if not rows:
        return []
    oid, provider, it, region, device_id, count, vcpus, ram, od, sp, rs, term, url, retrieved, basis, note = zip(
        *rows, strict=True
    )
    oid, it, note = (tuple(map(str.strip, col)) for col in (oid, it, note))
    provider, region, device_id, term, url, retrieved, basis = map(
        _strip_repeated, (provider, region, device_id, term, url, retrieved, basis)
    )
    if not (all(oid) and all(it) and all(device_id)):
        return None
    for p in set(provider):
        if p not in _GOOD_SLUGS and not _SLUG_RE.match(p):
            return None
    for r in set(region):
        if r not in _GOOD_REGION_IDS and not _REGION_ID_RE.match(r):
            return None
    prefixes = list(map("{}:{}:".format, provider, it))
    if not all(map(str.startswith, oid, prefixes)) or not all(
        map(int.__gt__, map(len, oid), map(len, prefixes))
    ):
        return None
    try:
        # the number columns are parsed from their raw cells: each distinct raw cell stripped and parsed once
        ints: dict[str, int] = {}
        for raw in set(count) | set(vcpus):
            text = raw.strip()
            if not text.isdigit():
                return None
            ints[raw] = int(text)
        counts = list(map(ints.__getitem__, count))
        cpus = list(map(ints.__getitem__, vcpus))
        floats: dict[str, float] = {}
        for raw in set(ram):
            value = float(raw.strip())
            if not RAM_GB_RANGE[0] <= value <= RAM_GB_RANGE[1]:  # False for NaN; inf is out of range
                return None
            floats[raw] = value
        rams = list(map(floats.__getitem__, ram))
        prices: dict[str, Decimal | None] = {}
        for raw in set(od) | set(sp) | set(rs):
            text = raw.strip()
            if not text:
                prices[raw] = None
                continue
            price = Decimal(text)
            if not (price.is_finite() and _ZERO <= price <= PRICE_USD_PER_H_MAX):
                return None
            prices[raw] = price
    except (ValueError, ArithmeticError):
        return None
    if not (
        DEVICE_COUNT_RANGE[0] <= min(counts)
        and max(counts) <= DEVICE_COUNT_RANGE[1]
        and VCPUS_RANGE[0] <= min(cpus)
        and max(cpus) <= VCPUS_RANGE[1]
    ):
        return None
    on_demand = list(map(prices.__getitem__, od))
    spot = list(map(prices.__getitem__, sp))
    reserved = list(map(prices.__getitem__, rs))
    for od_p, sp_p, rs_p, t in zip(on_demand, spot, reserved, term, strict=True):
        if od_p is None and sp_p is None and rs_p is None:
            return None
        if od_p is not None and sp_p is not None and sp_p > od_p:
            return None
        if (t or rs_p is not None) and (t not in RESERVED_TERMS or rs_p is None):
            return None
    for u, d, b, n in set(zip(url, retrieved, basis, map(bool, note), strict=True)):
        if not (u and d and b) or _provenance_problem(u, d, b, n) is not None:
            return None
    _GOOD_SLUGS.update(provider)
    _GOOD_REGION_IDS.update(region)
    # C-level loops: one dict per row (what the frozen dataclass __init__ would set), set as the instance dict
    dicts = list(
        map(dict, map(zip, repeat(_OFFERING_FIELDS), zip(
            oid, provider, it, region, device_id, counts, cpus, rams, on_demand, spot, reserved, term, url,
            retrieved, basis, note, strict=True,
        )))
    )  # fmt: skip
    out = list(map(object.__new__, repeat(Offering, len(dicts))))
    deque(map(object.__setattr__, out, repeat("__dict__"), dicts), maxlen=0)
    return out


def read_offerings(path: str | os.PathLike[str]) -> list[tuple[Offering, str, int]]:
    """Read one ``offerings/*.csv`` file: ``(offering, path, line)`` per row. Raises CatalogFileError."""
    where = str(path)
    numbers, rows = _read_table(Path(path), OFFERING_COLUMNS)
    fast = _fast_offerings(rows)
    if fast is not None:
        return list(zip(fast, repeat(where), numbers))
    out = []
    for line, cells in zip(numbers, rows, strict=True):
        offering = _fast_offering(cells)
        if offering is None:
            offering = _offering_from_row(_Row(where, line, dict(zip(OFFERING_COLUMNS, cells, strict=True))))
        out.append((offering, where, line))
    return out


# ------------------------------------------------------------------------------------ onprem, regions


def _onprem_from_row(row: _Row) -> OnPremProfile:
    return OnPremProfile(
        device_id=row.text("device_id"),
        purchase_usd=row.money("purchase_usd", Decimal("1"), Decimal("10000000")),  # type: ignore[arg-type]
        server_overhead_frac=row.number("server_overhead_frac", *SERVER_OVERHEAD_FRAC_RANGE),  # type: ignore[arg-type]
        lifetime_years=row.number("lifetime_years", *LIFETIME_YEARS_RANGE),  # type: ignore[arg-type]
        electricity_usd_per_kwh=row.money("electricity_usd_per_kwh", *ELECTRICITY_USD_PER_KWH_RANGE),  # type: ignore[arg-type]
        pue=row.number("pue", *PUE_RANGE),  # type: ignore[arg-type]
        **row.provenance(),
    )


def read_onprem(path: str | os.PathLike[str]) -> list[tuple[OnPremProfile, str, int]]:
    """Read ``onprem.csv``: ``(profile, path, line)`` per row. Raises CatalogFileError."""
    return [(_onprem_from_row(row), row.path, row.line) for row in _read_rows(Path(path), ONPREM_COLUMNS)]


def _region_from_row(row: _Row) -> Region:
    region_id = row.text("id")
    if not _REGION_ID_RE.match(region_id):
        raise row.fail(
            "id", f"{region_id!r} is not 'provider:region' such as 'aws:us-east-1' or 'country:FR'"
        )
    provider = row.text("provider")
    if region_id.split(":", 1)[0] != provider:
        raise row.fail("provider", f"{provider!r} does not match the id prefix of {region_id!r}")
    country = row.text("country")
    if not _COUNTRY_RE.match(country):
        raise row.fail("country", f"{country!r} is not an ISO 3166-1 code such as 'FR' (upper case)")
    return Region(
        id=region_id,
        provider=provider,
        name=row.text("name"),
        country=country,
        grid_gco2e_per_kwh=row.number("grid_gco2e_per_kwh", *GRID_GCO2E_PER_KWH_RANGE),  # type: ignore[arg-type]
        pue=row.number("pue", *PUE_RANGE),  # type: ignore[arg-type]
        aliases=row.aliases(),
        **row.provenance(),
    )


def read_regions(path: str | os.PathLike[str]) -> list[tuple[Region, str, int]]:
    """Read ``regions.csv``: ``(region, path, line)`` per row. Raises CatalogFileError."""
    return [(_region_from_row(row), row.path, row.line) for row in _read_rows(Path(path), REGION_COLUMNS)]


# --------------------------------------------------------------------------------------- directories


@dataclass
class CatalogData:
    """The validated records of one or more catalog directories, keyed, with where each came from."""

    devices: dict[str, Device] = field(default_factory=dict)
    offerings: dict[str, Offering] = field(default_factory=dict)
    onprem: dict[str, OnPremProfile] = field(default_factory=dict)
    regions: dict[str, Region] = field(default_factory=dict)
    origins: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)

    def merged_with(self, other: CatalogData) -> CatalogData:
        """A copy of self where the records of *other* replace same-key records and add new ones."""
        return CatalogData(
            devices={**self.devices, **other.devices},
            offerings={**self.offerings, **other.offerings},
            onprem={**self.onprem, **other.onprem},
            regions={**self.regions, **other.regions},
            origins={**self.origins, **other.origins},
        )

    def without_files(self, relpaths: list[str]) -> CatalogData:
        """A copy without the records read from the catalog files *relpaths* (e.g. ``offerings/aws.csv``): a
        refreshed user file replaces the built-in file of the same name as a whole."""
        suffixes = tuple(os.sep + rel.replace("/", os.sep) for rel in relpaths)
        keep = {k: v for k, v in self.origins.items() if not v[0].endswith(suffixes)}

        def pick(kind: str, records: dict[str, Any]) -> dict[str, Any]:
            return {key: rec for key, rec in records.items() if (kind, key) in keep}

        return CatalogData(
            devices=pick("device", self.devices),
            offerings=pick("offering", self.offerings),
            onprem=pick("onprem", self.onprem),
            regions=pick("region", self.regions),
            origins=keep,
        )

    def check_references(self) -> None:
        """Every offering and on-prem row names a known device, and every offering a known region."""
        for offering in self.offerings.values():
            path, line = self.origins[("offering", offering.id)]
            if offering.device_id not in self.devices:
                raise CatalogFileError(
                    path, line, "device_id", f"{offering.device_id!r} is not a device id in devices/*.csv"
                )
            if offering.region not in self.regions:
                raise CatalogFileError(
                    path, line, "region", f"{offering.region!r} is not a region id in regions.csv"
                )
        for profile in self.onprem.values():
            path, line = self.origins[("onprem", profile.device_id)]
            if profile.device_id not in self.devices:
                raise CatalogFileError(
                    path, line, "device_id", f"{profile.device_id!r} is not a device id in devices/*.csv"
                )


def _collect(
    data: CatalogData,
    kind: str,
    target: dict[str, Any],
    records: list[tuple[Any, str, int]],
    key: Callable[[Any], str],
    key_field: str,
) -> None:
    for record, path, line in records:
        k = key(record)
        if k in target:
            first_path, first_line = data.origins[(kind, k)]
            raise CatalogFileError(
                path,
                line,
                key_field,
                f"{k!r} is already defined at {first_path}:{first_line}; ids must be unique",
            )
        target[k] = record
        data.origins[(kind, k)] = (path, line)


def _csv_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix == ".csv" and p.is_file())


def read_catalog_dir(directory: str | os.PathLike[str]) -> CatalogData:
    """Read and validate every catalog file under *directory* (missing files count as empty).

    Ids must be unique within the directory (across all ``devices/*.csv`` and all ``offerings/*.csv``).
    Cross-file references are not checked here (an override directory may refer to built-in rows);
    :meth:`CatalogData.check_references` does that on the merged result.
    """
    root = Path(directory)
    try:
        is_dir = root.is_dir()
    except OSError as err:  # e.g. a name too long for the file system
        raise CatalogFileError(str(root)[:200], None, None, f"cannot be read ({err.strerror})") from None
    if not is_dir:
        raise CatalogFileError(
            str(root), None, None, "is not a directory; give a folder laid out like catalog/data"
        )
    # The reading allocates tens of thousands of long-lived objects and frees few: with the cyclic collector on,
    # each of its passes walks every object the process holds, so in a large process (a server, the test suite)
    # the same read cost up to twice as much. Paused for the read, as for any bulk load of objects that live on.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _read_catalog_dir(root)
    finally:
        if paused:
            gc.enable()


def _read_catalog_dir(root: Path) -> CatalogData:
    data = CatalogData()
    for path in _csv_files(root / "devices"):
        _collect(data, "device", data.devices, read_devices(path), lambda d: d.id, "id")
    for path in _csv_files(root / "offerings"):
        _collect(data, "offering", data.offerings, read_offerings(path), lambda o: o.id, "id")
    if (root / "onprem.csv").is_file():
        _collect(
            data, "onprem", data.onprem, read_onprem(root / "onprem.csv"), lambda p: p.device_id, "device_id"
        )
    if (root / "regions.csv").is_file():
        _collect(data, "region", data.regions, read_regions(root / "regions.csv"), lambda r: r.id, "id")
    return data


@functools.lru_cache(maxsize=1)
def read_builtin() -> CatalogData:
    """The built-in catalog files, read once per process."""
    return read_catalog_dir(BUILTIN_DATA_DIR)


#: written by ``flopwise catalog refresh`` into a user catalog directory: which files it wrote, from where, when
REFRESH_MANIFEST = "refresh.json"


def refreshed_files(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{relpath: {"source", "retrieved", "rows", "source_url"}}`` from *directory*'s refresh manifest ({} if none)."""
    import json

    path = Path(directory) / REFRESH_MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise CatalogFileError(
            str(path),
            None,
            None,
            "is not a refresh manifest; delete it and run `flopwise catalog refresh` again",
        ) from None
    return files
