"""The ledger's references (organization, team, project, compute request, ingest run) hold on both databases, for
the columnar and row writers (COPY on PostgreSQL), other writers, and deletes of the referenced rows. (A per-batch
check replacing PostgreSQL's per-row foreign-key triggers was measured, 0.82x backend CPU of a fresh COPY, and not
adopted: docs/ingest/index.md.)"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError

from flopwise.catalog import load_catalog
from flopwise.meter.costing import Coster
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.ledger_write import _row_values as row_values
from flopwise.meter.ledger_write import write_batch
from flopwise.meter.record import UsageRecord
from flopwise.store import Organization, Project, Team, UsageRecordRow, read_session, write_session
from flopwise.store.ledger import IngestRun, UsageRecordHistory

CAT = load_catalog()
BILL = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "focus-gpu-handmade.csv"
MISSING = 2_000_000_000
#: what a refused reference raises: SQLAlchemy's error, or the driver's own from the writer's raw connection
REFUSED: tuple[type[Exception], ...] = (IntegrityError, sqlite3.IntegrityError)
try:
    import psycopg

    REFUSED += (psycopg.errors.IntegrityError,)
except ImportError:  # pragma: no cover - PostgreSQL tests are skipped without the driver
    pass


@pytest.fixture(autouse=True)
def _empty_ledger(factory):
    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))
    yield


def _is_pg(factory) -> bool:
    return factory.kw["bind"].dialect.name == "postgresql"


def _org(factory, with_team: bool = False) -> tuple[int, int | None, int | None]:
    """A new organization (and a team and project in it when *with_team*): (org, team, project)."""
    with write_session(factory) as s:
        org = Organization(name=f"refs-{uuid.uuid4().hex[:8]}")
        s.add(org)
        s.flush()
        if not with_team:
            return org.id, None, None
        team = Team(org_id=org.id, name="t")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="p")
        s.add(project)
        s.flush()
        return org.id, team.id, project.id


def _count(factory) -> int:
    with read_session(factory) as s:
        return len(s.scalars(select(UsageRecordRow.id)).all())


def _run(factory) -> int:
    with write_session(factory) as s:
        run = IngestRun(source="focus", path="refs-test", status="ok")
        s.add(run)
        s.flush()
        return run.id


def _row(run_id: int | None, key: str, owner=None) -> list:
    record = UsageRecord(
        source="focus",
        source_key=key,
        charge_period_start=datetime(2025, 1, 1, tzinfo=UTC),
        charge_period_end=datetime(2025, 1, 1, 1, tzinfo=UTC),
        billed_cost=Decimal("1.5"),
    )
    return row_values(Coster(CAT).cost(record), run_id, datetime.now(UTC), owner)


@pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "rows"])
def test_an_ingest_naming_a_missing_scope_is_refused_and_leaves_nothing(factory, columnar):
    org, _team, _project = _org(factory)
    with pytest.raises(REFUSED, match="team_id|FOREIGN KEY"):
        ingest_source(
            factory, "focus", BILL, catalog=CAT, options=IngestOptions(columnar=columnar),
            attribute=lambda r: (org, MISSING, None),
        )  # fmt: skip
    assert _count(factory) == 0


@pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "rows"])
def test_an_ingest_naming_existing_scopes_writes_them(factory, columnar):
    owner = _org(factory, with_team=True)
    result = ingest_source(
        factory, "focus", BILL, catalog=CAT, options=IngestOptions(columnar=columnar), attribute=lambda r: owner
    )
    assert result.records_inserted > 0
    with read_session(factory) as s:
        scopes = set(s.execute(select(UsageRecordRow.org_id, UsageRecordRow.team_id, UsageRecordRow.project_id)))
    assert scopes == {owner}


@pytest.mark.parametrize("column", ["org_id", "team_id", "project_id", "request_id", "ingest_run_id"])
def test_other_writers_are_checked_row_by_row(factory, column):
    """The ORM (and SQL by hand): an insert or an update naming a missing row is refused."""
    run = _run(factory)
    with pytest.raises(REFUSED), write_session(factory) as s:
        s.execute(text(
            f"INSERT INTO usage_records (source, source_key, charge_period_start, charge_period_end, cost_basis, "
            f"energy_basis, tags, x_extra, ingested_at, {column}) VALUES ('focus', 'k-{column}', :t, :t, 'none', "
            f"'none', '{{}}', '{{}}', :t, {MISSING})"
        ), {"t": "2025-01-01 00:00:00.000000" if not _is_pg(factory) else datetime(2025, 1, 1, tzinfo=UTC)})  # fmt: skip
    with write_session(factory) as s:
        write_batch(s, [_row(run, f"ok-{column}")], run_id=run, restate=False)
    with pytest.raises(REFUSED), write_session(factory) as s:
        s.execute(update(UsageRecordRow).values({column: MISSING}))
    assert _count(factory) == 1


def test_a_referenced_row_cannot_be_deleted(factory):
    """Deleting (or renumbering) an organization, team, project or run that ledger rows name is refused; once they
    are gone it is allowed."""
    org, team, project = _org(factory, with_team=True)
    result = ingest_source(factory, "focus", BILL, catalog=CAT, attribute=lambda r: (org, team, project))
    bare_org, _, _ = _org(factory)
    with write_session(factory) as s:
        s.execute(update(UsageRecordRow).where(UsageRecordRow.id == s.scalar(select(UsageRecordRow.id).limit(1)))
                  .values(org_id=bare_org, team_id=None, project_id=None))  # fmt: skip
    for model, key in ((Project, project), (Team, team), (Organization, bare_org), (IngestRun, result.run_id)):
        with pytest.raises(REFUSED), write_session(factory) as s:
            s.execute(delete(model).where(model.id == key))
        with pytest.raises(REFUSED), write_session(factory) as s:
            s.execute(update(model).where(model.id == key).values(id=MISSING))
    unused = _run(factory)
    with write_session(factory) as s:
        s.execute(delete(IngestRun).where(IngestRun.id == unused))
        s.execute(delete(UsageRecordRow))
        s.execute(delete(IngestRun).where(IngestRun.id == result.run_id))
        s.execute(delete(Organization).where(Organization.id == bare_org))
