"""The post-ingest step after a run is incremental (SQLite and PostgreSQL): it attributes only that run's rows,
settles only the requests they name and checks only the budgets of their organizations; the full pass still
covers the whole ledger. It reports each stage to *progress*."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import delete, select

from flopwise.catalog import load_catalog
from flopwise.meter.burn import apply_actuals
from flopwise.meter.ingest import ingest_source
from flopwise.store import Budget, Organization, Project, Team, UsageRecordRow, read_session, write_session
from flopwise.store.ledger import AttributionRule, BudgetAlert, UsageRecordHistory

CAT = load_catalog()
BILL = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "focus-gpu-handmade.csv"
NOW = datetime(2025, 3, 20, tzinfo=UTC)


def test_incremental_pass_touches_only_the_runs_rows_and_budgets(factory, tmp_path):
    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))
        org = Organization(name="post-ingest")
        other = Organization(name="post-ingest-other")
        s.add_all([org, other])
        s.flush()
        team = Team(org_id=org.id, name="t")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="p")
        s.add(project)
        s.flush()
        for o in (org, other):
            s.add(Budget(org_id=o.id, name="m", scope_kind="org", scope_id=o.id, period="month", unit="usd",
                         amount=Decimal("10"), is_hard=False, alert_thresholds=["0.5"]))  # fmt: skip
        ids = (org.id, team.id, project.id, other.id)
    org_id, team_id, project_id, other_id = ids
    lines = BILL.read_text(encoding="utf-8").splitlines(keepends=True)
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text(lines[0] + "".join(lines[1:4]), encoding="utf-8")
    new.write_text(lines[0] + "".join(lines[4:]), encoding="utf-8")
    first = ingest_source(factory, "focus", old, catalog=CAT, attribute=lambda r: (org_id, None, None))
    # the other organization's March usage is over its budget too, but nothing of it is in the new run
    with write_session(factory) as s:
        s.add(UsageRecordRow(source="slurm", source_key="post-other", charge_period_start=NOW,
                             charge_period_end=NOW, org_id=other_id, cost_usd=Decimal("100")))  # fmt: skip
        s.add(AttributionRule(org_id=org_id, priority=1, match={"source": "focus"}, team_id=team_id,
                              project_id=project_id))  # fmt: skip
    second = ingest_source(factory, "focus", new, catalog=CAT, attribute=lambda r: (org_id, None, None))
    stages: list[str] = []
    with write_session(factory) as s:
        result = apply_actuals(s, NOW, touched=second.touched, run_id=second.run_id, progress=stages.append)
        assert result.attribution.examined == second.records_inserted
        assert result.attribution.by_rule == second.records_inserted
        assert {a.budget_id for a in result.alerts} and all(
            s.get(Budget, a.budget_id).org_id == org_id for a in result.alerts
        )
        assert {b for b, _f in result.forecasts} == {
            b.id for b in s.scalars(select(Budget).where(Budget.org_id == org_id))
        }
    assert stages[0] == "attributing" and stages[-1] == "forecasting"
    with read_session(factory) as s:
        of = {
            r.ingest_run_id: r.project_id
            for r in s.scalars(select(UsageRecordRow).where(UsageRecordRow.org_id == org_id))
        }
        assert of == {first.run_id: None, second.run_id: project_id}  # the old run's rows were not looked at
    with write_session(factory) as s:
        full = apply_actuals(s, NOW)
        assert full.attribution.by_rule == first.records_inserted
        assert any(s.get(Budget, a.budget_id).org_id == other_id for a in full.alerts)
        s.execute(delete(BudgetAlert))
