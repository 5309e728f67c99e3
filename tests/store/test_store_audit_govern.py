"""The audit log the store writes verifies with ``flopwise.govern.audit``; edits, inserts and deletes in the
database are caught. Its own module, so its database holds only this log."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import delete, update

from flopwise.store import AuditLog, append_audit, audit_entries, write_session

audit = pytest.importorskip("flopwise.govern.audit")


def _verify(factory):
    with factory() as s:
        entries = [
            audit.AuditEntry(e.seq, e.at, e.actor, e.action, e.payload, e.prev_hash, e.hash)
            for e in audit_entries(s)
        ]
    return audit.verify_chain(entries)


def test_store_chain_verifies_and_tampering_is_caught(factory):
    for i in range(4):
        with write_session(factory) as s:
            append_audit(
                s,
                actor="grace",
                action="request.approve",
                entry_hash=audit.entry_hash,
                payload={
                    "request_id": i,
                    "cost_usd": Decimal("99.95"),
                    "at": datetime(2025, 3, 1, tzinfo=UTC),
                },
            )
    result = _verify(factory)
    assert result.is_ok and result.checked == 4

    with write_session(factory) as s:  # edit a payload in place
        s.execute(
            update(AuditLog).where(AuditLog.seq == 2).values(payload={"request_id": 1, "cost_usd": "0"})
        )
    result = _verify(factory)
    assert not result.is_ok and result.first_bad_seq == 2

    with write_session(factory) as s:  # delete it instead: the chain breaks at the next entry
        s.execute(delete(AuditLog).where(AuditLog.seq == 2))
    result = _verify(factory)
    assert not result.is_ok and result.first_bad_seq in (2, 3)
