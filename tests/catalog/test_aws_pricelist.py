"""AWS Price List as a second opinion: the GetProducts response examples AWS documents, the price list file shape,
the comparison with the catalog's AWS rows, and bad input."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flopwise.catalog.fetch import SOURCES, read_region_grids
from flopwise.catalog.fetch.aws_pricelist import parse_price_list, region_names
from flopwise.catalog.fetch.azure_retail import SecondOpinion, compare
from flopwise.catalog.fetch.shell import read_csv_rows
from flopwise.catalog.fetch.table import FetchError
from flopwise.catalog.loader import BUILTIN_DATA_DIR
from flopwise.cli.main import app

DATA = Path(__file__).resolve().parents[1] / "data" / "catalogs" / "aws-pricelist"
runner = CliRunner()
REGISTRY = read_region_grids()
NAMES = region_names((rid, r.name) for rid, r in REGISTRY.items())


def _cli_example() -> str:
    """The JSON of the 'Output::' block of the AWS CLI reference example (the vendored .rst, unchanged)."""
    text = (DATA / "aws-cli-example-get-products.rst").read_text(encoding="utf-8")
    return text.split("Output::", 1)[1]


def _sdk_example() -> str:
    """The GetProducts example output of the SDK's service model (the vendored examples-1.json, unchanged)."""
    data = json.loads((DATA / "botocore-pricing-examples-1.json").read_text(encoding="utf-8"))
    return json.dumps(data["examples"]["GetProducts"][0]["output"])


def _parse(text: str) -> SecondOpinion:
    return parse_price_list("aws-pricelist", "prices.json", text, regions=NAMES, known_regions=REGISTRY)


def test_location_names_map_to_region_codes():
    assert NAMES["Asia Pacific (Singapore)"] == "ap-southeast-1"
    assert NAMES["Canada (Central)"] == "ca-central-1"
    assert NAMES["US East (N. Virginia)"] == "us-east-1"


@pytest.mark.parametrize("example", [_cli_example, _sdk_example])
def test_the_documented_examples_are_read_and_neither_is_an_instance_price(example):
    # both of AWS's examples price an EBS io1 volume (GB-month), not an instance: read, validated, skipped
    opinion = _parse(example())
    assert opinion.items == 1 and opinion.prices == []
    assert dict(opinion.skipped) == {"Storage (not an instance)": 1}


def _as_instance(text: str, **attrs: str) -> dict:
    """The documented example's record with the attributes of an instance product: for the comparator's own test
    (the parser's reading of real data is tested above on the unchanged examples)."""
    record = json.loads(json.loads(text)["PriceList"][0])
    record["product"]["productFamily"] = "Compute Instance"
    record["product"]["attributes"].update(
        {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", **attrs}
    )
    for term in record["terms"]["OnDemand"].values():
        for dim in term["priceDimensions"].values():
            dim["unit"] = "Hrs"
    return record


def test_an_instance_product_is_compared_with_the_catalog_row_by_type_and_region():
    shipped = read_csv_rows(BUILTIN_DATA_DIR / "offerings" / "aws.csv")
    row = shipped["aws:p5.48xlarge:us-east-1"]
    record = _as_instance(_cli_example(), instanceType="p5.48xlarge", location="US East (N. Virginia)")
    dim = next(iter(next(iter(record["terms"]["OnDemand"].values()))["priceDimensions"].values()))
    dim["pricePerUnit"]["USD"] = row["on_demand_usd_per_h"]
    agree = compare(_parse(json.dumps({"PriceList": [json.dumps(record)]})), shipped)
    assert (agree.compared, agree.agree, agree.disagreements) == (1, 1, [])
    dim["pricePerUnit"]["USD"] = str(Decimal(row["on_demand_usd_per_h"]) * 2)
    (d,) = compare(_parse(json.dumps({"PriceList": [json.dumps(record)]})), shipped).disagreements
    assert d.offering_id == "aws:p5.48xlarge:us-east-1" and d.column == "on_demand_usd_per_h" and d.frac == 1
    # the same product in the price list file shape (products + terms keyed by SKU), regionCode preferred
    sku = record["product"]["sku"]
    record["product"]["attributes"]["regionCode"] = "us-east-1"
    offer = {
        "offerCode": "AmazonEC2",
        "products": {sku: record["product"]},
        "terms": {"OnDemand": {sku: record["terms"]["OnDemand"]}},
    }
    assert [p.offering_id for p in _parse(json.dumps(offer)).prices] == ["aws:p5.48xlarge:us-east-1"]


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"operatingSystem": "Windows"}, "not Linux (licence included)"),
        ({"tenancy": "Dedicated"}, "not shared tenancy"),
        ({"preInstalledSw": "SQL Std"}, "pre-installed software"),
        ({"capacitystatus": "UnusedCapacityReservation"}, "capacity reservation line"),
        ({"location": "AWS GovCloud (US)"}, "region not in the region registry"),
    ],
)
def test_products_that_are_not_a_linux_on_demand_instance_are_skipped_by_reason(attrs, reason):
    record = _as_instance(_cli_example(), instanceType="p5.48xlarge", **attrs)
    opinion = _parse(json.dumps({"PriceList": [record]}))
    assert opinion.prices == [] and dict(opinion.skipped) == {reason: 1}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda r: r["product"].pop("sku"), "sku"),
        (lambda r: r.pop("terms"), "terms"),
        (lambda r: _dim(r)["pricePerUnit"].update(USD="N/A"), "pricePerUnit"),
        (lambda r: _dim(r)["pricePerUnit"].update(USD="-1"), "pricePerUnit"),
    ],
)
def test_bad_products_name_the_product_and_field(edit, field):
    record = json.loads(json.loads(_cli_example())["PriceList"][0])
    edit(record)
    with pytest.raises(FetchError) as err:
        _parse(json.dumps({"PriceList": [record]}))
    assert err.value.line == 1 and err.value.field == field and "aws-pricelist" in str(err.value)


def _dim(record: dict) -> dict:
    return next(iter(next(iter(record["terms"]["OnDemand"].values()))["priceDimensions"].values()))


def test_truncated_or_foreign_json_is_an_error():
    with pytest.raises(FetchError, match="truncated"):
        _parse(_cli_example()[:200])
    with pytest.raises(FetchError, match="neither a GetProducts response"):
        _parse('{"Items": []}')


def test_refresh_with_the_aws_second_opinion_writes_nothing(tmp_path: Path):
    snap = tmp_path / "snap" / "aws-pricelist"
    snap.mkdir(parents=True)
    (snap / "prices.json").write_text(_cli_example(), encoding="utf-8")
    target = tmp_path / "cat"
    args = ["catalog", "refresh", "--source", "aws-pricelist", "--from", str(snap.parent), "--catalog", str(target)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["written"] == [] and not (target / "offerings").exists()
    (opinion,) = answer["second_opinions"]
    assert opinion["source"] == "aws-pricelist" and opinion["items"] == 1 and opinion["compared"] == 0
    text = runner.invoke(app, args)
    assert text.exit_code == 0 and "aws-pricelist (second opinion, writes nothing): 1 items read" in text.output
    # a second opinion: read only when named, it has no catalog file of its own
    assert SOURCES["aws-pricelist"].second_opinion and SOURCES["aws-pricelist"].output == ""
