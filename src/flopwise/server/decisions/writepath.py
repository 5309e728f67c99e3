"""The steps request creation (``POST /requests``) and admission (``POST /admission/decide``) share around their
write transaction: the read transaction that decides without locks, the columns a decision sets on the stored
request or job, and the update when the reservation changed the decision."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from flopwise import govern
from flopwise.catalog import Catalog
from flopwise.server.decisions.deciding import Decided, decide, scope_and_context, trace_json
from flopwise.server.decisions.facts import EstimatedFacts, RequestScope

__all__ = ["Presumed", "decision_columns", "model_response", "presume_decision", "store_final_decision"]


@dataclass(frozen=True)
class Presumed:
    """What the read transaction found: the caller's scope, the facts, and the decision taken without locks
    (None when quotas cover the project: then it is taken in the write transaction, under the locks)."""

    scope: RequestScope
    estimated: EstimatedFacts
    decided: Decided | None


def presume_decision(
    session: Session,
    principal: Any,
    catalog: Catalog,
    project_id: int,
    now: datetime,
    facts_of: Callable[[RequestScope], EstimatedFacts],
) -> Presumed:
    """The read transaction on *session* before the write one: the project, its team and organization, the
    caller's role (``member`` needed: 404/403 otherwise), the quotas and the acceptable-use policy in one
    statement; ``facts_of(scope)`` (the estimate, no I/O); then, when no quota covers the project, the decision
    on the budgets' usage and the policies, without locks (``reserve()`` re-checks hard budgets under theirs).
    The caller's write transaction follows at once (on PostgreSQL it continues this one:
    ``store.read_transaction(then_write=True)``)."""
    from flopwise.store import read_transaction

    with read_transaction(session, then_write=True):
        scope, context = scope_and_context(session, principal, project_id, "member")
        estimated = facts_of(scope)
        decided = (
            None
            if context.has_quotas
            else decide(session, catalog, estimated, scope, now, lock=False, context=context)
        )
    return Presumed(scope, estimated, decided)


def decision_columns(
    decision: govern.Decision,
    facts: govern.RequestFacts,
    outcome: str,
    reasons: tuple[str, ...],
    now: datetime,
    states: Mapping[str, str],
    trace_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns a decision sets on a new request or job: its state (``states[outcome]``), the stored trace
    (with the outcome, the reasons, the policy's own outcome and *trace_extra*) and ``updated_at``."""
    extra = {"outcome": outcome, "reasons": reasons, "policy_outcome": decision.outcome, **(trace_extra or {})}
    return {"state": states[outcome], "decision_trace": trace_json(decision, facts, extra), "updated_at": now}


def facts_amounts(facts: govern.RequestFacts, prefix: str) -> dict[str, Any]:
    """The worst-case amounts of *facts* as money columns named ``<prefix>cost_usd``, ``<prefix>device_hours``,
    ``<prefix>kwh`` and ``<prefix>co2e_kg`` (a request's ``estimated_``, an admission's ``worst_case_``); floats
    go through their shortest repr, so a value is stored as the estimate printed it."""
    from decimal import Decimal

    from flopwise.store import to_money

    return {
        f"{prefix}cost_usd": to_money(facts.cost_usd, "cost_usd"),
        f"{prefix}device_hours": to_money(Decimal(repr(facts.device_hours)), "device_hours"),
        f"{prefix}kwh": to_money(Decimal(repr(facts.energy_kwh)), "energy_kwh"),
        f"{prefix}co2e_kg": to_money(Decimal(repr(facts.co2e_kg)), "co2e_kg"),
    }


def store_final_decision(session: Session, model: Any, row: Any, columns: Mapping[str, Any]) -> None:
    """In the write transaction: set *columns* on the stored *row* of *model* (one ``UPDATE`` by id) and on the
    object the response is built from."""
    session.execute(update(model).where(model.id == row.id).values(**columns))
    for column, value in columns.items():
        setattr(row, column, value)


def model_response(model: Any, status_code: int) -> Any:
    """*model* (a pydantic model the route declares as its ``response_model``) as the JSON response, serialized
    here, in the route's worker thread: FastAPI passes a ``Response`` through as is, so it neither validates the
    model it was given again nor hands the serialization to its thread pool (one thread hand-off less per
    request). The JSON is what FastAPI would write for it (pydantic's serializer, in JSON mode, by alias)."""
    from fastapi import Response

    content = type(model).__pydantic_serializer__.to_json(model, by_alias=True)
    return Response(content=content, status_code=status_code, media_type="application/json")
