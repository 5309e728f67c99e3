"""The audit hash chain: canonical JSON, and detection of edited, inserted and deleted entries."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from flopwise.errors import InputError
from flopwise.govern import GENESIS_HASH, append_entry, canonical_json, entry_hash, verify_chain

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _chain(n: int = 6):
    entries, prev = [], None
    for i in range(n):
        prev = append_entry(
            prev, T0 + timedelta(minutes=i), "alice" if i % 2 else "system", f"action.{i}",
            {"amount_usd": Decimal(f"{i}.50"), "i": i, "when": T0, "tags": ["a", "b"]},
        )  # fmt: skip
        entries.append(prev)
    return entries


def test_canonical_json_is_sorted_compact_decimal_strings_and_utc():
    local = datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    text = canonical_json({"b": Decimal("12.50"), "a": local, "c": [1, 2.5, None, True], "é": "ü"})
    assert text == '{"a":"2025-03-01T09:00:00.000000Z","b":"12.50","c":[1,2.5,null,true],"é":"ü"}'
    assert canonical_json(json.loads(text)) == text  # idempotent: a stored copy verifies after a round trip
    for bad in (
        {"x": float("nan")},
        {"x": datetime(2025, 1, 1)},
        {"x": {1, 2}},
        {1: "int key"},
        {"x": object()},
    ):
        with pytest.raises(InputError):
            canonical_json(bad)


def test_chain_links_and_verifies():
    entries = _chain()
    assert entries[0].seq == 1 and entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    result = verify_chain(entries)
    assert (result.is_ok, result.checked, result.head_seq, result.head_hash) == (True, 6, 6, entries[-1].hash)
    assert verify_chain([]).is_ok
    e = entries[2]
    assert e.hash == entry_hash(e.prev_hash, e.seq, e.at, e.actor, e.action, e.payload)


def test_edited_entry():
    entries = _chain()
    edited = dataclasses.replace(entries[3], payload={**entries[3].payload, "amount_usd": Decimal("3.51")})
    result = verify_chain([*entries[:3], edited, *entries[4:]])
    assert (result.is_ok, result.first_bad_seq) == (False, 4) and "edited" in result.reason
    actor = dataclasses.replace(entries[0], actor="mallory")
    assert verify_chain([actor, *entries[1:]]).first_bad_seq == 1


def test_edited_and_rehashed_entry_breaks_the_next_link():
    entries = _chain()
    e = entries[2]
    forged = dataclasses.replace(e, action="budget.delete")
    forged = dataclasses.replace(
        forged, hash=entry_hash(e.prev_hash, e.seq, e.at, e.actor, forged.action, e.payload)
    )
    result = verify_chain([*entries[:2], forged, *entries[3:]])
    assert result.first_bad_seq == 4 and "prev_hash" in result.reason


def test_deleted_entry_in_the_middle():
    entries = _chain()
    result = verify_chain(entries[:2] + entries[3:])
    assert (result.is_ok, result.first_bad_seq) == (False, 3) and "missing" in result.reason


def test_deleted_and_renumbered():
    entries = _chain()
    renumbered = entries[:2] + [dataclasses.replace(e, seq=e.seq - 1) for e in entries[3:]]
    result = verify_chain(renumbered)
    assert result.first_bad_seq == 3 and "prev_hash" in result.reason


def test_inserted_entry():
    entries = _chain()
    extra = append_entry(entries[2], T0, "mallory", "budget.raise", {"amount_usd": Decimal("1e6")})  # seq 4
    result = verify_chain([*entries[:3], extra, *entries[3:]])
    assert result.first_bad_seq == 4 and "inserted" in result.reason  # the original seq 4 now repeats
    # inserted, and every later entry renumbered: the first renumbered entry fails its own link or hash
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in entries[3:]]
    result = verify_chain([*entries[:3], extra, *shifted])
    assert (result.is_ok, result.first_bad_seq) == (False, 5)


def test_deleted_tail_needs_the_anchor():
    entries = _chain()
    anchor = (entries[-1].seq, entries[-1].hash)
    assert verify_chain(entries[:-2]).is_ok  # a truncated log is a valid shorter log...
    result = verify_chain(entries[:-2], expected_head=anchor)  # ...but not against the anchor
    assert (result.is_ok, result.first_bad_seq) == (False, 5) and "deleted from the end" in result.reason
    assert verify_chain(entries, expected_head=anchor).is_ok
    assert verify_chain(entries, expected_head=(3, entries[2].hash)).is_ok  # an older anchor still holds
    result = verify_chain(entries, expected_head=(3, "f" * 64))
    assert (result.is_ok, result.first_bad_seq) == (False, 3)


def test_append_rejects_bad_input():
    with pytest.raises(InputError, match="timezone-aware"):
        append_entry(None, datetime(2025, 1, 1), "a", "x", {})
    with pytest.raises(InputError) as err:
        append_entry(None, T0, "", "x", {})
    assert err.value.field == "actor"


def test_streamed_and_resumed_verification():
    entries = _chain(8)
    assert verify_chain(iter(entries)).checked == 8  # any iterable, e.g. the store's batched reader
    first = verify_chain(entries[:5])
    rest = verify_chain(entries[5:], after=(first.head_seq, first.head_hash))
    assert rest.is_ok and (rest.checked, rest.head_seq, rest.head_hash) == (3, 8, entries[-1].hash)
    assert not verify_chain(entries[5:], after=(5, "0" * 64)).is_ok  # resuming from a wrong head fails
