"""The columnar FOCUS ingest's memory: Arrow's working set per batch and the process's peak above where it started
(issue #10: "memory stays flat, under 500 MB, for a 10M-row file"; the 10M-row figures come from
``bench/bench_ingest.py --memory-rows 10000000``, docs/ingest/index.md). Measured in a fresh interpreter, where
the peak RSS and Arrow's high-water mark belong to this ingest alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.meter.ingest import ingest_source
from flopwise.meter.ingest_columnar import pyarrow_available

pytestmark = pytest.mark.skipif(not pyarrow_available(), reason="the columnar path needs pyarrow")

DATA = Path(__file__).resolve().parents[1] / "data"
ROWS = 30_000  # six batches of 5,000

# the FOCUS 1.0 sample's 1,000 rows, copy k shifted by k hours (as bench/bench_ingest.py makes its files), ingested
# into a new SQLite file; prints the RSS before and at its peak and Arrow's high-water mark, in MB / MiB
_SCRIPT = r"""
import csv, json, sys
from datetime import datetime, timedelta
from pathlib import Path
import pyarrow as pa
from flopwise.catalog import load_catalog
from flopwise.meter.ingest import ingest_source
from flopwise.store import make_engine, make_session_factory, upgrade

sample, tmp, rows = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
with sample.open(encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f)
    header = next(reader)
    body = list(reader)
times = [i for i, h in enumerate(header) if h in ("ChargePeriodStart", "ChargePeriodEnd")]
path = tmp / "focus.csv"
with path.open("w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    for n in range(rows):
        copy, k = divmod(n, len(body))
        row = list(body[k])
        for i in times:
            row[i] = (datetime.fromisoformat(body[k][i]) + timedelta(hours=copy)).strftime("%Y-%m-%d %H:%M:%S")
        writer.writerow(row)
catalog = load_catalog()
engine = make_engine(f"sqlite:///{tmp / 'ledger.db'}")
upgrade(engine)
before_pool = pa.default_memory_pool().backend_name
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
# the peak of this process's own memory: VmHWM starts afresh at exec, while ru_maxrss keeps the high-water mark of
# the memory it was forked with (the whole test session's, ~650 MB in the full suite)
hwm = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
before = rss()
result = ingest_source(make_session_factory(engine), "focus", path, catalog=catalog)
arrow = max(pa.system_memory_pool().max_memory(), pa.default_memory_pool().max_memory())
print(json.dumps({
    "reconciles": result.reconciles, "inserted": result.records_inserted,
    "before_mb": before, "peak_mb": hwm(),
    "arrow_max_mib": arrow / 2**20, "pool_before": before_pool,
    "pool_after": pa.default_memory_pool().backend_name,
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_columnar_ingest_holds_one_batch_of_arrow_memory_and_a_bounded_peak(tmp_path):
    """30,000 rows of the FOCUS sample (six 5,000-row batches) into SQLite: Arrow's high-water mark stays under
    60 MiB (32-33 MiB measured: the reader's 32 blocks of read-ahead, the batch built and the batch written; 61-63
    MiB with 10,000-row batches, 111 MiB with those, 1 MiB blocks and the copies the build made before) and the peak
    RSS under 180 MB above the RSS before the ingest (125-129 MB measured; 182-185 and 250-260 MB before). The
    default pool is the caller's again afterwards."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            str(DATA / "focus" / "focus-1.0-sample.csv"),
            str(tmp_path),
            str(ROWS),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["reconciles"] and got["inserted"] == ROWS
    assert got["arrow_max_mib"] < 60, got
    assert got["peak_mb"] - got["before_mb"] < 180, got
    assert got["pool_after"] == got["pool_before"], got


def test_the_columnar_path_allocates_from_malloc_while_it_runs_and_restores_the_pool(factory):
    import pyarrow as pa

    before = pa.default_memory_pool()
    during: list[str] = []
    ingest_source(
        factory,
        "focus",
        DATA / "focus" / "focus-1.0-sample.csv",
        catalog=load_catalog(),
        progress=lambda done, total: during.append(pa.default_memory_pool().backend_name),
    )
    assert during and set(during) == {"system"}
    assert pa.default_memory_pool().backend_name == before.backend_name
