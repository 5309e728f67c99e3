"""parse_focus on the real FOCUS 1.0 sample and the handmade GPU bill: versions, GPU rows, rejections,
idempotency keys, Parquet, and parse -> serialize -> parse stability (hypothesis)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flopwise.catalog import load_catalog
from flopwise.errors import IngestError, InputError
from flopwise.meter.focus import (
    FOCUS_1_1_ADDED,
    FOCUS_1_2_ADDED,
    ParseReport,
    detect_focus_version,
    focus_csv_lines,
    hours_per_unit,
    parse_focus,
    parse_focus_file,
    parse_focus_parquet,
)
from flopwise.meter.record import RejectedRow

ROOT = Path(__file__).resolve().parents[2]
FOCUS_DATA = ROOT / "tests" / "data" / "focus"
HANDMADE = ROOT / "tests" / "fixtures" / "meter" / "focus-gpu-handmade.csv"


def _need(name: str) -> Path:
    path = FOCUS_DATA / name
    if not path.exists():
        pytest.skip(f"sample file {name} not found in {FOCUS_DATA}")
    return path


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _parse_text(text: str, **kw):
    report = ParseReport()
    records = list(parse_focus(io.StringIO(text), report=report, **kw))
    assert report.reconciles, (report.rows_read, report.records, len(report.rejected))
    return records, report


# --- the real FOCUS 1.0 sample ------------------------------------------------------------------------------


def test_sample_without_assume_tz_rejects_every_row_with_the_reason():
    path = _need("focus-1.0-sample.csv")
    report = ParseReport()
    assert list(parse_focus_file(path, report=report)) == []
    assert report.rows_read == 1000 and report.records == 0 and len(report.rejected) == 1000
    first = report.rejected[0]
    assert first.line == 2 and "no time zone" in first.reason and "assume_tz='UTC'" in first.reason


def test_sample_reconciles_and_keeps_every_row(catalog, capsys):
    path = _need("focus-1.0-sample.csv")
    report = ParseReport()
    records = list(parse_focus_file(path, report=report, assume_tz="UTC", catalog=catalog))
    with capsys.disabled():
        print(
            f"\n{path.name}: rows={report.rows_read} records={report.records} rejected={len(report.rejected)}",
            file=sys.stderr,
        )
    assert report.version == "1.0"
    assert report.unknown_columns == ("Id",)  # the sample's row number, kept in x_extra
    assert report.rows_read == 1000 == report.records + len(report.rejected)
    assert report.rejected == []
    assert len({r.source_key for r in records}) == 1000

    with path.open(newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))
    assert sum(r.billed_cost for r in records) == sum(Decimal(row["BilledCost"]) for row in raw)
    assert sum(r.effective_cost for r in records) == sum(Decimal(row["EffectiveCost"]) for row in raw)
    # literal NULLs are absent values, never the string "NULL"
    assert all("NULL" not in r.x_extra.values() for r in records)
    assert all("ChargeClass" not in r.x_extra for r in records)
    tagged = [r for r in records if r.tags]
    assert tagged and all(isinstance(v, str) for r in tagged for v in r.tags.values())
    assert {r.provider_name for r in records} == {"AWS", "Microsoft", "Oracle"}
    first = records[0]
    assert first.charge_period_start == datetime(2024, 9, 18, 22, tzinfo=UTC)
    assert first.x_extra["Id"] == "11472" and first.x_account == "51738928782"


def test_sample_gpu_rows_are_the_g5_instances(catalog):
    """The sample has eight g5.4xlarge hours (one NVIDIA A10G each); nothing else is an accelerator."""
    path = _need("focus-1.0-sample.csv")
    records = list(parse_focus_file(path, assume_tz="UTC", catalog=catalog))
    gpu = [r for r in records if r.x_device_type is not None]
    with path.open(newline="", encoding="utf-8") as fh:
        g5 = [row for row in csv.DictReader(fh) if "g5.4xlarge" in row["ChargeDescription"]]
    assert len(gpu) == len(g5) == 8
    assert {r.x_device_type for r in gpu} == {"a10g"}
    assert all(r.x_device_count == 1.0 for r in gpu)
    assert sum(r.x_device_hours for r in gpu) == pytest.approx(
        sum(float(row["ConsumedQuantity"]) for row in g5)
    )
    assert all(r.service_category == "Compute" for r in gpu)


def test_sample_reversals_are_kept():
    """Azure writes corrections as rows whose quantity and cost are both negative: they are charges."""
    path = _need("focus-1.0-sample.csv")
    records = list(parse_focus_file(path, assume_tz="UTC"))
    reversals = [r for r in records if Decimal(r.x_extra.get("ConsumedQuantity", "0")) < 0]
    assert len(reversals) == 12 and all(r.billed_cost <= 0 for r in reversals)
    credit = [r for r in records if r.x_extra.get("ChargeCategory") == "Credit"]
    assert len(credit) == 1 and credit[0].billed_cost == Decimal("-2.61370000000")


def test_sample_keys_are_idempotent_and_survive_a_round_trip(catalog):
    path = _need("focus-1.0-sample.csv")
    first = list(parse_focus_file(path, assume_tz="UTC", catalog=catalog))
    again = list(parse_focus_file(path, assume_tz="UTC", catalog=catalog))
    assert [r.source_key for r in first] == [r.source_key for r in again]
    extra = sorted({k for r in first for k in r.x_extra})
    text = "".join(focus_csv_lines(first, extra))
    back, report = _parse_text(text, catalog=catalog)
    assert report.rejected == []
    assert back == first


# --- the handmade GPU bill (FOCUS 1.2) -----------------------------------------------------------------------


def test_handmade_gpu_bill(catalog):
    report = ParseReport()
    records = list(parse_focus_file(HANDMADE, report=report, catalog=catalog))
    assert report.version == "1.2" and report.rows_read == 7 == report.records
    assert set(report.unknown_columns) == {"x_UsageType", "x_ClusterName"}
    by = {(r.resource_id, r.charge_period_start.hour): r for r in records}
    p5 = by[("i-0a1b2c3d4e5f60001", 0)]
    assert (p5.x_device_type, p5.x_device_count, p5.x_device_hours) == ("h100-sxm", 8.0, 8.0)
    assert p5.billed_cost == Decimal("98.3200000000") and p5.x_request_id == "req-0042"
    assert p5.tags["team"] == "llm" and p5.x_extra["x_ClusterName"] == "train-a"
    assert by[("i-0a1b2c3d4e5f60001", 1)].x_device_hours == 4.0  # half an hour of 8 GPUs
    assert by[("i-0a1b2c3d4e5f60002", 0)].x_device_type == "l4"
    azure = next(r for r in records if r.provider_name == "Microsoft")
    # a savings plan: nothing billed this period, the amortized cost is effective
    assert (
        azure.x_device_hours == 16.0 and azure.billed_cost == 0 and azure.effective_cost == Decimal("137.648")
    )
    gcp = next(r for r in records if r.provider_name == "Google Cloud")
    assert (gcp.x_device_type, gcp.x_device_hours) == ("h100-sxm", 24.0)
    storage = next(r for r in records if r.service_category == "Storage")
    assert storage.x_device_type is None and storage.x_device_hours is None
    credit = next(r for r in records if r.x_extra.get("ChargeCategory") == "Credit")
    assert credit.billed_cost == Decimal("-50") and credit.x_device_type is None


def test_without_catalog_no_device_is_guessed():
    records = list(parse_focus_file(HANDMADE))
    assert len(records) == 7 and all(r.x_device_type is None and r.x_device_hours is None for r in records)


def test_flopwise_x_columns_are_read_back(catalog):
    text = (
        "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ProviderName,x_DeviceType,x_DeviceCount,"
        "x_DeviceHours,x_GpuUtilization,x_EnergyKwh,x_JobId\n"
        "2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,3.5,USD,OnPrem,NVIDIA H100 80GB HBM3,0.5,0.5,0.8,0.35,job-9\n"
    )
    (record,), _ = _parse_text(text, catalog=catalog)
    assert (
        record.x_device_type == "h100-sxm"
        and record.x_device_count == 0.5
        and record.x_gpu_utilization == 0.8
    )
    assert record.x_energy_kwh == 0.35 and record.x_job_id == "job-9"


# --- versions, headers, bad input ----------------------------------------------------------------------------

HEADER = "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ProviderName,ConsumedQuantity"


def test_version_detection():
    base = ["BilledCost", "ChargePeriodStart"]
    assert detect_focus_version(base) == "1.0"
    assert detect_focus_version([*base, next(iter(FOCUS_1_1_ADDED))]) == "1.1"
    assert detect_focus_version([*base, "SkuMeter", next(iter(FOCUS_1_2_ADDED))]) == "1.2"


def test_missing_mandatory_column_is_one_clear_error():
    with pytest.raises(IngestError) as err:
        list(
            parse_focus(
                io.StringIO("ChargePeriodStart,BilledCost\n2025-01-01T00:00:00Z,1\n"), path="bill.csv"
            )
        )
    message = str(err.value)
    assert message.startswith("bill.csv:1:") and "ChargePeriodEnd" in message and "ProviderName" in message


def test_raw_aws_cur_given_as_focus_names_the_right_command():
    path = _need("aws-cur-anonymous-sample.csv")
    with pytest.raises(IngestError, match="flopwise ingest aws-cur"):
        list(parse_focus_file(path))


def test_empty_file_and_repeated_columns_fail_clearly():
    with pytest.raises(IngestError, match="empty"):
        list(parse_focus(io.StringIO("\n\n")))
    with pytest.raises(IngestError, match="repeats column"):
        list(parse_focus(io.StringIO(HEADER + ",BilledCost\n")))


def test_bad_rows_are_rejected_with_line_and_reason_and_the_rest_ingested():
    good = "2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,1.25,USD,AWS,1"
    text = "\n".join(
        [
            HEADER,
            good,  # line 2
            "2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,abc,USD,AWS,1",  # 3: cost not a number
            "2025-01-01T00:00:00Z,2024-12-31T23:00:00Z,1,USD,AWS,1",  # 4: end before start
            "yesterday,2025-01-01T01:00:00Z,1,USD,AWS,1",  # 5: not a timestamp
            "2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,1,USD,AWS,-3",  # 6: negative quantity, positive cost
            "2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,1,USD,AWS,1,extra",  # 7: one field too many
            ",2025-01-01T01:00:00Z,1,USD,AWS,1",  # 8: mandatory value empty
            '2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,"2"x,USD,AWS,1',  # 9: malformed quoting
            good.replace("1.25", "2.5"),  # 10
            "2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,3",  # 11: truncated last line
        ]
    )
    records, report = _parse_text(text)
    assert [r.billed_cost for r in records] == [Decimal("1.25"), Decimal("2.5")]
    reasons = {r.line: r.reason for r in report.rejected}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 11]
    assert "BilledCost 'abc' is not a number" in reasons[3]
    assert "before ChargePeriodStart" in reasons[4]
    assert "not an ISO 8601 timestamp" in reasons[5]
    assert "negative" in reasons[6]
    assert "7 fields" in reasons[7] and "truncated" in reasons[11]
    assert "ChargePeriodStart is empty" in reasons[8]
    assert "malformed CSV" in reasons[9]
    assert report.rows_read == 10


def test_rejected_rows_also_go_to_a_given_list():
    rejected: list[RejectedRow] = []
    text = HEADER + "\nnope,2025-01-01T01:00:00Z,1,USD,AWS,1\n"
    assert list(parse_focus(io.StringIO(text), path="b.csv", rejected=rejected)) == []
    assert len(rejected) == 1 and rejected[0].path == "b.csv" and rejected[0].line == 2


def test_delimiter_is_sniffed_and_zone_offsets_become_utc():
    text = HEADER.replace(",", ";") + "\n2025-01-01T01:00:00+01:00;2025-01-01T02:00:00+01:00;1;USD;AWS;1\n"
    (record,), report = _parse_text(text)
    assert record.charge_period_start == datetime(2025, 1, 1, 0, tzinfo=UTC)
    text = HEADER + "\n2025-01-01 01:00:00,2025-01-01 02:00:00,1,USD,AWS,1\n"
    (record,), _ = _parse_text(text, assume_tz="Europe/Paris")
    assert record.charge_period_start == datetime(2025, 1, 1, 0, tzinfo=UTC)
    with pytest.raises(InputError, match="assume_tz"):
        list(parse_focus(io.StringIO(text), assume_tz="Mars/Olympus"))


def test_duplicate_rows_are_two_charges_and_restated_costs_keep_their_key():
    row = "2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,{cost},USD,AWS,1"
    first, _ = _parse_text("\n".join([HEADER, row.format(cost=1), row.format(cost=1)]))
    assert len(first) == 2 and first[1].source_key == first[0].source_key + "#2"
    restated, _ = _parse_text("\n".join([HEADER, row.format(cost="1.10")]))
    assert restated[0].source_key == first[0].source_key


def test_hours_per_unit():
    assert hours_per_unit("Hours") == 1.0 and hours_per_unit("Hrs") == 1.0
    assert hours_per_unit("10 Hours") == 10.0 and hours_per_unit("1 Hour") == 1.0
    assert (
        hours_per_unit("GB-Hours") is None
        and hours_per_unit("LCU-Hours") is None
        and hours_per_unit(None) is None
    )


# --- Parquet ------------------------------------------------------------------------------------------------


def test_parquet_matches_csv(tmp_path, catalog):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    with HANDMADE.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    columns = {name: [row[name] or None for row in rows] for name in rows[0]}
    # typed as FOCUS exports write them: timestamps in UTC, costs as decimals
    columns["ChargePeriodStart"] = [datetime.fromisoformat(v) for v in columns["ChargePeriodStart"]]
    columns["BilledCost"] = [Decimal(v) for v in columns["BilledCost"]]
    table = pa.table(
        {
            name: pa.array(
                values,
                type=pa.timestamp("us", tz="UTC")
                if name == "ChargePeriodStart"
                else pa.decimal128(20, 10)
                if name == "BilledCost"
                else pa.string(),
            )
            for name, values in columns.items()
        }
    )
    target = tmp_path / "bill.parquet"
    pq.write_table(table, target)
    report = ParseReport()
    from_parquet = list(parse_focus_file(target, catalog=catalog, report=report, assume_tz=None))
    from_csv = list(parse_focus_file(HANDMADE, catalog=catalog))
    assert report.version == "1.2" and report.reconciles and report.records == 7
    assert [r.source_key for r in from_parquet] == [r.source_key for r in from_csv]
    assert [r.billed_cost for r in from_parquet] == [r.billed_cost for r in from_csv]
    assert [r.x_device_hours for r in from_parquet] == [r.x_device_hours for r in from_csv]


def test_parquet_without_pyarrow_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(IngestError, match=r"pip install 'flopwise\[parquet\]'"):
        list(parse_focus_parquet(tmp_path / "bill.parquet"))


def test_a_file_that_is_not_parquet_fails_clearly(tmp_path):
    pytest.importorskip("pyarrow.parquet")
    target = tmp_path / "bill.parquet"
    target.write_text("not parquet")
    with pytest.raises(IngestError, match="not a readable Parquet file"):
        list(parse_focus_file(target))


# --- parse -> serialize -> parse ----------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12).map(
    str.strip
)
_money = st.decimals(min_value=-(10**6), max_value=10**6, places=6, allow_nan=False, allow_infinity=False)
_times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
_row = st.fixed_dictionaries(
    {
        "start": _times,
        "hours": st.integers(min_value=0, max_value=24 * 31),
        "BilledCost": _money,
        "EffectiveCost": st.none() | _money,
        "BillingCurrency": st.sampled_from(["USD", "EUR", "JPY"]),
        "ProviderName": st.sampled_from(["AWS", "Microsoft", "Google Cloud", "Oracle"]),
        "RegionId": st.none() | _text,
        "ResourceId": st.none() | _text,
        "ServiceCategory": st.none() | st.sampled_from(["Compute", "Storage", "AI and Machine Learning"]),
        "SkuMeter": st.none() | _text,
        "ChargeDescription": st.sampled_from(
            ["", "$98.32 per On Demand Linux p5.48xlarge Instance Hour", "ND96isr H100 v5", "data transfer"]
        ),
        "ConsumedQuantity": st.none() | st.decimals(min_value=0, max_value=1000, places=4),
        "ConsumedUnit": st.sampled_from(["Hours", "GB", "1 Hour", ""]),
        "Tags": st.dictionaries(_text.filter(bool), _text, max_size=3),
        "x_Team": st.none() | _text,
    }
)


def _rows_to_csv(rows: list[dict]) -> str:
    header = [
        "ChargePeriodStart", "ChargePeriodEnd", "BilledCost", "EffectiveCost", "BillingCurrency", "ProviderName",
        "RegionId", "ResourceId", "ServiceCategory", "SkuMeter", "ChargeDescription", "ConsumedQuantity",
        "ConsumedUnit", "Tags", "x_Team",
    ]  # fmt: skip
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        start = row["start"]
        end = datetime.fromtimestamp(start.timestamp() + 3600 * row["hours"], UTC)
        cells = {
            **{k: "" if v is None else str(v) for k, v in row.items() if k not in ("start", "hours", "Tags")},
            "ChargePeriodStart": start.isoformat(),
            "ChargePeriodEnd": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "Tags": json.dumps(row["Tags"]) if row["Tags"] else "NULL",
        }
        writer.writerow([cells[h] for h in header])
    return buf.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=6))
def test_parse_serialize_parse_is_stable(rows, catalog):
    text = _rows_to_csv(rows)
    first, report = _parse_text(text, catalog=catalog)
    assert report.records == len(rows) and report.rejected == []
    extra = sorted({k for r in first for k in r.x_extra})
    second, _ = _parse_text("".join(focus_csv_lines(first, extra)), catalog=catalog)
    assert second == first
    assert [r.source_key for r in second] == [r.source_key for r in first]
    assert all(r.x_device_hours is None or r.x_device_hours >= 0 for r in first)


# --- the parser's output is pinned: speed-ups must not change a record --------------------------------------

#: sha256 of the reprs of every record (all fields, x_extra in order) and of every rejected row, as the parser
#: wrote them before its per-row work was cut (commit 5363fe7); a change here is a change of output
PINNED = {
    "sample": ("f7a7b3afe98d2be429f89f8dc68f7469ac1902f1f9599002014bfa00406f69aa", 1000),
    "sample-no-tz-rejected": ("08df5821c5bc7856bccac0d99448b7568fe6beaae25e102a9b0fe5422cbfa4f0", 1000),
    "handmade": ("fc9871cd9f415b587018dded12c811d97a7c9e51a9fcf30348d20e22c9c090a9", 7),
}


def _digest(items) -> str:
    return hashlib.sha256("\n".join(map(repr, items)).encode()).hexdigest()


def _parse_path(path: Path, name: str, **kw):
    report = ParseReport()
    with path.open(encoding="utf-8-sig", newline="") as f:
        records = list(parse_focus(f, path=name, report=report, **kw))
    return records, report


def test_sample_records_are_unchanged(catalog):
    records, report = _parse_path(
        _need("focus-1.0-sample.csv"), "sample.csv", assume_tz="UTC", catalog=catalog
    )
    assert (_digest(records), len(records)) == PINNED["sample"]
    assert report.rejected == []
    rejected = _parse_path(_need("focus-1.0-sample.csv"), "sample.csv")[1].rejected
    assert (_digest(rejected), len(rejected)) == PINNED["sample-no-tz-rejected"]


def test_handmade_records_are_unchanged(catalog):
    records, report = _parse_path(HANDMADE, "h.csv", assume_tz="UTC", catalog=catalog)
    assert (_digest(records), len(records)) == PINNED["handmade"]
    assert report.rejected == []


def test_source_keys_are_the_canonical_json_hash():
    """The key is sha256 of json.dumps(sorted identifying columns, ensure_ascii=False, separators=(",", ":"))
    over the canonical texts (UTC Z timestamps, tags as sorted JSON); measures and x_ compute columns are left
    out, unicode is kept as is."""
    text = (
        "BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ProviderName,ResourceId,Tags,x_DeviceHours\n"
        '1.5,USD,2025-01-01T01:00:00+01:00,2025-01-01T01:00:00Z,Ünïcode "Cloud",r-1,"{""b"": 2, ""a"": ""x""}",3\n'
    )
    (record,), _ = _parse_text(text)
    identity = {
        "BillingCurrency": "USD",
        "ChargePeriodEnd": "2025-01-01T01:00:00Z",
        "ChargePeriodStart": "2025-01-01T00:00:00Z",
        "ProviderName": 'Ünïcode "Cloud"',
        "ResourceId": "r-1",
        "Tags": '{"a": "x", "b": "2"}',
    }
    canonical = json.dumps(sorted(identity.items()), ensure_ascii=False, separators=(",", ":"))
    assert record.source_key == f"focus:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"
    assert record.tags == {"b": "2", "a": "x"}


def test_records_do_not_share_mutable_state_through_the_caches(catalog):
    text = (
        "BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ProviderName,ResourceType,Tags\n"
        '1,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,p5.48xlarge,"{""job_id"": ""j1""}"\n'
    )
    (first,), _ = _parse_text(text, catalog=catalog)
    first.tags["job_id"] = "changed"
    first.x_extra["ResourceType"] = "changed"
    (second,), _ = _parse_text(text, catalog=catalog)
    assert second.tags == {"job_id": "j1"} and second.x_job_id == "j1"
    assert second.x_extra == {"ResourceType": "p5.48xlarge"}
    assert second.x_device_type == "h100-sxm" and second.x_device_count == 8.0
