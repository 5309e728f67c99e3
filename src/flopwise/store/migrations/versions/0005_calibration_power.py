"""Calibration samples carry average device power: estimated (the estimate's power_per_device_w) and measured
(DCGM/NVML energy over metered device-hours), so plan-vs-actual calibrates power per device. Additive.

Revision ID: 0005_calibration_power
Revises: 0002
Create Date: 2026-12-06 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_calibration_power"
down_revision: str | None = "0004_restatements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calibration_samples") as batch:
        batch.add_column(sa.Column("estimated_power_w", sa.Float(), nullable=True))
        batch.add_column(sa.Column("actual_power_w", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calibration_samples") as batch:
        batch.drop_column("actual_power_w")
        batch.drop_column("estimated_power_w")
