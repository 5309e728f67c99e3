"""SQLAlchemy 2 models of the governance store: who, what budget, which request, what was decided, and the audit log.

Conventions: integer surrogate keys; every timestamp a :class:`~flopwise.store.types.UTCDateTime`; every money or
quota amount a :class:`~flopwise.store.types.Money` (``NUMERIC(20, 6)``, exact ``Decimal``); enumerations are
short strings guarded by ``CHECK`` constraints (portable, and a new value is a migration, not a type change);
JSON columns hold what the pure core (``flopwise.govern``, ``flopwise.estimate``) computed, money in them as
decimal strings. Column names follow the house units-in-names rule (``_usd``, ``_kwh``, ``_h``).

The schema is created by the Alembic migrations in ``migrations/versions`` (never ``create_all``); a test checks
that these models and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flopwise.store.types import Money, UTCDateTime, utcnow
from flopwise.vocab import WORKLOAD_KINDS

__all__ = [
    "ADMISSION_STATES",
    "APPROVAL_VERDICTS",
    "BUDGET_PERIODS",
    "BUDGET_UNITS",
    "QUOTA_MATCH_ON",
    "REQUEST_STATES",
    "RESERVATION_STATES",
    "ROLES",
    "SCOPE_KINDS",
    "SPENDING_STATES",
    "WORKLOAD_KINDS",
    "AdmissionJob",
    "ApiToken",
    "Approval",
    "AupAcceptance",
    "AupVersion",
    "AuditLog",
    "Base",
    "Budget",
    "BudgetReservation",
    "BudgetTotal",
    "Comment",
    "ComputeRequest",
    "Organization",
    "Policy",
    "Project",
    "Quota",
    "RoleBinding",
    "Team",
    "User",
]

ROLES = ("admin", "approver", "member", "viewer")
SCOPE_KINDS = ("org", "team", "project")
BUDGET_PERIODS = ("month", "quarter", "year", "custom")
BUDGET_UNITS = ("usd", "device_hours", "kwh", "co2e_kg")
RESERVATION_STATES = ("reserved", "committed", "released", "settled")
#: reservation states whose amount counts as spent against the budget
SPENDING_STATES = ("reserved", "committed", "settled")
QUOTA_MATCH_ON = ("device_type", "device_class")
REQUEST_STATES = ("pending", "approved", "denied", "cancelled", "expired")
APPROVAL_VERDICTS = ("approve", "deny")
#: admitted: reserved worst case, job not started; rejected: refused; committed: running; released: never ran;
#: settled: ended, actual usage recorded
ADMISSION_STATES = ("admitted", "rejected", "committed", "released", "settled")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values: tuple[str, ...], name: str | None = None) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name or column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        Decimal: Money(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _created()


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created()


class ApiToken(Base):
    """A bearer token. Only its hash is stored; ``prefix`` (the first characters, shown to users) finds it."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RoleBinding(Base):
    """``user`` holds ``role`` over one scope: the organization, a team or a project (``scope_kind`` + ``scope_id``)."""

    __tablename__ = "role_bindings"
    __table_args__ = (
        UniqueConstraint("user_id", "role", "scope_kind", "scope_id"),
        Index(None, "scope_kind", "scope_id"),
        _one_of("role", ROLES),
        _one_of("scope_kind", SCOPE_KINDS),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    scope_kind: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()


class Budget(Base):
    """A cap on spending in one unit over a period, for one scope. Hard budgets fail closed, soft ones warn.

    ``window_start``/``window_end`` bound a ``custom`` period (required there); for month/quarter/year they are
    optional outer limits (when the budget starts and stops applying). ``alert_thresholds`` is a JSON list of
    fractions of ``amount`` (e.g. ``["0.5", "0.8", "1.0"]``).
    """

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        Index(None, "scope_kind", "scope_id"),
        _one_of("scope_kind", SCOPE_KINDS),
        _one_of("period", BUDGET_PERIODS),
        _one_of("unit", BUDGET_UNITS),
        CheckConstraint("amount >= 0", name="amount_nonnegative"),
        CheckConstraint(
            "period <> 'custom' OR (window_start IS NOT NULL AND window_end IS NOT NULL)",
            name="custom_has_window",
        ),
        CheckConstraint(
            "window_start IS NULL OR window_end IS NULL OR window_start < window_end", name="window_ordered"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    scope_kind: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(16))
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unit: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Money())
    is_hard: Mapped[bool] = mapped_column(Boolean, default=True)
    alert_thresholds: Mapped[list[Any]] = mapped_column(JSON(), default=list)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _created()


class BudgetReservation(Base):
    """An amount held against a budget for one compute request or one admission job.

    ``amount`` is what counts now (see ``SPENDING_STATES``); ``reserved_amount`` keeps what was first reserved,
    so a settled row shows both the estimate and the actual usage. ``counted_at`` places the amount in a budget
    period (for windowed sums). ``reserved_usd_per_device_h`` is the unit price the estimate was priced at (with
    ``price_retrieved``, the retrieval date of the catalog row it came from; NULL when the caller gave the price),
    ``settled_usd_per_device_h`` the metered price at settlement (metered USD / metered device-hours), so a
    reservation made at one price and settled at another shows both.
    """

    __tablename__ = "budget_reservations"
    __table_args__ = (
        UniqueConstraint("budget_id", "request_id"),
        UniqueConstraint("budget_id", "admission_job_id"),
        Index(None, "budget_id", "state"),
        Index(None, "budget_id", "counted_at"),  # the partial days at a window's edges (BudgetTotal)
        _one_of("state", RESERVATION_STATES),
        CheckConstraint("(request_id IS NULL) <> (admission_job_id IS NULL)", name="one_holder"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id"))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("compute_requests.id"), index=True)
    admission_job_id: Mapped[int | None] = mapped_column(ForeignKey("admission_jobs.id"), index=True)
    unit: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Money())
    reserved_amount: Mapped[Decimal] = mapped_column(Money())
    reserved_usd_per_device_h: Mapped[Decimal | None] = mapped_column(Money())
    price_retrieved: Mapped[str | None] = mapped_column(String(10))
    settled_usd_per_device_h: Mapped[Decimal | None] = mapped_column(Money())
    state: Mapped[str] = mapped_column(String(16), default="reserved")
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class BudgetTotal(Base):
    """What a budget's reservations in a spending state (``SPENDING_STATES``) hold per UTC day of ``counted_at``:
    one row per budget, day and state, kept by triggers on ``budget_reservations`` (revision 0010_budget_totals,
    :func:`flopwise.store.totals.budget_totals_ddl`) in the same transaction as the reservation's change.

    A window's sum reads one row per whole day and state, plus the reservations of the partial days at its edges
    (``ix_budget_reservations_budget_id_counted_at``), instead of every reservation in the window: what each
    write sums under its budget lock no longer grows with the requests the budget has seen this month. Every
    writer of a budget's reservations holds that budget's row lock (see :mod:`flopwise.store.queries`), so a
    row here is only ever updated by the holder of its budget's lock and never adds a wait of its own.
    """

    __tablename__ = "budget_totals"

    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Money())


class Quota(Base):
    """At most ``max_concurrent_devices`` devices of one type (``h100-sxm``) or class (``gpu``) at once in a scope."""

    __tablename__ = "quotas"
    __table_args__ = (
        UniqueConstraint("scope_kind", "scope_id", "match_on", "device"),
        _one_of("scope_kind", SCOPE_KINDS),
        _one_of("match_on", QUOTA_MATCH_ON),
        CheckConstraint("max_concurrent_devices >= 0", name="max_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    scope_kind: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[int] = mapped_column(Integer)
    match_on: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(String(120))
    max_concurrent_devices: Mapped[Decimal] = mapped_column(Money())
    created_at: Mapped[datetime] = _created()


class Policy(Base):
    """One version of a named policy document (YAML text as applied; parsing is ``flopwise.govern``'s)."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("org_id", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    yaml_text: Mapped[str] = mapped_column(Text)
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _created()


def _holds_until(context: Any) -> datetime | None:
    """``created_at + duration_h`` of the row being inserted (*context*: SQLAlchemy's execution context, or any
    object whose ``get_current_parameters()`` gives the row's values), None without both."""
    values = context.get_current_parameters()
    created, duration_h = values.get("created_at"), values.get("duration_h")
    if created is None or duration_h is None:
        return None
    return created + timedelta(hours=float(duration_h))


class ComputeRequest(Base):
    """A workload someone asks to run, what flopwise estimated for it, and what was decided (with the trace)."""

    __tablename__ = "compute_requests"
    __table_args__ = (
        UniqueConstraint("requester_id", "idempotency_key"),
        Index(None, "org_id", "state", "holds_until"),
        Index(None, "state", "expires_at"),
        _one_of("workload_kind", WORKLOAD_KINDS),
        _one_of("state", REQUEST_STATES),
        CheckConstraint("device_count >= 0", name="device_count_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    workload_kind: Mapped[str] = mapped_column(String(32))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON())
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    device_type: Mapped[str | None] = mapped_column(String(120))
    device_count: Mapped[int] = mapped_column(Integer, default=0)
    duration_h: Mapped[Decimal | None] = mapped_column(Money())
    estimated_flops: Mapped[float | None] = mapped_column(Float)
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    estimated_device_hours: Mapped[Decimal | None] = mapped_column(Money())
    estimated_kwh: Mapped[Decimal | None] = mapped_column(Money())
    estimated_co2e_kg: Mapped[Decimal | None] = mapped_column(Money())
    state: Mapped[str] = mapped_column(String(16), default="pending")
    decision_trace: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: until when a pending or approved request holds its devices (quotas count them): ``created_at +
    #: duration_h``, NULL without a duration (held while it is pending or approved); set on insert
    #: (:func:`_holds_until`), so the devices held are read by ``(org_id, state, holds_until)`` instead of reading
    #: every approved request the organization ever had (revision 0011_request_holds_until)
    holds_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=_holds_until)


class Approval(Base):
    """One approver's verdict on one request (at most one per approver per request)."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver_id"), _one_of("verdict", APPROVAL_VERDICTS))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("compute_requests.id"))
    approver_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("compute_requests.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AupVersion(Base):
    """A published version of an organization's acceptable-use policy; ``text_sha256`` pins what was accepted."""

    __tablename__ = "aup_versions"
    __table_args__ = (UniqueConstraint("org_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AupAcceptance(Base):
    __tablename__ = "aup_acceptances"
    __table_args__ = (UniqueConstraint("aup_version_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aup_version_id: Mapped[int] = mapped_column(ForeignKey("aup_versions.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AdmissionJob(Base):
    """A scheduler's job (Slurm, Kueue, Ray, SkyPilot) seen by the admission endpoint, keyed by engine + job id.

    The ``worst_case_*`` columns are what was reserved at admission (device count x maximum duration x price).
    """

    __tablename__ = "admission_jobs"
    __table_args__ = (
        UniqueConstraint("org_id", "engine", "engine_job_id"),
        Index(None, "org_id", "state"),
        _one_of("state", ADMISSION_STATES),
        CheckConstraint("device_count >= 0", name="device_count_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    engine: Mapped[str] = mapped_column(String(32))
    engine_job_id: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("compute_requests.id"), index=True)
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))
    device_type: Mapped[str | None] = mapped_column(String(120))
    device_count: Mapped[int] = mapped_column(Integer, default=0)
    max_duration_h: Mapped[Decimal | None] = mapped_column(Money())
    worst_case_cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    worst_case_device_hours: Mapped[Decimal | None] = mapped_column(Money())
    worst_case_kwh: Mapped[Decimal | None] = mapped_column(Money())
    worst_case_co2e_kg: Mapped[Decimal | None] = mapped_column(Money())
    state: Mapped[str] = mapped_column(String(16), default="admitted")
    decision_trace: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    #: the decide body as received (JSON), so a repeat with a different body is refused naming the difference
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditLog(Base):
    """One entry of the append-only, hash-chained audit log. ``seq`` is dense from 1; the hashes are govern's."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    org_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON())
    prev_hash: Mapped[str] = mapped_column(String(128))
    hash: Mapped[str] = mapped_column(String(128), unique=True)
    #: 1: the single global chain of entries written before revision 0006_governance (hash without org_id);
    #: 2: the organization's own chain (``prev_hash`` is the organization's previous entry; the hash covers org_id)
    hash_version: Mapped[int] = mapped_column(SmallInteger, default=2, server_default="1")


class AuditHead(Base):
    """The last entry of one audit chain (``chain_id`` = organization id, 0 for entries without one).

    Appending locks this row (not the table), so organizations append in parallel; it is also an anchor: a
    deleted tail of a chain no longer matches its head.
    """

    __tablename__ = "audit_heads"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(128))


import flopwise.store.ledger  # noqa: E402, F401 - registers the usage-ledger tables on Base.metadata
