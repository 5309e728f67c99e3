"""Usage rollups (the ledger summed per UTC hour, and per UTC day over users, x scope x user x device x provider/region x service x source x
charge category), the triggers that mark the hours whose ledger rows change, and dashboard sessions kept in the
database (so every server process knows every login). The rollups are backfilled from the existing ledger.

Revision ID: 0008_rollups
Revises: 0007_settle_price
Create Date: 2026-12-06 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from flopwise.store.types import Money, UTCDateTime

revision: str = "0008_rollups"
down_revision: str | None = "0007_settle_price"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _rollup_columns() -> list[sa.Column]:
    """The columns of usage_rollups and usage_rollups_daily (flopwise.store.rollups._RollupColumns)."""
    keys = [
        ("org_id", sa.Integer()), ("team_id", sa.Integer()), ("project_id", sa.Integer()),
        ("x_user", sa.String(200)), ("x_device_type", sa.String(200)), ("provider_name", sa.String(200)),
        ("region_id", sa.String(200)), ("service_category", sa.String(100)), ("service_name", sa.String(200)),
        ("charge_category", sa.String(100)), ("x_account", sa.String(200)), ("request_id", sa.Integer()),
    ]  # fmt: skip
    counts = ["records", "costed_records", "no_grid_records"]
    money = ["cost_usd", "billed_cost", "effective_cost", "idle_cost_usd"]
    floats = ["device_hours", "idle_device_hours", "energy_kwh", "measured_energy_kwh", "co2e_kg", "util_hours",
              "busy_hours", "energy_no_grid_kwh"]  # fmt: skip
    return [
        sa.Column("id", _ID, nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        *[sa.Column(name, type_, nullable=True) for name, type_ in keys],
        sa.Column("source", sa.String(32), nullable=False),
        *[sa.Column(name, sa.BigInteger(), nullable=False) for name in counts],
        *[sa.Column(name, Money(), nullable=False) for name in money],
        *[sa.Column(name, sa.Float(), nullable=False) for name in floats],
        *[sa.Column(f"util_d{i}_hours", sa.Float(), nullable=False) for i in range(10)],
        *[sa.Column(f"util_d{i}_records", sa.BigInteger(), nullable=False) for i in range(10)],
    ]


def upgrade() -> None:
    for table in ("usage_rollups", "usage_rollups_daily"):
        op.create_table(table, *_rollup_columns(), sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")))
        op.create_index(op.f(f"ix_{table}_hour"), table, ["hour"])
        op.create_index(op.f(f"ix_{table}_org_id_hour"), table, ["org_id", "hour"])
    op.create_table(
        "usage_rollup_dirty",
        sa.Column("id", _ID, nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollup_dirty")),
    )
    op.create_index(op.f("ix_usage_rollup_dirty_hour"), "usage_rollup_dirty", ["hour"])
    op.create_table(
        "usage_rollup_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ledger_id_seen", _ID, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollup_state")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sid_hash", sa.String(length=64), nullable=False),
        sa.Column("api_token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("idle_ttl_s", sa.Integer(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["api_token_id"],
            ["api_tokens.id"],
            name=op.f("fk_web_sessions_api_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("sid_hash", name=op.f("uq_web_sessions_sid_hash")),
    )
    op.create_index(op.f("ix_web_sessions_api_token_id"), "web_sessions", ["api_token_id"])
    op.create_index(op.f("ix_web_sessions_expires_at"), "web_sessions", ["expires_at"])

    from sqlalchemy.orm import Session

    from flopwise.store.rollups import rebuild_rollups, trigger_ddl

    bind = op.get_bind()
    create, _drop = trigger_ddl(bind.dialect.name)
    for statement in create:
        op.execute(statement)
    created = {c.name for c in _rollup_columns()}
    rebuild_rollups(Session(bind=bind), columns=created)  # backfill from the ledger as it is


def downgrade() -> None:
    _create, drop = trigger_ddl(op.get_bind().dialect.name)
    for statement in drop:
        op.execute(statement)
    op.drop_index(op.f("ix_web_sessions_expires_at"), table_name="web_sessions")
    op.drop_index(op.f("ix_web_sessions_api_token_id"), table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("usage_rollup_state")
    op.drop_index(op.f("ix_usage_rollup_dirty_hour"), table_name="usage_rollup_dirty")
    op.drop_table("usage_rollup_dirty")
    for table in ("usage_rollups_daily", "usage_rollups"):
        op.drop_index(op.f(f"ix_{table}_org_id_hour"), table_name=table)
        op.drop_index(op.f(f"ix_{table}_hour"), table_name=table)
        op.drop_table(table)


def trigger_ddl(dialect: str) -> tuple[list[str], list[str]]:
    from flopwise.store.rollups import trigger_ddl as ddl

    return ddl(dialect)
