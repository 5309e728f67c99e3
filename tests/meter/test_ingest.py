"""The ingest pipeline on the real sample files in tests/data, on SQLite and PostgreSQL.

Every sample ingests; the same file twice adds nothing; input rows reconcile with ledger records, rejects and
rolled-up rows; a truncated file, a wrong delimiter and a file of the wrong kind behave; a URL is read through
an injected httpx client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from flopwise.catalog import load_catalog
from flopwise.errors import InputError
from flopwise.meter.costing import Coster, CostingOptions
from flopwise.meter.ingest import IngestOptions, costed_row, ingest_records, ingest_source
from flopwise.meter.record import UsageRecord
from flopwise.store import (
    ComputeRequest,
    IngestReject,
    IngestRun,
    Organization,
    UsageRecordRow,
    read_session,
    write_session,
)

DATA = Path(__file__).resolve().parents[1] / "data"
CAT = load_catalog()
SCRAPED_AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

# (source, file, options, expected (rows_read, records, rejected, rolled_up, expanded)) - counts checked by hand
# against the files: hb-jobinfo has 242 lines = 87 metered jobs + 136 steps + 19 rejected lines (never started,
# pending, running, and their steps); the xdmod array log expands 6 lines into 23 task records.
SAMPLES = [
    ("slurm", "slurm/hb-jobinfo-sacct.txt",
     IngestOptions(assume_tz="Europe/Amsterdam", fields="hb-jobinfo", cluster="hb", region="country:NL"),
     (242, 87, 19, 136, 0)),
    ("slurm", "slurm/xdmod-accounting-logs.log", IngestOptions(assume_tz="UTC", fields="xdmod"), (4, 4, 0, 0, 0)),
    ("slurm", "slurm/xdmod-accounting-logs-with-job-arrays.log", IngestOptions(assume_tz="UTC", fields="xdmod"),
     (6, 23, 0, 0, 17)),
    ("slurm", "slurm/xdmod-non-ended-job-state.log", IngestOptions(assume_tz="UTC", fields="xdmod"), (2, 0, 2, 0, 0)),
    ("slurm", "slurm/xdmod-unknown-job-state.log", IngestOptions(assume_tz="UTC", fields="xdmod"), (2, 0, 2, 0, 0)),
    ("slurm", "slurm/xdmod-utf8-multibyte-chars.log", IngestOptions(assume_tz="UTC", fields="xdmod"), (1, 1, 0, 0, 0)),
    ("focus", "focus/focus-1.0-sample.csv", IngestOptions(assume_tz="UTC"), (1000, 1000, 0, 0, 0)),
    ("aws-cur", "focus/aws-cur-anonymous-sample.csv", IngestOptions(assume_tz="UTC"), (1281, 1281, 0, 0, 0)),
    ("azure", "focus/azure-ea-anonymous-sample.csv", IngestOptions(), (27, 27, 0, 0, 0)),
    ("oci", "focus/oci-cost-report-sample.csv", IngestOptions(assume_tz="UTC"), (506, 506, 0, 0, 0)),
    ("dcgm", "dcgm/h100x8-dcgm-exporter-scrape.prom", IngestOptions(scraped_at=SCRAPED_AT, region="country:US"),
     (30, 8, 0, 22, 0)),
]  # fmt: skip


def sample(rel: str) -> Path:
    path = DATA / rel
    assert path.exists(), f"sample file {rel} is missing from tests/data (see tests/data/README.md)"
    return path


def ledger_count(factory, run_id: int | None = None) -> int:
    with read_session(factory) as s:
        q = select(func.count()).select_from(UsageRecordRow)
        if run_id is not None:
            q = q.where(UsageRecordRow.ingest_run_id == run_id)
        return s.scalar(q)


@pytest.mark.parametrize(("source", "rel", "options", "expected"), SAMPLES, ids=[s[1] for s in SAMPLES])
def test_every_sample_ingests_reconciles_and_is_idempotent(factory, source, rel, options, expected):
    path = sample(rel)
    rows_read, records, rejected, rolled_up, expanded = expected
    first = ingest_source(factory, source, path, catalog=CAT, options=options)
    assert first.status == ("partial" if rejected else "ok"), first.message
    # the xdmod files share job 4103947 with other contents: the later file restates it (replaced, not added)
    written = first.records_inserted + first.records_duplicate + first.records_replaced
    assert (first.rows_read, written, first.rows_rejected) == (
        rows_read, records, rejected,
    )  # fmt: skip
    assert (first.rows_rolled_up, first.records_expanded) == (rolled_up, expanded)
    assert first.reconciles
    before = ledger_count(factory)
    second = ingest_source(factory, source, path, catalog=CAT, options=options)
    assert (second.records_inserted, second.records_duplicate) == (0, records)
    assert second.reconciles
    assert ledger_count(factory) == before  # the same input twice changes nothing
    with read_session(factory) as s:
        run = s.get(IngestRun, second.run_id)
        assert (run.status, run.rows_read, run.records_duplicate, run.rows_rejected) == (
            second.status, rows_read, records, rejected,
        )  # fmt: skip
        assert s.scalar(select(func.count()).where(IngestReject.ingest_run_id == run.id)) >= rejected


def test_slurm_records_are_costed_from_the_catalog(factory):
    path = sample("slurm/hb-jobinfo-sacct.txt")
    ingest_source(factory, "slurm", path, catalog=CAT, options=SAMPLES[0][2])
    with read_session(factory) as s:
        rows = s.scalars(select(UsageRecordRow).where(UsageRecordRow.source == "slurm")).all()
        s.expunge_all()
    gpu = [r for r in rows if r.x_device_hours]
    assert gpu, "the hb-jobinfo sample has GPU jobs"
    for r in gpu:
        assert r.cost_basis in ("catalog-onprem", "catalog-cloud")
        assert r.cost_usd > 0 and r.energy_basis in ("measured", "estimated")
        assert r.x_co2e_kg > 0  # country:NL
        if r.x_gpu_utilization is not None:
            assert r.idle_device_hours == pytest.approx(
                r.x_device_hours * (1 - r.x_gpu_utilization), rel=1e-9
            )
    for r in rows:
        assert r.org_id is None  # unattributed is kept, not dropped
        assert r.cost_usd is None or r.cost_usd >= 0


def test_focus_billed_cost_is_kept_exactly(factory):
    path = sample("focus/focus-1.0-sample.csv")
    ingest_source(factory, "focus", path, catalog=CAT, options=IngestOptions(assume_tz="UTC"))
    with read_session(factory) as s:
        billed, cost = s.execute(
            select(func.sum(UsageRecordRow.billed_cost), func.sum(UsageRecordRow.cost_usd)).where(
                UsageRecordRow.source == "focus", UsageRecordRow.cost_basis == "billed"
            )
        ).one()
    assert Decimal(billed) == Decimal(cost)


def test_dcgm_single_scrape_meters_the_interval_before_it(factory):
    path = sample("dcgm/h100x8-dcgm-exporter-scrape.prom")
    r = ingest_source(factory, "dcgm", path, catalog=CAT, options=IngestOptions(
        scraped_at=datetime(2025, 6, 2, tzinfo=UTC), scrape_interval_s=60))  # fmt: skip
    assert r.records_inserted == 8
    with read_session(factory) as s:
        rows = s.scalars(select(UsageRecordRow).where(UsageRecordRow.ingest_run_id == r.run_id)).all()
        s.expunge_all()
    for row in rows:
        assert row.x_device_type == "h100-sxm"
        assert row.x_device_hours == pytest.approx(60 / 3600)
        assert row.energy_basis == "measured"
        assert row.x_energy_kwh == pytest.approx(row.x_extra["power_w"] * 60 / 3.6e6)


def test_truncated_file_rejects_the_broken_line_and_keeps_the_rest(factory, tmp_path):
    lines = sample("focus/focus-1.0-sample.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    cut = "".join(lines[:51]) + lines[51][: len(lines[51]) // 3]
    path = tmp_path / "truncated.csv"
    path.write_text(cut, encoding="utf-8")
    r = ingest_source(factory, "focus", path, catalog=CAT, options=IngestOptions(assume_tz="UTC"))
    assert r.status == "partial" and r.reconciles
    assert (r.rows_read, r.rows_rejected) == (51, 1)
    assert r.rejects[0].line == 52


def test_wrong_delimiter_fails_with_one_message_and_leaves_nothing(factory, tmp_path):
    path = tmp_path / "semicolons.txt"
    text = sample("slurm/xdmod-accounting-logs.log").read_text(encoding="utf-8").replace("|", ";")
    path.write_text(text, encoding="utf-8")
    before = ledger_count(factory)
    r = ingest_source(factory, "slurm", path, catalog=CAT, options=IngestOptions(
        assume_tz="UTC", fields="xdmod", delimiter="|"))  # fmt: skip
    assert (r.status, r.records_inserted, r.rows_read, r.rows_rejected) == ("partial", 0, 4, 4)
    assert all("separated by '|'" in j.reason for j in r.rejects)  # each row says why, with its line
    assert [j.line for j in r.rejects] == [1, 2, 3, 4]
    assert ledger_count(factory) == before


def test_a_file_of_the_wrong_kind_fails_the_run(factory):
    path = sample("dcgm/h100x8-dcgm-exporter-scrape.prom")
    before = ledger_count(factory)
    r = ingest_source(factory, "focus", path, catalog=CAT)
    assert r.status == "failed" and "not a FOCUS file" in r.message
    assert ledger_count(factory) == before
    with read_session(factory) as s:
        assert s.get(IngestRun, r.run_id).status == "failed"


def test_failure_midway_removes_what_the_run_wrote(factory, tmp_path, monkeypatch):
    """An IngestError after some batches were committed: those records are deleted, the run is failed."""
    from flopwise.errors import IngestError
    from flopwise.meter import ingest_parse as ingest_mod

    src = sample("focus/focus-1.0-sample.csv")
    real = ingest_mod.parse_focus

    def breaks_late(lines, **kw):
        for i, rec in enumerate(real(lines, **kw)):
            if i == 700:
                raise IngestError(str(src), 702, "simulated: the input stops making sense here")
            yield rec.__class__(**{**rec.__dict__, "source_key": rec.source_key + ":midway"})

    monkeypatch.setattr(ingest_mod, "parse_focus", breaks_late)
    before = ledger_count(factory)
    r = ingest_source(
        factory,
        "focus",
        src,
        catalog=CAT,
        options=IngestOptions(assume_tz="UTC", batch_size=100, columnar=False),  # the row path's parser
    )
    assert r.status == "failed" and "simulated" in r.message
    assert ledger_count(factory) == before
    assert ledger_count(factory, r.run_id) == 0


def test_missing_file_and_unknown_source(factory, tmp_path):
    r = ingest_source(factory, "slurm", tmp_path / "nope.txt", catalog=CAT)
    assert r.status == "failed" and "no such file" in r.message
    with pytest.raises(InputError):
        ingest_source(factory, "splunk", tmp_path / "nope.txt", catalog=CAT)


def test_gzip_file(factory, tmp_path):
    import gzip

    src = sample("focus/oci-cost-report-sample.csv")
    path = tmp_path / "oci.csv.gz"
    path.write_bytes(gzip.compress(src.read_bytes()))
    r = ingest_source(factory, "oci", path, catalog=CAT, options=IngestOptions(assume_tz="UTC"))
    assert r.reconciles and r.rows_read == 506 and r.records_inserted + r.records_duplicate == 506


def test_url_through_an_injected_client_with_progress(factory):
    body = sample("dcgm/h100x8-dcgm-exporter-scrape.prom").read_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, content=body, headers={"content-length": str(len(body))})
        return httpx.Response(404)

    seen: list[tuple[int, int | None]] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        r = ingest_source(factory, "dcgm", "http://gpu-node-1:9400/metrics", catalog=CAT, http_client=client,
                          options=IngestOptions(scraped_at=datetime(2025, 6, 3, tzinfo=UTC)),
                          progress=lambda done, total: seen.append((done, total)))  # fmt: skip
        assert r.status == "ok" and r.records_inserted == 8
        assert seen and seen[-1] == (len(body), len(body))
        bad = ingest_source(factory, "dcgm", "http://gpu-node-1:9400/nope", catalog=CAT, http_client=client)
    assert bad.status == "failed" and "HTTP 404" in bad.message


def test_progress_reports_bytes_of_a_file(factory):
    path = sample("focus/azure-ea-anonymous-sample.csv")
    seen: list[tuple[int, int | None]] = []
    ingest_source(factory, "azure", path, catalog=CAT, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)


# --- the write path: COPY / executemany must store exactly what the ORM stores ------------------------------

_AMS = ZoneInfo("Europe/Amsterdam")


def _records(prefix: str) -> list[UsageRecord]:
    """Records that exercise every column kind: money with more than 6 places, a non-UTC zone, nested JSON."""
    t0 = datetime(2025, 3, 30, 0, 30, tzinfo=_AMS)  # the night the clocks go forward
    return [
        UsageRecord(
            source="focus",
            source_key=f"{prefix}:billed",
            charge_period_start=t0,
            charge_period_end=t0 + timedelta(hours=3),
            billed_cost=Decimal("12.34567891"),
            effective_cost=Decimal("-0.5"),
            list_cost=Decimal("99999999.999999"),
            billing_currency="USD",
            provider_name="AWS",
            region_id="us-east-1",
            resource_id="i-0abc",
            sku_id="p5.48xlarge",
            tags={"team": "vision", "cost centre": "ü-42"},
            x_device_type="h100-sxm",
            x_device_count=8.0,
            x_device_hours=24.0,
            x_gpu_utilization=0.25,
            x_extra={"nested": {"a": [1, 2.5, None]}, "amount": Decimal("1.10")},
        ),
        UsageRecord(
            source="slurm",
            source_key=f"{prefix}:onprem",
            charge_period_start=datetime(2025, 1, 1, tzinfo=UTC),
            charge_period_end=datetime(2025, 1, 1, 2, 0, 0, 123456, tzinfo=UTC),
            x_device_type="a100-sxm4-80gb",
            x_device_count=0.5,
            x_device_hours=1.0,
            x_job_id="123_4",
            x_request_id="999999999",
            x_user="u1",
            x_account="acct",
        ),
        UsageRecord(
            source="nvml",
            source_key=f"{prefix}:bare",
            charge_period_start=datetime(2025, 1, 1, tzinfo=UTC),
            charge_period_end=datetime(2025, 1, 1, tzinfo=UTC),
        ),
    ]


_COMPARED = [
    c.key for c in UsageRecordRow.__table__.columns if c.key not in ("id", "source_key", "ingested_at")
]


def _stored(factory, keys: list[str]) -> list[dict]:
    with read_session(factory) as s:
        rows = s.scalars(select(UsageRecordRow).where(UsageRecordRow.source_key.in_(keys))).all()
        by_key = {r.source_key: {c: getattr(r, c) for c in _COMPARED} for r in rows}
    return [by_key[k] for k in keys]


def test_bulk_write_stores_what_the_orm_stores(factory, seed):
    coster = Coster(CAT, CostingOptions(default_region="country:NL"))
    owner = (seed.org_id, seed.team_id, seed.project_id)
    bulk = _records(f"bulk-{seed.org_id}")
    inserted, duplicate, totals = ingest_records(
        factory, bulk, coster=coster, run_id=None, attribute=lambda r: owner if r.source == "focus" else None
    )
    assert (inserted, duplicate) == (3, 0)
    orm = _records(f"orm-{seed.org_id}")
    with write_session(factory) as s:
        for rec in orm:
            row = costed_row(coster.cost(rec), None)
            if rec.source == "focus":
                row["org_id"], row["team_id"], row["project_id"] = owner
            s.add(UsageRecordRow(**row))
    assert _stored(factory, [r.source_key for r in bulk]) == _stored(factory, [r.source_key for r in orm])
    first = _stored(factory, [bulk[0].source_key])[0]
    assert first["charge_period_start"] == datetime(2025, 3, 29, 23, 30, tzinfo=UTC)
    assert first["billed_cost"] == Decimal("12.345679")  # NUMERIC(20, 6), half-even
    assert first["x_extra"] == {"nested": {"a": [1, 2.5, None]}, "amount": "1.10"}
    assert first["request_id"] is None  # x_request_id names no compute request
    assert totals["cost_usd"] == sum(c.cost_usd for c in map(coster.cost, bulk) if c.cost_usd is not None)


def test_duplicates_are_counted_exactly_within_and_across_batches(factory):
    coster = Coster(CAT)
    t = datetime(2025, 1, 1, tzinfo=UTC)
    recs = [
        UsageRecord(source="nvml", source_key=f"dup-test:{k}", charge_period_start=t, charge_period_end=t)
        for k in ("a", "b", "a", "c", "d", "b", "e")  # "a" twice in batch 1, "b" again in batch 2
    ]
    assert ingest_records(factory, recs, coster=coster, batch_size=3)[:2] == (5, 2)
    assert ingest_records(factory, recs, coster=coster, batch_size=2)[:2] == (0, 7)
    assert ingest_records(factory, [], coster=coster)[:2] == (0, 0)


def test_request_id_links_an_existing_compute_request(factory, seed):
    with write_session(factory) as s:
        req = ComputeRequest(
            org_id=seed.org_id,
            requester_id=seed.user_id,
            project_id=seed.project_id,
            workload_kind="train",
            inputs={},
        )
        s.add(req)
        s.flush()
        request_id = req.id
    t = datetime(2025, 1, 1, tzinfo=UTC)
    rec = UsageRecord(
        source="nvml",
        source_key=f"linked:{request_id}",
        charge_period_start=t,
        charge_period_end=t,
        x_request_id=str(request_id),
    )
    assert ingest_records(factory, [rec], coster=Coster(CAT))[:2] == (1, 0)
    assert _stored(factory, [rec.source_key])[0]["request_id"] == request_id
    # a row already attributed to another organization never links to this organization's request
    foreign = UsageRecord(
        source="nvml",
        source_key=f"foreign:{request_id}",
        charge_period_start=t,
        charge_period_end=t,
        x_request_id=str(request_id),
    )
    other_org = (seed.org_id + 10_000, None, None)
    with write_session(factory) as s:
        s.add(Organization(id=other_org[0], name=f"other-{request_id}"))
    assert ingest_records(factory, [foreign], coster=Coster(CAT), attribute=lambda r: other_org)[:2] == (1, 0)
    assert _stored(factory, [foreign.source_key])[0]["request_id"] is None
