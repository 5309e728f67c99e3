"""Catalog refresh and load times, each printed beside its baseline or target, in one process.

- reading the built-in catalog (target < 50 ms, issue #9): ``read_catalog_dir`` over the built-in files, best of
  N, CPU time of this process (other processes on a shared machine do not count);
- the offering rows alone (most of the load: thousands of fetched rows), three ways over the same files:
  the loader's column-wise path (each distinct provider, region, count, price and provenance checked once,
  rows built in C-level loops), the per-row fast path it replaced (csv module, one check chain per row: the
  baseline), and the validating path (``_Row`` per row, which names the field of a bad cell);
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
    per_row = _best(_per_row_baseline, repeat)
    slow = _best(_validating_path, repeat)
    print(
        f"offering rows ({len(_offering_files())} files): column-wise {fast * 1000:.1f} ms vs per-row fast "
        f"path {per_row * 1000:.1f} ms (baseline) = {per_row / fast:.2f}x; validating path "
        f"{slow * 1000:.1f} ms = {slow / fast:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
