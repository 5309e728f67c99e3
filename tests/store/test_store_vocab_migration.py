"""Migration 0003_one_spelling: stored workload kinds take the one spelling of ``flopwise.vocab`` and back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from dbfixtures import old_requests_table
from flopwise.store import (
    Organization,
    Project,
    Team,
    User,
    downgrade,
    make_engine,
    make_session_factory,
    schema_diff,
    upgrade,
    write_session,
)
from flopwise.store.ledger import CalibrationSample
from pgutil import BACKENDS, throwaway_database_url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with throwaway_database_url(request.param, tmp_path_factory, "vocab") as url:
        yield url


#: compute_requests as revision 0002 has it (the model has columns of later revisions)
_REQUESTS_0002 = old_requests_table()
_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _kinds(url: str) -> tuple[list[str], list[str]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        requests = conn.execute(text("SELECT workload_kind FROM compute_requests ORDER BY id")).scalars().all()
        samples = conn.execute(text("SELECT workload_kind FROM calibration_samples ORDER BY id")).scalars().all()
    engine.dispose()
    return list(requests), list(samples)


def _insert(url: str, kinds: tuple[str, ...]) -> None:
    engine = make_engine(url)
    try:
        _add_rows(make_session_factory(engine), kinds)
    finally:
        engine.dispose()


def _add_rows(factory, kinds: tuple[str, ...]) -> None:
    with write_session(factory) as s:
        org = Organization(name=f"o-{uuid.uuid4().hex[:8]}")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="t")
        s.add(team)
        s.flush()
        project, user = Project(team_id=team.id, name="p"), User(org_id=org.id, name="u")
        s.add_all([project, user])
        s.flush()
        for kind in kinds:
            # Core, naming only the columns revision 0002 has: later revisions add columns the ORM classes know
            # (and fill in by default)
            request_id = s.execute(
                _REQUESTS_0002.insert().returning(_REQUESTS_0002.c.id),
                {"org_id": org.id, "requester_id": user.id, "project_id": project.id, "workload_kind": kind,
                 "inputs": {}, "device_count": 0, "state": "pending", "created_at": _AT, "updated_at": _AT},
            ).scalar_one()  # fmt: skip
            s.execute(
                insert(CalibrationSample.__table__).values(
                    request_id=request_id, device_type="h100-sxm", workload_kind=kind
                )
            )


def test_upgrade_rewrites_old_spellings_and_downgrade_restores_them(url):
    upgrade(url, "0002")
    _insert(url, ("train", "fine_tune", "serve", "batch_inference"))
    upgrade(url, "0003_one_spelling")
    new = ["train", "fine-tune", "serve", "batch-inference"]
    assert _kinds(url) == (new, new)
    downgrade(url, "0002")
    old = ["train", "fine_tune", "serve", "batch_inference"]
    assert _kinds(url) == (old, old)
    upgrade(url)
    assert _kinds(url) == (new, new)
    assert schema_diff(url) == []  # at head: later migrations add tables the models know


def test_check_constraint_takes_only_the_new_spelling(url):
    upgrade(url)
    _insert(url, ("fine-tune",))
    with pytest.raises(IntegrityError, match="workload_kind"):
        _insert(url, ("fine_tune",))
    assert _kinds(url) == (["fine-tune"], ["fine-tune"])
