"""Admission for job schedulers (Slurm, Kueue, Ray, SkyPilot adapters): decide, then commit, release or settle.

``POST /admission/decide`` is idempotent on (organization, engine, engine_job_id): the first call decides through the same
path as compute requests (:mod:`flopwise.server.decisions`) on the job's worst case (device count x maximum
duration x price, every device at full power) and reserves it; a repeat returns the stored decision and
reserves nothing more; a repeat with a different body is a 409 naming the fields that differ (a job id is
never re-decided with other numbers). Job ids of other organizations are neither visible nor blocking. A job whose policy outcome needs approval is rejected (a scheduler cannot wait for
people): file a compute request instead. Then ``commit`` when the job starts, ``release`` when it never ran
(the reservation stops counting), ``settle`` with the actual usage when it ends (the reservation is replaced
by what was used).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from flopwise.server.api.requests import ReservationPrices
from flopwise.server.auth import Principal, authorize, visibility
from flopwise.server.decisions import (
    ENGINE_PATTERN,
    MAX_ID,
    AdmissionIn,
    BodyModel,
    admission_request_facts,
    audit,
    decision_columns,
    facts_amounts,
    model_response,
    presume_decision,
    reserve,
    store_final_decision,
)
from flopwise.server.decisions import decide as decide_facts
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep, WriteContextDep, in_write_thread
from flopwise.server.errors import ApiError
from flopwise.store.models import ADMISSION_STATES

__all__ = ["AdmissionPublic", "SettleIn", "router"]

router = APIRouter(prefix="/admission", tags=["admission"])

EngineParam = Annotated[str, Path(min_length=1, max_length=32, pattern=ENGINE_PATTERN)]
JobParam = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^/\x00]+$")]
_BUDGET_COLUMN = {
    "usd": "worst_case_cost_usd",
    "device_hours": "worst_case_device_hours",
    "kwh": "worst_case_kwh",
    "co2e_kg": "worst_case_co2e_kg",
}
_MAX_AMOUNT = Decimal(10) ** 12


class AdmissionReservation(ReservationPrices):
    budget_id: int
    unit: str
    amount: Decimal
    reserved_amount: Decimal
    state: str


class AdmissionPublic(BaseModel):
    id: int
    engine: str
    engine_job_id: str
    project_id: int | None
    requester_id: int | None
    admitted: bool
    outcome: str
    reasons: list[str]
    warnings: list[str]
    state: str
    device_type: str | None
    device_count: int
    max_duration_h: Decimal | None
    worst_case_cost_usd: Decimal | None
    worst_case_device_hours: Decimal | None
    worst_case_kwh: Decimal | None
    worst_case_co2e_kg: Decimal | None
    reservations: list[AdmissionReservation]
    created_at: datetime
    committed_at: datetime | None
    ended_at: datetime | None
    ends_by: datetime | None = Field(
        description="a committed job's start plus its maximum duration: when the engine's time limit should "
        "have ended it (its reservation counts in full until it is settled or released); null otherwise"
    )
    decision_trace: dict[str, Any] | None


class SettleIn(BodyModel):
    """What the job actually used. Left-out units are prorated from the worst case by the actual hours."""

    model_config = ConfigDict(extra="forbid")

    actual_duration_h: Decimal = Field(ge=0, le=Decimal(100_000), description="hours the job ran")
    cost_usd: Decimal | None = Field(default=None, ge=0, lt=_MAX_AMOUNT)
    device_hours: Decimal | None = Field(default=None, ge=0, lt=_MAX_AMOUNT)
    kwh: Decimal | None = Field(default=None, ge=0, lt=_MAX_AMOUNT)
    co2e_kg: Decimal | None = Field(default=None, ge=0, lt=_MAX_AMOUNT)


def _public(
    session: Session | None, job: Any, reservations: list[AdmissionReservation] | None = None
) -> AdmissionPublic:
    """The job as the API shows it; with *reservations* (a job just decided, a page of a list) no query is made."""
    trace = job.decision_trace or {}
    if reservations is None:
        assert session is not None
        reservations = _reservations_of(session, [job.id])[job.id]
    return AdmissionPublic(
        id=job.id,
        engine=job.engine,
        engine_job_id=job.engine_job_id,
        project_id=job.project_id,
        requester_id=job.requester_id,
        admitted=job.state != "rejected",
        outcome=trace.get("outcome", ""),
        reasons=list(trace.get("reasons", [])),
        warnings=list(trace.get("warnings", [])),
        state=job.state,
        device_type=job.device_type,
        device_count=job.device_count,
        max_duration_h=job.max_duration_h,
        worst_case_cost_usd=job.worst_case_cost_usd,
        worst_case_device_hours=job.worst_case_device_hours,
        worst_case_kwh=job.worst_case_kwh,
        worst_case_co2e_kg=job.worst_case_co2e_kg,
        reservations=reservations,
        created_at=job.created_at,
        committed_at=job.committed_at,
        ended_at=job.ended_at,
        ends_by=_ends_by(job),
        decision_trace=job.decision_trace,
    )


def _reservations_of(session: Session, job_ids: list[int]) -> dict[int, list[AdmissionReservation]]:
    """Each job's reservations, in id order, read in one statement for all of *job_ids*."""
    from flopwise.store import BudgetReservation

    out: dict[int, list[AdmissionReservation]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        for row in session.scalars(
            select(BudgetReservation)
            .where(BudgetReservation.admission_job_id.in_(sorted(out)))
            .order_by(BudgetReservation.id)
        ):
            out[row.admission_job_id].append(AdmissionReservation.model_validate(row, from_attributes=True))
    return out


def _ends_by(job: Any) -> datetime | None:
    """A committed job's commit time plus its maximum duration (as a request's ``holds_until`` is its creation
    plus its duration); None for a job in another state or without either."""
    if job.state != "committed" or job.committed_at is None or job.max_duration_h is None:
        return None
    return job.committed_at + timedelta(hours=float(job.max_duration_h))


def _job(
    session: Session, principal: Principal, engine: str, job_id: str, min_role: str, *, lock: bool = True
) -> Any:
    from flopwise.store import AdmissionJob

    stmt = select(AdmissionJob).where(
        AdmissionJob.org_id == principal.org_id,
        AdmissionJob.engine == engine,
        AdmissionJob.engine_job_id == job_id,
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    job = session.scalars(stmt.execution_options(populate_existing=True)).first()
    if job is None:
        raise ApiError(
            404, f"admission job {engine}/{job_id} not found; call POST /api/v1/admission/decide first"
        )
    if job.project_id is not None:
        authorize(session, principal, min_role, "project", job.project_id)
    return job


def _differences(stored: dict[str, Any] | None, given: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, stored, given) for each field of a repeated decide body that differs from the first one."""
    if stored is None:  # a job stored before bodies were kept: compare nothing, as before
        return []
    return [
        (k, stored.get(k), given.get(k))
        for k in sorted(set(stored) | set(given))
        if stored.get(k) != given.get(k)
    ]


def _conflict(job: Any, action: str, allowed: tuple[str, ...]) -> ApiError:
    return ApiError(
        409,
        f"admission job {job.engine}/{job.engine_job_id} is {job.state}; {action} needs it "
        f"{' or '.join(allowed)}",
        [{"field": "state", "message": f"is {job.state}"}],
    )


@router.post("/decide", response_model=AdmissionPublic)
async def decide(body: AdmissionIn, request: Request, ctx: WriteContextDep) -> Any:
    """Admit or reject a scheduler job on its worst case, reserving it; idempotent on (engine, engine_job_id).

    The hot path, in one session (one pooled connection): a read transaction
    (:func:`~flopwise.server.decisions.presume_decision`: the project, its team and organization, the caller's
    role, the quotas and the acceptable-use policy in one statement; the budgets, each one's usage and the
    policies) decides without locks; a write transaction inserts the job with its
    decision (``ON CONFLICT DO NOTHING``: a repeat reads the stored one), locks the budgets, re-checks and
    reserves, and appends the audit entry; the response is built after the commit from what is known.
    """
    # all of it in one of the worker's write threads (this docstring is the route's description in the OpenAPI)
    return await in_write_thread(request, _decide, body, ctx)


def _decide(body: AdmissionIn, ctx: Any) -> Any:
    from flopwise.store import (
        insert_admission_job,
        pinned_session,
        to_money,
        upsert_admission_job,
        write_transaction,
    )

    principal, db, catalog = ctx.principal, ctx.db, ctx.catalog
    now = ctx.clock()
    with pinned_session(db) as session:
        presumed = presume_decision(
            session, principal, catalog, body.project_id, now,
            lambda scope: admission_request_facts(catalog, body, scope),
        )  # fmt: skip
        scope, estimated, decided = presumed.scope, presumed.estimated, presumed.decided
        facts = estimated.facts
        inputs = body.model_dump(mode="json")
        values: dict[str, Any] = {
            "org_id": scope.org_id,
            "engine": body.engine,
            "engine_job_id": body.engine_job_id,
            "requester_id": principal.user_id,
            "project_id": body.project_id,
            "device_type": facts.device_type,
            "device_count": facts.device_count,
            "max_duration_h": to_money(body.max_duration_h, "max_duration_h"),
            **facts_amounts(facts, "worst_case_"),
            "state": "admitted",
            "inputs": inputs,
            "created_at": now,
            "updated_at": now,
        }
        if decided is not None:  # stored with its decision; updated only if the reservation changes it
            values.update(
                _decided_columns(decided.decision, facts, body, estimated, decided.outcome, decided.reasons, now)
            )
        with write_transaction(session):
            job = insert_admission_job(session, values)
            if job is None:  # a repeat (or a concurrent first call that won): the stored job answers
                job, _created = upsert_admission_job(session, body.engine, body.engine_job_id, values)
                if (
                    job.project_id is not None
                ):  # a repeat reads the job: the caller needs a role on its project
                    authorize(session, principal, "member", "project", job.project_id)
                changed = _differences(job.inputs, inputs)
                if changed:
                    raise ApiError(
                        409,
                        f"admission job {body.engine}/{body.engine_job_id} was decided with other values: "
                        + "; ".join(f"{k} was {old!r}, now {new!r}" for k, old, new in changed)
                        + ". Give the job a new id to decide it again",
                        [{"field": k, "message": f"was {old!r}"} for k, old, _new in changed],
                    )
                return model_response(_public(session, job), 200)
            if decided is None:  # quotas: decide under the budget and quota locks
                decided = decide_facts(
                    session, catalog, estimated, scope, now, lock=True, exclude=(None, job.id)
                )
            result = reserve(
                session, decided, now, admission_job_id=job.id, new_holder=True,
                unit_price=estimated.usd_per_device_h, price_retrieved=estimated.price_retrieved,
                audit_org_id=scope.org_id,
            )  # fmt: skip
            outcome, reasons = result.outcome, result.reasons
            released = False
            if outcome == "require_approval":
                outcome = "deny"
                reasons = (
                    *reasons,
                    "admission cannot wait for approvals: file a compute request (POST /api/v1/requests) instead",
                )
                from flopwise.store import release_reservations

                released = release_reservations(session, admission_job_id=job.id) > 0
            if presumed.decided is None or (result.outcome, result.reasons) != (decided.outcome, decided.reasons):
                from flopwise.store import AdmissionJob

                final = _decided_columns(
                    result.decision, facts, body, estimated, result.outcome, result.reasons, now
                )
                store_final_decision(session, AdmissionJob, job, final)
            audit(
                session,
                principal,
                "admission.decide",
                {"job_id": job.id, "engine": job.engine, "engine_job_id": job.engine_job_id, "outcome": outcome,
                 "reasons": reasons, "worst_case_cost_usd": job.worst_case_cost_usd,
                 "reservation_ids": result.reservation_ids if outcome != "deny" else ()},
                now,
                scope.org_id,
                result.audit_head,  # taken with the budgets' spent read under their locks (PostgreSQL)
            )  # fmt: skip
    # after the commit: the locks are gone before the response is built (from what is known, no query)
    state = "released" if released else "reserved"
    reservations = (
        [
            AdmissionReservation(budget_id=int(r.budget_id), unit=r.unit, amount=to_money(r.amount),
                                 reserved_amount=to_money(r.amount), state=state,
                                 reserved_usd_per_device_h=estimated.usd_per_device_h,
                                 price_retrieved=estimated.price_retrieved)
            for r in result.decision.reservations
        ]
        if result.reservation_ids
        else []
    )  # fmt: skip
    return model_response(_public(None, job, reservations), 200)


def _decided_columns(
    decision: Any,
    facts: Any,
    body: AdmissionIn,
    estimated: Any,
    outcome: str,
    reasons: tuple[str, ...],
    now: datetime,
) -> dict[str, Any]:
    """The columns a decision sets on a new job (:func:`~flopwise.server.decisions.decision_columns`): its state
    and the stored trace. A decision that needs approval rejects the job (a scheduler cannot wait for people)."""
    if outcome == "require_approval":
        outcome = "deny"
        reasons = (
            *reasons,
            "admission cannot wait for approvals: file a compute request (POST /api/v1/requests) instead",
        )
    return decision_columns(
        decision, facts, outcome, reasons, now, _STATE_OF_OUTCOME,
        {"workload_kind": body.workload, "estimate": estimated.estimate},
    )  # fmt: skip


#: an admission job's state after its decision's outcome (``require_approval`` is rejected before)
_STATE_OF_OUTCOME = {"allow": "admitted", "deny": "rejected"}


#: ``state`` filter -> the stored states it selects (``holding``: the jobs whose reservations count now)
JOB_STATE_FILTERS: dict[str, tuple[str, ...]] = {
    "holding": ("admitted", "committed"),
    **{state: (state,) for state in ADMISSION_STATES},
}


@router.get("", response_model=list[AdmissionPublic])
def list_jobs(
    principal: CurrentPrincipal,
    db: DbDep,
    clock: ClockDep,
    state: Annotated[
        str | None,
        Query(
            pattern=f"^({'|'.join(JOB_STATE_FILTERS)})$",
            description="one state, or holding: admitted or committed (their reservations count now)",
        ),
    ] = None,
    engine: Annotated[str | None, Query(min_length=1, max_length=32, pattern=ENGINE_PATTERN)] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    overdue: Annotated[
        bool,
        Query(
            description="only committed jobs past their ends_by (start + maximum duration) that were never "
            "settled or released: a lost end-of-job report keeps their reservation counting in full"
        ),
    ] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="only jobs with a smaller id: the next page after this id")
    ] = None,
) -> list[AdmissionPublic]:
    """The organization's admission jobs the caller may see (a role on their project, its team or the
    organization), newest first, each with its reservations. Page with ``before_id`` (the last id of the page
    before)."""
    from flopwise.store import AdmissionJob, read_session

    states = JOB_STATE_FILTERS[state] if state is not None else None
    if overdue:
        if states is not None and "committed" not in states:
            raise ApiError(
                422,
                f"overdue jobs are committed ones; state={state} has none",
                [{"field": "overdue", "message": "leave state out, or give state=committed or holding"}],
            )
        states = ("committed",)
    now = clock()
    with read_session(db) as session:
        seen = visibility(session, principal)
        stmt = select(AdmissionJob).where(
            AdmissionJob.org_id == principal.org_id, seen.projects(AdmissionJob.project_id)
        )
        if states is not None:
            stmt = stmt.where(AdmissionJob.state.in_(states))
        if engine is not None:
            stmt = stmt.where(AdmissionJob.engine == engine)
        if project_id is not None:
            stmt = stmt.where(AdmissionJob.project_id == project_id)
        jobs: list[Any] = []
        cursor = before_id
        # overdue is read off each committed job (its start plus its duration, in Python, the same on both
        # databases): the committed jobs are read in pages by id until the page is full
        while len(jobs) < limit:
            page = stmt if cursor is None else stmt.where(AdmissionJob.id < cursor)
            batch = list(session.scalars(page.order_by(AdmissionJob.id.desc()).limit(limit)))
            if not batch:
                break
            cursor = batch[-1].id
            if overdue:
                batch = [job for job in batch if (ends_by := _ends_by(job)) is not None and ends_by <= now]
            jobs.extend(batch)
            if not overdue:
                break
        jobs = jobs[:limit]
        held = _reservations_of(session, [job.id for job in jobs])
        return [_public(None, job, held[job.id]) for job in jobs]


@router.get("/{engine}/{job_id}", response_model=AdmissionPublic)
def show(engine: EngineParam, job_id: JobParam, principal: CurrentPrincipal, db: DbDep) -> AdmissionPublic:
    """The admission job, its decision and its reservations."""
    from flopwise.store import read_session

    with read_session(db) as session:
        return _public(session, _job(session, principal, engine, job_id, "viewer", lock=False))


#: action -> (states the job may be in, the state it moves to, the time column set, repeating it is harmless)
_MOVES: dict[str, tuple[tuple[str, ...], str, str, bool]] = {
    "commit": (("admitted",), "committed", "committed_at", True),
    "release": (("admitted", "committed"), "released", "ended_at", True),
    "settle": (("admitted", "committed"), "settled", "ended_at", False),
}


def _move(
    db: Any,
    now: datetime,
    principal: Principal,
    engine: str,
    job_id: str,
    action: str,
    reservations: Callable[[Session, Any], dict[str, Any]],
) -> AdmissionPublic:
    """Move a job by *action* (``commit``, ``release``, ``settle``) in one write transaction: check its state
    (409 otherwise; a repeated commit or release returns the job as it is), apply *reservations* (which
    returns the details to audit), set the state and time, and audit ``admission.<action>``."""
    from flopwise.store import write_session

    allowed, target, stamp, repeatable = _MOVES[action]
    with write_session(db) as session:
        job = _job(session, principal, engine, job_id, "member")
        if repeatable and job.state == target:
            return _public(session, job)
        if job.state not in allowed:
            raise _conflict(job, action, allowed)
        details = reservations(session, job)
        job.state, job.updated_at = target, now
        setattr(job, stamp, now)
        session.flush()
        audit(session, principal, f"admission.{action}", {"job_id": job.id, **details}, now, job.org_id)
        return _public(session, job)


@router.post("/{engine}/{job_id}/commit", response_model=AdmissionPublic)
def commit(
    engine: EngineParam, job_id: JobParam, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> AdmissionPublic:
    """The job started: its reservation becomes committed (repeating it is harmless)."""
    from flopwise.store import commit_reservations

    def apply(session: Session, job: Any) -> dict[str, Any]:
        return {"reservations": commit_reservations(session, admission_job_id=job.id)}

    return _move(db, clock(), principal, engine, job_id, "commit", apply)


@router.post("/{engine}/{job_id}/release", response_model=AdmissionPublic)
def release(
    engine: EngineParam, job_id: JobParam, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> AdmissionPublic:
    """The job never ran: its reservation is released (repeating it is harmless)."""
    from flopwise.store import release_reservations

    def apply(session: Session, job: Any) -> dict[str, Any]:
        return {"reservations": release_reservations(session, admission_job_id=job.id)}

    return _move(db, clock(), principal, engine, job_id, "release", apply)


def _actual(job: Any, body: SettleIn) -> dict[str, Decimal]:
    """Actual usage per budget unit: the given amounts, else the worst case scaled by actual / maximum hours."""
    from flopwise.store import to_money

    limit = job.max_duration_h or Decimal(0)
    share = body.actual_duration_h / limit if limit > 0 else Decimal(1)
    given = {
        "usd": body.cost_usd,
        "device_hours": body.device_hours,
        "kwh": body.kwh,
        "co2e_kg": body.co2e_kg,
    }
    out: dict[str, Decimal] = {}
    for unit, column in _BUDGET_COLUMN.items():
        value = given[unit]
        if value is None:
            worst = getattr(job, column) or Decimal(0)
            value = worst * share
        out[unit] = to_money(value, unit)
    return out


@router.post("/{engine}/{job_id}/settle", response_model=AdmissionPublic)
def settle(
    engine: EngineParam,
    job_id: JobParam,
    body: SettleIn,
    principal: CurrentPrincipal,
    db: DbDep,
    clock: ClockDep,
) -> AdmissionPublic:
    """The job ended: its reservation is replaced by the actual usage (recorded even past a hard budget)."""
    from flopwise.store import settle_reservations

    def apply(session: Session, job: Any) -> dict[str, Any]:
        actual = _actual(job, body)
        return {
            "actual": actual,
            "reservations": settle_reservations(session, actual, admission_job_id=job.id),
        }

    return _move(db, clock(), principal, engine, job_id, "settle", apply)
