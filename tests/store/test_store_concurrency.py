"""Hard budgets never overspend, and idempotent writes stay single, with many concurrent callers (both backends)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from flopwise.store import (
    GENESIS_HASH,
    AdmissionJob,
    AuditLog,
    Budget,
    ComputeRequest,
    append_audit,
    audit_entries,
    budget_spent,
    insert_request_idempotent,
    reserve_against_budgets,
    upsert_admission_job,
    write_session,
)

from .test_store_queries import make_request, sha256_entry

THREADS = 50


def run_together(n: int, task: Callable[[int], Any]) -> list[Any]:
    """Run ``task(i)`` for i in range(n) on n threads released at the same instant."""
    barrier = threading.Barrier(n)

    def go(i: int) -> Any:
        barrier.wait(timeout=30)
        return task(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n)))


def test_fifty_concurrent_reservations_never_overspend_a_hard_budget(factory, seed):
    cap, amount = Decimal("100"), Decimal("7.5")  # 50 x 7.5 = 375, nearly four times the cap
    with write_session(factory) as s:
        budget = Budget(
            org_id=seed.org_id,
            name=f"race-{uuid.uuid4().hex[:6]}",
            scope_kind="org",
            scope_id=seed.org_id,
            period="month",
            unit="usd",
            amount=cap,
            is_hard=True,
        )
        s.add(budget)
        s.flush()
        budget_id = budget.id
    request_ids = [make_request(factory, seed) for _ in range(THREADS)]

    def reserve(i: int) -> bool:
        with write_session(factory) as s:
            return reserve_against_budgets(s, [budget_id], [amount], request_id=request_ids[i]).ok

    outcomes = run_together(THREADS, reserve)
    with factory() as s:
        spent = budget_spent(s, budget_id)
    assert sum(outcomes) == int(cap // amount) == 13
    assert spent == 13 * amount == Decimal("97.5") and spent <= cap


def test_concurrent_requests_with_one_idempotency_key_make_one_row(factory, seed):
    key = f"idem-{uuid.uuid4().hex[:8]}"
    values = dict(
        org_id=seed.org_id,
        requester_id=seed.user_id,
        project_id=seed.project_id,
        workload_kind="fine-tune",
        inputs={"model": "llama-3.1-8b"},
        idempotency_key=key,
    )

    def create(_: int) -> tuple[int, bool]:
        with write_session(factory) as s:
            row, created = insert_request_idempotent(s, values)
            return row.id, created

    results = run_together(20, create)
    assert len({row_id for row_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with factory() as s:
        count = s.scalar(
            select(func.count()).select_from(ComputeRequest).where(ComputeRequest.idempotency_key == key)
        )
    assert count == 1


def test_concurrent_admission_decisions_for_one_job_make_one_row(factory, seed):
    job = f"ray-{uuid.uuid4().hex[:8]}"

    def decide(i: int) -> tuple[int, bool]:
        with write_session(factory) as s:
            row, created = upsert_admission_job(s, "ray", job, {"org_id": seed.org_id, "device_count": i + 1})
            return row.id, created

    results = run_together(20, decide)
    assert len({row_id for row_id, _ in results}) == 1 and sum(c for _, c in results) == 1
    with factory() as s:
        assert (
            s.scalar(select(func.count()).select_from(AdmissionJob).where(AdmissionJob.engine_job_id == job))
            == 1
        )


def test_concurrent_audit_appends_keep_a_dense_valid_chain(factory, seed):
    def log(i: int) -> int:
        with write_session(factory) as s:
            return append_audit(
                s, actor=f"user-{i}", action="budget.update", payload={"i": i}, entry_hash=sha256_entry
            ).seq

    seqs = run_together(30, log)
    assert len(set(seqs)) == 30
    with factory() as s:
        entries = list(audit_entries(s))
        assert s.scalar(select(func.max(AuditLog.seq))) == len(entries)
    prev = GENESIS_HASH
    for expected_seq, entry in enumerate(entries, start=1):
        assert entry.seq == expected_seq and entry.prev_hash == prev
        assert (
            sha256_entry(entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action, entry.payload)
            == entry.hash
        )
        prev = entry.hash
