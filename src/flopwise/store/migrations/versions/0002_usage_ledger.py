"""Usage ledger: usage_records (FOCUS columns, x_ compute columns, costing bases, attribution), ingest_runs and
ingest_rejects (reconciliation), attribution_rules, alert_channels, budget_alerts (once per budget, threshold and
window) and calibration_samples (estimate vs actual).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:41:46.456555
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flopwise.store.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("started_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("records_inserted", sa.Integer(), nullable=False),
        sa.Column("records_duplicate", sa.Integer(), nullable=False),
        sa.Column("rows_rejected", sa.Integer(), nullable=False),
        sa.Column("rows_rolled_up", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'ok', 'partial', 'failed')", name=op.f("ck_ingest_runs_status")
        ),
        sa.CheckConstraint(
            "rows_read >= 0 AND records_inserted >= 0 AND records_duplicate >= 0 AND rows_rejected >= 0 AND rows_rolled_up >= 0",
            name=op.f("ck_ingest_runs_counts_nonnegative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_runs")),
    )
    with op.batch_alter_table("ingest_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingest_runs_source_started_at"), ["source", "started_at"], unique=False
        )

    op.create_table(
        "alert_channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('webhook')", name=op.f("ck_alert_channels_kind")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_alert_channels_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_channels")),
    )
    with op.batch_alter_table("alert_channels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_channels_org_id"), ["org_id"], unique=False)

    op.create_table(
        "ingest_rejects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ingest_run_id", sa.Integer(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_runs.id"],
            name=op.f("fk_ingest_rejects_ingest_run_id_ingest_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_rejects")),
    )
    with op.batch_alter_table("ingest_rejects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ingest_rejects_ingest_run_id"), ["ingest_run_id"], unique=False)

    op.create_table(
        "attribution_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_attribution_rules_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_attribution_rules_project_id_projects")
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_attribution_rules_team_id_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribution_rules")),
    )
    with op.batch_alter_table("attribution_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attribution_rules_org_id_priority"), ["org_id", "priority"], unique=False
        )

    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("budget_id", sa.Integer(), nullable=False),
        sa.Column("threshold_frac", flopwise.store.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("window_start", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("window_end", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("crossed_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_amount", flopwise.store.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("limit_amount", flopwise.store.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("delivered_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivery_status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "delivery_status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_budget_alerts_delivery_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_budget_alerts_attempts_nonnegative")),
        sa.ForeignKeyConstraint(
            ["budget_id"], ["budgets.id"], name=op.f("fk_budget_alerts_budget_id_budgets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alerts")),
        sa.UniqueConstraint(
            "budget_id",
            "threshold_frac",
            "window_start",
            name=op.f("uq_budget_alerts_budget_id_threshold_frac_window_start"),
        ),
    )
    with op.batch_alter_table("budget_alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budget_alerts_budget_id"), ["budget_id"], unique=False)

    op.create_table(
        "calibration_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("device_type", sa.String(length=120), nullable=False),
        sa.Column("workload_kind", sa.String(length=32), nullable=False),
        sa.Column("estimated_device_hours", sa.Float(), nullable=True),
        sa.Column("actual_device_hours", sa.Float(), nullable=True),
        sa.Column("estimated_cost_usd", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("actual_cost_usd", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("estimated_energy_kwh", sa.Float(), nullable=True),
        sa.Column("actual_energy_kwh", sa.Float(), nullable=True),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["compute_requests.id"],
            name=op.f("fk_calibration_samples_request_id_compute_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibration_samples")),
        sa.UniqueConstraint("request_id", name=op.f("uq_calibration_samples_request_id")),
    )
    with op.batch_alter_table("calibration_samples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_calibration_samples_device_type_workload_kind"),
            ["device_type", "workload_kind"],
            unique=False,
        )

    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("source_key", sa.String(length=512), nullable=False),
        sa.Column("charge_period_start", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("charge_period_end", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("billed_cost", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("effective_cost", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("list_cost", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("cost_usd", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("cost_basis", sa.String(length=16), nullable=False),
        sa.Column("billing_currency", sa.String(length=8), nullable=True),
        sa.Column("provider_name", sa.String(length=200), nullable=True),
        sa.Column("region_id", sa.String(length=200), nullable=True),
        sa.Column("resource_id", sa.Text(), nullable=True),
        sa.Column("service_category", sa.String(length=100), nullable=True),
        sa.Column("sku_id", sa.String(length=200), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("x_device_type", sa.String(length=200), nullable=True),
        sa.Column("x_device_count", sa.Float(), nullable=True),
        sa.Column("x_device_hours", sa.Float(), nullable=True),
        sa.Column("x_gpu_utilization", sa.Float(), nullable=True),
        sa.Column("x_energy_kwh", sa.Float(), nullable=True),
        sa.Column("energy_basis", sa.String(length=16), nullable=False),
        sa.Column("x_co2e_kg", sa.Float(), nullable=True),
        sa.Column("idle_device_hours", sa.Float(), nullable=True),
        sa.Column("idle_cost_usd", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("x_job_id", sa.String(length=200), nullable=True),
        sa.Column("x_request_id", sa.String(length=200), nullable=True),
        sa.Column("x_user", sa.String(length=200), nullable=True),
        sa.Column("x_account", sa.String(length=200), nullable=True),
        sa.Column("x_extra", sa.JSON(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("ingest_run_id", sa.Integer(), nullable=True),
        sa.Column("ingested_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "cost_basis IN ('billed', 'catalog-onprem', 'catalog-cloud', 'none')",
            name=op.f("ck_usage_records_cost_basis"),
        ),
        sa.CheckConstraint(
            "energy_basis IN ('measured', 'estimated', 'none')", name=op.f("ck_usage_records_energy_basis")
        ),
        sa.CheckConstraint(
            "charge_period_start <= charge_period_end", name=op.f("ck_usage_records_period_ordered")
        ),
        sa.CheckConstraint(
            "idle_cost_usd IS NULL OR idle_cost_usd >= 0", name=op.f("ck_usage_records_idle_cost_nonnegative")
        ),
        sa.CheckConstraint(
            "idle_device_hours IS NULL OR idle_device_hours >= 0",
            name=op.f("ck_usage_records_idle_nonnegative"),
        ),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"], ["ingest_runs.id"], name=op.f("fk_usage_records_ingest_run_id_ingest_runs")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_usage_records_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_usage_records_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"], ["compute_requests.id"], name=op.f("fk_usage_records_request_id_compute_requests")
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_usage_records_team_id_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
        sa.UniqueConstraint("source_key", name=op.f("uq_usage_records_source_key")),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_records_charge_period_start"), ["charge_period_start"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_usage_records_ingest_run_id"), ["ingest_run_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_usage_records_org_id_charge_period_start"),
            ["org_id", "charge_period_start"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_usage_records_project_id_charge_period_start"),
            ["project_id", "charge_period_start"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_usage_records_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_records_request_id"))
        batch_op.drop_index(batch_op.f("ix_usage_records_project_id_charge_period_start"))
        batch_op.drop_index(batch_op.f("ix_usage_records_org_id_charge_period_start"))
        batch_op.drop_index(batch_op.f("ix_usage_records_ingest_run_id"))
        batch_op.drop_index(batch_op.f("ix_usage_records_charge_period_start"))

    op.drop_table("usage_records")
    with op.batch_alter_table("calibration_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calibration_samples_device_type_workload_kind"))

    op.drop_table("calibration_samples")
    with op.batch_alter_table("budget_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_alerts_budget_id"))

    op.drop_table("budget_alerts")
    with op.batch_alter_table("attribution_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attribution_rules_org_id_priority"))

    op.drop_table("attribution_rules")
    with op.batch_alter_table("ingest_rejects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_rejects_ingest_run_id"))

    op.drop_table("ingest_rejects")
    with op.batch_alter_table("alert_channels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_channels_org_id"))

    op.drop_table("alert_channels")
    with op.batch_alter_table("ingest_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_runs_source_started_at"))

    op.drop_table("ingest_runs")
