"""Budget reservations and their life cycle, idempotent inserts, audit append, scope queries."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from flopwise.errors import InputError
from flopwise.store import (
    GENESIS_HASH,
    AdmissionJob,
    ApiToken,
    AuditLog,
    Budget,
    BudgetReservation,
    ComputeRequest,
    append_audit,
    audit_entries,
    budget_spent,
    budgets_covering,
    commit_reservations,
    expire_pending_requests,
    find_token,
    insert_request_idempotent,
    release_reservations,
    reserve_against_budgets,
    settle_reservations,
    settled_price_effect,
    upsert_admission_job,
    write_session,
)

D = Decimal


def make_budget(factory, seed, amount, *, unit="usd", is_hard=True, scope=("org", None), **kw) -> int:
    kind, scope_id = scope
    scope_id = (
        scope_id
        if scope_id is not None
        else {"org": seed.org_id, "team": seed.team_id, "project": seed.project_id}[kind]
    )
    with write_session(factory) as s:
        budget = Budget(
            org_id=seed.org_id,
            name=f"b-{uuid.uuid4().hex[:8]}",
            scope_kind=kind,
            scope_id=scope_id,
            period=kw.pop("period", "month"),
            unit=unit,
            amount=D(amount),
            is_hard=is_hard,
            **kw,
        )
        s.add(budget)
        s.flush()
        return budget.id


def make_request(factory, seed, **kw) -> int:
    with write_session(factory) as s:
        row = ComputeRequest(
            org_id=seed.org_id,
            requester_id=seed.user_id,
            project_id=seed.project_id,
            workload_kind="train",
            inputs={"model": "llama-3.1-8b", "tokens": "1T"},
            **kw,
        )
        s.add(row)
        s.flush()
        return row.id


def spent(factory, budget_id, window=None) -> Decimal:
    with factory() as s:
        return budget_spent(s, budget_id, window)


def reserve(factory, budget_ids, amounts, **kw):
    with write_session(factory) as s:
        return reserve_against_budgets(s, budget_ids, amounts, **kw)


def test_reserve_records_checks_and_counts(factory, seed):
    usd = make_budget(factory, seed, "1000")
    gpu_h = make_budget(factory, seed, "500", unit="device_hours", scope=("project", None))
    req = make_request(factory, seed)
    result = reserve(factory, [usd, gpu_h], {usd: D("600.25"), gpu_h: D("120")}, request_id=req)
    assert result.ok and len(result.reservation_ids) == 2 and result.refused == ()
    by_budget = {c.budget_id: c for c in result.checks}
    assert by_budget[usd].spent_before == 0 and by_budget[usd].remaining_after == D("399.75")
    assert by_budget[gpu_h].unit == "device_hours" and by_budget[gpu_h].remaining_after == D("380")
    assert spent(factory, usd) == D("600.25") and spent(factory, gpu_h) == D("120")


def test_hard_budget_refusal_writes_nothing_anywhere(factory, seed):
    big = make_budget(factory, seed, "1000")
    small = make_budget(factory, seed, "100", scope=("team", None))
    req = make_request(factory, seed)
    result = reserve(factory, [big, small], [D("150"), D("150")], request_id=req)
    assert not result.ok and result.reservation_ids == ()
    assert [c.budget_id for c in result.refused] == [small]
    assert result.checks[1].remaining_after == D("-50")
    assert spent(factory, big) == 0 and spent(factory, small) == 0


def test_soft_budget_fails_open(factory, seed):
    soft = make_budget(factory, seed, "100", is_hard=False)
    result = reserve(factory, [soft], [D("250")], request_id=make_request(factory, seed))
    assert result.ok and result.checks[0].remaining_after == D("-150")
    assert spent(factory, soft) == D("250")


def test_new_holder_on_one_budget_keeps_the_cap_rule(factory, seed):
    """A new holder on one budget with the audit chain head taken (the write path; on PostgreSQL the spent read,
    the head and the conditional insert are one statement): the same checks and writes as the general path,
    exactly at the cap included."""
    hard = make_budget(factory, seed, "100")
    soft = make_budget(factory, seed, "100", is_hard=False)
    now = datetime.now(UTC)
    window = (now - timedelta(days=1), now + timedelta(days=1))
    kw = {"new_holder": True, "audit_chain": seed.org_id, "counted_at": now, "window_for": lambda _b: window}

    first = reserve(factory, [hard], [D("60")], request_id=make_request(factory, seed), **kw)
    assert first.ok and len(first.reservation_ids) == 1
    assert (first.checks[0].spent_before, first.checks[0].remaining_after) == (D("0"), D("40"))
    at_cap = reserve(factory, [hard], [D("40")], request_id=make_request(factory, seed), **kw)
    assert at_cap.ok and (at_cap.checks[0].spent_before, at_cap.checks[0].remaining_after) == (
        D("60"),
        D("0"),
    )
    over = reserve(factory, [hard], [D("0.000001")], request_id=make_request(factory, seed), **kw)
    assert not over.ok and over.reservation_ids == () and over.refused[0].budget_id == hard
    assert over.checks[0].remaining_after == D("-0.000001")
    assert spent(factory, hard) == D("100")
    fail_open = reserve(factory, [soft], [D("250")], request_id=make_request(factory, seed), **kw)
    assert (
        fail_open.ok and fail_open.checks[0].remaining_after == D("-150") and spent(factory, soft) == D("250")
    )
    with factory() as s:
        row = s.get_one(BudgetReservation, first.reservation_ids[0])
        assert (row.state, row.amount, row.reserved_amount, row.budget_id) == (
            "reserved",
            D("60"),
            D("60"),
            hard,
        )


def test_custom_cap_check_is_used(factory, seed):
    budget = make_budget(factory, seed, "100")
    calls = []

    def never(budget_row, spent_so_far, amount):
        calls.append((budget_row.id, spent_so_far, amount))
        return False

    result = reserve(factory, [budget], [D("1")], cap_check=never, request_id=make_request(factory, seed))
    assert not result.ok and calls == [(budget, D("0"), D("1"))]


def test_same_holder_is_not_charged_twice(factory, seed):
    budget = make_budget(factory, seed, "100")
    req = make_request(factory, seed)
    first = reserve(factory, [budget], [D("60")], request_id=req)
    again = reserve(factory, [budget], [D("60")], request_id=req)
    assert first.ok and again.ok and again.checks[0].already_reserved and again.reservation_ids == ()
    assert spent(factory, budget) == D("60")


def test_release_commit_settle_life_cycle(factory, seed):
    budget = make_budget(factory, seed, "100")
    energy = make_budget(factory, seed, "50", unit="kwh")
    req = make_request(factory, seed)
    assert reserve(factory, [budget, energy], [D("80"), D("40")], request_id=req).ok
    other = make_request(factory, seed)
    assert not reserve(factory, [budget], [D("30")], request_id=other).ok  # 80 + 30 > 100
    with write_session(factory) as s:
        assert release_reservations(s, request_id=req) == 2
    assert spent(factory, budget) == 0
    assert reserve(factory, [budget], [D("30")], request_id=other).ok
    # the released holder can reserve again (its row is taken up again, not duplicated)
    assert reserve(factory, [budget, energy], [D("70"), D("40")], request_id=req).ok
    assert spent(factory, budget) == D("100")
    with write_session(factory) as s:
        assert commit_reservations(s, request_id=req) == 2
        assert commit_reservations(s, request_id=req) == 0
    with write_session(factory) as s:
        # actual usage replaces the reservation; it is recorded even above the hard cap
        assert settle_reservations(s, {"usd": D("75.5"), "kwh": D("41.25")}, request_id=req) == 2
    assert spent(factory, budget) == D("105.5") and spent(factory, energy) == D("41.25")
    with factory() as s:
        rows = s.scalars(select(BudgetReservation).where(BudgetReservation.request_id == req)).all()
    assert {(r.state, r.reserved_amount, r.amount) for r in rows} == {
        ("settled", D("70"), D("75.5")),
        ("settled", D("40"), D("41.25")),
    }
    with write_session(factory) as s:
        assert release_reservations(s, request_id=req) == 0  # settled usage is never released


def test_reserved_and_settled_unit_prices_are_both_kept(factory, seed):
    usd = make_budget(factory, seed, "1000")
    hours = make_budget(factory, seed, "1000", unit="device_hours")
    req = make_request(factory, seed)
    # reserved 80 device-hours at $2.50 (a catalog row retrieved 2026-12-06) = $200
    kw = {"unit_price": D("2.50"), "price_retrieved": "2026-12-06"}
    assert reserve(factory, [usd, hours], [D("200"), D("80")], request_id=req, **kw).ok
    with factory() as s:
        assert settled_price_effect(s, usd, None) is None  # nothing settled yet
    with write_session(factory) as s:
        # metered: $210 for 70 device-hours = $3.00 per device-hour
        assert settle_reservations(s, {"usd": D("210"), "device_hours": D("70")}, request_id=req) == 2
    with factory() as s:
        rows = s.scalars(select(BudgetReservation).where(BudgetReservation.request_id == req)).all()
        assert {
            (r.unit, r.reserved_usd_per_device_h, r.price_retrieved, r.settled_usd_per_device_h) for r in rows
        } == {
            ("usd", D("2.5"), "2026-12-06", D("3")),
            ("device_hours", D("2.5"), "2026-12-06", D("3")),
        }
        # the 70 metered device-hours at the reserved $2.50 would have cost $175: $35 of the $210 is the price
        assert settled_price_effect(s, usd, None) == (D("175"), D("35"))
    # without device-hours no metered unit price is claimed
    other = make_request(factory, seed)
    assert reserve(factory, [usd], [D("10")], request_id=other, unit_price=D("1")).ok
    with write_session(factory) as s:
        settle_reservations(s, {"usd": D("12")}, request_id=other)
    with factory() as s:
        row = s.scalars(select(BudgetReservation).where(BudgetReservation.request_id == other)).one()
        assert (row.reserved_usd_per_device_h, row.settled_usd_per_device_h) == (D("1"), None)


def test_settle_needs_every_unit(factory, seed):
    budget = make_budget(factory, seed, "100", unit="co2e_kg")
    req = make_request(factory, seed)
    assert reserve(factory, [budget], [D("5")], request_id=req).ok
    with pytest.raises(InputError, match="co2e_kg"), write_session(factory) as s:
        settle_reservations(s, {"usd": D("1")}, request_id=req)


def test_window_limits_what_counts(factory, seed):
    budget = make_budget(factory, seed, "100")
    jan, feb = datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 2, 15, tzinfo=UTC)
    window_feb = (datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC))
    assert reserve(factory, [budget], [D("90")], request_id=make_request(factory, seed), counted_at=jan).ok
    # February's window does not see January's 90, so 90 more fit
    result = reserve(
        factory,
        [budget],
        [D("90")],
        request_id=make_request(factory, seed),
        counted_at=feb,
        window_for=lambda b: window_feb,
    )
    assert result.ok and result.checks[0].spent_before == 0
    assert spent(factory, budget) == D("180") and spent(factory, budget, window_feb) == D("90")


@pytest.mark.parametrize(
    ("budget_ids", "amounts", "field"),
    [([10**9], [D("1")], "budget_ids"), ([None], [D("1"), D("2")], "amounts"), ([None], {}, "amounts")],
)
def test_bad_reservation_input_names_the_field(factory, seed, budget_ids, amounts, field):
    budget = make_budget(factory, seed, "100")
    ids = [budget if b is None else b for b in budget_ids]
    req = make_request(factory, seed)  # before the write session: SQLite has one writer at a time
    with pytest.raises(InputError, match=field), write_session(factory) as s:
        reserve_against_budgets(s, ids, amounts, request_id=req)
    with pytest.raises(InputError, match="exactly one"), write_session(factory) as s:
        reserve_against_budgets(s, [budget], [D("1")])


def test_request_insert_is_idempotent_per_requester(factory, seed):
    values = dict(
        org_id=seed.org_id,
        requester_id=seed.user_id,
        project_id=seed.project_id,
        workload_kind="serve",
        inputs={"model": "llama-3.1-70b"},
        estimated_cost_usd=D("12.34"),
        idempotency_key="k-1",
    )
    with write_session(factory) as s:
        first, created = insert_request_idempotent(s, values)
        assert created and first.estimated_cost_usd == D("12.34") and first.state == "pending"
    with write_session(factory) as s:
        again, created = insert_request_idempotent(s, values | {"inputs": {"model": "other"}})
        assert not created and again.id == first.id and again.inputs == {"model": "llama-3.1-70b"}
    with write_session(factory) as s:  # another requester may use the same key
        theirs, created = insert_request_idempotent(s, values | {"requester_id": seed.approver_id})
        assert created and theirs.id != first.id
    with write_session(factory) as s:  # no key: always a new request
        a, _ = insert_request_idempotent(s, values | {"idempotency_key": None})
        b, _ = insert_request_idempotent(s, values | {"idempotency_key": None})
        assert a.id != b.id


def test_admission_job_upsert(factory, seed):
    values = dict(
        org_id=seed.org_id,
        requester_id=seed.user_id,
        project_id=seed.project_id,
        device_type="h100-sxm",
        device_count=8,
        max_duration_h=D("24"),
        worst_case_cost_usd=D("1900.80"),
        worst_case_device_hours=D("192"),
    )
    job_id = f"slurm-{uuid.uuid4().hex[:6]}"
    with write_session(factory) as s:
        job, created = upsert_admission_job(s, "slurm", job_id, values)
        assert created and job.state == "admitted" and job.worst_case_cost_usd == D("1900.80")
    with write_session(factory) as s:
        same, created = upsert_admission_job(s, "slurm", job_id, values | {"device_count": 16})
        assert not created and same.id == job.id and same.device_count == 8
    with write_session(factory) as s:
        other_engine, created = upsert_admission_job(s, "kueue", job_id, values)
        assert created and other_engine.id != job.id
    now = datetime.now(UTC)
    with write_session(factory) as s:
        updated, created = upsert_admission_job(
            s, "slurm", job_id, {"state": "committed", "committed_at": now}, update_existing=True,
            org_id=seed.org_id,
        )  # fmt: skip
        assert not created and updated.state == "committed"
    with factory() as s:
        assert s.get_one(AdmissionJob, job.id).committed_at == now
    budget = make_budget(factory, seed, "2000")
    assert reserve(factory, [budget], [D("1900.80")], admission_job_id=job.id).ok
    with write_session(factory) as s:
        assert settle_reservations(s, {"usd": D("640.10")}, admission_job_id=job.id) == 1
    assert spent(factory, budget) == D("640.10")


def sha256_entry(prev_hash, seq, at, actor, action, payload) -> str:
    """A stand-in with govern's entry_hash signature (canonical JSON, sorted keys)."""
    body = json.dumps(
        [prev_hash, seq, at.isoformat(), actor, action, payload], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def test_audit_append_chains_and_reads_back_in_order(factory, seed):
    with factory() as s:
        before = [e.seq for e in audit_entries(s)]
    written = []
    for i in range(5):
        with write_session(factory) as s:
            entry = append_audit(
                s,
                actor="ada",
                action="request.create",
                org_id=seed.org_id,
                entry_hash=sha256_entry,
                payload={"i": i, "cost_usd": D("1.50"), "at": datetime(2025, 1, 1, tzinfo=UTC)},
            )
            written.append(entry.seq)
    assert written == list(range(len(before) + 1, len(before) + 6))
    with factory() as s:
        entries = list(audit_entries(s, batch_size=2))
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    prev = GENESIS_HASH
    for e in entries:  # every stored entry re-hashes to its stored hash and links to its predecessor
        assert e.prev_hash == prev
        assert sha256_entry(e.prev_hash, e.seq, e.at, e.actor, e.action, e.payload) == e.hash
        prev = e.hash
    assert entries[-1].payload == {"i": 4, "cost_usd": "1.50", "at": "2025-01-01T00:00:00+00:00"}
    with factory() as s:
        assert [e.seq for e in audit_entries(s, after_seq=entries[-2].seq)] == [entries[-1].seq]
        assert s.scalar(select(AuditLog).where(AuditLog.seq == entries[-1].seq)).at.tzinfo is UTC


def test_budgets_covering_a_project(factory, seed):
    own = make_budget(factory, seed, "1", scope=("project", None))
    team = make_budget(factory, seed, "1", scope=("team", None))
    org = make_budget(factory, seed, "1", scope=("org", None))
    make_budget(factory, seed, "1", scope=("project", 10**9))  # someone else's project
    with factory() as s:
        ids = {b.id for b in budgets_covering(s, seed.project_id)}
        assert {own, team, org} <= ids and all(
            b.scope_kind == "org" or b.scope_id in (seed.team_id, seed.project_id)
            for b in budgets_covering(s, seed.project_id)
        )
        with pytest.raises(InputError, match="project_id"):
            budgets_covering(s, 10**9)


def test_expire_pending_requests(factory, seed):
    now = datetime(2030, 1, 1, tzinfo=UTC)
    due = make_request(factory, seed, expires_at=now - timedelta(seconds=1))
    on_time = make_request(factory, seed, expires_at=now)
    later = make_request(factory, seed, expires_at=now + timedelta(hours=1))
    decided = make_request(factory, seed, expires_at=now - timedelta(days=1), state="approved")
    with write_session(factory) as s:
        expired = expire_pending_requests(s, now)
    assert {due, on_time} <= set(expired) and later not in expired and decided not in expired
    with factory() as s:
        assert s.get_one(ComputeRequest, due).state == "expired"
        assert s.get_one(ComputeRequest, decided).state == "approved"


def test_find_token_by_prefix(factory, seed):
    prefix = f"fw_{uuid.uuid4().hex[:8]}"
    with write_session(factory) as s:
        s.add(ApiToken(user_id=seed.user_id, name="ci", prefix=prefix, token_hash="scrypt$..."))
    with factory() as s:
        token = find_token(s, prefix)
        assert token is not None and token.user_id == seed.user_id and token.revoked_at is None
        assert find_token(s, "fw_nope") is None
