"""Budget reservations carry the unit price they were reserved at (USD per device-hour, and the retrieval date of
the catalog row it came from) and the metered unit price they settled at, so a budget reserved at one price and
settled at another shows both. Additive; rows written before have no prices (NULL).

Revision ID: 0007_settle_price
Revises: 0006_governance
Create Date: 2026-12-06 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flopwise.store.types

revision: str = "0007_settle_price"
down_revision: str | None = "0006_governance"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    money = flopwise.store.types.Money(precision=20, scale=6)
    with op.batch_alter_table("budget_reservations") as batch:
        batch.add_column(sa.Column("reserved_usd_per_device_h", money, nullable=True))
        batch.add_column(sa.Column("price_retrieved", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("settled_usd_per_device_h", money, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("budget_reservations") as batch:
        batch.drop_column("settled_usd_per_device_h")
        batch.drop_column("price_retrieved")
        batch.drop_column("reserved_usd_per_device_h")
