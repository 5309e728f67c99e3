"""HashedKeySet: the keys added are found across sealed runs and the pending set, others are not, and memory is
about 8 bytes a key (what lets a 10M-line sacct file remember its emitted jobs in ~30 MB, not ~370 MB)."""

from __future__ import annotations

import tracemalloc

from flopwise.meter import keyset
from flopwise.meter.keyset import HashedKeySet


def test_members_across_runs_and_pending():
    keys = HashedKeySet()
    added = [f"{i}_{i % 7}" for i in range(3 * keyset._PENDING_MAX + 123)]
    for k in added:
        keys.add(k)
    assert len(keys._runs) >= 1 and keys._pending  # both places hold keys
    assert all(k in keys for k in added)
    assert not any(f"{i}.batch" in keys for i in range(20_000))
    assert "" not in keys


def test_about_eight_bytes_a_key():
    n = 4 * keyset._PENDING_MAX
    tracemalloc.start()
    try:
        keys = HashedKeySet()
        for i in range(n):
            keys.add(str(10_000_000 + i))
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 12 * n, held  # a set of the same str keys: ~90 bytes a key
