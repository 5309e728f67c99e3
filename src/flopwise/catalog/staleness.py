"""How old the catalog's prices and intensities are: per source for ``catalog status``, per answer for assumptions.

A price or intensity retrieved more than ``stale_days`` (default 90) days ago is stale: every answer built on one
says so, because cloud prices move (AWS cut p5 prices by 44% in 2025) and grid intensities are yearly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date
from typing import Any

__all__ = ["DEFAULT_STALE_DAYS", "STALE_DAYS_ENV", "source_status", "stale_note", "stale_days_setting"]

DEFAULT_STALE_DAYS = 90
STALE_DAYS_ENV = "FLOPWISE_STALE_DAYS"


def stale_days_setting() -> int:
    """``$FLOPWISE_STALE_DAYS`` when set to a positive whole number, else 90. A bad value raises InputError."""
    raw = os.environ.get(STALE_DAYS_ENV, "").strip()
    if not raw:
        return DEFAULT_STALE_DAYS
    if not raw.isdigit() or int(raw) < 1:
        from flopwise.errors import InputError

        raise InputError(STALE_DAYS_ENV, raw, "give a whole number of days, at least 1, e.g. 90")
    return int(raw)


def _age_days(retrieved: str, today: date) -> int:
    return (today - date.fromisoformat(retrieved)).days


def source_status(catalog: Any, *, stale_days: int = DEFAULT_STALE_DAYS, today: date | None = None) -> list[dict]:
    """One row per (kind, provider, source_url): oldest ``retrieved`` date, row count, age in days, stale flag."""
    today = today or date.today()
    groups: dict[tuple[str, str, str], list[str]] = {}
    for o in catalog.offerings:
        groups.setdefault(("offerings", o.provider, o.source_url), []).append(o.retrieved)
    for r in catalog.regions.values():
        groups.setdefault(("regions", r.provider, r.source_url), []).append(r.retrieved)
    rows = []
    for (kind, provider, url), dates in sorted(groups.items()):
        oldest = min(dates)
        age = _age_days(oldest, today)
        rows.append(
            {
                "kind": kind,
                "provider": provider,
                "source_url": url,
                "retrieved": oldest,
                "rows": len(dates),
                "age_days": age,
                "stale": age > stale_days,
            }
        )
    return rows


def stale_note(
    items: Iterable[tuple[str, str]], *, stale_days: int = DEFAULT_STALE_DAYS, today: date | None = None
) -> str | None:
    """A sentence naming the oldest of *items* (``(what, retrieved)``) older than *stale_days*, or None."""
    today = today or date.today()
    old = [(what, retrieved) for what, retrieved in items if retrieved and _age_days(retrieved, today) > stale_days]
    if not old:
        return None
    what, retrieved = min(old, key=lambda x: x[1])
    more = f" and {len(old) - 1} more" if len(old) > 1 else ""
    return (
        f"stale: {what}{more} retrieved {retrieved} ({_age_days(retrieved, today)} days ago, over {stale_days}); "
        "run `flopwise catalog refresh`"
    )
