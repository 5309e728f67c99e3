"""Restatements and run bookkeeping: usage_record_history (the values a restated row had, which run replaced them,
who and when), ingest_runs.records_replaced / actor / owner / exported_at, the ``interrupted`` run status, and an index on
usage_records (team_id, charge_period_start) for team budgets' draw-down.

Revision ID: 0004_restatements
Revises: 0002
Create Date: 2026-12-06 16:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flopwise.store.types

revision: str = "0004_restatements"
down_revision: str | None = "0003_one_spelling"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATES = "status IN ('running', 'ok', 'partial', 'failed')"
_NEW_STATES = "status IN ('running', 'ok', 'partial', 'failed', 'interrupted')"


def _money() -> flopwise.store.types.Money:
    return flopwise.store.types.Money(precision=20, scale=6)


def _time() -> flopwise.store.types.UTCDateTime:
    return flopwise.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("ingest_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("records_replaced", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("actor", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("exported_at", _time(), nullable=True))
        batch_op.drop_constraint(batch_op.f("ck_ingest_runs_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_ingest_runs_status"), sa.text(_NEW_STATES))

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_records_team_id_charge_period_start"),
            ["team_id", "charge_period_start"],
            unique=False,
        )

    op.create_table(
        "usage_record_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("usage_record_id", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=512), nullable=False),
        sa.Column("old_run_id", sa.Integer(), nullable=True),
        sa.Column("new_run_id", sa.Integer(), nullable=True),
        sa.Column("replaced_at", _time(), nullable=False),
        sa.Column("replaced_by", sa.String(length=200), nullable=True),
        sa.Column("charge_period_start", _time(), nullable=False),
        sa.Column("charge_period_end", _time(), nullable=False),
        sa.Column("billed_cost", _money(), nullable=True),
        sa.Column("effective_cost", _money(), nullable=True),
        sa.Column("list_cost", _money(), nullable=True),
        sa.Column("cost_usd", _money(), nullable=True),
        sa.Column("x_device_hours", sa.Float(), nullable=True),
        sa.Column("x_gpu_utilization", sa.Float(), nullable=True),
        sa.Column("x_energy_kwh", sa.Float(), nullable=True),
        sa.Column("x_co2e_kg", sa.Float(), nullable=True),
        sa.Column("idle_device_hours", sa.Float(), nullable=True),
        sa.Column("idle_cost_usd", _money(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["new_run_id"], ["ingest_runs.id"], name=op.f("fk_usage_record_history_new_run_id_ingest_runs")
        ),
        sa.ForeignKeyConstraint(
            ["old_run_id"], ["ingest_runs.id"], name=op.f("fk_usage_record_history_old_run_id_ingest_runs")
        ),
        sa.ForeignKeyConstraint(
            ["usage_record_id"],
            ["usage_records.id"],
            name=op.f("fk_usage_record_history_usage_record_id_usage_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_record_history")),
    )
    with op.batch_alter_table("usage_record_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_record_history_new_run_id"), ["new_run_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_usage_record_history_usage_record_id"), ["usage_record_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_record_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_record_history_usage_record_id"))
        batch_op.drop_index(batch_op.f("ix_usage_record_history_new_run_id"))
    op.drop_table("usage_record_history")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_records_team_id_charge_period_start"))
    op.execute("UPDATE ingest_runs SET status = 'failed' WHERE status = 'interrupted'")
    with op.batch_alter_table("ingest_runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_ingest_runs_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_ingest_runs_status"), sa.text(_OLD_STATES))
        batch_op.drop_column("exported_at")
        batch_op.drop_column("owner")
        batch_op.drop_column("actor")
        batch_op.drop_column("records_replaced")
