"""One decision path for compute requests and scheduler admission: ``decide``.

Order of evaluation (each step's result is in the trace, whatever the outcome):

1. regulatory thresholds -> flags (they become ``threshold_flags`` for the policies);
2. policies -> allow / require_approval (n approvers of a role) / deny, with every rule's reading;
3. every budget that covers the request (scope and window) -> remaining before and after;
   a hard budget that would be overrun denies (fail closed), a soft one warns (fail open);
4. every quota that applies -> devices in use before and after; an exceeded quota denies;
5. the acceptable-use policy: not accepted -> deny.

The outcome is deny if any step denies, else the policy's outcome. A request that is not denied comes
with one reservation per covering budget, in that budget's unit; the store holds them while the request
is pending or approved and drops them when it is denied, cancelled or expires, or replaces them with
metered usage. The admission endpoint passes :func:`flopwise.govern.facts.admission_facts` (the worst
case of device count x maximum duration x price) through this same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from flopwise.catalog.types import Device
from flopwise.govern.budget import (
    Budget,
    BudgetCheck,
    BudgetUsage,
    budget_covers,
    check_budget,
    request_amount,
    utc,
)
from flopwise.govern.facts import RequestFacts
from flopwise.govern.policy import Policy, PolicyEvaluation, evaluate_policies, policy_context
from flopwise.govern.quota import Quota, QuotaCheck, check_quota, quota_applies
from flopwise.govern.thresholds import Threshold, ThresholdFlag, flag_thresholds

__all__ = [
    "OUTCOMES",
    "BudgetState",
    "Decision",
    "DecisionTrace",
    "QuotaState",
    "Reservation",
    "decide",
]

OUTCOMES = ("allow", "require_approval", "deny")


@dataclass(frozen=True)
class BudgetState:
    """A budget and what is already drawn on it in its current window."""

    budget: Budget
    usage: BudgetUsage


@dataclass(frozen=True)
class QuotaState:
    """A quota and how many matching devices its scope holds now."""

    quota: Quota
    in_use: Decimal


@dataclass(frozen=True)
class Reservation:
    """An amount to hold against one budget, in the budget's unit."""

    budget_id: str
    unit: str
    amount: Decimal


@dataclass(frozen=True)
class DecisionTrace:
    """Everything that went into a decision."""

    policy: PolicyEvaluation
    budgets: tuple[BudgetCheck, ...]
    quotas: tuple[QuotaCheck, ...]
    thresholds: tuple[ThresholdFlag, ...]
    is_aup_accepted: bool
    decided_at: datetime


@dataclass(frozen=True)
class Decision:
    """The outcome, why, what must happen next (approvals) and what to reserve."""

    outcome: str  # allow | require_approval | deny
    reasons: tuple[str, ...]
    approvals_required: int
    approver_role: str
    warnings: tuple[str, ...]
    reservations: tuple[Reservation, ...]
    trace: DecisionTrace


def decide(
    facts: RequestFacts,
    policies: Sequence[Policy],
    budgets: Sequence[BudgetState],
    quotas: Sequence[QuotaState],
    thresholds: Sequence[Threshold],
    is_aup_accepted: bool,
    now: datetime,
    *,
    device: Device | None = None,
    die_area_mm2: float | None = None,
) -> Decision:
    """Decide *facts* against policies, budgets, quotas, thresholds and the acceptable-use policy at *now*.

    Budgets and quotas that do not cover the request are left out of the trace. ``device`` and
    ``die_area_mm2`` are passed to :func:`flopwise.govern.thresholds.flag_thresholds`.
    """
    now = utc(now)
    flags = tuple(flag_thresholds(facts, thresholds, device=device, die_area_mm2=die_area_mm2))
    evaluation = evaluate_policies(policies, policy_context(facts, [f.threshold_id for f in flags]))

    deny_reasons: list[str] = []
    warnings: list[str] = []
    if evaluation.outcome == "deny":
        deny_reasons.extend(f"policy: {r}" for r in evaluation.reasons)

    checks: list[BudgetCheck] = []
    reservations: list[Reservation] = []
    for state in budgets:
        if not budget_covers(state.budget, facts, now):
            continue
        amount = request_amount(facts, state.budget.unit)
        check = check_budget(state.budget, state.usage, amount, now)
        checks.append(check)
        if check.outcome == "deny":
            deny_reasons.append(check.message)
        elif check.outcome == "warn":
            warnings.append(check.message)
        for alert in check.alerts_crossed:
            warnings.append(f"budget {check.budget_id!r} crosses its {(alert * 100).normalize():f}% alert")
        reservations.append(Reservation(state.budget.id, state.budget.unit, amount))

    quota_checks: list[QuotaCheck] = []
    for qstate in quotas:
        if not quota_applies(qstate.quota, facts):
            continue
        qcheck = check_quota(qstate.quota, qstate.in_use, facts)
        quota_checks.append(qcheck)
        if qcheck.is_exceeded:
            deny_reasons.append(qcheck.message)

    if not is_aup_accepted:
        deny_reasons.append(
            "the requester has not accepted the current acceptable-use policy; accept it first"
        )

    warnings.extend(f"threshold: {f.message}" for f in flags)
    trace = DecisionTrace(evaluation, tuple(checks), tuple(quota_checks), flags, is_aup_accepted, now)
    if deny_reasons:
        return Decision("deny", tuple(deny_reasons), 0, "", tuple(warnings), (), trace)
    if evaluation.outcome == "require_approval":
        return Decision(
            "require_approval",
            evaluation.reasons,
            evaluation.approvals,
            evaluation.role,
            tuple(warnings),
            tuple(reservations),
            trace,
        )
    return Decision("allow", evaluation.reasons, 0, "", tuple(warnings), tuple(reservations), trace)
