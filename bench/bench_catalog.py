"""Catalog refresh and load times, each printed beside its baseline or target, in one process.

- ``catalog refresh`` over the full snapshots (every source; target < 10 s): parse, build, validate, write.
- reading the built-in catalog (target < 50 ms): the loader's fast path for well-formed offering rows vs the
  validating path alone (the baseline, which every row used before), best of 5, CPU time of this process.

Run: ``python bench/bench_catalog.py SNAPSHOT_DIR`` where SNAPSHOT_DIR has the layout ``skypilot/v9-aws-vms.csv``,
``carbon/gcp-region-carbon-2025.csv`` ... (the shared data set's ``catalogs`` folder).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from flopwise.catalog import loader
from flopwise.catalog.fetch.shell import refresh


def _best(fn, n: int = 5) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _validating_path_only() -> None:
    for path in sorted((loader.BUILTIN_DATA_DIR / "offerings").glob("*.csv")):
        [loader._offering_from_row(r) for r in loader._read_rows(path, loader.OFFERING_COLUMNS)]


def _fast_path() -> None:
    for path in sorted((loader.BUILTIN_DATA_DIR / "offerings").glob("*.csv")):
        loader.read_offerings(path)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = refresh(Path(tmp), None, argv[0])
        wall = time.perf_counter() - t
    lines = sum(s.source_lines for s in result.sources)
    rows = sum(s.rows for s in result.sources)
    print(
        f"refresh, all sources: {wall:.2f} s wall for {lines} source lines -> {rows} rows   (target < 10 s)"
    )
    loader.read_catalog_dir(loader.BUILTIN_DATA_DIR)  # warm caches and imports
    whole = _best(lambda: loader.read_catalog_dir(loader.BUILTIN_DATA_DIR))
    n = sum(1 for _ in (loader.BUILTIN_DATA_DIR / "offerings").glob("*.csv"))
    fast, slow = _best(_fast_path), _best(_validating_path_only)
    print(f"read built-in catalog: {whole * 1000:.1f} ms CPU   (target < 50 ms)")
    print(
        f"offering rows ({n} files): fast path {fast * 1000:.1f} ms vs validating path {slow * 1000:.1f} ms "
        f"(baseline) = {slow / fast:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
