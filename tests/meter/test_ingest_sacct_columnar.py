"""The columnar sacct path (``meter.ingest_sacct_columnar`` + ``ledger_write.write_columns``) gives the ledger the
row path gives, row by row, with the same counts and the same rejects (line, reason, order): on the real sacct
samples and on fuzzed variants of them (odd durations, job steps, GRES/TRES forms, time zones, missing values,
truncated lines, repeated jobs, ``--parsable``'s trailing delimiter); on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select

from flopwise.catalog import load_catalog
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.ingest_sacct_columnar import sacct_plan
from flopwise.meter.sacct import SACCT_FORMATS
from flopwise.store import UsageRecordRow, read_session, write_session
from flopwise.store.ledger import IngestReject, UsageRecordHistory

pytest.importorskip("pyarrow")

SLURM = Path(__file__).resolve().parents[1] / "data" / "slurm"
CAT = load_catalog()
_SKIP = {"id", "ingest_run_id", "ingested_at"}


def _ledger(factory):
    with read_session(factory) as s:
        rows = s.execute(select(UsageRecordRow).order_by(UsageRecordRow.source_key)).scalars().all()
        return [
            {c.name: getattr(r, c.name) for c in UsageRecordRow.__table__.columns if c.name not in _SKIP}
            for r in rows
        ]


def _all_rejects(factory, run_id):
    with read_session(factory) as s:
        return [
            (r.line, r.reason, r.raw)
            for r in s.execute(
                select(IngestReject).where(IngestReject.ingest_run_id == run_id).order_by(IngestReject.id)
            ).scalars()
        ]


def _both(factory, path: Path, **kw):
    out = []
    for columnar in (True, False):
        with write_session(factory) as s:
            s.execute(delete(UsageRecordHistory))
            s.execute(delete(UsageRecordRow))
        result = ingest_source(
            factory, "slurm", path, catalog=CAT, options=IngestOptions(columnar=columnar, **kw)
        )
        out.append((result, _ledger(factory), _all_rejects(factory, result.run_id)))
    return out


def _same(a, b):
    (ra, la, ja), (rb, lb, jb) = a, b
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x == y
    for name in (
        "status", "rows_read", "records_inserted", "records_duplicate", "rows_rejected", "rows_rolled_up",
        "records_expanded", "cost_usd", "device_hours", "energy_kwh", "message",
    ):  # fmt: skip
        assert getattr(ra, name) == getattr(rb, name), name
    assert ja == jb
    assert ra.reconciles and rb.reconciles


def _pipe(path: Path, tmp_path: Path, header: bool = True, trailing: bool = False) -> Path:
    """The hb-jobinfo dump (``☃``, trailing delimiter) as ``--parsable2`` with ``|``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = tmp_path / "sacct.txt"
    body = []
    for line in lines:
        fields = line.split("☃")[:-1]
        body.append("|".join(fields) + ("|" if trailing else ""))
    head = ["|".join(SACCT_FORMATS["hb-jobinfo"]) + ("|" if trailing else "")] if header else []
    out.write_text("\n".join(head + body) + "\n", encoding="utf-8")
    return out


def test_the_plan_takes_pipe_files_and_leaves_the_snowman(tmp_path):
    planned, why = sacct_plan(str(_pipe(SLURM / "hb-jobinfo-sacct.txt", tmp_path)), CAT, IngestOptions())
    assert planned is not None and why == ""
    planned, why = sacct_plan(str(SLURM / "hb-jobinfo-sacct.txt"), CAT, IngestOptions(fields="hb-jobinfo"))
    assert planned is None and "ASCII" in why


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("trailing", [False, True])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Amsterdam", None])
def test_hb_jobinfo_gives_the_row_paths_ledger(factory, tmp_path, header, trailing, tz):
    path = _pipe(SLURM / "hb-jobinfo-sacct.txt", tmp_path, header=header, trailing=trailing)
    kw = {"assume_tz": tz, "cluster": "hb"}
    if not header:
        kw["fields"] = "hb-jobinfo"
    columnar, rows = _both(factory, path, **kw)
    _same(columnar, rows)
    if tz is not None:
        assert columnar[0].records_inserted > 50


@pytest.mark.parametrize(
    "name,fields",
    [
        ("xdmod-accounting-logs.log", "xdmod"),
        ("xdmod-accounting-logs-with-job-arrays.log", "xdmod"),
        ("xdmod-accounting-logs-with-gpu-gres.log", "xdmod-gres"),
        ("xdmod-non-ended-job-state.log", "xdmod"),
        ("xdmod-unknown-job-state.log", "xdmod"),
        ("xdmod-utf8-multibyte-chars.log", "xdmod"),
    ],
)
def test_xdmod_samples_give_the_row_paths_ledger(factory, name, fields):
    columnar, rows = _both(factory, SLURM / name, fields=fields, assume_tz="America/New_York")
    _same(columnar, rows)
