"""The ledger's team, project and request indexes hold only the rows that have one (partial indexes, ``WHERE ...
IS NOT NULL``): every query that reads them names a team, project or request (``=`` or ``IN``, which imply the
condition, so the planner still uses them: EXPLAIN on both databases), and unattributed rows, most of an
ingest, no longer write three index entries each. ``org_id`` keeps its full index (unattributed usage is reported
by ``org_id IS NULL``). The queries for rows *without* a project or request (``meter.attribution``'s pending rows,
``unattributed_usage``) go by the id, the run or the organization, or read the table, as most rows match them.

Revision ID: 0009_partial_scope_indexes
Revises: 0008_rollups
Create Date: 2026-12-06 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_partial_scope_indexes"
down_revision: str | None = "0008_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: index name -> its columns (the first one is the scope column the partial condition is on)
_INDEXES = {
    "ix_usage_records_team_id_charge_period_start": ["team_id", "charge_period_start"],
    "ix_usage_records_project_id_charge_period_start": ["project_id", "charge_period_start"],
    "ix_usage_records_request_id": ["request_id"],
}


def upgrade() -> None:
    for name, columns in _INDEXES.items():
        where = sa.text(f"{columns[0]} IS NOT NULL")
        op.drop_index(name, table_name="usage_records")
        op.create_index(name, "usage_records", columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, columns in _INDEXES.items():
        op.drop_index(name, table_name="usage_records")
        op.create_index(name, "usage_records", columns)
