"""One spelling of workload kinds (``flopwise.vocab``): ``fine_tune`` -> ``fine-tune`` and ``batch_inference`` ->
``batch-inference`` in ``compute_requests`` (with its CHECK constraint) and ``calibration_samples``.

The wire always said ``fine-tune``; the database said ``fine_tune`` and the server translated between them. Now
both say ``fine-tune``. Downgrade rewrites the rows back.

Revision ID: 0003_one_spelling
Revises: 0002
Create Date: 2026-12-06 16:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_one_spelling"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("train", "fine_tune", "serve", "batch_inference")
_NEW = ("train", "fine-tune", "serve", "batch-inference")
_TABLES = ("compute_requests", "calibration_samples")


def _check(kinds: tuple[str, ...]) -> str:
    return "workload_kind IN ({})".format(", ".join(f"'{k}'" for k in kinds))


def _rewrite(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    with op.batch_alter_table("compute_requests") as batch_op:
        batch_op.drop_constraint(op.f("ck_compute_requests_workload_kind"), type_="check")
    for table in _TABLES:
        for before, after in zip(old, new, strict=True):
            if before != after:
                op.execute(
                    sa.text(f"UPDATE {table} SET workload_kind = :after WHERE workload_kind = :before").bindparams(
                        before=before, after=after
                    )
                )
    with op.batch_alter_table("compute_requests") as batch_op:
        batch_op.create_check_constraint(op.f("ck_compute_requests_workload_kind"), _check(new))


def upgrade() -> None:
    _rewrite(_OLD, _NEW)


def downgrade() -> None:
    _rewrite(_NEW, _OLD)
