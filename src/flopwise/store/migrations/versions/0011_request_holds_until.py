"""``compute_requests.holds_until`` (``created_at + duration_h``: until when a pending or approved request holds
its devices) and the index ``(org_id, state, holds_until)`` in place of ``(org_id, state)``, so a quota check reads
the requests that hold devices now instead of every approved request the organization ever had (approved is a
final state). The column is backfilled from each request's creation time and duration.

Revision ID: 0011_request_holds_until
Revises: 0010_budget_totals
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from flopwise.store.types import Money, UTCDateTime

revision: str = "0011_request_holds_until"
down_revision: str | None = "0010_budget_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table("compute_requests") as batch_op:
        batch_op.add_column(sa.Column("holds_until", UTCDateTime(), nullable=True))
    requests = sa.table(
        "compute_requests",
        sa.column("id", sa.Integer()),
        sa.column("created_at", UTCDateTime()),
        sa.column("duration_h", Money()),
        sa.column("holds_until", UTCDateTime()),
    )
    bind = op.get_bind()
    update = (
        requests.update()
        .where(requests.c.id == sa.bindparam("b_id"))
        .values(holds_until=sa.bindparam("b_until", type_=UTCDateTime()))
    )
    last = 0
    while True:  # in id order, a batch at a time (the same arithmetic as ComputeRequest.holds_until's default)
        rows = bind.execute(
            sa.select(requests.c.id, requests.c.created_at, requests.c.duration_h)
            .where(requests.c.id > last, requests.c.duration_h.is_not(None))
            .order_by(requests.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        bind.execute(
            update, [{"b_id": i, "b_until": created + timedelta(hours=float(hours))} for i, created, hours in rows]
        )
        last = rows[-1][0]
    op.drop_index("ix_compute_requests_org_id_state", table_name="compute_requests")
    op.create_index(
        op.f("ix_compute_requests_org_id_state_holds_until"),
        "compute_requests",
        ["org_id", "state", "holds_until"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_compute_requests_org_id_state_holds_until"), table_name="compute_requests")
    op.create_index("ix_compute_requests_org_id_state", "compute_requests", ["org_id", "state"])
    with op.batch_alter_table("compute_requests") as batch_op:
        batch_op.drop_column("holds_until")
