"""Budget totals: what each budget's reservations hold per UTC day and spending state, kept by triggers on
``budget_reservations`` (``flopwise.store.totals``), and an index on ``(budget_id, counted_at)`` for the partial days
at a window's edges. A window's sum on the write path then reads a row a day instead of every reservation in the
window. The totals are backfilled from the reservations as they are.

Revision ID: 0010_budget_totals
Revises: 0009_partial_scope_indexes
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from flopwise.store.types import Money, UTCDateTime

revision: str = "0010_budget_totals"
down_revision: str | None = "0009_partial_scope_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    from flopwise.store.totals import backfill_sql, budget_totals_ddl

    op.create_table(
        "budget_totals",
        sa.Column("budget_id", sa.Integer(), nullable=False),
        sa.Column("day", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"], ["budgets.id"], name=op.f("fk_budget_totals_budget_id_budgets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("budget_id", "day", "state", name=op.f("pk_budget_totals")),
    )
    op.create_index(
        op.f("ix_budget_reservations_budget_id_counted_at"),
        "budget_reservations",
        ["budget_id", "counted_at"],
    )
    dialect = op.get_bind().dialect.name
    create, _drop = budget_totals_ddl(dialect)
    for statement in create:
        op.execute(statement)
    op.execute(backfill_sql(dialect))


def downgrade() -> None:
    from flopwise.store.totals import budget_totals_ddl

    _create, drop = budget_totals_ddl(op.get_bind().dialect.name)
    for statement in drop:
        op.execute(statement)
    op.drop_index(op.f("ix_budget_reservations_budget_id_counted_at"), table_name="budget_reservations")
    op.drop_table("budget_totals")
