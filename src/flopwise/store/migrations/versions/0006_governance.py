"""Governance hardening: admission jobs keyed per organization, their request body kept; per-organization audit
chains (a chain-head row per organization, locked instead of the whole table; ``hash_version`` 2 covers
``org_id``); on PostgreSQL a sequence hands out audit ``seq`` numbers.

Existing audit entries keep ``hash_version`` 1 (the single global chain they were written in) and verify as
before; new entries chain per organization.

Revision ID: 0006_governance
Revises: 0004_restatements
Create Date: 2026-12-06 16:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_governance"
down_revision: str | None = "0005_calibration_power"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("admission_jobs") as batch:
        batch.drop_constraint("uq_admission_jobs_engine_engine_job_id", type_="unique")
        batch.create_unique_constraint(
            "uq_admission_jobs_org_id_engine_engine_job_id", ["org_id", "engine", "engine_job_id"]
        )
        batch.add_column(sa.Column("inputs", sa.JSON(), nullable=True))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("hash_version", sa.SmallInteger(), server_default="1", nullable=False))
    op.create_table(
        "audit_heads",
        sa.Column("chain_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_audit_heads")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_log_seq_numbers")
        op.execute(
            "SELECT setval('audit_log_seq_numbers', COALESCE((SELECT max(seq) FROM audit_log), 0) + 1, false)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS audit_log_seq_numbers")
    op.drop_table("audit_heads")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash_version")
    with op.batch_alter_table("admission_jobs") as batch:
        batch.drop_column("inputs")
        batch.drop_constraint("uq_admission_jobs_org_id_engine_engine_job_id", type_="unique")
        batch.create_unique_constraint("uq_admission_jobs_engine_engine_job_id", ["engine", "engine_job_id"])
