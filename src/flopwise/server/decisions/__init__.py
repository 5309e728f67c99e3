"""The one decision path of the server: compute requests and scheduler admission both go through here.

1. **Facts.** :func:`request_facts` turns a workload into :class:`flopwise.govern.RequestFacts`: from a chosen
   plan (duration, optionally FLOPs / cost / energy) or from parameters the server estimates itself with
   ``flopwise.api.estimate_training`` / ``estimate_serving`` and the catalog; :func:`admission_request_facts`
   takes the worst case (device count x maximum duration x price) through ``govern.admission_facts``.
2. **Decision.** :func:`decide` reads the budgets covering the project and their usage in the current window,
   the quotas and the devices they hold, the thresholds, the acceptable-use policy and its acceptance, and the
   enabled policies, and calls :func:`flopwise.govern.decide`. Without quotas on the project it runs in a read
   transaction before the write one, taking no lock; with quotas it runs in the write transaction under the
   budget and quota locks (the devices held must not move).
3. **Reservation.** :func:`reserve`, in the caller's write transaction, locks the covering budget rows and
   reserves the decision's amounts with ``store.reserve_against_budgets``, which re-reads each hard budget's
   spent sum under its lock (hard budgets fail closed, soft ones fail open): concurrent callers reserve one
   after the other and a hard budget is never overspent, while the locks are held only from the reservation
   to the commit.

**Lock order** of a write (the same everywhere, so no two writers wait on each other in a cycle): the request
or admission job row, the budget rows in ascending id, the quota rows, the organization's audit chain head
last. Expiring stale requests is its own transaction before (it writes audit entries without budget locks).
The caller stores the request (or admission job) with :func:`trace_json`, appends the audit entry, commits and
only then builds its response.

**Cost of the hot path** (pinned by ``tests/server/test_hot_path.py``): the caller's token is resolved in one
statement and then served from a per-process cache (:class:`flopwise.server.auth.PrincipalCache`); the read
transaction (:func:`presume_decision`, shared by request creation and admission) takes the project, its team
and organization, the caller's role, the quotas and the acceptable-use policy in one statement
(:func:`scope_and_context`), then the budgets (Core rows), each budget's usage in one statement (reservations by
state, the usage rollups' freshness and their sum: ``store.budget_usage_sums``) and the policies; the write
transaction inserts the request or job with its decision already in it, locks the budgets, re-reads what they
have spent (on PostgreSQL taking the organization's audit chain head in the same statement, under the budget
locks), inserts the reservations in one statement and appends the audit entry in one more. Both
transactions share one pooled connection (``store.pinned_session``), and on PostgreSQL (``READ COMMITTED``) the
read transaction continues as the write one (no ``ROLLBACK``/``BEGIN`` between them); the pool pings only
connections idle for a while. Statements are built once at import and executed with bound parameters.
"""

from __future__ import annotations

from flopwise.server.decisions.deciding import (
    Decided,
    DecisionContext,
    DecisionResult,
    audit,
    budget_usage,
    current_policies,
    decide,
    decide_and_reserve,
    has_quotas,
    read_context,
    reserve,
    scope_and_context,
    trace_json,
    window_for,
)
from flopwise.server.decisions.facts import (
    DEFAULT_REGION,
    EstimatedFacts,
    RequestScope,
    admission_request_facts,
    authorized_scope,
    load_scope,
    request_facts,
    to_jsonable,
)
from flopwise.server.decisions.inputs import (
    ENGINE_PATTERN,
    MAX_AMOUNT,
    MAX_ID,
    AdmissionIn,
    BodyModel,
    EstimateParams,
    IdPath,
    PlanIn,
    WorkloadIn,
    exact_places,
)
from flopwise.server.decisions.writepath import (
    Presumed,
    decision_columns,
    facts_amounts,
    model_response,
    presume_decision,
    store_final_decision,
)

__all__ = [
    "model_response",
    "Decided",
    "DecisionContext",
    "authorized_scope",
    "read_context",
    "EstimatedFacts",
    "decide",
    "exact_places",
    "has_quotas",
    "reserve",
    "AdmissionIn",
    "ENGINE_PATTERN",
    "BodyModel",
    "DEFAULT_REGION",
    "DecisionResult",
    "EstimateParams",
    "IdPath",
    "MAX_AMOUNT",
    "MAX_ID",
    "PlanIn",
    "RequestScope",
    "WorkloadIn",
    "admission_request_facts",
    "audit",
    "budget_usage",
    "current_policies",
    "decide_and_reserve",
    "load_scope",
    "request_facts",
    "to_jsonable",
    "trace_json",
    "window_for",
    "Presumed",
    "decision_columns",
    "facts_amounts",
    "presume_decision",
    "scope_and_context",
    "store_final_decision",
]
