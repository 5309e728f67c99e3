"""FinOps views on SQLite and PostgreSQL: billed and effective cost side by side, grouped by service, charge category
and sub-account (equal to an independent sum of the bill), and a FOCUS export that round-trips every FOCUS column
it was given: export, re-ingest into an empty ledger, and the ledger is the same, key by key and column by column;
re-ingested into the same ledger it changes nothing."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from sqlalchemy import delete, select

from flopwise.catalog import load_catalog
from flopwise.meter.export import export_focus_csv
from flopwise.meter.focus import FOCUS_1_0_COLUMNS, FOCUS_1_1_ADDED, FOCUS_1_2_ADDED
from flopwise.meter.ingest import ingest_source
from flopwise.store import (
    UsageRecordRow,
    make_engine,
    make_session_factory,
    read_session,
    upgrade,
    write_session,
)
from flopwise.store.ledger import UsageRecordHistory
from flopwise.store.reports import usage_report

CAT = load_catalog()
TESTS = Path(__file__).resolve().parents[1]
SAMPLE = TESTS / "data" / "focus" / "focus-1.0-sample.csv"
BILL = TESTS / "fixtures" / "meter" / "focus-gpu-handmade.csv"
MICRO = Decimal("0.000001")
SPEC = FOCUS_1_0_COLUMNS | FOCUS_1_1_ADDED | FOCUS_1_2_ADDED
COMPARED = (
    "source_key", "charge_period_start", "charge_period_end", "billed_cost", "effective_cost", "list_cost",
    "cost_usd", "billing_currency", "provider_name", "region_id", "resource_id", "service_category", "sku_id", "tags",
    "x_device_type", "x_device_count", "x_device_hours", "x_account", "x_request_id", "x_job_id",
)  # fmt: skip


def _fresh(factory) -> None:
    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))


def _ledger(f) -> dict[str, dict]:
    with read_session(f) as s:
        out = {}
        for r in s.scalars(select(UsageRecordRow)):
            row = {c: getattr(r, c) for c in COMPARED}
            row["focus"] = {k: v for k, v in (r.x_extra or {}).items() if k in SPEC}  # the FOCUS columns
            out[r.source_key] = row
        return out


def test_billed_and_effective_cost_by_charge_category_service_and_sub_account(factory):
    _fresh(factory)
    ingest_source(factory, "focus", SAMPLE, catalog=CAT)
    expected: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    with SAMPLE.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            for group, column in (("charge_category", "ChargeCategory"), ("service", "ServiceName"),
                                  ("sub_account", "SubAccountId")):  # fmt: skip
                key = row[column] if row[column] not in ("", "NULL") else None
                for cost in ("BilledCost", "EffectiveCost"):
                    value = row[cost]
                    if value not in ("", "NULL"):
                        expected[f"{group}:{key}"][cost] += Decimal(value).quantize(MICRO, ROUND_HALF_EVEN)
    with read_session(factory) as s:
        for group in ("charge_category", "service", "sub_account"):
            report = usage_report(s, group)
            assert {g["key"] for g in report["groups"]} == {k.split(":", 1)[1] if not k.endswith(":None") else None
                                                             for k in expected if k.startswith(f"{group}:")}  # fmt: skip
            for g in report["groups"]:
                want = expected[f"{group}:{g['key']}"]
                assert (g["billed_cost"], g["effective_cost"]) == (
                    want["BilledCost"],
                    want["EffectiveCost"],
                ), g
        total = usage_report(s)["total"]
        assert total["billed_cost"] != total["effective_cost"]  # commitments amortized: the two views differ
        by_category = {g["key"]: g for g in usage_report(s, "charge_category")["groups"]}
        assert by_category["Credit"]["billed_cost"] < 0 and set(by_category) == {
            "Usage",
            "Adjustment",
            "Credit",
        }


def test_focus_export_round_trips_every_column(factory, tmp_path):
    _fresh(factory)
    ingest_source(factory, "focus", SAMPLE, catalog=CAT)
    ingest_source(factory, "focus", BILL, catalog=CAT)
    before = _ledger(factory)
    out = tmp_path / "export.csv"
    with read_session(factory) as s, out.open("w", encoding="utf-8", newline="") as fh:
        assert export_focus_csv(s, fh) == len(before) == 1007
    header = next(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    given = set().union(*(row["focus"] for row in before.values()))
    assert given <= set(header), given - set(header)  # every FOCUS column the bills gave is written

    url = f"sqlite:///{tmp_path / 'again.db'}"
    upgrade(url)
    engine = make_engine(url)
    again = make_session_factory(engine)
    result = ingest_source(again, "focus", out, catalog=CAT)
    assert (result.records_inserted, result.rows_rejected) == (1007, 0)
    after = _ledger(again)
    engine.dispose()
    assert after.keys() == before.keys()
    for key, row in before.items():
        assert after[key] == row, key
    # into the same ledger: nothing new, nothing restated
    same = ingest_source(factory, "focus", out, catalog=CAT)
    assert (same.records_inserted, same.records_replaced, same.records_duplicate) == (0, 0, 1007), (
        _debug_changes(factory)
    )


def _debug_changes(factory):
    with read_session(factory) as s:
        h = s.scalars(select(UsageRecordHistory)).first()
        return {k: v for k, v in h.changes.items()}
