"""Queries that must be transactional and safe under concurrency: budget reservations, idempotent inserts, audit.

Locking, in one place:

* **Budgets.** :func:`reserve_against_budgets`, :func:`settle_reservations` and every state change of a
  reservation (:func:`commit_reservations`, :func:`release_reservations`) lock the budget rows first —
  ``SELECT ... FOR UPDATE`` in id order on PostgreSQL (a consistent order, so two callers never deadlock), the
  database write lock via ``BEGIN IMMEDIATE`` on SQLite (see :mod:`flopwise.store.session` for why) — then
  read what is spent and insert. Under READ COMMITTED each statement after the lock sees what the previous
  lock holder committed, so N concurrent callers behave as if they ran one after another.
* **Idempotent inserts** use ``INSERT ... ON CONFLICT DO NOTHING`` on the unique key and then read the row, so
  two concurrent callers with the same key get the same row (the loser waits for the winner's commit).
* **Audit log.** :func:`append_audit` with ``chain_hash`` appends to the organization's own chain: it locks that
  chain's head row and takes ``seq`` from a sequence in one statement on PostgreSQL (``UPDATE audit_heads SET
  seq = nextval(...) RETURNING``; the SQLite write lock otherwise), chains to the head, then inserts the entry
  and moves the head in a second statement. Organizations never wait on each other;
  writers of one organization queue on its head row only. Without ``chain_hash`` (stores and tests from before
  revision 0006_governance) it appends to the single global chain under ``LOCK TABLE audit_log IN EXCLUSIVE MODE``.

**Lock order** (every write path takes locks in this order, so none waits on another in a cycle): compute
request or admission job row, then budget rows (ascending id), then quota rows, then the audit chain head last,
right before commit. A transaction that changes the reservations of several holders and audits each (the expiry
pass) locks all their budgets first, at once. A budget's day totals (``budget_totals``, moved by triggers when its
reservations change: :mod:`flopwise.store.totals`) are written only by the holder of that budget's lock, so they
add no wait of their own.

These functions flush but never commit: the caller commits (promptly — the locks last until then).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from flopwise.errors import InputError
from flopwise.store.models import (
    SPENDING_STATES,
    AdmissionJob,
    ApiToken,
    AuditHead,
    AuditLog,
    Budget,
    BudgetReservation,
    ComputeRequest,
    Project,
    Team,
)
from flopwise.store.session import PreparedStatement, _json_dumps, begin_write
from flopwise.store.totals import has_edges, spent_in_window_statement, window_params
from flopwise.store.types import to_money, utcnow

__all__ = [
    "GENESIS_HASH",
    "BudgetCheck",
    "CapCheck",
    "ReservationResult",
    "append_audit",
    "audit_chain_ids",
    "audit_entries",
    "audit_head",
    "budget_spent",
    "budgets_covering",
    "commit_reservations",
    "expire_pending_requests",
    "find_token",
    "hard_cap_check",
    "insert_admission_job",
    "insert_request_idempotent",
    "lock_budgets_held",
    "lock_budgets",
    "lock_budget_rows",
    "metered_unit_price",
    "release_reservations",
    "reserve_against_budgets",
    "settle_reservations",
    "settled_price_effect",
    "upsert_admission_job",
]

#: ``prev_hash`` of the first audit entry (64 hex zeros, the width of a SHA-256 hex digest)
GENESIS_HASH = "0" * 64
_ZERO = to_money(0)

#: ``cap_check(budget, spent, amount) -> bool``: may *amount* be added to a budget that has *spent* so far?
CapCheck = Callable[[Budget, Decimal, Decimal], bool]
#: ``window_for(budget) -> (start, end)``: the period whose reservations count (``None`` ends are open)
WindowFor = Callable[[Budget], "tuple[datetime | None, datetime | None] | None"]
#: ``entry_hash(prev_hash, seq, at, actor, action, payload) -> str``, e.g. ``flopwise.govern.audit.entry_hash``
EntryHash = Callable[[str, int, datetime, str, str, Any], str]
#: ``chain_hash(prev_hash, seq, org_id, at, actor, action, payload) -> str`` (``flopwise.govern.audit.chain_hash``)
ChainHash = Callable[[str, int, "int | None", datetime, str, str, Any], str]
#: the PostgreSQL sequence that numbers audit entries (migration 0006_governance)
AUDIT_SEQ = "audit_log_seq_numbers"


def hard_cap_check(budget: Budget, spent: Decimal, amount: Decimal) -> bool:
    """Hard budgets fail closed (spent + amount must stay within ``budget.amount``); soft budgets fail open."""
    return (not budget.is_hard) or spent + amount <= budget.amount


def _stored_window(budget: Budget) -> tuple[datetime | None, datetime | None]:
    return budget.window_start, budget.window_end


@dataclass(frozen=True)
class BudgetCheck:
    """What one budget looked like, under lock, when an amount was (or was not) reserved against it."""

    budget_id: int
    unit: str
    is_hard: bool
    limit: Decimal
    spent_before: Decimal
    amount: Decimal
    remaining_after: Decimal  # limit - spent_before - amount (negative when a soft budget is overrun)
    allowed: bool
    already_reserved: bool = False  # the holder had an active reservation on this budget already


@dataclass(frozen=True)
class ReservationResult:
    """``ok`` if every budget allowed the amount; then ``reservation_ids`` were written, else nothing was."""

    ok: bool
    checks: tuple[BudgetCheck, ...]
    reservation_ids: tuple[int, ...]
    #: (seq, prev hash) of the audit chain head taken with the last spent read (``audit_chain``), else None
    audit_head: tuple[int, str] | None = None

    @property
    def refused(self) -> tuple[BudgetCheck, ...]:
        return tuple(c for c in self.checks if not c.allowed)


def _holder(request_id: int | None, admission_job_id: int | None) -> tuple[str, int]:
    if (request_id is None) == (admission_job_id is None):
        raise InputError(
            "holder",
            {"request_id": request_id, "admission_job_id": admission_job_id},
            "give exactly one of request_id or admission_job_id",
        )
    return ("request_id", request_id) if request_id is not None else ("admission_job_id", admission_job_id)  # type: ignore[return-value]


def lock_budgets(session: Session, budget_ids: Sequence[int]) -> list[Budget]:
    """Lock and return the budgets with *budget_ids*, in id order; raise ``InputError`` for unknown ids.

    PostgreSQL: ``SELECT ... FOR UPDATE`` (ids ascending). SQLite: the transaction must hold the write lock
    (:func:`~flopwise.store.session.begin_write` is called; it starts one if the session has not begun).
    """
    ids = sorted(set(budget_ids))
    begin_write(session)
    stmt = _LOCK_BUDGETS[session.get_bind().dialect.name == "postgresql"]
    budgets = list(session.scalars(stmt, {"ids": ids}))
    missing = sorted(set(ids) - {b.id for b in budgets})
    if missing:
        raise InputError("budget_ids", missing, "give ids of existing budgets (`flopwise budget list`)")
    return budgets


def _lock_budgets_statements() -> tuple[Any, Any]:
    from sqlalchemy import bindparam

    # populate_existing: a row already in the identity map must show what is committed now, not before the lock
    stmt = (
        select(Budget)
        .where(Budget.id.in_(bindparam("ids", expanding=True)))
        .order_by(Budget.id)
        .execution_options(populate_existing=True)
    )
    return stmt, stmt.with_for_update()


#: (SQLite, PostgreSQL): the budgets with ``ids``, in id order; locked FOR UPDATE on PostgreSQL
_LOCK_BUDGETS = _lock_budgets_statements()


#: PostgreSQL: the lock of up to this many budgets at once is one prepared statement per count (``id IN ($1, ...)``)
_LOCK_LIST_MAX = 8


def _lock_budget_rows_statements() -> tuple[Any, dict[int, Any], Any]:
    """(SQLite's statement, PostgreSQL's prepared statements by number of ids, PostgreSQL's for more ids).

    On PostgreSQL the ids are one parameter each, not one array parameter: psycopg's prepared
    ``id = ANY($1::INTEGER[])`` was planned anew on every execution (``pg_prepared_statements``: 0 generic plans
    after 100 decisions; the generic plan, which cannot know how many ids the array holds, was estimated
    dearer than each custom one), 0.03-0.07 ms of PostgreSQL's CPU per lock (``bench/bench_pg_plans.py``);
    ``id IN ($1, $2)`` settles on its generic plan after five executions, as the hot path's other statements do
    (``tests/server/test_hot_path.py``)."""
    from sqlalchemy import ARRAY, Integer, any_, bindparam

    table = Budget.__table__
    stmt = select(table).where(table.c.id.in_(bindparam("ids", expanding=True))).order_by(table.c.id)
    by_count = {
        n: PreparedStatement(
            select(table)
            .where(table.c.id.in_([bindparam(f"id_{i}", type_=Integer()) for i in range(n)]))
            .order_by(table.c.id)
            .with_for_update()
        )
        for n in range(1, _LOCK_LIST_MAX + 1)
    }
    many = any_(bindparam("ids", type_=ARRAY(Integer())))
    beyond = select(table).where(table.c.id == many).order_by(table.c.id).with_for_update()
    return stmt, by_count, PreparedStatement(beyond)


_LOCK_BUDGET_ROWS = _lock_budget_rows_statements()


def lock_budget_rows(session: Session, budget_ids: Sequence[int]) -> list[Any]:
    """:func:`lock_budgets` as Core rows (each with the budget's columns as attributes, read as committed now),
    not ORM objects: for :func:`reserve_against_budgets`, which only reads them."""
    ids = sorted(set(budget_ids))
    begin_write(session)
    if session.get_bind().dialect.name == "postgresql":
        by_count = _LOCK_BUDGET_ROWS[1].get(len(ids))
        if by_count is not None:
            budgets = by_count.execute(session, {f"id_{i}": budget_id for i, budget_id in enumerate(ids)})
        else:
            budgets = _LOCK_BUDGET_ROWS[2].execute(session, {"ids": ids})
    else:
        budgets = list(session.connection().execute(_LOCK_BUDGET_ROWS[0], {"ids": ids}))
    missing = sorted(set(ids) - {b.id for b in budgets})
    if missing:
        raise InputError("budget_ids", missing, "give ids of existing budgets (`flopwise budget list`)")
    return budgets


#: a budget's spent sum in a window (``budget_id`` and :func:`~flopwise.store.totals.window_params`): the totals of
#: its whole UTC days and the reservations of the partial days at its edges (``flopwise.store.totals``); keyed by
#: whether the window has partial days (``totals.has_edges``)
_SPENT_IN_WINDOW = {edges: spent_in_window_statement(_ZERO, edges) for edges in (False, True)}
_SPENT_IN_WINDOW_PREPARED = {edges: PreparedStatement(stmt) for edges, stmt in _SPENT_IN_WINDOW.items()}


def _budget_spent_taking_head(
    session: Session, budget_id: int, window: tuple[datetime, datetime], chain_id: int
) -> tuple[Decimal, tuple[int, str] | None]:
    """PostgreSQL, budgets locked: the spent sum (as :func:`budget_spent`) and the audit chain head taken (as
    ``_append_to_org_chain`` takes it: locked, the entry numbered) in one statement; the head None when the chain
    has none yet. The budget locks are held already, so the lock order (budgets, then the chain head) holds."""
    params = window_params(window)
    row = _PG_SPENT_TAKING_HEAD[has_edges(params)].one(
        session, {"budget_id": budget_id, **params, "b_chain": chain_id}
    )
    spent = _ZERO if row[0] is None else to_money(row[0])
    return spent, (None if row[1] is None else (int(row[1]), row[2]))


def budget_spent(
    session: Session,
    budget_id: int,
    window: tuple[datetime | None, datetime | None] | None = None,
) -> Decimal:
    """Reserved + committed + settled amount against a budget, exactly, in the budget's unit.

    With *window* ``(start, end)`` only reservations whose ``counted_at`` is in ``[start, end)`` count; a bound
    that is None (or no window) leaves that side open. Read from the budget's day totals
    (:mod:`flopwise.store.totals`) and the reservations of partial days at a bound off midnight.
    """
    start, end = window if window is not None else (None, None)
    params = window_params((start or _EARLIEST, end or _LATEST))
    spent = _SPENT_IN_WINDOW_PREPARED[has_edges(params)].one(session, {"budget_id": budget_id, **params})[0]
    return _ZERO if spent is None else to_money(spent)


#: the open ends of a window (UTC midnights, so an open side reads only day totals)
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def _amount_for(budget: Budget, amounts: Mapping[int, Decimal] | Sequence[Decimal], index: int) -> Decimal:
    if isinstance(amounts, Mapping):
        if budget.id not in amounts:
            raise InputError(
                "amounts", dict(amounts), f"give an amount in {budget.unit!r} for budget {budget.id}"
            )
        return to_money(amounts[budget.id], f"amounts[{budget.id}]")
    return to_money(amounts[index], f"amounts[{index}]")


def reserve_against_budgets(
    session: Session,
    budget_ids: Sequence[int],
    amounts: Mapping[int, Decimal] | Sequence[Decimal],
    cap_check: CapCheck = hard_cap_check,
    *,
    request_id: int | None = None,
    admission_job_id: int | None = None,
    counted_at: datetime | None = None,
    window_for: WindowFor | None = None,
    unit_price: Decimal | None = None,
    price_retrieved: str | None = None,
    new_holder: bool = False,
    audit_chain: int | None = None,
) -> ReservationResult:
    """Reserve an amount against every budget in *budget_ids*, all or nothing, for one request or admission job.

    *amounts* gives each budget's amount in that budget's unit: a mapping budget id -> Decimal, or a sequence
    parallel to *budget_ids* (as ``flopwise.govern``'s decision lists them). Under the budget locks (see the
    module docstring), each budget's spent sum is read (within ``window_for(budget)``, default the budget's
    stored window) and ``cap_check(budget, spent, amount)`` decides; the default :func:`hard_cap_check` keeps
    hard budgets within their amount. Nothing is written unless every budget allows. A holder that already has
    an active reservation on a budget is not charged twice (its check says ``already_reserved``). The caller
    commits; on SQLite the session's transaction must start here or with ``write_session``/``begin_write``.
    *unit_price* (USD per device-hour) and *price_retrieved* (the catalog row's retrieval date) record the price
    the estimate was made at on every reservation written.
    ``new_holder=True`` says the holder was created in this transaction (it can hold nothing yet), which saves
    a read per budget; the new reservations are inserted in one statement.
    ``audit_chain`` (PostgreSQL, with ``new_holder``): the caller appends an entry to this organization's audit
    chain next; its head is taken with the last budget's spent read (one round trip less while the budgets are
    locked) and returned as ``audit_head`` for :func:`append_audit` (``head=``).
    """
    holder_column, holder_id = _holder(request_id, admission_job_id)
    price = None if unit_price is None else to_money(unit_price, "unit_price")
    if not isinstance(amounts, Mapping) and len(amounts) != len(budget_ids):
        raise InputError(
            "amounts", list(amounts), f"give one amount per budget id ({len(budget_ids)} budget ids)"
        )
    by_id = {b.id: b for b in lock_budget_rows(session, budget_ids)}
    window_for = window_for or _stored_window
    at = counted_at or utcnow()
    holder_attr = getattr(BudgetReservation, holder_column)

    checks: list[BudgetCheck] = []
    plan: list[tuple[Budget, Decimal, BudgetReservation | None]] = []
    audit_head: tuple[int, str] | None = None
    take_head = audit_chain is not None and new_holder and session.get_bind().dialect.name == "postgresql"
    if take_head and len(budget_ids) == 1 and cap_check is hard_cap_check:
        budget = by_id[budget_ids[0]]
        window = window_for(budget)
        if window is not None and None not in window:
            return _reserve_one_taking_head(
                session, budget, _amount_for(budget, amounts, 0), window, audit_chain or 0,  # type: ignore[arg-type]
                holder_column, holder_id, at, price, price_retrieved,
            )  # fmt: skip
    for index, budget_id in enumerate(budget_ids):
        budget = by_id[budget_id]
        amount = _amount_for(budget, amounts, index)
        if amount < 0:
            raise InputError(f"amounts[{budget_id}]", amount, "give an amount >= 0")
        existing = (
            None
            if new_holder
            else session.scalar(
                select(BudgetReservation)
                .where(BudgetReservation.budget_id == budget.id, holder_attr == holder_id)
                .execution_options(populate_existing=True)
            )
        )
        window = window_for(budget)
        if take_head and index == len(budget_ids) - 1 and window is not None and None not in window:
            spent, audit_head = _budget_spent_taking_head(session, budget.id, window, audit_chain or 0)  # type: ignore[arg-type]
        else:
            spent = budget_spent(session, budget.id, window)
        if existing is not None and existing.state in SPENDING_STATES:
            checks.append(
                BudgetCheck(
                    budget.id,
                    budget.unit,
                    budget.is_hard,
                    budget.amount,
                    spent,
                    existing.amount,
                    budget.amount - spent,
                    True,
                    already_reserved=True,
                )
            )
            continue
        allowed = bool(cap_check(budget, spent, amount))
        checks.append(
            BudgetCheck(
                budget.id,
                budget.unit,
                budget.is_hard,
                budget.amount,
                spent,
                amount,
                budget.amount - spent - amount,
                allowed,
            )
        )
        plan.append((budget, amount, existing))

    if not all(c.allowed for c in checks):
        return ReservationResult(False, tuple(checks), (), audit_head)
    if new_holder:
        return ReservationResult(
            True,
            tuple(checks),
            _insert_reservations(session, plan, holder_column, holder_id, at, price, price_retrieved),
            audit_head,
        )
    ids: list[int] = []
    for budget, amount, existing in plan:
        if existing is not None:  # a released reservation of this holder on this budget: take it up again
            existing.amount = amount
            existing.reserved_amount = amount
            existing.state = "reserved"
            existing.counted_at = at
            existing.reserved_usd_per_device_h = price
            existing.price_retrieved = price_retrieved
            existing.settled_usd_per_device_h = None
            row = existing
        else:
            row = BudgetReservation(
                budget_id=budget.id,
                unit=budget.unit,
                amount=amount,
                reserved_amount=amount,
                state="reserved",
                counted_at=at,
                reserved_usd_per_device_h=price,
                price_retrieved=price_retrieved,
                **{holder_column: holder_id},
            )
            session.add(row)
        session.flush()
        ids.append(row.id)
    return ReservationResult(True, tuple(checks), tuple(ids))


def _reserve_one_taking_head(
    session: Session,
    budget: Any,
    amount: Decimal,
    window: tuple[datetime, datetime],
    chain_id: int,
    holder_column: str,
    holder_id: int,
    at: datetime,
    price: Decimal | None,
    price_retrieved: str | None,
) -> ReservationResult:
    """PostgreSQL, the one budget locked, a new holder: the spent read, the audit chain head and the reservation
    under :func:`hard_cap_check` in one statement (``_PG_RESERVE_TAKING_HEAD``): one round trip less while the
    budget is locked than reading and then inserting."""
    if amount < 0:
        raise InputError(f"amounts[{budget.id}]", amount, "give an amount >= 0")
    now = utcnow()
    params = window_params(window)
    row = _PG_RESERVE_TAKING_HEAD[has_edges(params)].one(
        session,
        {"budget_id": budget.id, **params, "b_chain": chain_id,
         "fail_open": not budget.is_hard, "cap": budget.amount, "r_budget_id": budget.id, "r_request_id": None,
         "r_admission_job_id": None, "r_unit": budget.unit, "r_amount": amount, "r_reserved_amount": amount,
         "r_state": "reserved", "r_counted_at": at, "r_created_at": now, "r_updated_at": now,
         "r_reserved_usd_per_device_h": price, "r_price_retrieved": price_retrieved,
         f"r_{holder_column}": holder_id},
    )  # fmt: skip
    spent = _ZERO if row[0] is None else to_money(row[0])
    head = None if row[1] is None else (int(row[1]), row[2])
    allowed = row[3] is not None
    if allowed != hard_cap_check(budget, spent, amount):  # the SQL and the Python rule must agree
        raise RuntimeError(f"budget {budget.id}: the cap check in SQL and hard_cap_check disagree")
    check = BudgetCheck(
        budget.id, budget.unit, budget.is_hard, budget.amount, spent, amount, budget.amount - spent - amount,
        allowed,
    )  # fmt: skip
    return ReservationResult(allowed, (check,), (int(row[3]),) if allowed else (), head)


def _insert_reservations(
    session: Session,
    plan: Sequence[tuple[Budget, Decimal, Any]],
    holder_column: str,
    holder_id: int,
    at: datetime,
    price: Decimal | None = None,
    price_retrieved: str | None = None,
) -> tuple[int, ...]:
    """One ``INSERT ... RETURNING id`` (Core, no ORM objects) for the new reservations of *plan*, in its order,
    each with the unit price it was reserved at (*price*, USD per device-hour) and its catalog date."""
    if not plan:
        return ()
    now = utcnow()
    rows = [
        {"budget_id": budget.id, "request_id": None, "admission_job_id": None, "unit": budget.unit,
         "amount": amount, "reserved_amount": amount, "state": "reserved", "counted_at": at, "created_at": now,
         "updated_at": now, "reserved_usd_per_device_h": price, "price_retrieved": price_retrieved,
         holder_column: holder_id}
        for budget, amount, _existing in plan
    ]  # fmt: skip
    table = BudgetReservation.__table__
    if len(rows) == 1:
        return (
            int(session.connection().execute(table.insert().returning(table.c.id), rows[0]).scalar_one()),
        )
    result = session.connection().execute(
        table.insert().returning(table.c.id, sort_by_parameter_order=True), rows
    )
    return tuple(int(i) for i in result.scalars())


#: ids bound in one statement's IN list: under SQLite's bound-parameter limit (32,766)
_IDS_PER_STATEMENT = 5000


def lock_budgets_held(
    session: Session, holder_column: str, holder_ids: Sequence[int], states: Sequence[str]
) -> list[int]:
    """Lock, at once and in ascending id (:func:`lock_budget_rows`), every budget on which the holders
    *holder_ids* (``request_id`` or ``admission_job_id`` values, per *holder_column*) have a reservation in one of
    *states*, before changing those reservations: the lock order of this module, for a transaction that changes
    several holders' reservations (the expiry pass, a settlement pass) as for one. Returns the budget ids (empty:
    nothing locked)."""
    holder_attr = getattr(BudgetReservation, holder_column)
    ids = list(holder_ids)
    budget_ids: set[int] = set()
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[start : start + _IDS_PER_STATEMENT]
        budget_ids.update(
            session.scalars(
                select(BudgetReservation.budget_id).where(
                    holder_attr.in_(chunk), BudgetReservation.state.in_(list(states))
                )
            )
        )
    if budget_ids:
        lock_budget_rows(session, sorted(budget_ids))
    return sorted(budget_ids)


def _transition(
    session: Session, holder_column: str, holder_id: int, from_states: tuple[str, ...], values: dict[str, Any]
) -> int:
    holder_attr = getattr(BudgetReservation, holder_column)
    # the budgets' row locks first (the lock order): the update's trigger moves those budgets' day totals
    if not lock_budgets_held(session, holder_column, [holder_id], from_states):
        return 0
    result = session.execute(
        update(BudgetReservation)
        .where(holder_attr == holder_id, BudgetReservation.state.in_(from_states))
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session="fetch")
    )
    return int(result.rowcount or 0)


def commit_reservations(
    session: Session, *, request_id: int | None = None, admission_job_id: int | None = None
) -> int:
    """reserved -> committed for the holder (the job started); returns the number of reservations changed."""
    column, holder_id = _holder(request_id, admission_job_id)
    return _transition(session, column, holder_id, ("reserved",), {"state": "committed"})


def release_reservations(
    session: Session, *, request_id: int | None = None, admission_job_id: int | None = None
) -> int:
    """reserved/committed -> released (cancelled, or never ran): the amounts stop counting. Returns the count."""
    column, holder_id = _holder(request_id, admission_job_id)
    return _transition(session, column, holder_id, ("reserved", "committed"), {"state": "released"})


def settle_reservations(
    session: Session,
    actual: Mapping[str, Decimal],
    *,
    request_id: int | None = None,
    admission_job_id: int | None = None,
) -> int:
    """Replace the holder's active reservations by the actual usage, per unit (*actual*: unit -> Decimal).

    Each reserved/committed reservation becomes ``settled`` with ``amount = actual[its unit]``; the estimate
    stays in ``reserved_amount``. Actual usage is recorded even if it overruns a hard budget (it happened).
    The budget rows are locked first, so a concurrent reservation sees the settled amounts. When *actual* has
    both ``usd`` and ``device_hours`` (above zero), the metered unit price ``usd / device_hours`` is recorded in
    ``settled_usd_per_device_h`` beside the price the reservation was made at (:func:`metered_unit_price`).
    """
    column, holder_id = _holder(request_id, admission_job_id)
    holder_attr = getattr(BudgetReservation, column)
    budget_ids = list(
        session.scalars(
            select(BudgetReservation.budget_id).where(
                holder_attr == holder_id, BudgetReservation.state.in_(("reserved", "committed"))
            )
        )
    )
    if not budget_ids:
        return 0
    lock_budgets(session, budget_ids)
    rows = list(
        session.scalars(
            select(BudgetReservation)
            .where(holder_attr == holder_id, BudgetReservation.state.in_(("reserved", "committed")))
            .execution_options(populate_existing=True)
        )
    )
    metered = metered_unit_price(actual)
    for row in rows:
        if row.unit not in actual:
            raise InputError("actual", dict(actual), f"give the actual usage in {row.unit!r}")
        row.amount = to_money(actual[row.unit], f"actual[{row.unit!r}]")
        if row.amount < 0:
            raise InputError(f"actual[{row.unit!r}]", row.amount, "give actual usage >= 0")
        row.state = "settled"
        row.settled_usd_per_device_h = metered
    session.flush()
    return len(rows)


def metered_unit_price(actual: Mapping[str, Decimal]) -> Decimal | None:
    """USD per device-hour of metered usage (*actual*: unit -> amount), or None without both units or hours."""
    usd, hours = actual.get("usd"), actual.get("device_hours")
    if usd is None or hours is None or Decimal(hours) <= 0:
        return None
    return to_money(Decimal(usd) / Decimal(hours), "settled_usd_per_device_h")


def settled_price_effect(
    session: Session, budget_id: int, window: tuple[datetime | None, datetime | None] | None
) -> tuple[Decimal, Decimal] | None:
    """For a USD budget: (what its settled reservations would have cost at the prices they were reserved at,
    settled amount minus that) over the reservations with both prices in *window*; None when there are none.

    A settled amount ``a`` at metered price ``p_s`` covers ``a / p_s`` device-hours; at the reserved price ``p_r``
    they would have cost ``a * p_r / p_s``; the difference is the part of the settlement due to the price.
    """
    stmt = select(
        BudgetReservation.amount,
        BudgetReservation.reserved_usd_per_device_h,
        BudgetReservation.settled_usd_per_device_h,
    ).where(
        BudgetReservation.budget_id == budget_id,
        BudgetReservation.unit == "usd",
        BudgetReservation.state == "settled",
        BudgetReservation.reserved_usd_per_device_h.is_not(None),
        BudgetReservation.settled_usd_per_device_h.is_not(None),
        BudgetReservation.settled_usd_per_device_h > 0,
    )
    start, end = window if window is not None else (None, None)
    if start is not None:
        stmt = stmt.where(BudgetReservation.counted_at >= start)
    if end is not None:
        stmt = stmt.where(BudgetReservation.counted_at < end)
    rows = session.execute(stmt).all()
    if not rows:
        return None
    settled = sum((a for a, _, _ in rows), Decimal(0))
    at_reserved = sum((a * r / s for a, r, s in rows), Decimal(0))
    at_reserved = to_money(at_reserved.quantize(Decimal("0.000001")), "at_reserved")
    return at_reserved, settled - at_reserved


_UPSERTS: dict[tuple[Any, ...], Any] = {}


def _with_defaults(model: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """*values* with the Python-side column defaults filled in (what an ORM insert would store), so the row
    inserted by a Core statement and the object returned for it agree."""
    full = dict(values)
    context = _RowSoFar(full)
    for column in model.__table__.columns:  # type: ignore[attr-defined]  # table order, as SQLAlchemy fills them
        default = column.default
        if column.key in full or default is None or column.primary_key:
            continue
        if default.is_scalar:
            full[column.key] = default.arg
        elif default.is_callable:
            # SQLAlchemy wraps callables to take an execution context; a default reading the row's other values
            # (``ComputeRequest.holds_until``) gets them as SQLAlchemy's context would give them
            full[column.key] = default.arg(context)
    return full


class _RowSoFar:
    """An execution context's ``get_current_parameters()`` for :func:`_with_defaults`: the row's values so far."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get_current_parameters(self) -> dict[str, Any]:
        return self.values


def _insert_on_conflict_do_nothing(session: Session, model: type, values: Mapping[str, Any], keys: list[str]):
    """``INSERT ... ON CONFLICT (keys) DO NOTHING RETURNING id``: the new id, or None on a conflict. The
    statement is built once per table, dialect and set of columns (the write path runs it on every call)."""
    dialect = session.get_bind().dialect.name
    values = _with_defaults(model, values)  # the Python-side defaults SQLAlchemy would fill in
    columns = tuple(sorted(values))
    cache_key = (model, dialect, columns, tuple(keys))
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:
        from sqlalchemy import bindparam

        table = model.__table__  # type: ignore[attr-defined]
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(table)
            .values({c: bindparam(f"b_{c}", type_=table.c[c].type) for c in columns})
            .on_conflict_do_nothing(index_elements=keys)
            .returning(table.c.id)
        )
        stmt = _UPSERTS[cache_key] = PreparedStatement(stmt)
    row = stmt.first(session, {f"b_{c}": values[c] for c in columns})
    return None if row is None else row[0]


def _insert_returning_id(session: Session, model: type, values: Mapping[str, Any]) -> int:
    """``INSERT ... RETURNING id`` of one row, a prepared statement per table and set of columns."""
    values = _with_defaults(model, values)
    columns = tuple(sorted(values))
    cache_key = (model, "insert", columns)
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:
        from sqlalchemy import bindparam

        table = model.__table__  # type: ignore[attr-defined]
        insert = table.insert().values({c: bindparam(f"b_{c}", type_=table.c[c].type) for c in columns})
        stmt = _UPSERTS[cache_key] = PreparedStatement(insert.returning(table.c.id))
    return int(stmt.one(session, {f"b_{c}": values[c] for c in columns})[0])


def insert_request_idempotent(session: Session, values: Mapping[str, Any]) -> tuple[ComputeRequest, bool]:
    """Insert a compute request once per (``requester_id``, ``idempotency_key``); return (row, created).

    Without an ``idempotency_key`` every call inserts. With one, a repeat returns the first row and
    ``created=False`` (compare its ``inputs`` to decide whether the repeat is the same request). A new row is
    inserted in one Core statement and returned as stored, not attached to the session (change it with an
    ``UPDATE``); a repeat's row is read into the session.
    """
    values = _with_defaults(ComputeRequest, values)
    if values.get("idempotency_key") is None:
        new_id = _insert_returning_id(session, ComputeRequest, values)
        return ComputeRequest(id=int(new_id), **values), True
    begin_write(session)
    new_id = _insert_on_conflict_do_nothing(
        session, ComputeRequest, values, ["requester_id", "idempotency_key"]
    )
    if new_id is not None:
        return ComputeRequest(id=int(new_id), **values), True
    row = session.scalars(
        select(ComputeRequest).where(
            ComputeRequest.requester_id == values["requester_id"],
            ComputeRequest.idempotency_key == values["idempotency_key"],
        )
    ).one()
    return row, False


def insert_admission_job(session: Session, values: Mapping[str, Any]) -> AdmissionJob | None:
    """Insert a new admission job (``org_id``, ``engine`` and ``engine_job_id`` in *values*) in one statement,
    ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``; the job as stored (not attached to the session), or None
    when the organization already has a job with that id (then :func:`upsert_admission_job` reads it)."""
    begin_write(session)
    values = _with_defaults(AdmissionJob, values)
    new_id = _insert_on_conflict_do_nothing(
        session, AdmissionJob, values, ["org_id", "engine", "engine_job_id"]
    )
    if new_id is None:
        return None
    return AdmissionJob(id=int(new_id), **values)


def upsert_admission_job(
    session: Session,
    engine: str,
    engine_job_id: str,
    values: Mapping[str, Any],
    *,
    update_existing: bool = False,
    org_id: int | None = None,
) -> tuple[AdmissionJob, bool]:
    """The admission job of a scheduler's (``engine``, ``engine_job_id``) in organization ``values["org_id"]``,
    created with *values* if new (job ids are unique per organization: one cannot see or block another's);
    *org_id* names the organization when *values* does not hold it.

    Returns (row, created). A repeat with ``update_existing=False`` (the admission ``decide`` call) returns the
    stored job untouched, so the decision is idempotent; with ``update_existing=True`` *values* are written to
    the existing row (e.g. a state change reported again).
    """
    org = org_id if org_id is not None else values.get("org_id")
    if org is None:
        raise InputError(
            "org_id", None, "give the organization of the job (job ids are unique per organization)"
        )
    begin_write(session)
    stmt = select(AdmissionJob).where(
        AdmissionJob.org_id == org,
        AdmissionJob.engine == engine,
        AdmissionJob.engine_job_id == engine_job_id,
    )
    job = session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()
    if job is None:
        full = {**values, "org_id": org, "engine": engine, "engine_job_id": engine_job_id}
        new_id = _insert_on_conflict_do_nothing(
            session, AdmissionJob, full, ["org_id", "engine", "engine_job_id"]
        )
        if new_id is not None:
            return session.get_one(AdmissionJob, new_id), True
        job = session.scalars(stmt.execution_options(populate_existing=True)).one()  # a concurrent caller won
    if update_existing and values:
        for key, value in values.items():
            setattr(job, key, value)
        session.flush()
    return job, False


def append_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    payload: Mapping[str, Any],
    entry_hash: EntryHash,
    at: datetime | None = None,
    org_id: int | None = None,
    genesis_hash: str = GENESIS_HASH,
    chain_hash: ChainHash | None = None,
    head: tuple[int, str] | None = None,
) -> AuditLog:
    """Append one entry to the hash-chained audit log.

    With *chain_hash* (what the server uses): to the organization's chain (see the module docstring), hashed
    by ``chain_hash(prev_hash, seq, org_id, at, actor, action, payload)``, ``hash_version`` 2. Without: to the
    single global chain, ``seq`` the last one plus 1, ``hash_version`` 1.

    ``entry_hash(prev_hash, seq, at, actor, action, payload)`` computes the hash (``flopwise.govern.audit``);
    it gets the payload as it will read back from the JSON column (Decimals as strings), so verifying the
    stored log recomputes the same hashes. The first entry chains to *genesis_hash*.
    *head*: (seq, prev hash) of organization *org_id*'s chain head already taken in this transaction
    (``reserve_against_budgets(audit_chain=...)``, PostgreSQL); the entry takes that number.
    """
    at = at or utcnow()
    stored_payload = json.loads(_json_dumps(dict(payload)))
    begin_write(session)
    if chain_hash is not None:
        return _append_to_org_chain(
            session, chain_hash, actor, action, stored_payload, at, org_id, genesis_hash, head
        )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {AuditLog.__tablename__} IN EXCLUSIVE MODE"))
    last = session.execute(select(AuditLog.seq, AuditLog.hash).order_by(AuditLog.seq.desc()).limit(1)).first()
    seq, prev_hash = (1, genesis_hash) if last is None else (last.seq + 1, last.hash)
    digest = entry_hash(prev_hash, seq, at, actor, action, stored_payload)
    row = AuditLog(
        seq=seq,
        at=at,
        org_id=org_id,
        actor=actor,
        action=action,
        payload=stored_payload,
        prev_hash=prev_hash,
        hash=digest,
        hash_version=1,
    )
    session.add(row)
    session.flush()
    return row


def _append_to_org_chain(
    session: Session,
    chain_hash: ChainHash,
    actor: str,
    action: str,
    payload: dict[str, Any],
    at: datetime,
    org_id: int | None,
    genesis_hash: str,
    taken: tuple[int, str] | None = None,
) -> AuditLog:
    """Lock the chain's head row, number the entry, chain it to the head, insert it and move the head.

    PostgreSQL, two statements: ``UPDATE audit_heads SET seq = nextval(...) ... RETURNING seq, hash`` locks the
    head and numbers the entry (the number is drawn after the lock is granted, so numbers rise along the chain),
    then one statement inserts the entry and moves the head to its hash. A chain without a head row gets one
    first (``INSERT ... ON CONFLICT DO NOTHING``). SQLite (the write lock held): read the head's hash and the
    largest ``seq`` in one statement (adding the head first for a new chain), insert, move the head.
    """
    chain_id = org_id or 0
    is_pg = session.get_bind().dialect.name == "postgresql"
    if is_pg and taken is not None:  # taken with the budgets' spent read (reserve_against_budgets)
        seq, prev_hash = taken
    elif is_pg:
        head = session.connection().execute(_PG_TAKE_HEAD, {"b_chain": chain_id}).first()
        if head is None:
            session.execute(
                postgresql.insert(AuditHead)
                .values(chain_id=chain_id, seq=0, hash=genesis_hash)
                .on_conflict_do_nothing(index_elements=["chain_id"])
            )
            head = session.connection().execute(_PG_TAKE_HEAD, {"b_chain": chain_id}).one()
        seq, prev_hash = int(head[0]), head[1]
    else:
        # the SQLite write lock is held (begin_write): nobody else numbers an entry or adds a head now
        prev_hash, last_seq = session.connection().execute(_SQLITE_HEAD_AND_SEQ, {"b_chain": chain_id}).one()
        if prev_hash is None:  # the chain's first entry: its head row starts at the genesis hash
            session.execute(
                sqlite.insert(AuditHead)
                .values(chain_id=chain_id, seq=0, hash=genesis_hash)
                .on_conflict_do_nothing(index_elements=["chain_id"])
            )
            prev_hash = genesis_hash
        seq = max(int(last_seq or 0) + 1, 1)
    digest = chain_hash(prev_hash, seq, org_id, at, actor, action, payload)
    values = {"seq": seq, "at": at, "org_id": org_id, "actor": actor, "action": action, "payload": payload,
              "prev_hash": prev_hash, "hash": digest, "hash_version": 2}  # fmt: skip
    if is_pg:
        _PG_APPEND.execute(session, {"b_chain": chain_id, **{f"b_{k}": v for k, v in values.items()}})
    else:
        session.execute(AuditLog.__table__.insert(), values)
        session.execute(update(AuditHead).where(AuditHead.chain_id == chain_id).values(seq=seq, hash=digest))
    return AuditLog(**values)  # what was stored (not attached to the session)


def _pg_statements() -> tuple[Any, Any]:
    from sqlalchemy import bindparam, literal_column

    heads, log = AuditHead.__table__, AuditLog.__table__
    take = (
        heads.update()
        .where(heads.c.chain_id == bindparam("b_chain"))
        .values(seq=literal_column(f"nextval('{AUDIT_SEQ}')"))
        .returning(heads.c.seq, heads.c.hash)
    )
    move = (
        heads.update()
        .where(heads.c.chain_id == bindparam("b_chain"))
        .values(hash=bindparam("b_hash"))
        .cte("moved_head")
    )
    columns = ("seq", "at", "org_id", "actor", "action", "payload", "prev_hash", "hash", "hash_version")
    append = log.insert().values({c: bindparam(f"b_{c}", type_=log.c[c].type) for c in columns}).add_cte(move)
    return take, append


_PG_TAKE_HEAD, _PG_APPEND_STATEMENT = _pg_statements()
_PG_APPEND = PreparedStatement(_PG_APPEND_STATEMENT)


def _pg_spent_taking_head(edges: bool) -> Any:
    head = _PG_TAKE_HEAD.cte("taken_head")
    return select(
        _SPENT_IN_WINDOW[edges].scalar_subquery(),
        select(head.c.seq).scalar_subquery(),
        select(head.c.hash).scalar_subquery(),
    ).add_cte(head)


#: PostgreSQL: a budget's spent sum in a window, and its organization's audit chain head taken (locked, numbered)
_PG_SPENT_TAKING_HEAD = {edges: PreparedStatement(_pg_spent_taking_head(edges)) for edges in (False, True)}


def _pg_reserve_taking_head(edges: bool) -> Any:
    from sqlalchemy import Boolean, bindparam, cast, or_

    table = BudgetReservation.__table__
    head = _PG_TAKE_HEAD.cte("taken_head")
    spent = _SPENT_IN_WINDOW[edges].cte("spent")
    columns = ("budget_id", "request_id", "admission_job_id", "unit", "amount", "reserved_amount", "state",
               "counted_at", "created_at", "updated_at", "reserved_usd_per_device_h", "price_retrieved")  # fmt: skip
    # typed parameters: PostgreSQL cannot infer a type for a bare parameter in a SELECT list
    values = [cast(bindparam(f"r_{c}", type_=table.c[c].type), table.c[c].type) for c in columns]
    cap_ok = or_(
        bindparam("fail_open", type_=Boolean()),
        spent.c.s + cast(bindparam("r_amount", type_=table.c.amount.type), table.c.amount.type)
        <= cast(bindparam("cap", type_=table.c.amount.type), table.c.amount.type),
    )
    inserted = (
        table.insert()
        .from_select(list(columns), select(*values).select_from(spent).where(cap_ok))
        .returning(table.c.id)
        .cte("inserted")
    )
    return select(
        select(spent.c.s).scalar_subquery(),
        select(head.c.seq).scalar_subquery(),
        select(head.c.hash).scalar_subquery(),
        select(inserted.c.id).scalar_subquery(),
    ).add_cte(head, spent, inserted)


#: PostgreSQL, one budget locked, a new holder: its spent sum in the window, its organization's audit chain head
#: taken (locked, numbered), and the reservation inserted when the cap allows it (``hard_cap_check`` in SQL: a
#: soft budget, or spent + amount within the budget's amount), all in one statement; the id None when refused.
#: The CTEs share the statement's snapshot, so the sum is the spent amount before this reservation.
_PG_RESERVE_TAKING_HEAD = {edges: PreparedStatement(_pg_reserve_taking_head(edges)) for edges in (False, True)}


def _sqlite_head_and_seq() -> Any:
    from sqlalchemy import bindparam

    head = select(AuditHead.hash).where(AuditHead.chain_id == bindparam("b_chain")).scalar_subquery()
    return select(head, select(func.coalesce(func.max(AuditLog.seq), 0)).scalar_subquery())


#: SQLite: (the chain head's hash or None when the chain has no head yet, the largest seq of the whole log)
_SQLITE_HEAD_AND_SEQ = _sqlite_head_and_seq()


def audit_entries(
    session: Session,
    after_seq: int | None = 0,
    batch_size: int = 1000,
    *,
    chain_id: int | None = None,
    hash_version: int | None = None,
) -> Iterator[AuditLog]:
    """Audit entries with ``seq > after_seq`` (every one, whatever its seq, for None), in ``seq`` order, fetched
    in batches (for ``audit verify``); only organization *chain_id*'s (0: entries of no organization) and only
    *hash_version*'s when given."""
    last = after_seq
    stmt = select(AuditLog)
    if chain_id is not None:
        stmt = stmt.where(AuditLog.org_id.is_(None) if chain_id == 0 else AuditLog.org_id == chain_id)
    if hash_version is not None:
        stmt = stmt.where(AuditLog.hash_version == hash_version)
    while True:
        page = stmt if last is None else stmt.where(AuditLog.seq > last)
        batch = list(session.scalars(page.order_by(AuditLog.seq).limit(batch_size)))
        yield from batch
        if len(batch) < batch_size:
            return
        last = batch[-1].seq


def audit_head(session: Session, chain_id: int) -> tuple[int, str] | None:
    """(seq, hash) of the last entry of organization *chain_id*'s chain as its head row records it, or None."""
    row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.chain_id == chain_id)).first()
    return None if row is None else (int(row.seq), row.hash)


def audit_chain_ids(session: Session) -> list[int]:
    """Every organization chain (0: entries of no organization) with a head or an entry of hash version 2."""
    heads = set(session.scalars(select(AuditHead.chain_id)))
    orgs = session.scalars(select(AuditLog.org_id).where(AuditLog.hash_version != 1).distinct())
    return sorted(heads | {org or 0 for org in orgs})


def budgets_covering(session: Session, project_id: int) -> list[Budget]:
    """Every budget whose scope contains *project_id*: the project's, its team's and its organization's."""
    team_id, org_id = session.execute(
        select(Team.id, Team.org_id).join(Project, Project.team_id == Team.id).where(Project.id == project_id)
    ).one_or_none() or (None, None)
    if team_id is None:
        raise InputError("project_id", project_id, "give the id of an existing project")
    stmt = (
        select(Budget)
        .where(
            ((Budget.scope_kind == "project") & (Budget.scope_id == project_id))
            | ((Budget.scope_kind == "team") & (Budget.scope_id == team_id))
            | ((Budget.scope_kind == "org") & (Budget.scope_id == org_id))
        )
        .order_by(Budget.id)
    )
    return list(session.scalars(stmt))


def expire_pending_requests(session: Session, now: datetime) -> list[int]:
    """Mark pending requests whose ``expires_at`` is at or before *now* as ``expired``; return the ids this call
    expired, ascending.

    One ``UPDATE ... WHERE state = 'pending' ... RETURNING``: under concurrent callers a row is updated, and so
    returned, by exactly one of them (PostgreSQL re-checks the WHERE after waiting on the row lock; SQLite runs
    writers one at a time), so each expiry is audited once however many callers race.
    """
    rows = session.execute(
        update(ComputeRequest)
        .where(ComputeRequest.state == "pending", ComputeRequest.expires_at <= now)
        .values(state="expired", updated_at=now)
        .returning(ComputeRequest.id)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(int(i) for (i,) in rows)


def find_token(session: Session, prefix: str) -> ApiToken | None:
    """The API token with this *prefix* (revoked and expired ones too: the caller checks and says which)."""
    return session.scalar(select(ApiToken).where(ApiToken.prefix == prefix))
