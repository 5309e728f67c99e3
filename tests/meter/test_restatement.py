"""Restatements on SQLite and PostgreSQL: a later export of the same charge replaces the ledger row, the old values
are kept as history (run, who, when, old and new), the run counts inserted / replaced / unchanged separately and
costs only what it wrote, a failed run undoes its replacements, and reports can be asked as of a past run.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from flopwise.catalog import load_catalog
from flopwise.errors import InputError
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.ledger_write import undo_run
from flopwise.store import Organization, UsageRecordRow, read_session, write_session
from flopwise.store.ledger import UsageRecordHistory
from flopwise.store.models import Budget
from flopwise.store.reports import usage_report

CAT = load_catalog()
BILL = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "focus-gpu-handmade.csv"


@pytest.fixture(autouse=True)
def _empty_ledger(factory):
    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))
    yield


def _bill(tmp_path: Path, name: str, cost_of_first: str | None = None, drop_last: bool = False) -> Path:
    """The handmade FOCUS bill, with the first row's BilledCost and EffectiveCost restated to *cost_of_first*."""
    rows = list(csv.DictReader(io.StringIO(BILL.read_text(encoding="utf-8"))))
    if cost_of_first is not None:
        rows[0]["BilledCost"] = rows[0]["EffectiveCost"] = cost_of_first
    if drop_last:
        rows = rows[:-1]
    out = tmp_path / name
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


def _ledger(factory) -> dict[str, tuple]:
    with read_session(factory) as s:
        return {
            r.source_key: (r.billed_cost, r.effective_cost, r.cost_usd, r.x_device_hours, r.x_extra, r.tags)
            for r in s.scalars(select(UsageRecordRow))
        }


def _total(factory, as_of: int | None = None) -> Decimal:
    with read_session(factory) as s:
        return usage_report(s, as_of=as_of)["total"]["cost_usd"]


def test_restated_cost_replaces_the_row_and_keeps_history(factory, tmp_path):
    options = IngestOptions(actor="alice")
    first = ingest_source(factory, "focus", _bill(tmp_path, "v1.csv"), catalog=CAT, options=options)
    n = first.records_inserted
    assert n >= 5 and first.records_replaced == 0 and first.reconciles
    total_v1 = _total(factory)
    assert Decimal(first.cost_usd) == total_v1

    restated = ingest_source(
        factory,
        "focus",
        _bill(tmp_path, "v2.csv", "90.0000000000"),
        catalog=CAT,
        options=IngestOptions(actor="bob"),
    )
    assert (restated.records_inserted, restated.records_replaced, restated.records_duplicate) == (0, 1, n - 1)
    assert restated.reconciles
    # it cost nothing new; the restatement changed the ledger by 90 - 98.32
    assert Decimal(restated.cost_usd) == 0
    assert Decimal(restated.restated_cost_usd) == Decimal("-8.32")
    assert _total(factory) == total_v1 - Decimal("8.32")
    with read_session(factory) as s:
        assert s.scalar(select(func.count()).select_from(UsageRecordRow)) == n
        (h,) = s.scalars(select(UsageRecordHistory)).all()
        assert (h.old_run_id, h.new_run_id, h.replaced_by) == (first.run_id, restated.run_id, "bob")
        assert h.billed_cost == Decimal("98.32") and h.cost_usd == Decimal("98.32")
        assert h.changes["billed_cost"] == ["98.320000", "90.000000"]
        assert h.replaced_at.tzinfo is not None
        row = s.scalars(select(UsageRecordRow).where(UsageRecordRow.id == h.usage_record_id)).one()
        assert (row.billed_cost, row.ingest_run_id) == (Decimal("90"), restated.run_id)

    # the same restated file again changes nothing; reports as of each run give each version
    again = ingest_source(factory, "focus", _bill(tmp_path, "v2b.csv", "90.0000000000"), catalog=CAT)
    assert (again.records_inserted, again.records_replaced, again.records_duplicate) == (0, 0, n)
    assert _total(factory, as_of=first.run_id) == total_v1
    assert _total(factory, as_of=restated.run_id) == total_v1 - Decimal("8.32")
    assert _total(factory, as_of=again.run_id) == total_v1 - Decimal("8.32")


def test_as_of_leaves_out_later_rows_and_names_unknown_runs(factory, tmp_path):
    short = ingest_source(factory, "focus", _bill(tmp_path, "short.csv", drop_last=True), catalog=CAT)
    full = ingest_source(factory, "focus", _bill(tmp_path, "full.csv"), catalog=CAT)
    assert (full.records_inserted, full.records_replaced) == (1, 0)
    with read_session(factory) as s:
        then = usage_report(s, "provider", as_of=short.run_id)
        now = usage_report(s, "provider")
        assert then["total"]["records"] == short.records_inserted
        assert now["total"]["records"] == short.records_inserted + 1
        assert sum(g["cost_usd"] for g in then["groups"]) == then["total"]["cost_usd"]
        with pytest.raises(InputError, match="as_of"):
            usage_report(s, as_of=10**6)


def test_undo_run_restores_the_replaced_values_row_by_row(factory, tmp_path):
    ingest_source(factory, "focus", _bill(tmp_path, "v1.csv"), catalog=CAT)
    before = _ledger(factory)
    restated = ingest_source(factory, "focus", _bill(tmp_path, "v2.csv", "1.5"), catalog=CAT)
    assert restated.records_replaced == 1 and _ledger(factory) != before
    with write_session(factory) as s:
        undo_run(s, restated.run_id)
    assert _ledger(factory) == before
    with read_session(factory) as s:
        assert s.scalar(select(func.count()).select_from(UsageRecordHistory)) == 0


def test_restatement_arriving_before_its_original_gives_the_clean_ledger(factory, tmp_path):
    """The restated export (exported later) ingested first, then the original: the older export restates nothing,
    and the ledger equals, row by row, what ingesting them in order gives."""
    march, april = datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 4, 15, tzinfo=UTC)
    original, restated = _bill(tmp_path, "v1.csv"), _bill(tmp_path, "v2.csv", "90")
    ingest_source(factory, "focus", original, catalog=CAT, options=IngestOptions(exported_at=march))
    ingest_source(factory, "focus", restated, catalog=CAT, options=IngestOptions(exported_at=april))
    clean = _ledger(factory)
    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))
    newer = ingest_source(factory, "focus", restated, catalog=CAT, options=IngestOptions(exported_at=april))
    older = ingest_source(factory, "focus", original, catalog=CAT, options=IngestOptions(exported_at=march))
    assert (older.records_inserted, older.records_replaced, older.records_stale) == (0, 0, 1)
    assert older.records_duplicate == newer.records_inserted and older.reconciles
    assert _ledger(factory) == clean
    with read_session(factory) as s:
        assert s.scalar(select(func.count()).select_from(UsageRecordHistory)) == 0
    # an export as new as the ledger's (the same file again, or a later one) still restates
    again = ingest_source(factory, "focus", original, catalog=CAT, options=IngestOptions(exported_at=april))
    assert again.records_replaced == 1


def test_restatement_alerts_in_its_past_window(factory, tmp_path):
    """A restated March charge that pushes March's budget over a threshold alerts for March, not only now."""
    from flopwise.meter.burn import apply_actuals

    with write_session(factory) as s:
        org = Organization(name=f"restate-org-{tmp_path.name}")
        s.add(org)
        s.flush()
        s.add(
            Budget(
                org_id=org.id,
                name="march",
                scope_kind="org",
                scope_id=org.id,
                period="month",
                unit="usd",
                amount=Decimal("1000"),
                is_hard=False,
                alert_thresholds=["0.5"],
            )
        )
        org_id = org.id
    owner = (org_id, None, None)
    ingest_source(factory, "focus", _bill(tmp_path, "v1.csv"), catalog=CAT, attribute=lambda r: owner)
    restated = ingest_source(
        factory, "focus", _bill(tmp_path, "v2.csv", "900"), catalog=CAT, attribute=lambda r: owner
    )
    assert restated.records_replaced == 1 and restated.touched
    now = datetime(2025, 6, 1, tzinfo=UTC)
    with write_session(factory) as s:
        none_now = apply_actuals(s, now, org_id)
        assert none_now.alerts == ()  # June has no usage
        result = apply_actuals(s, now, org_id, touched=restated.touched)
        (alert,) = result.alerts
        assert alert.window_start == datetime(2025, 3, 1, tzinfo=UTC)
        assert alert.used_amount > Decimal("500")


def test_charge_history_lists_every_version(factory, tmp_path):
    from typer.testing import CliRunner

    from flopwise.cli.main import app
    from flopwise.store.reports import charge_history

    first = ingest_source(
        factory, "focus", _bill(tmp_path, "v1.csv"), catalog=CAT, options=IngestOptions(actor="a")
    )
    second = ingest_source(
        factory, "focus", _bill(tmp_path, "v2.csv", "90"), catalog=CAT, options=IngestOptions(actor="b")
    )
    third = ingest_source(
        factory, "focus", _bill(tmp_path, "v3.csv", "80"), catalog=CAT, options=IngestOptions(actor="c")
    )
    with read_session(factory) as s:
        (key,) = s.scalars(select(UsageRecordHistory.source_key).distinct()).all()
        history = charge_history(s, key)
        with pytest.raises(InputError, match="KEY"):
            charge_history(s, "no-such-key")
    runs = [
        (v["run_id"], v["billed_cost"], v["replaced_by_run"], v["replaced_by"]) for v in history["versions"]
    ]
    assert runs == [
        (first.run_id, Decimal("98.32"), second.run_id, "b"),
        (second.run_id, Decimal("90"), third.run_id, "c"),
        (third.run_id, Decimal("80"), None, None),
    ]
    if factory.kw["bind"].dialect.name == "sqlite":
        url = factory.kw["bind"].url.render_as_string(hide_password=False)
        shown = CliRunner().invoke(app, ["report", "history", key, "--database-url", url, "--json"])
        assert shown.exit_code == 0, shown.output
        assert [v["billed_cost"] for v in __import__("json").loads(shown.stdout)["versions"]] == [
            "98.320000", "90.000000", "80.000000",
        ]  # fmt: skip
