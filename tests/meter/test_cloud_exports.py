"""Raw AWS CUR, Azure EA and OCI cost exports mapped to FOCUS-named records, on the real samples in
tests/data/focus (from finopsfoundation/focus_converters' provider tests)."""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import IngestError
from flopwise.meter.cloud_exports import (
    AWS_SERVICE_CATEGORY,
    parse_aws_cur,
    parse_azure_cost_export,
    parse_oci_cost_report,
)
from flopwise.meter.focus import ParseReport, focus_csv_lines, open_text, parse_focus

FOCUS_DATA = Path(__file__).resolve().parents[1] / "data" / "focus"

SAMPLES = {
    "aws-cur-anonymous-sample.csv": (parse_aws_cur, "aws-cur", 1281, "lineItem/UnblendedCost"),
    "azure-ea-anonymous-sample.csv": (parse_azure_cost_export, "azure", 27, "CostInBillingCurrency"),
    "oci-cost-report-sample.csv": (parse_oci_cost_report, "oci", 506, "cost/myCost"),
}


def _need(name: str) -> Path:
    path = FOCUS_DATA / name
    if not path.exists():
        pytest.skip(f"sample file {name} not found in {FOCUS_DATA}")
    return path


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _parse(parser, path: Path, **kw):
    report = ParseReport()
    with open_text(path) as fh:
        records = list(parser(fh, path=str(path), report=report, **kw))
    return records, report


def _raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_reconciles_and_the_bill_total_is_kept(name, catalog, capsys):
    parser, source, rows, cost_column = SAMPLES[name]
    path = _need(name)
    records, report = _parse(parser, path, catalog=catalog)
    with capsys.disabled():
        print(
            f"\n{name}: rows={report.rows_read} records={report.records} rejected={len(report.rejected)}",
            file=sys.stderr,
        )
    assert report.rows_read == rows == report.records + len(report.rejected)
    assert report.rejected == []
    assert {r.source for r in records} == {source}
    assert len({r.source_key for r in records}) == rows
    raw = _raw_rows(path)
    assert sum(r.billed_cost for r in records) == sum(Decimal(row[cost_column]) for row in raw)
    assert all(
        r.charge_period_start.tzinfo is UTC and r.charge_period_end >= r.charge_period_start for r in records
    )
    # none of these samples bills an accelerator (see tests/data/README.md)
    assert all(r.x_device_type is None for r in records)
    again, _ = _parse(parser, path, catalog=catalog)
    assert [r.source_key for r in again] == [r.source_key for r in records]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_mapped_records_round_trip_through_focus(name):
    parser = SAMPLES[name][0]
    records, _ = _parse(parser, _need(name))
    extra = sorted({k for r in records for k in r.x_extra})
    report = ParseReport()
    back = list(parse_focus(io.StringIO("".join(focus_csv_lines(records, extra))), report=report))
    assert report.rejected == [] and len(back) == len(records)
    assert [r.billed_cost for r in back] == [r.billed_cost for r in records]
    assert [r.tags for r in back] == [r.tags for r in records]
    assert [r.charge_period_start for r in back] == [r.charge_period_start for r in records]


# --- AWS CUR ------------------------------------------------------------------------------------------------


def test_aws_cur_columns():
    records, _ = _parse(parse_aws_cur, _need("aws-cur-anonymous-sample.csv"))
    raw = _raw_rows(_need("aws-cur-anonymous-sample.csv"))
    first, row = records[0], raw[0]
    assert first.provider_name == "AWS" and first.billing_currency == "USD"
    assert first.charge_period_start == datetime(2023, 11, 1, tzinfo=UTC)
    assert first.x_extra["ChargeCategory"] == "Tax" and row["lineItem/LineItemType"] == "Tax"
    assert first.x_extra["x_LineItemId"] == row["identity/LineItemId"]
    s3 = [r for r, w in zip(records, raw, strict=True) if w["lineItem/ProductCode"] == "AmazonS3"]
    assert len(s3) == 799 and {r.service_category for r in s3} == {"Storage"}
    assert {r.region_id for r in s3} >= {"ca-central-1", "us-west-2"}
    assert AWS_SERVICE_CATEGORY["amazonec2"] == "Compute"
    # unmapped raw columns with a value are kept under their raw names
    assert first.x_extra["lineItem/LegalEntity"] == row["lineItem/LegalEntity"]


def _aws_gpu_row(path: Path, *, cost: str = "196.64") -> str:
    """The sample's header and first Usage row, turned into two hours of a p5.48xlarge (values edited by hand)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames) + ["product/instanceType", "resourceTags/user:team"]
        row = next(r for r in reader if r["lineItem/LineItemType"] == "Usage")
    row.update(
        {
            "lineItem/ProductCode": "AmazonEC2",
            "lineItem/UsageType": "USE1-BoxUsage:p5.48xlarge",
            "lineItem/UsageAmount": "2",
            "lineItem/UnblendedCost": cost,
            "pricing/unit": "Hrs",
            "pricing/publicOnDemandRate": "98.32",
            "product/instanceType": "p5.48xlarge",
            "resourceTags/user:team": "llm",
        }
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    return buf.getvalue()


def test_aws_cur_gpu_instance_hours(catalog):
    text = _aws_gpu_row(_need("aws-cur-anonymous-sample.csv"))
    (record,) = parse_aws_cur(io.StringIO(text), catalog=catalog)
    assert (record.x_device_type, record.x_device_count, record.x_device_hours) == ("h100-sxm", 8.0, 16.0)
    assert record.service_category == "Compute" and record.tags == {"team": "llm"}
    assert record.list_cost == Decimal("196.64") and record.billed_cost == Decimal("196.64")


def test_aws_cur_key_is_the_line_item_identity():
    """identity/LineItemId + identity/TimeInterval identify a CUR line: a restated cost keeps the key."""
    path = _need("aws-cur-anonymous-sample.csv")
    (first,) = parse_aws_cur(io.StringIO(_aws_gpu_row(path)))
    (restated,) = parse_aws_cur(io.StringIO(_aws_gpu_row(path, cost="150.00")))
    assert first.source_key == restated.source_key and restated.billed_cost == Decimal("150.00")


# --- Azure --------------------------------------------------------------------------------------------------


def test_azure_columns():
    records, _ = _parse(parse_azure_cost_export, _need("azure-ea-anonymous-sample.csv"))
    raw = _raw_rows(_need("azure-ea-anonymous-sample.csv"))
    first = records[0]
    # Date 9/2/2023 is one UTC day
    assert first.charge_period_start == datetime(2023, 9, 2, tzinfo=UTC)
    assert first.charge_period_end == datetime(2023, 9, 3, tzinfo=UTC)
    assert (
        first.provider_name == "Microsoft"
        and first.billing_currency == "CAD"
        and first.region_id == "centralus"
    )
    assert first.tags == {"tagA": "valueA", "tagB": "valueB", "tagC": "valueC"}
    assert first.x_account == raw[0]["SubscriptionId"]
    assert {r.service_category for r in records} == {"Compute", "Storage", "Networking", "Integration"}
    spot = [r for r, w in zip(records, raw, strict=True) if w["PricingModel"] == "Spot"]
    assert len(spot) == 3 and {r.x_extra["PricingCategory"] for r in spot} == {"Dynamic"}
    assert first.list_cost == Decimal(raw[0]["PayGPrice"]) * Decimal(raw[0]["Quantity"])


def test_azure_vm_size_from_additional_info(catalog):
    header = "Date,CostInBillingCurrency,BillingCurrencyCode,ResourceLocation,ConsumedService,Quantity,UnitOfMeasure,AdditionalInfo,ChargeType"
    info = '"{""ServiceType"": ""Standard_ND96isr_H100_v5"", ""VCPUs"": 96}"'
    text = f"{header}\n2025-03-10,196.64,USD,EastUS,Microsoft.Compute,2,1 Hour,{info},Usage\n"
    (record,) = parse_azure_cost_export(io.StringIO(text), catalog=catalog)
    assert (record.x_device_type, record.x_device_hours) == ("h100-sxm", 16.0)
    assert record.charge_period_start == datetime(2025, 3, 10, tzinfo=UTC)


# --- OCI ----------------------------------------------------------------------------------------------------


def test_oci_columns():
    records, _ = _parse(parse_oci_cost_report, _need("oci-cost-report-sample.csv"))
    first = records[0]
    # "2023-11-13T10:00Z": minutes precision with a Z
    assert first.charge_period_start == datetime(2023, 11, 13, 10, tzinfo=UTC)
    assert first.provider_name == "Oracle" and first.region_id == "us-sanjose-1" and first.sku_id == "B92911"
    assert first.service_category == "Databases"
    assert first.tags["Valtest.Cat"] == "boots"
    assert not any(k.startswith("tags/") for r in records for k in r.x_extra)
    assert {r.service_category for r in records} >= {"Compute", "Storage", "Networking", "Databases"}


# --- bad input ----------------------------------------------------------------------------------------------


def test_wrong_format_is_one_clear_error():
    focus = "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ProviderName\n"
    with pytest.raises(IngestError, match="not a raw AWS Cost and Usage Report: missing column"):
        list(parse_aws_cur(io.StringIO(focus), path="x.csv"))
    with pytest.raises(IngestError, match="not a raw Azure cost export"):
        list(parse_azure_cost_export(io.StringIO(focus)))
    with pytest.raises(IngestError, match="not a raw OCI cost report"):
        list(parse_oci_cost_report(io.StringIO(focus)))


def test_bad_rows_are_rejected_and_the_rest_kept():
    header = "Date,CostInBillingCurrency,BillingCurrencyCode,Quantity,UnitOfMeasure"
    text = "\n".join(
        [
            header,
            "9/2/2023,1.5,USD,1,1 Hour",
            "31/31/2023,1,USD,1,1 Hour",
            "9/3/2023,lots,USD,1,1 Hour",
            "9/4/2023,2",
        ]
    )
    report = ParseReport()
    records = list(parse_azure_cost_export(io.StringIO(text), report=report))
    assert [r.billed_cost for r in records] == [Decimal("1.5")]
    reasons = {r.line: r.reason for r in report.rejected}
    assert "not a date" in reasons[3] and "not a number" in reasons[4] and "truncated" in reasons[5]
    assert report.reconciles
