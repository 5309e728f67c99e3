"""Azure Retail Prices as a second opinion: the response examples Microsoft documents, paging, bad input."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flopwise.catalog.fetch.azure_retail import (
    RetailPrice,
    SecondOpinion,
    compare,
    parse_retail_prices,
    read_pages,
)
from flopwise.catalog.fetch.shell import read_csv_rows
from flopwise.catalog.fetch.table import FetchError
from flopwise.catalog.loader import BUILTIN_DATA_DIR
from flopwise.cli.main import app

DATA = Path(__file__).resolve().parents[1] / "data" / "catalogs" / "azure-retail"
EXAMPLES = ("learn-example-consumption.json", "learn-example-reservation.json", "learn-example-eur.json")
runner = CliRunner()


def _parse(name: str) -> SecondOpinion:
    return parse_retail_prices("azure-retail", name, (DATA / name).read_text(encoding="utf-8"))[0]


def test_the_documented_examples_are_read_and_none_is_a_linux_pay_as_you_go_price():
    # Microsoft's three examples: a Windows dev/test spot meter, a 1-year reservation, a price in EUR
    reasons = {}
    for name in EXAMPLES:
        opinion = _parse(name)
        assert opinion.items == 1 and opinion.prices == []
        reasons.update(opinion.skipped)
    assert reasons == {
        "DevTestConsumption price (not pay-as-you-go)": 1,
        "Reservation price (not pay-as-you-go)": 1,
        "not in USD": 1,
    }


def test_refresh_with_the_second_opinion_writes_nothing_and_says_what_it_compared(tmp_path: Path):
    snap = tmp_path / "snap" / "azure-retail"
    snap.mkdir(parents=True)
    shutil.copy(DATA / "learn-example-consumption.json", snap / "prices.json")
    target = tmp_path / "cat"
    args = ["catalog", "refresh", "--source", "azure-retail", "--from", str(snap.parent), "--catalog", str(target)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["written"] == [] and not (target / "offerings").exists()
    (opinion,) = answer["second_opinions"]
    assert (opinion["items"], opinion["comparable"], opinion["compared"], opinion["disagreements"]) == (1, 0, 0, [])
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "azure-retail (second opinion, writes nothing): 1 items read" in table.output


def test_a_price_more_than_one_percent_away_is_a_disagreement():
    # the comparator alone, on a shipped Azure row: 0.5% away agrees, 2% away disagrees, an unknown id is counted
    rows = read_csv_rows(BUILTIN_DATA_DIR / "offerings" / "azure.csv")
    row_id, row = next((k, r) for k, r in rows.items() if r["on_demand_usd_per_h"] and r["spot_usd_per_h"])
    od, spot = Decimal(row["on_demand_usd_per_h"]), Decimal(row["spot_usd_per_h"])
    opinion = SecondOpinion("azure-retail")
    opinion.prices = [
        RetailPrice(row_id, "on_demand_usd_per_h", od * Decimal("1.005"), 1, "m"),
        RetailPrice(row_id, "spot_usd_per_h", spot * Decimal("1.02"), 2, "m Spot"),
        RetailPrice("azure:Standard_F16s:westeurope", "on_demand_usd_per_h", Decimal("1"), 3, "F16s"),
    ]
    compare(opinion, rows)
    assert (opinion.compared, opinion.agree, opinion.not_in_catalog) == (2, 1, 1)
    (d,) = opinion.disagreements
    assert (d.offering_id, d.column, d.frac, d.item) == (row_id, "spot_usd_per_h", Decimal("0.0200"), 2)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t[: len(t) // 2], "is not JSON"),
        (lambda t: t.replace('"armSkuName"', '"armSku"'), "lacks armSkuName"),
        (lambda t: t.replace('"retailPrice": 0.176346', '"retailPrice": "N/A"'), "item 1: 'N/A' is not a price"),
        (lambda t: t.replace('"retailPrice": 0.176346', '"retailPrice": -1'), "item 1: -1 is not a price >= 0"),
    ],
)
def test_bad_responses_name_the_source_and_item(edit, expected):
    text = edit((DATA / EXAMPLES[0]).read_text(encoding="utf-8"))
    with pytest.raises(FetchError, match=expected) as err:
        parse_retail_prices("azure-retail", "prices.json", text)
    assert "azure-retail" in str(err.value)


def test_pages_are_followed_over_http(tmp_path: Path):
    # the documented page envelope (Items, NextPageLink, Count) around the documented items, served locally
    items = [json.loads((DATA / n).read_text(encoding="utf-8")) for n in EXAMPLES]
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: _Quiet(*a, directory=str(tmp_path), **k)
    )
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    (tmp_path / "p1.json").write_text(json.dumps({"Items": items[:2], "NextPageLink": f"{base}/p2.json", "Count": 2}))
    (tmp_path / "p2.json").write_text(json.dumps({"Items": items[2:], "NextPageLink": None, "Count": 1}))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        from flopwise.catalog.fetch.shell import fetch_text

        opinion = read_pages("azure-retail", f"{base}/p1.json", lambda loc: fetch_text("azure-retail", loc))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert opinion.items == 3 and sum(opinion.skipped.values()) == 3


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass
