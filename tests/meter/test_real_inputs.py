"""Real inputs that were refused before read correctly with no extra flags, on SQLite and PostgreSQL, and their
totals equal an independent sum of the file (money rounded per row to the ledger's 6 places): Azure EA exports
whose cost column is ``Cost`` (microsoft/finops-toolkit), an OpenCost response given as a bare JSON array, the
official FOCUS 1.0 sample (zone-less timestamps, which FOCUS says are UTC), old Slurm ``ReqGRES=gpu:N`` (XDMoD's
fixture: 232 GPUs), and a DCGM scrape whose identity is its content, not its file's modification time."""

from __future__ import annotations

import csv
import json
import os
import shutil
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from flopwise.catalog import load_catalog
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.sacct import parse_sacct
from flopwise.store import UsageRecordRow, read_session, write_session
from flopwise.store.ledger import UsageRecordHistory

CAT = load_catalog()
DATA = Path(__file__).resolve().parents[1] / "data"
MICRO = Decimal("0.000001")


@pytest.fixture(autouse=True)
def _empty_ledger(factory):
    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))


def _ledger_cost(factory) -> tuple[int, Decimal]:
    with read_session(factory) as s:
        n, cost = s.execute(select(func.count(), func.sum(UsageRecordRow.billed_cost))).one()
        return int(n), Decimal(cost or 0)


def _csv_sum(path: Path, column: str) -> tuple[int, Decimal]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    values = [r[column] for r in rows if r[column] not in ("", "NULL")]
    return len(rows), sum((Decimal(v).quantize(MICRO, ROUND_HALF_EVEN) for v in values), Decimal(0))


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("azure-ea-finops-toolkit-actualcost-small.csv", 11),
        ("azure-ea-finops-toolkit-amortizedcost-small.csv", 28),
    ],
)
def test_azure_ea_export_with_a_cost_column(factory, name, rows):
    path = DATA / "focus" / name
    result = ingest_source(factory, "azure", path, catalog=CAT)
    assert (result.status, result.rows_read, result.records_inserted, result.rows_rejected) == (
        "ok",
        rows,
        rows,
        0,
    )
    assert _ledger_cost(factory) == _csv_sum(path, "Cost")


def test_focus_1_0_sample_reads_without_assume_tz(factory):
    path = DATA / "focus" / "focus-1.0-sample.csv"
    result = ingest_source(factory, "focus", path, catalog=CAT)
    assert (result.status, result.records_inserted, result.rows_rejected) == ("ok", 1000, 0)
    assert _ledger_cost(factory) == _csv_sum(path, "BilledCost")
    with read_session(factory) as s:
        first = s.scalar(select(func.min(UsageRecordRow.charge_period_start)))
    assert first.tzinfo is not None and first.utcoffset().total_seconds() == 0
    # an explicit zone still wins: the same rows read as New York time are other charges, 4-5 hours later
    shifted = ingest_source(
        factory, "focus", path, catalog=CAT, options=IngestOptions(assume_tz="America/New_York")
    )
    assert shifted.records_inserted == 1000


def test_opencost_bare_json_array(factory):
    path = DATA / "opencost" / "opencost-flexera-kubecost-data-array.json"
    body = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    expected = sum((a["totalCost"] for s in body for a in s.values()), Decimal(0))
    result = ingest_source(factory, "opencost", path, catalog=CAT)
    assert (result.status, result.records_inserted) == ("ok", sum(len(s) for s in body))
    assert _ledger_cost(factory) == (1, expected.quantize(MICRO))


def test_old_slurm_reqgres_counts_xdmods_232_gpus(factory):
    path = DATA / "slurm" / "xdmod-accounting-logs-with-gpu-gres.log"
    rejected: list = []
    with path.open(encoding="utf-8") as fh:
        records = list(parse_sacct(fh, rejected=rejected, fields="xdmod-gres", assume_tz="UTC", catalog=CAT))
    assert len(records) == 24 and rejected == []
    assert sum(r.x_device_count for r in records) == 232  # what XDMoD's shredder reads from the same lines
    assert [r.x_device_count for r in records][-9:] == [
        2.0
    ] * 9  # gpu:P100:2(IDX:1,3): a comma in the index list
    # the 24 lines are one job (JobID 1) written 24 ways: the ledger keeps its first line, and they reconcile
    result = ingest_source(
        factory, "slurm", path, catalog=CAT, options=IngestOptions(fields="xdmod-gres", assume_tz="UTC")
    )
    assert (result.records_inserted, result.records_duplicate, result.reconciles) == (1, 23, True)


def test_dcgm_identity_is_the_scrapes_content_not_its_mtime(factory, tmp_path):
    scrape = tmp_path / "scrape.prom"
    shutil.copyfile(DATA / "dcgm" / "h100x8-dcgm-exporter-scrape.prom", scrape)
    first = ingest_source(factory, "dcgm", scrape, catalog=CAT)
    assert (first.records_inserted, first.rows_rejected) == (8, 0)
    os.utime(scrape, (scrape.stat().st_atime, scrape.stat().st_mtime + 3600))  # touch
    copy = tmp_path / "copy.prom"
    shutil.copyfile(scrape, copy)  # another name, another mtime
    for again in (
        ingest_source(factory, "dcgm", scrape, catalog=CAT),
        ingest_source(factory, "dcgm", copy, catalog=CAT),
    ):
        assert (again.records_inserted, again.records_replaced, again.records_duplicate) == (0, 0, 8)
    assert _ledger_cost(factory)[0] == 8
    # --scraped-at says when it was taken: that is the identity then
    at = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    timed = ingest_source(factory, "dcgm", scrape, catalog=CAT, options=IngestOptions(scraped_at=at))
    assert timed.records_inserted == 8
    assert (
        ingest_source(
            factory, "dcgm", copy, catalog=CAT, options=IngestOptions(scraped_at=at)
        ).records_duplicate
        == 8
    )
    # samples that carry their own timestamp (ms since the epoch) time the scrape
    stamped = tmp_path / "stamped.prom"
    ts_ms = 1_717_243_200_000  # 2024-06-01T12:00:00Z
    stamped.write_text(
        "".join(
            line if line.startswith("#") or not line.strip() else f"{line.rstrip()} {ts_ms}\n"
            for line in scrape.read_text(encoding="utf-8").splitlines(keepends=True)
        ),
        encoding="utf-8",
    )
    result = ingest_source(factory, "dcgm", stamped, catalog=CAT)
    assert result.records_inserted == 8
    with read_session(factory) as s:
        ends = set(
            s.scalars(
                select(UsageRecordRow.charge_period_end).where(UsageRecordRow.ingest_run_id == result.run_id)
            )
        )
    assert ends == {datetime(2024, 6, 1, 12, 0, tzinfo=UTC)}
