"""Deciding and reserving: budgets and their usage, quotas and the devices held, policies, thresholds and
the acceptable-use policy through :func:`flopwise.govern.decide`, then the reservation under the budget locks;
the stored decision trace and the audit entry."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from flopwise import govern
from flopwise.catalog import Catalog
from flopwise.server.api.aup import aup_status
from flopwise.server.decisions.facts import EstimatedFacts, RequestScope, to_jsonable
from flopwise.store import (
    AdmissionJob,
    Budget,
    ComputeRequest,
    Policy,
    Project,
    Quota,
    lock_budgets,
    reserve_against_budgets,
    to_money,
)
from flopwise.store.session import PreparedStatement

__all__ = [
    "Decided",
    "DecisionContext",
    "decide",
    "read_context",
    "has_quotas",
    "reserve",
    "DecisionResult",
    "audit",
    "budget_usage",
    "current_policies",
    "decide_and_reserve",
    "trace_json",
    "window_for",
]


@dataclass(frozen=True)
class DecisionResult:
    """What was decided and what was reserved (store reservation ids), with the budgets' store ids."""

    decision: govern.Decision
    outcome: str
    reasons: tuple[str, ...]
    reservation_ids: tuple[int, ...]
    budget_ids: tuple[int, ...]
    #: the audit chain head taken under the budget locks (``reserve(audit_org_id=...)``): pass it to :func:`audit`
    audit_head: tuple[int, str] | None = None


def trace_json(
    decision: govern.Decision, facts: govern.RequestFacts, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The stored decision trace: outcome, reasons, approvals needed, warnings, the facts and govern's trace."""
    return to_jsonable(
        {
            "outcome": decision.outcome,
            "reasons": decision.reasons,
            "approvals_required": decision.approvals_required,
            "approver_role": decision.approver_role,
            "warnings": decision.warnings,
            "reservations": decision.reservations,
            "facts": facts,
            "trace": decision.trace,
            **extra,
        }
    )


@functools.cache
def _thresholds() -> tuple[govern.Threshold, ...]:
    return govern.load_thresholds()


@functools.lru_cache(maxsize=256)
def _parsed_policy(policy_id: int, yaml_text: str) -> govern.Policy:
    return govern.parse_policy(yaml_text)


def _scope_names(scope: RequestScope | None) -> dict[str, str]:
    # govern compares a budget's or quota's scope_id with the request's org / team / project names (the ones
    # policies read too); the store has already picked the rows covering the project, so each gets its name
    if scope is None:
        return {"org": "-", "team": "-", "project": "-"}
    return {"org": scope.org_name, "team": scope.team_name, "project": scope.project_name}


def _govern_budget(budget: Budget, scope: RequestScope | None = None) -> govern.Budget:
    custom = budget.period == "custom"
    alerts = tuple(Decimal(str(a)) for a in budget.alert_thresholds or ())
    return govern.Budget(
        id=str(budget.id),
        scope_kind=budget.scope_kind,
        scope_id=_scope_names(scope)[budget.scope_kind],
        period=budget.period,
        unit=budget.unit,
        amount=budget.amount,
        is_hard=budget.is_hard,
        alerts_frac=alerts or govern.budget.DEFAULT_ALERTS_FRAC,
        window_start=budget.window_start if custom else None,
        window_end=budget.window_end if custom else None,
        name=budget.name,
    )


def window_for(budget: Budget, now: datetime) -> tuple[datetime, datetime] | None:
    """The window of *budget* containing *now*, or None when *now* is outside its outer limits."""
    if budget.window_start is not None and now < budget.window_start:
        return None
    if budget.window_end is not None and now >= budget.window_end:
        return None
    if budget.period == "custom":
        return budget.window_start, budget.window_end  # type: ignore[return-value]
    return govern.budget_window(_govern_budget(budget), now)


def budget_usage(
    session: Session, budget_id: int, window: tuple[datetime, datetime], budget: Budget | None = None
) -> govern.BudgetUsage:
    """Reserved, committed and settled amounts of a budget whose ``counted_at`` falls in *window*; metered usage in
    the budget's scope that no reservation holds (``meter.burn.metered_unreserved``) counts as settled, so budgets
    burn by actuals too. Credits in the ledger lower the settled amount down to zero at most.

    One statement when the usage rollups can answer (``store.budget_usage_sums``: the reservations by state, the
    rollups' freshness and their sum), the ledger read after it when they cannot."""
    from flopwise.meter.burn import metered_unreserved
    from flopwise.store.rollups import budget_usage_sums

    if budget is None:
        budget = session.get(Budget, budget_id)
    by_state, metered = budget_usage_sums(session, budget, window)
    if metered is None:  # the rollups cannot answer: the ledger's rows in the window
        metered = metered_unreserved(session, budget, window)
    elif not isinstance(metered, Decimal):
        metered = to_money(Decimal(repr(float(metered))))
    else:
        metered = to_money(metered)
    # credits (negative ledger amounts) lower what was settled, never below zero: a budget cannot be "un-used"
    settled = max(by_state.get("settled", Decimal(0)) + metered, Decimal(0))
    return govern.BudgetUsage(
        reserved=by_state.get("reserved", Decimal(0)),
        committed=by_state.get("committed", Decimal(0)),
        settled=settled,
    )


def _quota_states(
    session: Session,
    catalog: Catalog,
    scope: RequestScope,
    now: datetime,
    exclude: tuple[int | None, int | None],
    *,
    lock: bool = True,
) -> list[govern.QuotaState]:
    stmt = select(Quota).where(
        ((Quota.scope_kind == "org") & (Quota.scope_id == scope.org_id))
        | ((Quota.scope_kind == "team") & (Quota.scope_id == scope.team_id))
        | ((Quota.scope_kind == "project") & (Quota.scope_id == scope.project_id))
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    quotas = list(session.scalars(stmt.order_by(Quota.id)))
    if not quotas:
        return []
    held = _devices_held(session, catalog, scope, now, exclude)
    out = []
    for quota in quotas:
        gq = govern.Quota(
            id=str(quota.id),
            scope_kind=quota.scope_kind,
            scope_id=_scope_names(scope)[quota.scope_kind],
            max_devices=quota.max_concurrent_devices,
            device_type=quota.device if quota.match_on == "device_type" else "",
            device_class=quota.device if quota.match_on == "device_class" else "",
        )
        in_use = Decimal(0)
        for (kind_ids, device_type, device_class), count in held.items():
            if not _in_scope(quota.scope_kind, kind_ids, scope):
                continue
            target = device_type if quota.match_on == "device_type" else device_class
            if fnmatch.fnmatchcase(target, quota.device):
                in_use += count
        out.append(govern.QuotaState(gq, in_use))
    return out


def _in_scope(kind: str, ids: tuple[int, int], scope: RequestScope) -> bool:
    team_id, project_id = ids
    if kind == "org":
        return True
    if kind == "team":
        return team_id == scope.team_id
    return project_id == scope.project_id


def _devices_held(
    session: Session,
    catalog: Catalog,
    scope: RequestScope,
    now: datetime,
    exclude: tuple[int | None, int | None],
) -> dict[tuple[tuple[int, int], str, str], Decimal]:
    """Devices held now in the organization, by (team, project), device type and class.

    A pending or approved request holds its devices from its creation for its duration (until its
    ``holds_until``; without a duration, while it is pending or approved); an admitted or committed admission job
    holds them until it is released or settled. Summed in the database by (team, project, device type), read by
    ``(org_id, state, holds_until)``: the requests whose duration is over are not read at all.
    """
    held: dict[tuple[tuple[int, int], str, str], Decimal] = {}

    def add(team_id: int, project_id: int, device_type: str | None, count: int) -> None:
        if not device_type:
            return
        device = catalog.devices.get(device_type)
        key = ((team_id, project_id), device_type, device.kind if device else "")
        held[key] = held.get(key, Decimal(0)) + Decimal(count)

    params = {"org_id": scope.org_id, "now": now, "exclude": exclude[0] or 0}
    for team_id, project_id, device_type, count in _REQUESTS_HOLDING.execute(session, params):
        add(team_id, project_id, device_type, count)
    params = {"org_id": scope.org_id, "exclude": exclude[1] or 0}
    for team_id, project_id, device_type, count in _JOBS_HOLDING.execute(session, params):
        add(team_id, project_id, device_type, count)
    return held


def _holding_statements() -> tuple[Any, Any]:
    """(pending and approved requests holding devices at ``:now``, admitted and committed admission jobs), each
    summed by team, project and device type in the organization ``:org_id``, leaving out the request or job
    ``:exclude`` (0: none). The requests' read is two branches, each an index range on ``(org_id, state,
    holds_until)``: one condition with an OR would read every pending or approved request of the organization."""
    from sqlalchemy import bindparam

    org_id, exclude = bindparam("org_id"), bindparam("exclude")
    branches = [
        select(ComputeRequest.project_id, ComputeRequest.device_type, ComputeRequest.device_count).where(
            ComputeRequest.org_id == org_id,
            ComputeRequest.state.in_(("pending", "approved")),
            held_now,
            ComputeRequest.id != exclude,
        )
        for held_now in (ComputeRequest.holds_until > bindparam("now"), ComputeRequest.holds_until.is_(None))
    ]
    holding = union_all(*branches).subquery("holding")
    requests = (
        select(Project.team_id, Project.id, holding.c.device_type, func.sum(holding.c.device_count))
        .join(Project, Project.id == holding.c.project_id)
        .group_by(Project.team_id, Project.id, holding.c.device_type)
    )
    jobs = (
        select(Project.team_id, Project.id, AdmissionJob.device_type, func.sum(AdmissionJob.device_count))
        .join(Project, Project.id == AdmissionJob.project_id)
        .where(
            AdmissionJob.org_id == org_id,
            AdmissionJob.state.in_(("admitted", "committed")),
            AdmissionJob.id != exclude,
        )
        .group_by(Project.team_id, Project.id, AdmissionJob.device_type)
    )
    return PreparedStatement(requests), PreparedStatement(jobs)


_REQUESTS_HOLDING, _JOBS_HOLDING = _holding_statements()


def current_policies(session: Session, org_id: int) -> list[Policy]:
    """The latest version of each named policy of the organization, enabled ones only, by name."""
    latest = (
        select(Policy.name, func.max(Policy.version).label("version"))
        .where(Policy.org_id == org_id)
        .group_by(Policy.name)
        .subquery()
    )
    rows = session.scalars(
        select(Policy)
        .join(latest, (Policy.name == latest.c.name) & (Policy.version == latest.c.version))
        .where(Policy.org_id == org_id)
        .order_by(Policy.name)
    )
    return [p for p in rows if p.is_enabled]


@dataclass(frozen=True)
class DecisionContext:
    """What a decision needs besides budgets and policies, read in one statement (:func:`read_context`)."""

    has_quotas: bool
    aup_accepted: bool
    aup_version: int | None


def _context_columns(org: Any, team: Any, project: Any) -> tuple[Any, Any, Any]:
    """(quotas cover the scope, the newest acceptable-use policy version, the requester's acceptance of it) as
    columns over the given organization, team and project ids (bind parameters or columns)."""
    from sqlalchemy import bindparam, exists

    from flopwise.store import AupAcceptance, AupVersion

    quota = exists().where(
        ((Quota.scope_kind == "org") & (Quota.scope_id == org))
        | ((Quota.scope_kind == "team") & (Quota.scope_id == team))
        | ((Quota.scope_kind == "project") & (Quota.scope_id == project))
    )
    # correlated to the organization of the outer statement explicitly: nested in the EXISTS below, SQLAlchemy's
    # auto-correlation looks only one level up, and the subquery took `organizations` into its own FROM (the
    # newest version of any organization, so another organization's later version undid every acceptance)
    newest = (
        select(AupVersion.id)
        .where(AupVersion.org_id == org)
        .order_by(AupVersion.version.desc())
        .limit(1)
        .correlate_except(AupVersion)
    ).scalar_subquery()
    version = (
        select(AupVersion.version)
        .where(AupVersion.org_id == org)
        .order_by(AupVersion.version.desc())
        .limit(1)
    ).scalar_subquery()
    accepted = exists().where(
        AupAcceptance.aup_version_id == newest, AupAcceptance.user_id == bindparam("user_id")
    )
    return quota, version, accepted


def _context_query() -> Any:
    from sqlalchemy import bindparam

    quota, version, accepted = _context_columns(bindparam("org_id"), bindparam("team_id"), bindparam("project_id"))
    return select(quota.label("has_quotas"), version.label("aup_version"), accepted.label("aup_accepted"))


def _scope_context_query() -> Any:
    """:data:`flopwise.server.decisions.facts._SCOPE_QUERY` and :func:`_context_query` in one statement: the
    project, its team and organization, and (for them) whether quotas cover the project and the newest
    acceptable-use policy and the requester's acceptance of it."""
    from sqlalchemy import bindparam

    from flopwise.store import Organization, Team

    quota, version, accepted = _context_columns(Organization.id, Team.id, Project.id)
    return (
        select(
            Project.id, Project.name, Team.id, Team.name, Organization.id, Organization.name,
            quota.label("has_quotas"), version.label("aup_version"), accepted.label("aup_accepted"),
        )
        .join(Team, Team.id == Project.team_id)
        .join(Organization, Organization.id == Team.org_id)
        .where(Project.id == bindparam("project_id"))
    )  # fmt: skip


def scope_and_context(
    session: Session, principal: Any, project_id: int, min_role: str
) -> tuple[RequestScope, DecisionContext]:
    """:func:`~flopwise.server.decisions.facts.authorized_scope` and :func:`read_context` in one statement (the
    same answers and errors: 404 for a project that does not exist or is in another organization, 403 naming
    the role needed)."""
    from flopwise.server.decisions.facts import scope_of_row

    row = _SCOPE_CONTEXT.first(session, {"project_id": project_id, "user_id": principal.user_id})
    scope = scope_of_row(session, principal, project_id, min_role, row)
    version = None if row.aup_version is None else int(row.aup_version)
    return scope, DecisionContext(bool(row.has_quotas), version is None or bool(row.aup_accepted), version)


def _budgets_query() -> Any:
    from sqlalchemy import bindparam

    return (
        select(Budget.__table__)  # Core rows (the columns as attributes): no ORM loading on the hot path
        .where(
            ((Budget.scope_kind == "project") & (Budget.scope_id == bindparam("project_id")))
            | ((Budget.scope_kind == "team") & (Budget.scope_id == bindparam("team_id")))
            | ((Budget.scope_kind == "org") & (Budget.scope_id == bindparam("org_id")))
        )
        .order_by(Budget.id)
    )


def _policies_query() -> Any:
    from sqlalchemy import bindparam

    latest = (
        select(Policy.name, func.max(Policy.version).label("version"))
        .where(Policy.org_id == bindparam("org_id"))
        .group_by(Policy.name)
        .subquery()
    )
    return (
        select(Policy.id, Policy.yaml_text)
        .join(latest, (Policy.name == latest.c.name) & (Policy.version == latest.c.version))
        .where(Policy.org_id == bindparam("org_id"), Policy.is_enabled.is_(True))
        .order_by(Policy.name)
    )


_CONTEXT_QUERY = _context_query()
_SCOPE_CONTEXT_QUERY = _scope_context_query()
_BUDGETS_QUERY = _budgets_query()
_POLICIES_QUERY = _policies_query()
#: the hot path's reads as prepared statements on the driver's connection (PostgreSQL; SQLAlchemy elsewhere)
_SCOPE_CONTEXT = PreparedStatement(_SCOPE_CONTEXT_QUERY)
_BUDGETS = PreparedStatement(_BUDGETS_QUERY)
_POLICIES = PreparedStatement(_POLICIES_QUERY)


def _scope_params(scope: RequestScope) -> dict[str, int]:
    return {"org_id": scope.org_id, "team_id": scope.team_id, "project_id": scope.project_id}


def read_context(session: Session, scope: RequestScope) -> DecisionContext:
    """Whether quotas cover the project, and the acceptable-use policy's newest version and whether the
    requester accepted it ((True, None) when none is published): one statement."""
    row = (
        session.connection().execute(_CONTEXT_QUERY, {**_scope_params(scope), "user_id": scope.user_id}).one()
    )
    version = None if row.aup_version is None else int(row.aup_version)
    return DecisionContext(bool(row.has_quotas), version is None or bool(row.aup_accepted), version)


@dataclass(frozen=True)
class Decided:
    """A decision and what it needs reserved, before anything is reserved (see :func:`decide`)."""

    decision: govern.Decision
    outcome: str
    reasons: tuple[str, ...]
    windows: dict[int, tuple[datetime, datetime]]


def has_quotas(session: Session, scope: RequestScope) -> bool:
    """Whether any quota covers the project (then the decision is taken under the quota locks)."""
    return (
        session.scalar(
            select(Quota.id)
            .where(
                ((Quota.scope_kind == "org") & (Quota.scope_id == scope.org_id))
                | ((Quota.scope_kind == "team") & (Quota.scope_id == scope.team_id))
                | ((Quota.scope_kind == "project") & (Quota.scope_id == scope.project_id))
            )
            .limit(1)
        )
        is not None
    )


def decide(
    session: Session,
    catalog: Catalog,
    estimated: EstimatedFacts,
    scope: RequestScope,
    now: datetime,
    *,
    lock: bool,
    exclude: tuple[int | None, int | None] = (None, None),
    context: DecisionContext | None = None,
) -> Decided:
    """Decide *estimated*: budgets' usage in their current windows, quotas and the devices held, the acceptable
    use policy, the organization's policies and the regulatory thresholds, through :func:`flopwise.govern.decide`.

    ``lock=False`` reads without locks (a read transaction, before the write one, for a project no quota
    covers: :func:`has_quotas`): :func:`reserve` re-checks
    every hard budget under its row lock, so a decision taken on usage that moved meanwhile can only turn into a
    deny, never an overspend. ``lock=True`` (needed when quotas cover the project: the devices held must not
    move before the job is counted) locks the budgets, then the quotas, in the caller's write transaction.
    """
    facts = estimated.facts
    covering: list[Any] = _BUDGETS.execute(session, _scope_params(scope))
    if lock and covering:
        covering = lock_budgets(session, [b.id for b in covering])
    states: list[govern.BudgetState] = []
    windows: dict[int, tuple[datetime, datetime]] = {}
    for budget in covering:
        window = window_for(budget, now)
        if window is None:
            continue
        windows[budget.id] = window
        states.append(
            govern.BudgetState(
                _govern_budget(budget, scope), budget_usage(session, budget.id, window, budget)
            )
        )
    # without the locks the caller has checked has_quotas() first: no quota covers the project
    quotas = _quota_states(session, catalog, scope, now, exclude, lock=lock) if lock else []
    if context is None or lock:  # under the locks, read again in the write transaction
        is_accepted, aup_version = aup_status(session, scope.org_id, scope.user_id)
    else:
        is_accepted, aup_version = context.aup_accepted, context.aup_version
    policies = [_parsed_policy(pid, text) for pid, text in _POLICIES.execute(session, {"org_id": scope.org_id})]
    decision = govern.decide(
        facts, policies, states, quotas, _thresholds(), is_accepted, now, device=estimated.device
    )
    reasons = decision.reasons
    if aup_version is not None and not is_accepted:
        reasons = tuple(
            r.replace("the current acceptable-use policy", f"acceptable-use policy version {aup_version}")
            for r in reasons
        )
    return Decided(decision, decision.outcome, reasons, windows)


def reserve(
    session: Session,
    decided: Decided,
    now: datetime,
    *,
    request_id: int | None = None,
    admission_job_id: int | None = None,
    unit_price: Decimal | None = None,
    price_retrieved: str | None = None,
    new_holder: bool = False,
    audit_org_id: int | None = None,
) -> DecisionResult:
    """Reserve what *decided* needs, in the caller's write transaction: the budget rows are locked (ascending id)
    and each hard budget's spent sum is read again under the lock, so concurrent callers reserve one after the
    other and a hard budget is never overspent. A reservation the store refuses turns the outcome into deny.
    *unit_price* and *price_retrieved* (from :class:`EstimatedFacts`) are recorded on the reservations.

    ``new_holder``: the request or job was created in this transaction (it holds nothing yet: one read less
    per budget). ``audit_org_id``: the caller appends an audit entry to this organization's chain right after
    (it must, in this transaction): on PostgreSQL the chain head is taken with the last spent read (one round
    trip less under the budget locks) and returned as ``audit_head`` for :func:`audit`."""
    decision, outcome, reasons = decided.decision, decided.outcome, decided.reasons
    reservation_ids: tuple[int, ...] = ()
    audit_head: tuple[int, str] | None = None
    if outcome != "deny" and decision.reservations:
        result = reserve_against_budgets(
            session,
            [int(r.budget_id) for r in decision.reservations],
            [r.amount for r in decision.reservations],
            request_id=request_id,
            admission_job_id=admission_job_id,
            counted_at=now,
            window_for=lambda b: decided.windows.get(b.id),
            unit_price=unit_price,
            price_retrieved=price_retrieved,
            new_holder=new_holder,
            audit_chain=audit_org_id,
        )
        audit_head = result.audit_head
        if not result.ok:
            outcome = "deny"
            reasons = tuple(
                f"budget {c.budget_id} is hard: {c.amount} {c.unit} needed, {c.limit - c.spent_before} remains"
                for c in result.refused
            )
        else:
            reservation_ids = result.reservation_ids
    return DecisionResult(decision, outcome, reasons, reservation_ids, tuple(decided.windows), audit_head)


def decide_and_reserve(
    session: Session,
    catalog: Catalog,
    estimated: EstimatedFacts,
    scope: RequestScope,
    now: datetime,
    *,
    request_id: int | None = None,
    admission_job_id: int | None = None,
) -> DecisionResult:
    """:func:`decide` under the locks and :func:`reserve`, in the caller's one write transaction."""
    decided = decide(
        session, catalog, estimated, scope, now, lock=True, exclude=(request_id, admission_job_id)
    )
    return reserve(
        session,
        decided,
        now,
        request_id=request_id,
        admission_job_id=admission_job_id,
        unit_price=estimated.usd_per_device_h,
        price_retrieved=estimated.price_retrieved,
    )


def audit(
    session: Session,
    principal: Any,
    action: str,
    payload: Mapping[str, Any],
    now: datetime,
    org_id: int | None,
    head: tuple[int, str] | None = None,
) -> None:
    """Append one audit entry (actor ``user:<id>``, or ``system`` when *principal* is None); *head*: the chain
    head :func:`reserve` took (``DecisionResult.audit_head``)."""
    from flopwise.server.api.audit import record_audit

    actor = "system" if principal is None else f"user:{principal.user_id}"
    record_audit(
        session, actor=actor, action=action, payload=to_jsonable(payload), at=now, org_id=org_id, head=head
    )
