"""A hash-chained audit log: every change and decision, with actor, time and payload.

Entry ``seq`` (1, 2, 3, ...) stores ``prev_hash`` (the hash of entry ``seq - 1``; 64 zeros for the first)
and ``hash = sha256(canonical_json({prev_hash, seq, at, actor, action, payload}))``. Canonical JSON has
sorted keys, no whitespace, UTF-8, ``Decimal`` as its string (``"12.50"``), datetimes in UTC as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, and refuses NaN, infinities and naive datetimes. Canonicalizing is
idempotent, so a store that keeps the payload as canonical JSON text verifies after a round trip.

:func:`verify_chain` walks the entries in order and reports the first bad ``seq`` and why:

* an **edited** entry no longer matches its own hash;
* an entry **deleted** from the middle leaves a gap in ``seq`` (or, renumbered, a broken ``prev_hash``);
* an **inserted** entry repeats or reorders a ``seq`` (or, renumbered, breaks the next entry's hash or link);
* a **deleted tail** is only visible against an anchor kept elsewhere: pass ``expected_head=(seq, hash)``.

**Per-organization chains** (``hash_version`` 2, :func:`chain_hash`, :func:`verify_org_chain`): each
organization's entries form their own chain, ``prev_hash`` being the hash of the organization's previous
entry, and the hash also covers ``org_id``, so an entry moved to another organization no longer verifies in
either. ``seq`` is then increasing but not dense (organizations interleave); a deleted entry breaks the next
entry's ``prev_hash``, a deleted tail no longer matches the chain's head (kept by the store). Entries written
before chains were per organization (``hash_version`` 1) keep verifying with :func:`verify_chain`.

Rewriting every hash after an edit is possible for whoever holds the whole table; the anchor (or a copy
of the head hash published outside the database) is what makes that detectable too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from flopwise.errors import InputError

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "VerifyResult",
    "append_entry",
    "canonical_json",
    "chain_hash",
    "entry_hash",
    "verify_chain",
    "verify_org_chain",
]

GENESIS_HASH = "0" * 64


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InputError("payload", str(value), "a Decimal in the audit log must be finite")
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InputError("payload", value, "give a timezone-aware datetime")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, (set, frozenset)):
        raise InputError("payload", value, "sets have no order; give a sorted list")
    raise InputError("payload", type(value).__name__, "give JSON values, Decimal or datetime")


def _check_floats(value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError("payload", value, "NaN and infinities cannot be logged; give a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError("payload", k, "keys must be text")
            _check_floats(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_floats(v)


def canonical_json(value: object) -> str:
    """The one JSON text of *value*: sorted keys, compact, Decimal as string, UTC timestamps."""
    _check_floats(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    )


def entry_hash(
    prev_hash: str, seq: int, at: datetime, actor: str, action: str, payload: Mapping[str, object]
) -> str:
    """SHA-256 (hex) of the canonical JSON of the entry's fields and the previous entry's hash."""
    body = {
        "prev_hash": prev_hash,
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "payload": payload,
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def chain_hash(
    prev_hash: str,
    seq: int,
    org_id: int | None,
    at: datetime,
    actor: str,
    action: str,
    payload: Mapping[str, object],
) -> str:
    """SHA-256 (hex) of an entry of an organization's chain (``hash_version`` 2): as :func:`entry_hash`, and the
    organization's id (``None`` for entries of no organization) and the version are hashed too."""
    body = {
        "v": 2,
        "prev_hash": prev_hash,
        "seq": seq,
        "org_id": org_id,
        "at": at,
        "actor": actor,
        "action": action,
        "payload": payload,
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One appended record. ``payload`` is a JSON-able mapping (Decimal and datetime allowed).

    ``hash_version`` 1 entries belong to the single global chain (:func:`entry_hash`); version 2 entries to
    the chain of ``org_id`` (:func:`chain_hash`).
    """

    seq: int
    at: datetime
    actor: str
    action: str
    payload: Mapping[str, object]
    prev_hash: str
    hash: str
    org_id: int | None = None
    hash_version: int = 1


@dataclass(frozen=True)
class VerifyResult:
    """``is_ok`` with the number of entries checked, or the first bad seq and the reason."""

    is_ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str
    head_seq: int
    head_hash: str


def append_entry(
    prev: AuditEntry | None, at: datetime, actor: str, action: str, payload: Mapping[str, object]
) -> AuditEntry:
    """The entry that follows *prev* (``None`` for the first entry of a log)."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise InputError("at", at, "give a timezone-aware datetime")
    if not actor:
        raise InputError("actor", actor, "give who did it (a user id, or 'system')")
    if not action:
        raise InputError("action", action, "name the action, e.g. 'budget.create'")
    if not isinstance(payload, Mapping):
        raise InputError("payload", payload, "give a mapping")
    at = at.astimezone(UTC)
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    return AuditEntry(
        seq, at, actor, action, payload, prev_hash, entry_hash(prev_hash, seq, at, actor, action, payload)
    )


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    expected_head: tuple[int, str] | None = None,
    after: tuple[int, str] = (0, GENESIS_HASH),
) -> VerifyResult:
    """Check the chain in the given order (by seq, as the store reads it).

    *entries* may be any iterable (a streamed, batched read of a large log). *expected_head*
    ``(seq, hash)`` is a separately kept anchor; with it a deleted or rewritten tail is detected too.
    *after* ``(seq, hash)`` resumes a verification from an already verified entry (default: from seq 1).
    """
    expected_seq, prev_hash = after[0] + 1, after[1]
    anchor_seq, anchor_hash = expected_head if expected_head is not None else (0, "")
    checked = 0
    for entry in entries:
        problem = _link_problem(entry, expected_seq, prev_hash)
        if problem is None and entry.seq == anchor_seq and entry.hash != anchor_hash:
            problem = (anchor_seq, f"entry {anchor_seq} does not match the anchor hash (rewritten chain)")
        if problem is not None:
            bad_seq, reason = problem
            return VerifyResult(False, checked, bad_seq, reason, expected_seq - 1, prev_hash)
        expected_seq, prev_hash = entry.seq + 1, entry.hash
        checked += 1
    head_seq = expected_seq - 1
    if expected_head is not None and head_seq < anchor_seq:
        reason = (
            f"the log ends at seq {head_seq} but the anchor says {anchor_seq}: entries deleted from the end"
        )
        return VerifyResult(False, checked, head_seq + 1, reason, head_seq, prev_hash)
    return VerifyResult(True, checked, None, "ok", head_seq, prev_hash)


def _link_problem(entry: AuditEntry, expected_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """(bad seq, reason) when *entry* does not follow the entry with *prev_hash* at *expected_seq*."""
    if entry.seq > expected_seq:
        return (
            expected_seq,
            f"entry seq {expected_seq} is missing (deleted?): the next entry has seq {entry.seq}",
        )
    if entry.seq < expected_seq:
        return (
            entry.seq,
            f"seq {entry.seq} appears where seq {expected_seq} belongs (inserted or reordered entry)",
        )
    if entry.prev_hash != prev_hash:
        return entry.seq, (
            f"prev_hash does not match the hash of entry {entry.seq - 1}: an entry before it was changed, "
            "inserted or deleted"
        )
    try:
        actual = entry_hash(entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action, entry.payload)
    except InputError as err:
        return entry.seq, f"the entry cannot be hashed ({err})"
    if actual != entry.hash:
        return entry.seq, "the entry's content does not match its hash (edited)"
    return None


def verify_org_chain(
    entries: Iterable[AuditEntry], *, expected_head: tuple[int, str] | None = None
) -> VerifyResult:
    """Check one organization's entries, all of them, in ``seq`` order (the store reads them so).

    Version 2 entries must chain (each ``prev_hash`` is the previous version 2 entry's hash, the first one's the
    genesis hash) and match :func:`chain_hash`, which covers ``org_id``; version 1 entries (written before
    chains were per organization) must match :func:`entry_hash` and come before the first version 2 entry (their
    links run through other organizations' entries: the whole-log check follows them). Every ``seq`` must be
    1 or more and increasing. *expected_head* ``(seq, hash)`` (the store's chain head) must be the last version
    2 entry: a deleted or rewritten tail is reported.
    """
    prev_hash, last_seq, chained, checked = GENESIS_HASH, None, False, 0
    head = (0, GENESIS_HASH)
    for entry in entries:
        problem = _org_entry_problem(entry, last_seq, prev_hash, chained)
        if problem is not None:
            return VerifyResult(False, checked, entry.seq, problem, head[0], head[1])
        if entry.hash_version == 2:
            chained, prev_hash = True, entry.hash
        last_seq, head = entry.seq, (entry.seq, entry.hash)
        checked += 1
    if expected_head is not None:
        chain_head = head if chained else (0, GENESIS_HASH)
        if expected_head[0] > 0 and chain_head != tuple(expected_head):
            reason = (
                f"the chain ends at seq {chain_head[0]} but its head says seq {expected_head[0]}: entries were "
                "deleted from the end or the last entry was rewritten"
            )
            return VerifyResult(False, checked, expected_head[0], reason, head[0], head[1])
    return VerifyResult(True, checked, None, "ok", head[0], head[1])


def _org_entry_problem(entry: AuditEntry, last_seq: int | None, prev_hash: str, chained: bool) -> str | None:
    if entry.seq <= 0:
        return f"seq {entry.seq} is not a valid position (entries are numbered from 1): inserted entry"
    if last_seq is not None and entry.seq <= last_seq:
        return f"seq {entry.seq} repeats or goes back after seq {last_seq} (inserted or reordered entry)"
    try:
        if entry.hash_version == 1:
            if chained:
                return "a version 1 entry after the organization's chain began (inserted or downgraded entry)"
            actual = entry_hash(
                entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action, entry.payload
            )
        elif entry.hash_version == 2:
            if entry.prev_hash != prev_hash:
                return (
                    "prev_hash does not match the hash of the organization's previous entry: an entry before it "
                    "is missing (deleted), or was changed, inserted or moved between organizations"
                )
            actual = chain_hash(
                entry.prev_hash, entry.seq, entry.org_id, entry.at, entry.actor, entry.action, entry.payload
            )
        else:
            return f"unknown hash version {entry.hash_version}"
    except InputError as err:
        return f"the entry cannot be hashed ({err})"
    if actual != entry.hash:
        return "the entry's content (or organization) does not match its hash (edited or moved)"
    return None
