"""Compute requests: create (estimated, decided, reserved), list, show, approve, deny, cancel, comment.

``POST /requests`` goes through :mod:`flopwise.server.decisions` (the same path as admission): ``allow`` is
approved at once, ``require_approval`` waits as pending (its amounts reserved) until enough distinct approvers
of the required role approve it or it expires, ``deny`` keeps nothing reserved. An ``Idempotency-Key`` header
(or ``idempotency_key`` field) makes a retry return the first request instead of deciding and reserving again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from flopwise import govern
from flopwise.errors import InputError
from flopwise.server.auth import Principal, authorize, visibility
from flopwise.server.decisions import (
    MAX_ID,
    BodyModel,
    IdPath,
    WorkloadIn,
    audit,
    decide,
    decision_columns,
    facts_amounts,
    model_response,
    presume_decision,
    request_facts,
    reserve,
    store_final_decision,
)
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep, WriteContextDep, in_write_thread
from flopwise.server.errors import ApiError

router = APIRouter(prefix="/requests", tags=["requests"])

#: a pending request with no expiry stored never expires; approvals still need a deadline for the state machine
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


class RequestCreate(WorkloadIn):
    """A compute request; ``idempotency_key`` may also come as the ``Idempotency-Key`` header."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class VotePublic(BaseModel):
    approver_id: int
    verdict: str
    comment: str | None
    at: datetime


class CommentPublic(BaseModel):
    id: int
    author_id: int
    body: str
    at: datetime


class ReservationPrices(BaseModel):
    """The unit price a reservation was made at (and the retrieval date of the catalog row it came from) and the
    metered unit price it settled at, with the difference: a reservation priced at one price and settled at
    another shows both. USD per device-hour; None where unknown (a given price has no catalog date)."""

    reserved_usd_per_device_h: Decimal | None = None
    price_retrieved: str | None = None
    settled_usd_per_device_h: Decimal | None = None
    price_change_usd_per_device_h: Decimal | None = None

    @model_validator(mode="after")
    def _change(self) -> ReservationPrices:
        if self.reserved_usd_per_device_h is not None and self.settled_usd_per_device_h is not None:
            self.price_change_usd_per_device_h = self.settled_usd_per_device_h - self.reserved_usd_per_device_h
        return self


class ReservationPublic(ReservationPrices):
    budget_id: int
    unit: str
    amount: Decimal
    reserved_amount: Decimal
    state: str


class RequestPublic(BaseModel):
    id: int
    org_id: int
    project_id: int
    requester_id: int
    workload: str
    device_type: str | None
    device_count: int
    duration_h: Decimal | None
    estimated_flops: float | None
    estimated_cost_usd: Decimal | None
    estimated_device_hours: Decimal | None
    estimated_kwh: Decimal | None
    estimated_co2e_kg: Decimal | None
    state: str
    outcome: str | None
    reasons: list[str]
    warnings: list[str]
    threshold_flags: list[str]
    approvals_required: int
    approver_role: str
    approvals: list[VotePublic]
    comments: list[CommentPublic]
    reservations: list[ReservationPublic]
    idempotency_key: str | None
    created_at: datetime
    decided_at: datetime | None
    expires_at: datetime | None
    decision_trace: dict[str, Any] | None
    estimate: dict[str, Any] | None


class VerdictIn(BodyModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=10_000)


class DenyIn(BodyModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(min_length=1, max_length=10_000, description="why the request is denied")


class CommentIn(BodyModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=10_000)


# ---------------------------------------------------------------------------------------------- helpers


def _public(
    session: Session | None,
    row: Any,
    now: datetime | None = None,
    *,
    fresh_reservations: list[ReservationPublic] | None = None,
    related: tuple[Any, Any, list[ReservationPublic]] | None = None,
) -> RequestPublic:
    """The request as the API shows it; with *fresh_reservations* (a request just created, so without votes or
    comments) or *related* (its votes, comments and reservations, read for a whole page by :func:`_related`)
    no query is made and *session* may be None."""
    from flopwise.store import Approval, BudgetReservation, Comment

    trace = row.decision_trace or {}
    state = row.state
    if now is not None and state == "pending" and row.expires_at is not None and row.expires_at <= now:
        state = "expired"  # a read does not write; the next write marks it and releases its reservations
    if fresh_reservations is not None:
        votes: Any = ()
        comments: Any = ()
        reserved: list[ReservationPublic] = fresh_reservations
    elif related is not None:
        votes, comments, reserved = related
    else:
        assert session is not None
        votes = session.scalars(select(Approval).where(Approval.request_id == row.id).order_by(Approval.id))
        comments = session.scalars(select(Comment).where(Comment.request_id == row.id).order_by(Comment.id))
        reserved = [
            ReservationPublic.model_validate(r, from_attributes=True)
            for r in session.scalars(
                select(BudgetReservation)
                .where(BudgetReservation.request_id == row.id)
                .order_by(BudgetReservation.id)
            )
        ]
    flags = [f.get("threshold_id", "") for f in (trace.get("trace") or {}).get("thresholds", [])]
    return RequestPublic(
        id=row.id,
        org_id=row.org_id,
        project_id=row.project_id,
        requester_id=row.requester_id,
        workload=row.workload_kind,
        device_type=row.device_type,
        device_count=row.device_count,
        duration_h=row.duration_h,
        estimated_flops=row.estimated_flops,
        estimated_cost_usd=row.estimated_cost_usd,
        estimated_device_hours=row.estimated_device_hours,
        estimated_kwh=row.estimated_kwh,
        estimated_co2e_kg=row.estimated_co2e_kg,
        state=state,
        outcome=trace.get("outcome"),
        reasons=list(trace.get("reasons", [])),
        warnings=list(trace.get("warnings", [])),
        threshold_flags=flags,
        approvals_required=int(trace.get("approvals_required", 0)),
        approver_role=trace.get("approver_role", ""),
        approvals=[
            VotePublic(approver_id=v.approver_id, verdict=v.verdict, comment=v.comment, at=v.at)
            for v in votes
        ],
        comments=[CommentPublic(id=c.id, author_id=c.author_id, body=c.body, at=c.at) for c in comments],
        reservations=reserved,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
        decided_at=row.decided_at,
        expires_at=row.expires_at,
        decision_trace=row.decision_trace,
        estimate=row.estimate,
    )


def _related(
    session: Session, ids: list[int]
) -> dict[int, tuple[list[Any], list[Any], list[ReservationPublic]]]:
    """Votes, comments and reservations of the requests *ids*, by request id: three queries for a page, not
    three per request."""
    from flopwise.store import Approval, BudgetReservation, Comment

    out: dict[int, tuple[list[Any], list[Any], list[ReservationPublic]]] = {i: ([], [], []) for i in ids}
    if not ids:
        return out
    for vote in session.scalars(select(Approval).where(Approval.request_id.in_(ids)).order_by(Approval.id)):
        out[vote.request_id][0].append(vote)
    for comment in session.scalars(select(Comment).where(Comment.request_id.in_(ids)).order_by(Comment.id)):
        out[comment.request_id][1].append(comment)
    for r in session.scalars(
        select(BudgetReservation).where(BudgetReservation.request_id.in_(ids)).order_by(BudgetReservation.id)
    ):
        out[r.request_id][2].append(ReservationPublic.model_validate(r, from_attributes=True))
    return out


def expire_in(session: Session, now: datetime) -> list[int]:
    """In *session*'s write transaction: expire pending requests past their deadline, release their
    reservations and audit each expiry (actor ``system``)."""
    from flopwise.store import ComputeRequest, expire_pending_requests, release_reservations
    from flopwise.store.queries import lock_budgets_held

    ids = expire_pending_requests(session, now)
    if not ids:
        return ids
    # every budget these requests hold first, at once (the lock order: budgets before the audit chain head,
    # which each expiry's entry below takes before the next release)
    lock_budgets_held(session, "request_id", ids, ("reserved", "committed"))
    orgs = dict(
        session.execute(
            select(ComputeRequest.id, ComputeRequest.org_id).where(ComputeRequest.id.in_(ids))
        ).all()
    )
    for request_id in ids:
        release_reservations(session, request_id=request_id)
        audit(session, None, "request.expire", {"request_id": request_id}, now, orgs[request_id])
    return ids


#: a process runs the expiry pass at most once per this much app time (creations need not each run it)
EXPIRY_PASS_EVERY = timedelta(seconds=1)


def expire_due(db: Any, now: datetime, state: Any = None) -> list[int]:
    """:func:`expire_in` in its own transaction (committed even when the caller's next step is refused).

    With the app's *state*, a pass already run within :data:`EXPIRY_PASS_EVERY` of *now* (app clock) by this
    process is not repeated: under load most creations skip the write transaction, and a request expires at
    most that much later.
    """
    from flopwise.store import write_session

    if state is not None:
        last = getattr(state, "expiry_pass_at", None)
        if last is not None and last <= now < last + EXPIRY_PASS_EVERY:
            return []
        state.expiry_pass_at = now
    with write_session(db) as session:
        return expire_in(session, now)


def _get_request(session: Session, principal: Principal, request_id: int, *, lock: bool = False) -> Any:
    from flopwise.store import ComputeRequest

    stmt = select(ComputeRequest).where(ComputeRequest.id == request_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = session.scalars(stmt.execution_options(populate_existing=True)).first()
    if row is None or row.org_id != principal.org_id:
        raise ApiError(404, f"request {request_id} not found")
    return row


def _approval_state(session: Session, row: Any) -> govern.ApprovalState:
    from flopwise.store import Approval

    trace = row.decision_trace or {}
    votes = tuple(
        govern.Vote(
            str(v.approver_id), trace.get("approver_role") or "approver", v.verdict, v.at, v.comment or ""
        )
        for v in session.scalars(select(Approval).where(Approval.request_id == row.id).order_by(Approval.id))
    )
    return govern.ApprovalState(
        request_id=str(row.id),
        requester=str(row.requester_id),
        approvals_required=max(int(trace.get("approvals_required", 0)), 1),
        role=trace.get("approver_role") or "approver",
        status=row.state,
        created_at=row.created_at,
        expires_at=row.expires_at or _FAR_FUTURE,
        votes=votes,
    )


def _transition_error(err: InputError) -> ApiError:
    """govern.approvals refusals as HTTP: who may act -> 403; the request's state or deadline -> 409."""
    status = (
        403 if err.field in ("actor", "actor_role") else 409 if err.field in ("status", "expires_at") else 422
    )
    return ApiError(status, str(err), [{"field": err.field, "message": str(err)}])


# ---------------------------------------------------------------------------------------------- routes


@router.post("", response_model=RequestPublic, status_code=201)
async def create_request(
    body: RequestCreate,
    request: Request,
    ctx: WriteContextDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> Any:
    """Estimate, decide and reserve a compute request; 201 when new, 200 for a repeated idempotency key.

    The hot path, in one session (one pooled connection): a read transaction
    (:func:`~flopwise.server.decisions.presume_decision`: the project, its team and organization, the caller's
    role, the quotas and the acceptable-use policy in one statement; the budgets, each one's usage and the
    policies) decides without locks, then a write transaction inserts the request
    with its decision, locks the budgets, re-checks and reserves, and appends the audit entry; the response is
    built after the commit from what is known, and serialized here (:func:`~flopwise.server.decisions.model_response`).
    """
    # all of it in one of the worker's write threads (this docstring is the route's description in the OpenAPI)
    return await in_write_thread(request, _create_response, body, request, ctx, idempotency_key)


def _create_response(body: RequestCreate, request: Request, ctx: Any, idempotency_key: str | None) -> Any:
    public, status = new_request(
        body, request, ctx.principal, ctx.db, ctx.clock, ctx.catalog, ctx.settings, idempotency_key
    )
    return model_response(public, status)


def new_request(
    body: RequestCreate,
    request: Request | None,
    principal: Principal,
    db: Any,
    clock: Any,
    catalog: Any,
    settings: Any,
    idempotency_key: str | None = None,
) -> tuple[RequestPublic, int]:
    """:func:`create_request` as a function: (the request as the API shows it, 201 when new or 200 for a
    repeated idempotency key); *request* None when called in-process (the demo), without the app's state."""
    from flopwise.store import insert_request_idempotent, pinned_session, to_money, write_transaction

    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise ApiError(
            422,
            "the Idempotency-Key header and the idempotency_key field differ",
            [{"field": "idempotency_key", "message": "give the key once, or the same key in both places"}],
        )
    key = idempotency_key or body.idempotency_key
    now = clock()
    # frees what expired requests held, in its own short transaction before this one: it writes audit entries,
    # and this one locks budgets first and audits last (the lock order of flopwise.server.decisions), so the two
    # never wait on each other's locks in opposite orders
    expire_due(db, now, request.app.state if request is not None else None)  # None: called in-process (demo)
    with pinned_session(db) as session:
        presumed = presume_decision(
            session, principal, catalog, body.project_id, now,
            lambda scope: request_facts(catalog, body, scope, settings.catalog_dir),
        )  # fmt: skip
        scope, estimated, decided = presumed.scope, presumed.estimated, presumed.decided
        facts = estimated.facts
        inputs = body.model_dump(mode="json", exclude={"idempotency_key"})
        values: dict[str, Any] = {
            "org_id": scope.org_id,
            "requester_id": principal.user_id,
            "project_id": body.project_id,
            "workload_kind": body.workload,
            "inputs": inputs,
            "estimate": estimated.estimate,
            "device_type": facts.device_type,
            "device_count": facts.device_count,
            "duration_h": to_money(Decimal(repr(facts.duration_s / 3600.0)), "duration_h"),
            "estimated_flops": facts.flops,
            **facts_amounts(facts, "estimated_"),
            "state": "pending",
            "idempotency_key": key,
            "created_at": now,
            "updated_at": now,
        }
        if decided is not None:  # stored with its decision; updated only if the reservation is refused
            values.update(
                _decided_columns(decided.decision, facts, decided.outcome, decided.reasons, now, settings)
            )
        with write_transaction(session):
            row, created = insert_request_idempotent(session, values)
            if not created:
                if row.inputs != inputs:
                    raise ApiError(
                        409,
                        f"Idempotency-Key {key!r} was already used for request {row.id} with a different body; "
                        "use a new key for a new request",
                        [{"field": "idempotency_key", "message": "reused with a different request body"}],
                    )
                return _public(session, row, now), 200
            if decided is None:  # quotas: decide under the budget and quota locks
                decided = decide(session, catalog, estimated, scope, now, lock=True, exclude=(row.id, None))
            result = reserve(
                session, decided, now, request_id=row.id, new_holder=True,
                unit_price=estimated.usd_per_device_h, price_retrieved=estimated.price_retrieved,
                audit_org_id=scope.org_id,
            )  # fmt: skip
            decision = result.decision
            if presumed.decided is None or (result.outcome, result.reasons) != (decided.outcome, decided.reasons):
                from flopwise.store import ComputeRequest

                final = _decided_columns(decision, facts, result.outcome, result.reasons, now, settings)
                store_final_decision(session, ComputeRequest, row, final)
            audit(
                session,
                principal,
                "request.create",
                {
                    "request_id": row.id,
                    "project_id": row.project_id,
                    "outcome": result.outcome,
                    "state": row.state,
                    "reasons": result.reasons,
                    "warnings": decision.warnings,
                    "cost_usd": facts.cost_usd,
                    "device_hours": row.estimated_device_hours,
                    "flops": facts.flops,
                    "reservation_ids": result.reservation_ids,
                    "decided_by": decision.trace.policy.decided_by,
                    "threshold_flags": [f.threshold_id for f in decision.trace.thresholds],
                },
                now,
                scope.org_id,
                result.audit_head,  # taken with the budgets' spent read under their locks (PostgreSQL)
            )
    # after the commit: the locks are gone before the response is built (from what is known, no query)
    reservations = (
        [
            ReservationPublic(budget_id=int(r.budget_id), unit=r.unit, amount=to_money(r.amount),
                              reserved_amount=to_money(r.amount), state="reserved",
                              reserved_usd_per_device_h=estimated.usd_per_device_h,
                              price_retrieved=estimated.price_retrieved)
            for r in decision.reservations
        ]
        if result.reservation_ids
        else []
    )  # fmt: skip
    return _public(None, row, now, fresh_reservations=reservations), 201


def _decided_columns(
    decision: govern.Decision,
    facts: govern.RequestFacts,
    outcome: str,
    reasons: tuple[str, ...],
    now: datetime,
    settings: Any,
) -> dict[str, Any]:
    """The columns a decision sets on a new request (:func:`~flopwise.server.decisions.decision_columns`): its
    state, the stored trace, and the deadline of a pending request or the time of the decision."""
    columns = decision_columns(decision, facts, outcome, reasons, now, _STATE_OF_OUTCOME)
    pending = columns["state"] == "pending"
    columns["expires_at"] = now + timedelta(hours=settings.request_expiry_hours) if pending else None
    columns["decided_at"] = None if pending else now
    return columns


#: a compute request's state after its decision's outcome
_STATE_OF_OUTCOME = {"allow": "approved", "require_approval": "pending", "deny": "denied"}


@router.get("", response_model=list[RequestPublic])
def list_requests(
    principal: CurrentPrincipal,
    db: DbDep,
    clock: ClockDep,
    state: Annotated[str | None, Query(pattern="^(pending|approved|denied|cancelled|expired)$")] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    before_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="only requests with a smaller id: the next page after one whose last id this is (reads "
            "from there by the primary key, where a large offset reads and skips every row before it)",
        ),
    ] = None,
) -> list[RequestPublic]:
    """The organization's requests the caller may see (a role on their project, its team or the organization),
    newest first (``pending`` past its deadline shows as ``expired``). Page with ``before_id`` (the last id of
    the page before), or ``offset``."""
    from flopwise.store import ComputeRequest, read_session

    now = clock()
    with read_session(db) as session:
        seen = visibility(session, principal)
        stmt = select(ComputeRequest).where(
            ComputeRequest.org_id == principal.org_id, seen.projects(ComputeRequest.project_id)
        )
        if project_id is not None:
            stmt = stmt.where(ComputeRequest.project_id == project_id)
        if state == "expired":
            stmt = stmt.where(
                (ComputeRequest.state == "expired")
                | ((ComputeRequest.state == "pending") & (ComputeRequest.expires_at <= now))
            )
        elif state == "pending":
            stmt = stmt.where(
                ComputeRequest.state == "pending",
                (ComputeRequest.expires_at.is_(None)) | (ComputeRequest.expires_at > now),
            )
        elif state is not None:
            stmt = stmt.where(ComputeRequest.state == state)
        if before_id is not None:
            stmt = stmt.where(ComputeRequest.id < before_id)
        rows = list(session.scalars(stmt.order_by(ComputeRequest.id.desc()).limit(limit).offset(offset)))
        related = _related(session, [row.id for row in rows])
        return [_public(None, row, now, related=related[row.id]) for row in rows]


@router.get("/{request_id}", response_model=RequestPublic)
def show_request(
    request_id: IdPath, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> RequestPublic:
    """One request with its decision trace, votes, comments and reservations."""
    from flopwise.store import read_session

    with read_session(db) as session:
        row = _get_request(session, principal, request_id)
        authorize(session, principal, "viewer", "project", row.project_id)
        return _public(session, row, clock())


def _vote(
    db: Any, principal: Principal, request_id: int, now: datetime, verdict: str, comment: str
) -> RequestPublic:
    from flopwise.store import Approval, release_reservations, write_session

    expire_due(db, now)
    with write_session(db) as session:
        row = _get_request(session, principal, request_id, lock=True)
        role = authorize(session, principal, "viewer", "project", row.project_id)
        state = _approval_state(session, row)
        try:
            if verdict == "approve":
                new = govern.approve(state, str(principal.user_id), role, now, comment)
            else:
                new = govern.deny(state, str(principal.user_id), role, now, comment)
        except InputError as err:
            raise _transition_error(err) from None
        session.add(
            Approval(
                request_id=row.id,
                approver_id=principal.user_id,
                verdict=verdict,
                comment=comment or None,
                at=now,
            )
        )
        if new.status != row.state:
            row.state = new.status
            row.decided_at = now
            if new.status == "denied":
                release_reservations(session, request_id=row.id)
        row.updated_at = now
        session.flush()
        audit(
            session,
            principal,
            f"request.{verdict}",
            {"request_id": row.id, "comment": comment, "state": row.state, "approvals": new.approvals,
             "approvals_required": new.approvals_required},
            now,
            row.org_id,
        )  # fmt: skip
        return _public(session, row, now)


@router.post("/{request_id}/approve", response_model=RequestPublic)
def approve_request(
    request_id: IdPath, principal: CurrentPrincipal, db: DbDep, clock: ClockDep, body: VerdictIn | None = None
) -> RequestPublic:
    """Approve a pending request; it is approved at the n-th distinct approver of the required role.

    Nobody approves their own request (403), an approver votes once (403), and a request that is no longer
    pending or has expired answers 409.
    """
    return _vote(db, principal, request_id, clock(), "approve", body.comment if body else "")


@router.post("/{request_id}/deny", response_model=RequestPublic)
def deny_request(
    request_id: IdPath, body: DenyIn, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> RequestPublic:
    """Deny a pending request (a comment saying why is required); its reservations are released."""
    return _vote(db, principal, request_id, clock(), "deny", body.comment)


@router.post("/{request_id}/cancel", response_model=RequestPublic)
def cancel_request(
    request_id: IdPath, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> RequestPublic:
    """Cancel a pending or approved request (the requester or an admin); its reservations are released."""
    from flopwise.store import release_reservations, write_session

    now = clock()
    expire_due(db, now)
    with write_session(db) as session:
        row = _get_request(session, principal, request_id, lock=True)
        role = authorize(session, principal, "viewer", "project", row.project_id)
        try:
            govern.cancel(_approval_state(session, row), str(principal.user_id), role, now)
        except InputError as err:
            raise _transition_error(err) from None
        row.state = "cancelled"
        row.decided_at = now
        row.updated_at = now
        released = release_reservations(session, request_id=row.id)
        session.flush()
        audit(
            session,
            principal,
            "request.cancel",
            {"request_id": row.id, "released": released},
            now,
            row.org_id,
        )
        return _public(session, row, now)


@router.post("/{request_id}/comments", response_model=CommentPublic, status_code=201)
def comment_request(
    request_id: IdPath, body: CommentIn, principal: CurrentPrincipal, db: DbDep, clock: ClockDep
) -> CommentPublic:
    """Add a comment to a request (anyone who can see it, in any state)."""
    from flopwise.store import Comment, write_session

    now = clock()
    if not body.body.strip():
        raise ApiError(422, "a comment needs some text", [{"field": "body", "message": "give some text"}])
    with write_session(db) as session:
        row = _get_request(session, principal, request_id)
        authorize(session, principal, "viewer", "project", row.project_id)
        comment = Comment(request_id=row.id, author_id=principal.user_id, body=body.body, at=now)
        session.add(comment)
        session.flush()
        audit(session, principal, "request.comment", {"request_id": row.id, "comment_id": comment.id, "body": body.body},
              now, row.org_id)  # fmt: skip
        return CommentPublic(id=comment.id, author_id=comment.author_id, body=comment.body, at=comment.at)


__all__ = ["RequestCreate", "RequestPublic", "expire_due", "expire_in", "new_request", "router"]
