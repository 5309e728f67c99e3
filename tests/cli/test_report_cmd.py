"""`flopwise report usage|concentration|export-focus` on a SQLite store holding the real FOCUS 1.0 sample."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flopwise.cli.main import app
from flopwise.meter.focus import parse_focus_file
from flopwise.store import make_engine, make_session_factory, upgrade, write_session
from flopwise.store.ledger import UsageRecordRow

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "focus" / "focus-1.0-sample.csv"
runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> tuple[str, list]:
    assert SAMPLE.exists(), f"sample file {SAMPLE.name} not found in {SAMPLE.parent}"
    url = "sqlite:///" + (tmp_path_factory.mktemp("report") / "flopwise.db").as_posix()
    upgrade(url)
    records = list(parse_focus_file(SAMPLE, assume_tz="UTC"))
    engine = make_engine(url)
    with write_session(make_session_factory(engine)) as s:
        for r in records:
            s.add(UsageRecordRow(
                source=r.source, source_key=r.source_key, charge_period_start=r.charge_period_start,
                charge_period_end=r.charge_period_end, billed_cost=r.billed_cost, cost_usd=r.billed_cost,
                cost_basis="billed", provider_name=r.provider_name, region_id=r.region_id, tags=r.tags, x_extra={},
                x_device_type=r.x_device_type, x_device_hours=r.x_device_hours,
            ))  # fmt: skip
    engine.dispose()
    return url, records


def test_usage_json_total_is_the_sum_of_the_bill(db):
    url, records = db
    result = runner.invoke(
        app, ["report", "usage", "--group-by", "provider", "--json", "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    bill = sum((r.billed_cost for r in records), Decimal(0)).quantize(Decimal("0.000001"))
    assert Decimal(body["total"]["cost_usd"]) == sum(Decimal(g["cost_usd"]) for g in body["groups"])
    assert abs(Decimal(body["total"]["cost_usd"]) - bill) <= Decimal("0.000001") * len(records)
    assert {g["key"] for g in body["groups"]} == {"AWS", "Microsoft", "Oracle"}
    assert body["total"]["records"] == 1000


def test_usage_csv_and_table_and_period(db):
    url, _ = db
    out = runner.invoke(app, ["report", "usage", "--group-by", "day", "--csv", "--from", "2024-09-01",
                              "--to", "2024-09-08", "--database-url", url])  # fmt: skip
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows and all("2024-09-01" <= r["key"] <= "2024-09-07" for r in rows)
    table = runner.invoke(
        app, ["report", "usage", "--group-by", "region", "--database-url", url], env={"COLUMNS": "200"}
    )
    assert table.exit_code == 0 and "us-west-2" in table.stdout


def test_bad_input_exits_2_with_one_line(db):
    url, _ = db
    for args in (["--group-by", "week"], ["--from", "2024-09-01T00:00:00"], ["--from", "yesterday"]):
        result = runner.invoke(app, ["report", "usage", *args, "--database-url", url])
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output


def test_concentration_and_focus_export(db, tmp_path):
    url, _ = db
    result = runner.invoke(app, ["report", "concentration", "--json", "--database-url", url])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["largest"]["name"] == "AWS" and 0 < report["hhi"] <= 10_000
    out = tmp_path / "export.csv"
    result = runner.invoke(app, ["report", "export-focus", str(out), "--database-url", url])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "export.csv.part").exists()
    assert len(list(parse_focus_file(out, assume_tz="UTC"))) == 1000
