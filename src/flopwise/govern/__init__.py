"""Governance core: policies, budgets, quotas, regulatory thresholds, approvals and the audit chain.

Pure: frozen dataclasses in, frozen dataclasses out; no clock (``now`` is passed in), files, network,
database or environment. The one read is the packaged ``data/thresholds.csv`` in :func:`load_thresholds`.
The store and server call these functions; see docs/governance.md.

::

    from flopwise.govern import decide, parse_policy, load_thresholds, Budget, BudgetState, BudgetUsage
    decision = decide(facts, [parse_policy(yaml_text)], [BudgetState(budget, usage)], [], load_thresholds(),
                      True, now)
    decision.outcome, decision.reasons, decision.reservations, decision.trace
"""

from __future__ import annotations

from flopwise.govern.approvals import (
    APPROVAL_STATES,
    ApprovalState,
    Comment,
    Vote,
    add_comment,
    approve,
    cancel,
    deny,
    expire,
    open_approval,
)
from flopwise.govern.audit import (
    GENESIS_HASH,
    AuditEntry,
    VerifyResult,
    append_entry,
    canonical_json,
    entry_hash,
    verify_chain,
)
from flopwise.govern.budget import (
    BUDGET_UNITS,
    PERIODS,
    SCOPE_KINDS,
    Budget,
    BudgetCheck,
    BudgetForecast,
    BudgetUsage,
    budget_covers,
    budget_window,
    check_budget,
    crossed_alerts,
    forecast_budget,
    request_amount,
)
from flopwise.govern.decision import (
    OUTCOMES,
    BudgetState,
    Decision,
    DecisionTrace,
    QuotaState,
    Reservation,
    decide,
)
from flopwise.govern.facts import WORKLOAD_KINDS, RequestFacts, admission_facts
from flopwise.govern.policy import (
    EFFECTS,
    FIELDS,
    OPERATORS,
    ROLES,
    Policy,
    PolicyEvaluation,
    Rule,
    RuleTrace,
    evaluate_policies,
    parse_policy,
    policy_context,
    role_rank,
)
from flopwise.govern.quota import Quota, QuotaCheck, check_quota, quota_applies
from flopwise.govern.thresholds import (
    Threshold,
    ThresholdFlag,
    device_peak_flop_per_s,
    device_tpp,
    flag_thresholds,
    load_thresholds,
    parse_thresholds,
)

__all__ = [
    "APPROVAL_STATES",
    "BUDGET_UNITS",
    "EFFECTS",
    "FIELDS",
    "GENESIS_HASH",
    "OPERATORS",
    "OUTCOMES",
    "PERIODS",
    "ROLES",
    "SCOPE_KINDS",
    "WORKLOAD_KINDS",
    "ApprovalState",
    "AuditEntry",
    "Budget",
    "BudgetCheck",
    "BudgetForecast",
    "BudgetState",
    "BudgetUsage",
    "Comment",
    "Decision",
    "DecisionTrace",
    "Policy",
    "PolicyEvaluation",
    "Quota",
    "QuotaCheck",
    "QuotaState",
    "RequestFacts",
    "Reservation",
    "Rule",
    "RuleTrace",
    "Threshold",
    "ThresholdFlag",
    "VerifyResult",
    "Vote",
    "add_comment",
    "admission_facts",
    "append_entry",
    "approve",
    "budget_covers",
    "budget_window",
    "canonical_json",
    "cancel",
    "check_budget",
    "check_quota",
    "crossed_alerts",
    "decide",
    "deny",
    "device_peak_flop_per_s",
    "device_tpp",
    "entry_hash",
    "evaluate_policies",
    "expire",
    "flag_thresholds",
    "forecast_budget",
    "load_thresholds",
    "open_approval",
    "parse_policy",
    "parse_thresholds",
    "policy_context",
    "quota_applies",
    "request_amount",
    "role_rank",
    "verify_chain",
]
