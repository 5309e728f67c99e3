"""Migrations from an empty database, upgrades that keep data, and models that match the migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import inspect, select

from dbfixtures import old_requests_table
from flopwise.store import (
    Base,
    Budget,
    Organization,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    make_session_factory,
    schema_diff,
    upgrade,
    write_session,
)
from pgutil import BACKENDS, throwaway_database_url

#: the tables each revision creates (read off the migration files), checked revision by revision
TABLES_BY_REVISION = {
    "0001": {
        "audit_log", "organizations", "aup_versions", "quotas", "teams", "users", "api_tokens", "aup_acceptances",
        "budgets", "policies", "projects", "role_bindings", "compute_requests", "admission_jobs", "approvals",
        "comments", "budget_reservations",
    },
    "0002": {
        "ingest_runs", "ingest_rejects", "usage_records", "attribution_rules", "alert_channels", "budget_alerts",
        "calibration_samples",
    },
    "0003_one_spelling": set(),  # rewrites workload kinds in place
    "0004_restatements": {"usage_record_history"},
    "0005_calibration_power": set(),  # columns only: calibration_samples.estimated_power_w, actual_power_w
    "0006_governance": {"audit_heads"},
    "0007_settle_price": set(),  # columns only: budget_reservations.reserved/settled_usd_per_device_h, price_retrieved
    "0008_rollups": {"usage_rollups", "usage_rollups_daily", "usage_rollup_dirty", "usage_rollup_state",
                     "web_sessions"},
    "0009_partial_scope_indexes": set(),  # indexes only: team/project/request indexes of usage_records partial
    "0010_budget_totals": {"budget_totals"},
    "0011_request_holds_until": set(),  # a column (compute_requests.holds_until) and its index
}  # fmt: skip


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    return tables


def test_upgrade_from_empty_creates_every_table(empty_database_url):
    """Each revision adds exactly its own tables; at head every table of the models exists."""
    assert current_revision(empty_database_url) is None
    expected = {"alembic_version"}
    for revision, tables in TABLES_BY_REVISION.items():
        upgrade(empty_database_url, revision)
        assert current_revision(empty_database_url) == revision
        expected |= tables
        assert _tables(empty_database_url) == expected, revision
    upgrade(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()
    tables = _tables(empty_database_url)
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrade_keeps_existing_data(empty_database_url):
    """Rows written at revision 0001 survive ``upgrade(head)``, which is a no-op when already there."""
    upgrade(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    factory = make_session_factory(engine)
    window = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    with write_session(factory) as s:
        org = Organization(name="kept-org")
        s.add(org)
        s.flush()
        s.add(
            Budget(
                org_id=org.id,
                name="q1",
                scope_kind="org",
                scope_id=org.id,
                period="custom",
                window_start=window[0],
                window_end=window[1],
                unit="usd",
                amount=Decimal("12345.678901"),
                is_hard=True,
                alert_thresholds=["0.5", "0.8"],
            )
        )
    upgrade(empty_database_url)
    upgrade(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()
    with factory() as s:
        budget = s.scalars(select(Budget).where(Budget.name == "q1")).one()
        assert budget.amount == Decimal("12345.678901")
        assert (budget.window_start, budget.window_end) == window
        assert budget.alert_thresholds == ["0.5", "0.8"]
    engine.dispose()


def test_models_match_migrations(database_url):
    """``alembic check``: autogenerate finds no difference between the models and the migrated schema."""
    assert schema_diff(database_url) == []


def test_downgrade_to_base_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    downgrade(url, "base")
    assert current_revision(url) is None
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    upgrade(url)
    assert schema_diff(url) == []


def test_scope_indexes_are_partial_and_used(database_url):
    """0009: the team, project and request indexes of the ledger hold only rows that have one, and the queries
    that name one (``=``, ``IN``) still read them."""
    from sqlalchemy import text

    engine = make_engine(database_url)
    queries = {
        "ix_usage_records_team_id_charge_period_start": "team_id = 1 AND charge_period_start >= '2025-01-01'",
        "ix_usage_records_project_id_charge_period_start": "project_id = 1 AND charge_period_start >= '2025-01-01'",
        "ix_usage_records_request_id": "request_id IN (1, 2, 3)",
    }
    try:
        with engine.connect() as c:
            for name, where in queries.items():
                column = name.removeprefix("ix_usage_records_").split("_charge")[0]
                if engine.dialect.name == "sqlite":
                    ddl = c.execute(
                        text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": name}
                    ).scalar()
                    plan = " ".join(
                        str(r[-1])
                        for r in c.execute(
                            text(f"EXPLAIN QUERY PLAN SELECT * FROM usage_records WHERE {where}")
                        )
                    )
                else:
                    ddl = c.execute(
                        text(
                            "SELECT indexdef FROM pg_indexes WHERE indexname = :n AND schemaname = current_schema()"
                        ),
                        {"n": name},
                    ).scalar()
                    c.execute(text("SET LOCAL enable_seqscan = off"))
                    plan = " ".join(
                        str(r[0])
                        for r in c.execute(text(f"EXPLAIN SELECT * FROM usage_records WHERE {where}"))
                    )
                assert f"{column} IS NOT NULL" in ddl, ddl
                assert name in plan, plan
    finally:
        engine.dispose()


def _org_user_project(s, name: str) -> tuple:
    """An organization *name* with a user and a team with one project (models every revision since 0001 has)."""
    from flopwise.store import Project, Team, User

    org = Organization(name=name)
    s.add(org)
    s.flush()
    team, user = Team(org_id=org.id, name="t"), User(org_id=org.id, name="ada")
    s.add_all([team, user])
    s.flush()
    project = Project(team_id=team.id, name="p")
    s.add(project)
    s.flush()
    return org, user, project


@pytest.mark.parametrize("backend", BACKENDS)
def test_budget_totals_are_backfilled_and_survive_a_downgrade(backend, tmp_path_factory):
    """0010: reservations made before the revision are summed into the budget totals by the upgrade; a downgrade
    to 0009 and an upgrade again rebuild the same totals, and the triggers keep them after that."""

    from flopwise.store import BudgetReservation, BudgetTotal

    requests = old_requests_table()

    with throwaway_database_url(backend, tmp_path_factory, "totals") as url:
        upgrade(url, "0009_partial_scope_indexes")
        engine = make_engine(url)
        factory = make_session_factory(engine)
        day = datetime(2026, 3, 4, tzinfo=UTC)
        with write_session(factory) as s:
            org, user, project = _org_user_project(s, "totals-org")
            budget = Budget(org_id=org.id, name="m", scope_kind="org", scope_id=org.id, period="month", unit="usd",
                            amount=Decimal(100), is_hard=True)  # fmt: skip
            s.add(budget)
            s.flush()
            for i, (state, amount, at) in enumerate([
                ("reserved", "1.5", day), ("reserved", "2.25", day.replace(hour=23)), ("settled", "4", day),
                ("released", "8", day), ("committed", "16", day.replace(day=5, microsecond=1)),
            ]):  # fmt: skip
                # the request as revision 0009 knows it (the model has columns of later revisions)
                request_id = s.execute(
                    requests.insert().returning(requests.c.id),
                    {"org_id": org.id, "requester_id": user.id, "project_id": project.id, "workload_kind": "train",
                     "inputs": {"n": i}, "device_count": 0, "state": "pending", "created_at": day, "updated_at": day},
                ).scalar_one()  # fmt: skip
                s.add(BudgetReservation(budget_id=budget.id, request_id=request_id, unit="usd",
                                        amount=Decimal(amount), reserved_amount=Decimal(amount), state=state,
                                        counted_at=at))  # fmt: skip
            budget_id = budget.id
        expected = {
            (day, "reserved"): Decimal("3.75"), (day, "settled"): Decimal(4),
            (day.replace(day=5), "committed"): Decimal(16),
        }  # fmt: skip

        def totals() -> dict:
            with factory() as s:
                rows = s.execute(select(BudgetTotal.day, BudgetTotal.state, BudgetTotal.amount)).all()
            return {(d, state): amount for d, state, amount in rows if amount != 0}

        try:
            upgrade(url)
            assert totals() == expected
            downgrade(url, "0009_partial_scope_indexes")
            upgrade(url)
            assert totals() == expected
            with write_session(factory) as s:
                s.execute(
                    BudgetReservation.__table__.update()
                    .where(BudgetReservation.budget_id == budget_id, BudgetReservation.state == "released")
                    .values(state="settled")
                )
            assert totals() == {**expected, (day, "settled"): Decimal(12)}
            assert schema_diff(url) == []
        finally:
            engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_request_holds_until_is_backfilled(backend, tmp_path_factory):
    """0011: each request made before the revision gets ``holds_until = created_at + duration_h`` (NULL without a
    duration); a request made after gets it on insert, by the ORM and by the write path's Core insert."""
    import sqlalchemy as sa

    from flopwise.store import ComputeRequest, insert_request_idempotent
    from flopwise.store.types import Money

    requests = old_requests_table(sa.column("duration_h", Money()))
    at = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    with throwaway_database_url(backend, tmp_path_factory, "holds") as url:
        upgrade(url, "0010_budget_totals")
        engine = make_engine(url)
        factory = make_session_factory(engine)
        try:
            with write_session(factory) as s:
                org, user, project = _org_user_project(s, "holds-org")
                ids = {}
                for hours in ("10", "0.000001", None):
                    ids[hours] = s.execute(
                        requests.insert().returning(requests.c.id),
                        {"org_id": org.id, "requester_id": user.id, "project_id": project.id,
                         "workload_kind": "train", "inputs": {}, "device_count": 1, "state": "approved",
                         "created_at": at, "updated_at": at,
                         "duration_h": None if hours is None else Decimal(hours)},
                    ).scalar_one()  # fmt: skip
                org_id, user_id, project_id = org.id, user.id, project.id
            upgrade(url)
            with factory() as s:
                until = dict(s.execute(select(ComputeRequest.id, ComputeRequest.holds_until)).all())
            assert until == {
                ids["10"]: at + timedelta(hours=10), ids["0.000001"]: at + timedelta(hours=1e-6), ids[None]: None,
            }  # fmt: skip
            with write_session(factory) as s:
                orm = ComputeRequest(org_id=org_id, requester_id=user_id, project_id=project_id,
                                     workload_kind="train", inputs={}, duration_h=Decimal("2.5"), created_at=at)  # fmt: skip
                s.add(orm)
                s.flush()
                core, _created = insert_request_idempotent(
                    s, {"org_id": org_id, "requester_id": user_id, "project_id": project_id, "workload_kind": "train",
                        "inputs": {}, "duration_h": Decimal("3"), "created_at": at, "idempotency_key": "k"},
                )  # fmt: skip
                assert (orm.holds_until, core.holds_until) == (at + timedelta(hours=2.5), at + timedelta(hours=3))
            with factory() as s:
                stored = dict(s.execute(select(ComputeRequest.id, ComputeRequest.holds_until)).all())
            assert (stored[orm.id], stored[core.id]) == (at + timedelta(hours=2.5), at + timedelta(hours=3))
        finally:
            engine.dispose()
