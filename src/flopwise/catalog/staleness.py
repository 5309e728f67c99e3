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


def source_status(
    catalog: Any, *, stale_days: int = DEFAULT_STALE_DAYS, today: date | None = None
) -> list[dict]:
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
    old = [
        (what, retrieved)
        for what, retrieved in items
        if retrieved and _age_days(retrieved, today) > stale_days
    ]
    if not old:
        return None
    what, retrieved = min(old, key=lambda x: x[1])
    more = f" and {len(old) - 1} more" if len(old) > 1 else ""
    return (
        f"stale: {what}{more} retrieved {retrieved} ({_age_days(retrieved, today)} days ago, over {stale_days}); "
        "run `flopwise catalog refresh`"
    )


def data_age(
    catalog: Any,
    used: Iterable[tuple[str | None, str | None, str | None]],
    *,
    stale_days: int | None = None,
    today: date | None = None,
) -> dict:
    """How old the prices and grid intensities behind an answer are.

    *used* holds ``(provider, instance_type, region_id)`` per option (None parts for on-prem). Returns the
    oldest price and intensity dates, the threshold, and ``stale``: a sentence when any is older than the
    threshold (None otherwise), for the answer's ``assumptions``.
    """
    stale_days = stale_days if stale_days is not None else stale_days_setting()
    today = today or date.today()
    by_id = {o.id: o for o in catalog.offerings}
    prices: list[tuple[str, str]] = []
    grids: list[tuple[str, str]] = []
    for provider, instance_type, region_id in used:
        if provider and instance_type and region_id and ":" in region_id:
            offering = by_id.get(f"{provider}:{instance_type}:{region_id.split(':', 1)[1]}")
            if offering is not None and offering.retrieved:
                prices.append((f"the {offering.id} price", offering.retrieved))
        if region_id and region_id in catalog.regions:
            grids.append((f"the {region_id} grid intensity", catalog.regions[region_id].retrieved))
    return {
        "stale_days": stale_days,
        "oldest_price_retrieved": min((d for _, d in prices), default=None),
        "oldest_grid_retrieved": min((d for _, d in grids), default=None),
        "stale": stale_note(prices + grids, stale_days=stale_days, today=today),
    }


def is_stale(retrieved: str | None, *, stale_days: int | None = None, today: date | None = None) -> bool:
    """True when *retrieved* (ISO date) is older than the threshold."""
    if not retrieved:
        return False
    stale_days = stale_days if stale_days is not None else stale_days_setting()
    return _age_days(retrieved, today or date.today()) > stale_days
