"""Database fixtures shared by the store and meter tests: every test module runs on a SQLite file in a temporary
directory and on the local PostgreSQL server.

PostgreSQL: ``$FLOPWISE_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` (trust auth,
as in CI). Each test module gets a fresh schema (dropped afterwards), selected through ``search_path`` in the
URL, so the migrations run from empty exactly as on a new server (see ``pgutil``). A conftest makes them
available with ``from dbfixtures import ...``.
"""


from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from flopwise.store import (
    Organization,
    Project,
    Team,
    User,
    make_engine,
    make_session_factory,
    upgrade,
    write_session,
)
from pgutil import BACKENDS, throwaway_database_url


@pytest.fixture(scope="module", params=BACKENDS)
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The URL of an empty database (nothing migrated) on each backend."""
    with throwaway_database_url(request.param, tmp_path_factory, "store") as url:
        yield url


@pytest.fixture(scope="module")
def database_url(empty_database_url: str) -> str:
    """The same database migrated to head with ``upgrade()`` (not ``create_all``)."""
    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=10, max_overflow=20)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@dataclass(frozen=True)
class Seed:
    org_id: int
    team_id: int
    project_id: int
    user_id: int
    approver_id: int


@pytest.fixture
def seed(factory: sessionmaker[Session]) -> Seed:
    """A fresh organization with one team, one project, a requester and an approver (unique names per test)."""
    tag = uuid.uuid4().hex[:8]
    with write_session(factory) as s:
        org = Organization(name=f"org-{tag}")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="research")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="llm")
        user = User(org_id=org.id, name="ada", email="ada@example.org")
        approver = User(org_id=org.id, name="grace")
        s.add_all([project, user, approver])
        s.flush()
        return Seed(org.id, team.id, project.id, user.id, approver.id)


def empty_ledger(factory: sessionmaker[Session]) -> None:
    """Delete every usage record and its restatement history (between two ingests a test compares)."""
    from sqlalchemy import delete

    from flopwise.store import UsageRecordRow
    from flopwise.store.ledger import UsageRecordHistory

    with write_session(factory) as s:
        s.execute(delete(UsageRecordHistory))
        s.execute(delete(UsageRecordRow))


def ledger_rows(factory: sessionmaker[Session]) -> list[dict[str, object]]:
    """The usage records as dicts of their columns, by ``source_key``, without what differs between two ingests of
    the same input (the row id, the ingest run and its time): what tests compare two paths' ledgers by."""
    from sqlalchemy import select

    from flopwise.store import UsageRecordRow, read_session

    skip = {"id", "ingest_run_id", "ingested_at"}
    with read_session(factory) as s:
        rows = s.execute(select(UsageRecordRow).order_by(UsageRecordRow.source_key)).scalars().all()
        return [
            {c.name: getattr(r, c.name) for c in UsageRecordRow.__table__.columns if c.name not in skip} for r in rows
        ]


def old_requests_table(*extra: Any) -> Any:
    """``compute_requests`` with the columns revision 0001 gives it (plus *extra* ``sqlalchemy.column``s), for
    tests that write requests at an old revision: the ``ComputeRequest`` model has the columns of every revision
    and fills some in by default (``holds_until``, 0011), which an older schema does not have."""
    import sqlalchemy as sa

    from flopwise.store.types import UTCDateTime

    return sa.table(
        "compute_requests",
        *[sa.column(c, sa.Integer()) for c in ("id", "org_id", "requester_id", "project_id", "device_count")],
        sa.column("workload_kind", sa.String()), sa.column("inputs", sa.JSON()), sa.column("state", sa.String()),
        sa.column("created_at", UTCDateTime()), sa.column("updated_at", UTCDateTime()),
        *extra,
    )  # fmt: skip
