"""Initial schema: organizations, teams, projects, users, tokens, roles, budgets, reservations, quotas,
policies, compute requests, approvals, comments, acceptable-use policies, admission jobs and the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:34:18.368103
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flopwise.store.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=128), nullable=False),
        sa.Column("hash", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_log_hash")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_org_id"), ["org_id"], unique=False)

    op.create_table(
        "organizations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("name", name=op.f("uq_organizations_name")),
    )
    op.create_table(
        "aup_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("published_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_aup_versions_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aup_versions")),
        sa.UniqueConstraint("org_id", "version", name=op.f("uq_aup_versions_org_id_version")),
    )
    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("match_on", sa.String(length=16), nullable=False),
        sa.Column("device", sa.String(length=120), nullable=False),
        sa.Column(
            "max_concurrent_devices", flopwise.store.types.Money(precision=20, scale=6), nullable=False
        ),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("match_on IN ('device_type', 'device_class')", name=op.f("ck_quotas_match_on")),
        sa.CheckConstraint("scope_kind IN ('org', 'team', 'project')", name=op.f("ck_quotas_scope_kind")),
        sa.CheckConstraint("max_concurrent_devices >= 0", name=op.f("ck_quotas_max_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_quotas_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotas")),
        sa.UniqueConstraint(
            "scope_kind",
            "scope_id",
            "match_on",
            "device",
            name=op.f("uq_quotas_scope_kind_scope_id_match_on_device"),
        ),
    )
    with op.batch_alter_table("quotas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quotas_org_id"), ["org_id"], unique=False)

    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_teams_org_id_organizations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_teams_org_id_name")),
    )
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_teams_org_id"), ["org_id"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_users_org_id_organizations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_users_org_id_name")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_org_id"), ["org_id"], unique=False)

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=256), nullable=False),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_tokens_prefix")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "aup_acceptances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aup_version_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("accepted_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["aup_version_id"],
            ["aup_versions.id"],
            name=op.f("fk_aup_acceptances_aup_version_id_aup_versions"),
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_aup_acceptances_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aup_acceptances")),
        sa.UniqueConstraint(
            "aup_version_id", "user_id", name=op.f("uq_aup_acceptances_aup_version_id_user_id")
        ),
    )
    with op.batch_alter_table("aup_acceptances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_aup_acceptances_user_id"), ["user_id"], unique=False)

    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("window_start", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("window_end", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("amount", flopwise.store.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("is_hard", sa.Boolean(), nullable=False),
        sa.Column("alert_thresholds", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "period <> 'custom' OR (window_start IS NOT NULL AND window_end IS NOT NULL)",
            name=op.f("ck_budgets_custom_has_window"),
        ),
        sa.CheckConstraint(
            "period IN ('month', 'quarter', 'year', 'custom')", name=op.f("ck_budgets_period")
        ),
        sa.CheckConstraint("scope_kind IN ('org', 'team', 'project')", name=op.f("ck_budgets_scope_kind")),
        sa.CheckConstraint("unit IN ('usd', 'device_hours', 'kwh', 'co2e_kg')", name=op.f("ck_budgets_unit")),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_budgets_amount_nonnegative")),
        sa.CheckConstraint(
            "window_start IS NULL OR window_end IS NULL OR window_start < window_end",
            name=op.f("ck_budgets_window_ordered"),
        ),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_budgets_created_by_users")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_budgets_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_budgets_org_id_name")),
    )
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budgets_org_id"), ["org_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_budgets_scope_kind_scope_id"), ["scope_kind", "scope_id"], unique=False
        )

    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("yaml_text", sa.Text(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_policies_created_by_users")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_policies_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint("org_id", "name", "version", name=op.f("uq_policies_org_id_name_version")),
    )
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_policies_org_id"), ["org_id"], unique=False)

    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_projects_team_id_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("team_id", "name", name=op.f("uq_projects_team_id_name")),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_projects_team_id"), ["team_id"], unique=False)

    op.create_table(
        "role_bindings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('admin', 'approver', 'member', 'viewer')", name=op.f("ck_role_bindings_role")
        ),
        sa.CheckConstraint(
            "scope_kind IN ('org', 'team', 'project')", name=op.f("ck_role_bindings_scope_kind")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_role_bindings_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_bindings")),
        sa.UniqueConstraint(
            "user_id",
            "role",
            "scope_kind",
            "scope_id",
            name=op.f("uq_role_bindings_user_id_role_scope_kind_scope_id"),
        ),
    )
    with op.batch_alter_table("role_bindings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_role_bindings_scope_kind_scope_id"), ["scope_kind", "scope_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_role_bindings_user_id"), ["user_id"], unique=False)

    op.create_table(
        "compute_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("workload_kind", sa.String(length=32), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("estimate", sa.JSON(), nullable=True),
        sa.Column("device_type", sa.String(length=120), nullable=True),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("duration_h", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("estimated_flops", sa.Float(), nullable=True),
        sa.Column("estimated_cost_usd", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("estimated_device_hours", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("estimated_kwh", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("estimated_co2e_kg", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decision_trace", sa.JSON(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'approved', 'denied', 'cancelled', 'expired')",
            name=op.f("ck_compute_requests_state"),
        ),
        sa.CheckConstraint(
            "workload_kind IN ('train', 'fine_tune', 'serve', 'batch_inference')",
            name=op.f("ck_compute_requests_workload_kind"),
        ),
        sa.CheckConstraint("device_count >= 0", name=op.f("ck_compute_requests_device_count_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_compute_requests_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_compute_requests_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["users.id"], name=op.f("fk_compute_requests_requester_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compute_requests")),
        sa.UniqueConstraint(
            "requester_id", "idempotency_key", name=op.f("uq_compute_requests_requester_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("compute_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_compute_requests_org_id_state"), ["org_id", "state"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_compute_requests_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_compute_requests_requester_id"), ["requester_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_compute_requests_state_expires_at"), ["state", "expires_at"], unique=False
        )

    op.create_table(
        "admission_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("engine_job_id", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("requester_id", sa.Integer(), nullable=True),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("device_type", sa.String(length=120), nullable=True),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("max_duration_h", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("worst_case_cost_usd", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column(
            "worst_case_device_hours", flopwise.store.types.Money(precision=20, scale=6), nullable=True
        ),
        sa.Column("worst_case_kwh", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("worst_case_co2e_kg", flopwise.store.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decision_trace", sa.JSON(), nullable=True),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("committed_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('admitted', 'rejected', 'committed', 'released', 'settled')",
            name=op.f("ck_admission_jobs_state"),
        ),
        sa.CheckConstraint("device_count >= 0", name=op.f("ck_admission_jobs_device_count_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_admission_jobs_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_admission_jobs_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["compute_requests.id"],
            name=op.f("fk_admission_jobs_request_id_compute_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["users.id"], name=op.f("fk_admission_jobs_requester_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admission_jobs")),
        sa.UniqueConstraint("engine", "engine_job_id", name=op.f("uq_admission_jobs_engine_engine_job_id")),
    )
    with op.batch_alter_table("admission_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admission_jobs_org_id_state"), ["org_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_admission_jobs_request_id"), ["request_id"], unique=False)

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("approver_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("verdict IN ('approve', 'deny')", name=op.f("ck_approvals_verdict")),
        sa.ForeignKeyConstraint(["approver_id"], ["users.id"], name=op.f("fk_approvals_approver_id_users")),
        sa.ForeignKeyConstraint(
            ["request_id"], ["compute_requests.id"], name=op.f("fk_approvals_request_id_compute_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
        sa.UniqueConstraint("request_id", "approver_id", name=op.f("uq_approvals_request_id_approver_id")),
    )
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_comments_author_id_users")),
        sa.ForeignKeyConstraint(
            ["request_id"], ["compute_requests.id"], name=op.f("fk_comments_request_id_compute_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_comments_request_id"), ["request_id"], unique=False)

    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("budget_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("admission_job_id", sa.Integer(), nullable=True),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("amount", flopwise.store.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("reserved_amount", flopwise.store.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("counted_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flopwise.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('reserved', 'committed', 'released', 'settled')",
            name=op.f("ck_budget_reservations_state"),
        ),
        sa.CheckConstraint(
            "(request_id IS NULL) <> (admission_job_id IS NULL)",
            name=op.f("ck_budget_reservations_one_holder"),
        ),
        sa.ForeignKeyConstraint(
            ["admission_job_id"],
            ["admission_jobs.id"],
            name=op.f("fk_budget_reservations_admission_job_id_admission_jobs"),
        ),
        sa.ForeignKeyConstraint(
            ["budget_id"], ["budgets.id"], name=op.f("fk_budget_reservations_budget_id_budgets")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["compute_requests.id"],
            name=op.f("fk_budget_reservations_request_id_compute_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_reservations")),
        sa.UniqueConstraint(
            "budget_id", "admission_job_id", name=op.f("uq_budget_reservations_budget_id_admission_job_id")
        ),
        sa.UniqueConstraint(
            "budget_id", "request_id", name=op.f("uq_budget_reservations_budget_id_request_id")
        ),
    )
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_budget_reservations_admission_job_id"), ["admission_job_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_budget_reservations_budget_id_state"), ["budget_id", "state"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_budget_reservations_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_reservations_request_id"))
        batch_op.drop_index(batch_op.f("ix_budget_reservations_budget_id_state"))
        batch_op.drop_index(batch_op.f("ix_budget_reservations_admission_job_id"))

    op.drop_table("budget_reservations")
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comments_request_id"))

    op.drop_table("comments")
    op.drop_table("approvals")
    with op.batch_alter_table("admission_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admission_jobs_request_id"))
        batch_op.drop_index(batch_op.f("ix_admission_jobs_org_id_state"))

    op.drop_table("admission_jobs")
    with op.batch_alter_table("compute_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_compute_requests_state_expires_at"))
        batch_op.drop_index(batch_op.f("ix_compute_requests_requester_id"))
        batch_op.drop_index(batch_op.f("ix_compute_requests_project_id"))
        batch_op.drop_index(batch_op.f("ix_compute_requests_org_id_state"))

    op.drop_table("compute_requests")
    with op.batch_alter_table("role_bindings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_role_bindings_user_id"))
        batch_op.drop_index(batch_op.f("ix_role_bindings_scope_kind_scope_id"))

    op.drop_table("role_bindings")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_projects_team_id"))

    op.drop_table("projects")
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policies_org_id"))

    op.drop_table("policies")
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budgets_scope_kind_scope_id"))
        batch_op.drop_index(batch_op.f("ix_budgets_org_id"))

    op.drop_table("budgets")
    with op.batch_alter_table("aup_acceptances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_aup_acceptances_user_id"))

    op.drop_table("aup_acceptances")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))

    op.drop_table("api_tokens")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_org_id"))

    op.drop_table("users")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teams_org_id"))

    op.drop_table("teams")
    with op.batch_alter_table("quotas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quotas_org_id"))

    op.drop_table("quotas")
    op.drop_table("aup_versions")
    op.drop_table("organizations")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_org_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")
