"""A set of text keys held as 64-bit hashes, for membership questions over inputs of millions of keys: 8 bytes a key
in sorted numpy runs instead of a Python ``set`` of ``str`` (about 90 bytes a key: the table's slot and the string
object). Two keys whose hashes collide (about n^2 / 2^65 for n keys) count as the same key, so only answers that a
rare false "seen" cannot make wrong may use it (the wording of a reject reason, say), never identity or money.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["HashedKeySet"]

#: keys gathered in a Python set before they are sorted into a numpy run
_PENDING_MAX = 1 << 16


class HashedKeySet:
    """``add(key)`` and ``key in keys``; memory ~8 bytes a key (plus at most :data:`_PENDING_MAX` pending ones)."""

    def __init__(self) -> None:
        self._pending: set[int] = set()
        self._runs: list[np.ndarray] = []

    def add(self, key: str) -> None:
        self._pending.add(hash(key))
        if len(self._pending) >= _PENDING_MAX:
            self._seal()

    def __contains__(self, key: object) -> bool:
        import numpy as np

        h = hash(key)
        if h in self._pending:
            return True
        probe = np.int64(h)
        for run in self._runs:
            i = int(np.searchsorted(run, probe))
            if i < len(run) and run[i] == probe:
                return True
        return False

    def __len__(self) -> int:  # an upper bound: a key added twice across runs counts twice
        return len(self._pending) + sum(len(r) for r in self._runs)

    def _seal(self) -> None:
        """The pending hashes into a sorted run; runs of similar size merged (log n runs in all)."""
        import numpy as np

        run = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
        run.sort()
        self._pending = set()
        self._runs.append(run)
        while len(self._runs) > 1 and len(self._runs[-1]) * 2 >= len(self._runs[-2]):
            last = self._runs.pop()
            merged = np.concatenate([self._runs.pop(), last])
            del last
            merged.sort()
            self._runs.append(merged)
