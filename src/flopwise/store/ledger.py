"""SQLAlchemy models of the usage ledger: metered usage, ingest runs and their rejects, attribution rules,
budget alerts and calibration samples (migration ``0002_usage_ledger``).

One row of ``usage_records`` is one :class:`flopwise.meter.record.UsageRecord` after costing: the FOCUS
columns (snake_case), flopwise's ``x_`` compute columns, and what flopwise attributed (``cost_usd`` with its
``cost_basis``, ``energy_basis``, idle device-hours and idle cost). ``source_key`` is UNIQUE: ingestion
inserts with ``ON CONFLICT (source_key) DO NOTHING``, so the same input twice changes nothing.
A later export of the same charge (same ``source_key``) whose values differ *replaces* the row (a restatement);
the values it replaced are kept in ``usage_record_history`` (migration ``0004_restatements``) with the run that
replaced them, who ran it and when, so reports can be asked as of any past run.
``org_id``/``team_id``/``project_id`` NULL means unattributed: such rows are reported as such, never dropped.

The tables share :class:`flopwise.store.models.Base` (its naming convention and type map); ``store/models.py``
imports this module so that ``Base.metadata`` holds them for Alembic.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from flopwise.store.models import Base, _one_of
from flopwise.store.types import Money, UTCDateTime, utcnow
from flopwise.vocab import INGEST_SOURCES

__all__ = [
    "ALERT_CHANNEL_KINDS",
    "ALERT_DELIVERY_STATES",
    "COST_BASES",
    "ENERGY_BASES",
    "INGEST_SOURCES",
    "INGEST_STATES",
    "AlertChannel",
    "AttributionRule",
    "BudgetAlert",
    "CalibrationSample",
    "IngestReject",
    "IngestRun",
    "HISTORY_MEASURES",
    "UsageRecordHistory",
    "UsageRecordRow",
]

#: where a record's ``cost_usd`` comes from: the bill, the catalog's on-prem cost per device-hour, the
#: catalog's cheapest on-demand cloud price for the device, or nowhere (no bill and no device to price)
COST_BASES = ("billed", "catalog-onprem", "catalog-cloud", "none")
#: where ``x_energy_kwh`` comes from: a power or energy counter, the estimator's power model, or nowhere
ENERGY_BASES = ("measured", "estimated", "none")
#: ``running`` while rows stream in; then ``ok`` (nothing rejected), ``partial`` (some rows rejected),
#: ``failed`` (the input could not be understood; what it wrote was undone) or ``interrupted`` (killed, Ctrl-C,
#: or found still ``running`` with its process gone; what it wrote was undone)
INGEST_STATES = ("running", "ok", "partial", "failed", "interrupted")
ALERT_CHANNEL_KINDS = ("webhook",)
ALERT_DELIVERY_STATES = ("pending", "delivered", "failed")


class IngestRun(Base):
    """One ingestion of one file or URL, with the counts that reconcile its input against the ledger.

    ``rows_read == records_inserted + records_duplicate + rows_rejected + rows_rolled_up`` once the run
    ends (``rows_rolled_up``: Slurm step lines folded into their job's record).
    """

    __tablename__ = "ingest_runs"
    __table_args__ = (
        _one_of("status", INGEST_STATES),
        CheckConstraint(
            "rows_read >= 0 AND records_inserted >= 0 AND records_duplicate >= 0 AND rows_rejected >= 0 "
            "AND rows_rolled_up >= 0",
            name="counts_nonnegative",
        ),
        Index(None, "source", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    records_inserted: Mapped[int] = mapped_column(Integer, default=0)
    records_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    rows_rolled_up: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="running")
    message: Mapped[str | None] = mapped_column(Text)
    records_replaced: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: who started the run (the OS user of the CLI, or the caller's name)
    actor: Mapped[str | None] = mapped_column(String(200))
    #: host and process id of the ingesting process, to tell a stale ``running`` run from a live one
    owner: Mapped[str | None] = mapped_column(String(200))
    #: when the input was exported (``--exported-at``, else the file's modification time, else the fetch): a
    #: restatement from an older export than the ledger's values restates nothing
    exported_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class IngestReject(Base):
    """An input row that was not ingested: its line (or position), why, and the raw text (truncated)."""

    __tablename__ = "ingest_rejects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ingest_run_id: Mapped[int] = mapped_column(ForeignKey("ingest_runs.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text, default="")


def _where_not_null(column: str) -> dict[str, Any]:
    """The options of a partial index over the rows whose *column* is set (both dialects)."""
    where = text(f"{column} IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


class UsageRecordRow(Base):
    """One metered, costed usage line (see the module docstring). Quantities the source does not give are NULL."""

    __tablename__ = "usage_records"
    __table_args__ = (
        _one_of("cost_basis", COST_BASES),
        _one_of("energy_basis", ENERGY_BASES),
        CheckConstraint("charge_period_start <= charge_period_end", name="period_ordered"),
        CheckConstraint("idle_device_hours IS NULL OR idle_device_hours >= 0", name="idle_nonnegative"),
        CheckConstraint("idle_cost_usd IS NULL OR idle_cost_usd >= 0", name="idle_cost_nonnegative"),
        Index(None, "org_id", "charge_period_start"),
        # partial (0009_partial_scope_indexes): only rows with a project, team or request are indexed; every
        # query on them names one, and an unattributed row writes three index entries fewer
        Index(None, "project_id", "charge_period_start", **_where_not_null("project_id")),
        Index(
            None, "team_id", "charge_period_start", **_where_not_null("team_id")
        ),  # team budgets' draw-down
        Index(None, "request_id", **_where_not_null("request_id")),
        Index(None, "charge_period_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    source_key: Mapped[str] = mapped_column(String(512), unique=True)
    charge_period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    charge_period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    billed_cost: Mapped[Decimal | None] = mapped_column(Money())
    effective_cost: Mapped[Decimal | None] = mapped_column(Money())
    list_cost: Mapped[Decimal | None] = mapped_column(Money())
    cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    cost_basis: Mapped[str] = mapped_column(String(16), default="none")
    billing_currency: Mapped[str | None] = mapped_column(String(8))
    provider_name: Mapped[str | None] = mapped_column(String(200))
    region_id: Mapped[str | None] = mapped_column(String(200))
    resource_id: Mapped[str | None] = mapped_column(Text)
    service_category: Mapped[str | None] = mapped_column(String(100))
    sku_id: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON(), default=dict)
    x_device_type: Mapped[str | None] = mapped_column(String(200))
    x_device_count: Mapped[float | None] = mapped_column(Float)
    x_device_hours: Mapped[float | None] = mapped_column(Float)
    x_gpu_utilization: Mapped[float | None] = mapped_column(Float)
    x_energy_kwh: Mapped[float | None] = mapped_column(Float)
    energy_basis: Mapped[str] = mapped_column(String(16), default="none")
    x_co2e_kg: Mapped[float | None] = mapped_column(Float)
    idle_device_hours: Mapped[float | None] = mapped_column(Float)
    idle_cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    x_job_id: Mapped[str | None] = mapped_column(String(200))
    x_request_id: Mapped[str | None] = mapped_column(String(200))
    x_user: Mapped[str | None] = mapped_column(String(200))
    x_account: Mapped[str | None] = mapped_column(String(200))
    x_extra: Mapped[dict[str, Any]] = mapped_column(JSON(), default=dict)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("compute_requests.id"))
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id"), index=True)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


#: the ``usage_records`` measure columns whose replaced values ``usage_record_history`` keeps as columns (reports
#: ``--as-of`` a past run sum them); every other changed column is in its ``changes`` JSON
HISTORY_MEASURES = (
    "charge_period_start",
    "charge_period_end",
    "billed_cost",
    "effective_cost",
    "list_cost",
    "cost_usd",
    "x_device_hours",
    "x_gpu_utilization",
    "x_energy_kwh",
    "x_co2e_kg",
    "idle_device_hours",
    "idle_cost_usd",
)


class UsageRecordHistory(Base):
    """One restatement: the values a ledger row had before run ``new_run_id`` replaced them.

    ``old_run_id`` is the run that wrote the replaced values (NULL when they came from no run, e.g. the agent);
    the replaced measure columns are kept as columns (same names), and ``changes`` holds every changed column as
    ``{"column": [old, new]}`` (JSON text values). The row as of run R is the version with the largest run id
    <= R: the current row when its ``ingest_run_id`` <= R, else the history row with ``old_run_id <= R <
    new_run_id``.
    """

    __tablename__ = "usage_record_history"
    __table_args__ = (Index(None, "new_run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    usage_record_id: Mapped[int] = mapped_column(
        ForeignKey("usage_records.id", ondelete="CASCADE"), index=True
    )
    source_key: Mapped[str] = mapped_column(String(512))
    old_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id"))
    new_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id"))
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    replaced_by: Mapped[str | None] = mapped_column(String(200))
    charge_period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    charge_period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    billed_cost: Mapped[Decimal | None] = mapped_column(Money())
    effective_cost: Mapped[Decimal | None] = mapped_column(Money())
    list_cost: Mapped[Decimal | None] = mapped_column(Money())
    cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    x_device_hours: Mapped[float | None] = mapped_column(Float)
    x_gpu_utilization: Mapped[float | None] = mapped_column(Float)
    x_energy_kwh: Mapped[float | None] = mapped_column(Float)
    x_co2e_kg: Mapped[float | None] = mapped_column(Float)
    idle_device_hours: Mapped[float | None] = mapped_column(Float)
    idle_cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    changes: Mapped[dict[str, Any]] = mapped_column(JSON(), default=dict)


class AttributionRule(Base):
    """Maps usage to a team and project of ``org_id``. Lower ``priority`` is tried first; the first match wins.

    ``match`` is a JSON object whose keys must all match: ``source``, ``account``, ``partition``, ``user``,
    ``tag`` (``{"key": "value"}``), ``namespace``, ``label`` (``{"key": "value"}``), ``resource_id`` (a glob).
    """

    __tablename__ = "attribution_rules"
    __table_args__ = (Index(None, "org_id", "priority"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    priority: Mapped[int] = mapped_column(Integer, default=100)
    match: Mapped[dict[str, Any]] = mapped_column(JSON())
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertChannel(Base):
    """Where an organization's budget alerts go: a webhook URL, signed with HMAC-SHA256 using ``secret``."""

    __tablename__ = "alert_channels"
    __table_args__ = (_one_of("kind", ALERT_CHANNEL_KINDS),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="webhook")
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BudgetAlert(Base):
    """A budget crossed ``threshold_frac`` of its limit in the window starting ``window_start`` (once per window)."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        UniqueConstraint("budget_id", "threshold_frac", "window_start"),
        _one_of("delivery_status", ALERT_DELIVERY_STATES),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id"), index=True)
    threshold_frac: Mapped[Decimal] = mapped_column(Money())
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    crossed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    used_amount: Mapped[Decimal] = mapped_column(Money())
    limit_amount: Mapped[Decimal] = mapped_column(Money())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivery_status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class CalibrationSample(Base):
    """Estimated against actual usage of one completed request (per device type and workload kind)."""

    __tablename__ = "calibration_samples"
    __table_args__ = (Index(None, "device_type", "workload_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("compute_requests.id"), unique=True)
    device_type: Mapped[str] = mapped_column(String(120))
    workload_kind: Mapped[str] = mapped_column(String(32))
    estimated_device_hours: Mapped[float | None] = mapped_column(Float)
    actual_device_hours: Mapped[float | None] = mapped_column(Float)
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    actual_cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    estimated_energy_kwh: Mapped[float | None] = mapped_column(Float)
    actual_energy_kwh: Mapped[float | None] = mapped_column(Float)
    estimated_power_w: Mapped[float | None] = mapped_column(Float)  # the estimate's average power per device
    actual_power_w: Mapped[float | None] = mapped_column(Float)  # measured (DCGM/NVML) energy / device-hours
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


import flopwise.store.rollups  # noqa: E402, F401 - registers the usage rollup tables on Base.metadata
import flopwise.store.web_sessions  # noqa: E402, F401 - registers the dashboard sessions table on Base.metadata
