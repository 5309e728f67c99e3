"""What changed between two sets of catalog rows: added, removed, and prices that moved by more than 5%."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = ["PRICE_MOVE_FRAC", "CatalogDiff", "diff_rows"]

#: a price change above this share of the old price is reported as a move
PRICE_MOVE_FRAC = Decimal("0.05")
_PRICE_COLUMNS = ("on_demand_usd_per_h", "spot_usd_per_h", "reserved_usd_per_h")


@dataclass
class CatalogDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: (id, column, old, new, fraction moved; None when a price appeared or disappeared)
    moved: list[tuple[str, str, str, str, float | None]] = field(default_factory=list)
    #: ids whose rows differ in any other way (a small price change, a note, a region's intensity)
    changed: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.moved or self.changed)

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "removed": self.removed,
            "moved": [
                {"id": i, "column": c, "old": o, "new": n, "change_frac": f} for i, c, o, n, f in self.moved
            ],
            "changed": self.changed,
        }


def _norm(value: str) -> Decimal | None:
    value = value.strip()
    return Decimal(value) if value else None


def diff_rows(
    old: Mapping[str, Mapping[str, str]],
    new: Mapping[str, Mapping[str, str]],
    *,
    ignore: tuple[str, ...] = (),
) -> CatalogDiff:
    """Compare rows keyed by id. Prices compare as decimals (1.50 == 1.5); columns in *ignore* are skipped
    (``retrieved`` for a refresh that only moves the date)."""
    out = CatalogDiff()
    out.added = sorted(set(new) - set(old))
    out.removed = sorted(set(old) - set(new))
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        moved_here = False
        other = False
        for column in a.keys() | b.keys():
            if column in ignore:
                continue
            va, vb = a.get(column, ""), b.get(column, "")
            if column in _PRICE_COLUMNS:
                pa, pb = _norm(va), _norm(vb)
                if pa == pb:
                    continue
                if pa is None or pb is None:
                    out.moved.append((key, column, va, vb, None))
                    moved_here = True
                    continue
                frac = (pb - pa) / pa if pa else None
                if frac is None or abs(frac) > PRICE_MOVE_FRAC:
                    out.moved.append((key, column, va, vb, float(frac) if frac is not None else None))
                    moved_here = True
                else:
                    other = True
            elif va.strip() != vb.strip():
                if column == "grid_gco2e_per_kwh" and va and vb and float(va) == float(vb):
                    continue
                other = True
        if other and not moved_here:
            out.changed.append(key)
    return out
