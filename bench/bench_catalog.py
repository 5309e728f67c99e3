"""Catalog refresh and load times, each printed beside its baseline or target, in one process.

- reading the built-in catalog (target < 50 ms, issue #9): ``read_catalog_dir`` over the built-in files, best of
  N, CPU time of this process (other processes on a shared machine do not count);
- the offering rows alone (most of the load: thousands of fetched rows), three ways over the same files:
  the loader's column-wise path (each distinct provider, region, count, price and provenance checked once,
  rows built in C-level loops), the per-row fast path it replaced (csv module, one check chain per row: the
  baseline), and the validating path (``_Row`` per row, which names the field of a bad cell);
- the split and column-wise checks against the previous version of the same two steps (kept verbatim below as
  the baseline): one csv reader for all quoted lines and each distinct repeated value stripped once, vs a csv
  reader per quoted line and every cell stripped;
- with SNAPSHOT_DIR: ``catalog refresh`` over the full snapshots (every source; target < 10 s).

Run: ``python bench/bench_catalog.py [SNAPSHOT_DIR] [--repeat N]`` where SNAPSHOT_DIR has the layout
``skypilot/v9-aws-vms.csv``, ``carbon/gcp-region-carbon-2025.csv`` ... (the shared data set's ``catalogs``
folder). Default: 15 repeats, about 5 s.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from collections import deque
from decimal import Decimal
from itertools import compress, count
from itertools import repeat as _repeat
from pathlib import Path

from flopwise.catalog import loader


def _best(fn, n: int) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _offering_files() -> list[Path]:
    return sorted((loader.BUILTIN_DATA_DIR / "offerings").glob("*.csv"))


def _column_wise() -> None:
    for path in _offering_files():
        loader.read_offerings(path)


def _per_row_baseline() -> None:
    """The previous ``read_offerings``: the csv module, then ``_fast_offering`` row by row."""
    width = len(loader.OFFERING_COLUMNS)
    for path in _offering_files():
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            next(reader)
            for cells in reader:
                if len(cells) == width and cells[0]:
                    offering = loader._fast_offering(cells)
                    assert offering is not None


# ---- the previous column-wise path, kept verbatim as the baseline of the current one: a csv reader per quoted
# line (``_split_records``) and every cell of every column stripped (``_fast_offerings``)


class _PreviousMultiLine(Exception):
    pass


def _previous_quoted_line(line: str) -> list[str]:
    cells = next(csv.reader((line + "\n",)))
    if any("\n" in c for c in cells):  # the quote was still open at the end of the line
        raise _PreviousMultiLine
    return cells


def _previous_split_records(text: str) -> list[list[str]] | None:
    """The cells of every line of *text* (header included; line n is item n - 1), as ``csv.reader`` (excel
    dialect) reads them, or None when only the csv module can tell (a carriage return, a NUL, a quoted cell
    spanning lines). A blank line gives ``[]`` or ``['']``; both are skipped as blank.

    ``str.split`` on the lines without a quote (nearly every line of a fetched file; several times faster than
    the csv module, and run as C-level ``map``), the csv module for each line with one. A quoted cell still
    open at the end of its line is what a multi-line record looks like: then the whole file goes to the csv
    module."""
    if "\r" in text or "\0" in text:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no record
    rows = list(map(str.split, lines, _repeat(",")))
    for i in compress(count(), map(str.__contains__, lines, _repeat('"'))):
        try:
            rows[i] = _previous_quoted_line(lines[i])
        except _PreviousMultiLine:
            return None
    return rows


def _previous_fast_offerings(rows: list[list[str]]) -> list[loader.Offering] | None:
    """The offerings of a whole file's rows, checked column by column, or None when any check fails (then each
    row goes through :func:`_fast_offering` / :func:`_offering_from_row`, which raise the precise error).

    Accepts exactly what :func:`_offering_from_row` accepts. A fetched file repeats its provider, regions,
    counts, prices and provenance on thousands of rows, so each distinct value is parsed and checked once
    (Decimal built once per distinct price string), and the per-row checks run as C-level ``map``/``zip``."""
    if not rows:
        return []
    cols = [tuple(map(str.strip, col)) for col in zip(*rows, strict=True)]
    oid, provider, it, region, device_id, count, vcpus, ram, od, sp, rs, term, url, retrieved, basis, note = cols
    if not (all(oid) and all(it) and all(device_id)):
        return None
    for p in set(provider):
        if p not in loader._GOOD_SLUGS and not loader._SLUG_RE.match(p):
            return None
    for r in set(region):
        if r not in loader._GOOD_REGION_IDS and not loader._REGION_ID_RE.match(r):
            return None
    prefixes = list(map("{}:{}:".format, provider, it))
    if not all(map(str.startswith, oid, prefixes)) or not all(
        map(int.__gt__, map(len, oid), map(len, prefixes))
    ):
        return None
    try:
        ints: dict[str, int] = {}
        for raw in set(count) | set(vcpus):
            if not raw.isdigit():
                return None
            ints[raw] = int(raw)
        counts = list(map(ints.__getitem__, count))
        cpus = list(map(ints.__getitem__, vcpus))
        floats: dict[str, float] = {}
        for raw in set(ram):
            value = float(raw)
            if not loader.RAM_GB_RANGE[0] <= value <= loader.RAM_GB_RANGE[1]:  # False for NaN; inf is out of range
                return None
            floats[raw] = value
        rams = list(map(floats.__getitem__, ram))
        prices: dict[str, Decimal | None] = {"": None}
        for raw in (set(od) | set(sp) | set(rs)) - {""}:
            price = Decimal(raw)
            if not (price.is_finite() and loader._ZERO <= price <= loader.PRICE_USD_PER_H_MAX):
                return None
            prices[raw] = price
    except (ValueError, ArithmeticError):
        return None
    if not (
        loader.DEVICE_COUNT_RANGE[0] <= min(counts)
        and max(counts) <= loader.DEVICE_COUNT_RANGE[1]
        and loader.VCPUS_RANGE[0] <= min(cpus)
        and max(cpus) <= loader.VCPUS_RANGE[1]
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
        if (t or rs_p is not None) and (t not in loader.RESERVED_TERMS or rs_p is None):
            return None
    for u, d, b, n in set(zip(url, retrieved, basis, map(bool, note), strict=True)):
        if not (u and d and b) or loader._provenance_problem(u, d, b, n) is not None:
            return None
    loader._GOOD_SLUGS.update(provider)
    loader._GOOD_REGION_IDS.update(region)
    # C-level loops: one dict per row (what the frozen dataclass __init__ would set), set as the instance dict
    dicts = list(
        map(dict, map(zip, _repeat(loader._OFFERING_FIELDS), zip(
            oid, provider, it, region, device_id, counts, cpus, rams, on_demand, spot, reserved, term, url,
            retrieved, basis, note, strict=True,
        )))
    )  # fmt: skip
    out = list(map(object.__new__, _repeat(loader.Offering, len(dicts))))
    deque(map(object.__setattr__, out, _repeat("__dict__"), dicts), maxlen=0)
    return out



def _previous_column_wise() -> None:
    for path in _offering_files():
        rows = _previous_split_records(path.read_bytes().decode("utf-8-sig"))
        assert rows is not None
        assert _previous_fast_offerings(rows[1:]) is not None


def _column_wise_parts() -> None:
    """The current path cut the same way as :func:`_previous_column_wise` (split, then the offerings)."""
    for path in _offering_files():
        rows = loader._split_records(path.read_bytes().decode("utf-8-sig"))
        assert rows is not None
        assert loader._fast_offerings(rows[1:]) is not None


def _validating_path() -> None:
    for path in _offering_files():
        where = str(path)
        for line, cells in loader._read_cells(path, loader.OFFERING_COLUMNS):
            loader._offering_from_row(loader._Row(where, line, dict(zip(loader.OFFERING_COLUMNS, cells, strict=True))))


def main(argv: list[str]) -> int:
    repeat = 15
    if "--repeat" in argv:
        i = argv.index("--repeat")
        repeat = int(argv[i + 1])
        del argv[i : i + 2]
    if len(argv) > 1 or (argv and not Path(argv[0]).is_dir()):
        print(__doc__, file=sys.stderr)
        return 2
    if argv:
        from flopwise.catalog.fetch.shell import refresh

        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            result = refresh(Path(tmp), None, argv[0])
            wall = time.perf_counter() - t
        lines = sum(s.source_lines for s in result.sources)
        rows = sum(s.rows for s in result.sources)
        print(
            f"refresh, all sources: {wall:.2f} s wall for {lines} source lines -> {rows} rows   (target < 10 s)"
        )
    data = loader.read_catalog_dir(loader.BUILTIN_DATA_DIR)  # warm caches and imports
    whole = _best(lambda: loader.read_catalog_dir(loader.BUILTIN_DATA_DIR), repeat)
    print(
        f"read built-in catalog ({len(data.devices)} devices, {len(data.offerings)} offerings, "
        f"{len(data.regions)} regions): {whole * 1000:.1f} ms CPU, best of {repeat}   (target < 50 ms)"
    )
    fast = _best(_column_wise, repeat)
    parts, previous = _best(_column_wise_parts, repeat), _best(_previous_column_wise, repeat)
    per_row = _best(_per_row_baseline, repeat)
    slow = _best(_validating_path, repeat)
    print(
        f"offering rows ({len(_offering_files())} files): column-wise {fast * 1000:.1f} ms vs per-row fast "
        f"path {per_row * 1000:.1f} ms (baseline) = {per_row / fast:.2f}x; validating path "
        f"{slow * 1000:.1f} ms = {slow / fast:.2f}x"
    )
    print(
        f"split + column-wise checks: current {parts * 1000:.1f} ms (one csv reader for all quoted lines, each "
        f"distinct repeated value stripped once) vs previous {previous * 1000:.1f} ms (baseline: a csv reader per "
        f"quoted line, every cell stripped) = {previous / parts:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
