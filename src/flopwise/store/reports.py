"""Reports over the usage ledger, computed in SQL: usage by group, utilization and idle waste, concentration.

Every aggregate is one ``GROUP BY`` query (the database does the sums, so a million-row ledger is not loaded
into Python); money sums are exact (``NUMERIC`` on PostgreSQL, integer micro-dollars on SQLite). Periods are
half-open ``[from_, to)`` on ``charge_period_start``. Rows with no organization, team or project are
*unattributed*: they appear as their own group (``key`` ``None``, ``label`` ``"unattributed"``), never dropped.

Day and month groups are UTC calendar days (``YYYY-MM-DD``) and months (``YYYY-MM``): on SQLite the stored
text's prefix (timestamps are stored in UTC as ``YYYY-MM-DD HH:MM:SS``), on PostgreSQL
``to_char(timezone('UTC', ts), ...)``.

Concentration uses the Herfindahl-Hirschman index, HHI = sum of squared percentage shares (0-10,000), as the
US Department of Justice and FTC compute it (2023 Merger Guidelines, section 2.1,
https://www.justice.gov/atr/2023-merger-guidelines): below 1,000 unconcentrated, above 1,800 highly
concentrated.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import Session

from flopwise.errors import InputError
from flopwise.store.ledger import UsageRecordRow
from flopwise.store.models import Organization, Project, Team
from flopwise.store.types import to_money
from flopwise.units import G_PER_KG

__all__ = [
    "CONCENTRATION_BY",
    "CONCENTRATION_MEASURES",
    "GROUP_BY",
    "HHI_HIGHLY_CONCENTRATED",
    "HHI_UNCONCENTRATED",
    "UNATTRIBUTED",
    "concentration_report",
    "herfindahl_hirschman",
    "usage_report",
]

GROUP_BY = ("org", "team", "project", "device", "provider", "region", "source", "day", "month")
CONCENTRATION_BY = ("provider", "vendor", "device", "region")
CONCENTRATION_MEASURES = ("cost_usd", "device_hours")
UNATTRIBUTED = "unattributed"
#: 2023 Merger Guidelines thresholds on the 0-10,000 scale
HHI_UNCONCENTRATED = 1000
HHI_HIGHLY_CONCENTRATED = 1800
_ZERO = to_money(0)

U = UsageRecordRow


def _check_period(from_: datetime | None, to: datetime | None) -> None:
    for name, value in (("from", from_), ("to", to)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise InputError(name, value, "give a timezone-aware time, e.g. 2025-01-01T00:00:00Z")
    if from_ is not None and to is not None and to <= from_:
        raise InputError("to", to, f"must be after from ({from_.isoformat()})")


def _where(stmt: Select[Any], from_: datetime | None, to: datetime | None, org_id: int | None) -> Select[Any]:
    _check_period(from_, to)
    if from_ is not None:
        stmt = stmt.where(U.charge_period_start >= from_)
    if to is not None:
        stmt = stmt.where(U.charge_period_start < to)
    if org_id is not None:
        stmt = stmt.where(U.org_id == org_id)
    return stmt


def _period_text(session: Session, width: str) -> ColumnElement[Any]:
    """``YYYY-MM-DD`` (width 'day') or ``YYYY-MM`` ('month') of charge_period_start in UTC, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        fmt = "YYYY-MM-DD" if width == "day" else "YYYY-MM"
        return func.to_char(func.timezone("UTC", U.charge_period_start), fmt)
    return func.substr(U.charge_period_start, 1, 10 if width == "day" else 7)


def _metrics() -> list[ColumnElement[Any]]:
    util_known = U.x_gpu_utilization.is_not(None) & U.x_device_hours.is_not(None)
    no_grid = U.x_co2e_kg.is_(None) & U.x_energy_kwh.is_not(None)  # energy metered where no region was known
    return [
        func.count().label("records"),
        func.coalesce(func.sum(U.x_device_hours), 0.0).label("device_hours"),
        func.coalesce(func.sum(U.cost_usd), _ZERO).label("cost_usd"),
        func.coalesce(func.sum(U.x_energy_kwh), 0.0).label("energy_kwh"),
        func.coalesce(func.sum(U.x_co2e_kg), 0.0).label("co2e_kg"),
        func.coalesce(func.sum(U.idle_device_hours), 0.0).label("idle_device_hours"),
        func.coalesce(func.sum(U.idle_cost_usd), _ZERO).label("idle_cost_usd"),
        func.coalesce(func.sum(case((util_known, U.x_device_hours), else_=0.0)), 0.0).label("util_hours"),
        func.coalesce(
            func.sum(case((util_known, U.x_device_hours * U.x_gpu_utilization), else_=0.0)), 0.0
        ).label("busy_hours"),
        func.count(U.cost_usd).label("costed_records"),
        func.coalesce(func.sum(case((no_grid, U.x_energy_kwh), else_=0.0)), 0.0).label("energy_no_grid_kwh"),
        func.count(case((no_grid, 1))).label("no_grid_records"),
    ]


def _metric_dict(row: Any) -> dict[str, Any]:
    util_hours = float(row.util_hours)
    device_hours = float(row.device_hours)
    idle = float(row.idle_device_hours)
    return {
        "records": int(row.records),
        "device_hours": device_hours,
        "cost_usd": to_money(row.cost_usd),
        "energy_kwh": float(row.energy_kwh),
        "co2e_kg": float(row.co2e_kg),
        "idle_device_hours": idle,
        "idle_cost_usd": to_money(row.idle_cost_usd),
        # device-hour-weighted mean utilization over the records that report one; None when none does
        "utilization_frac": float(row.busy_hours) / util_hours if util_hours > 0 else None,
        "idle_frac": idle / device_hours if device_hours > 0 else None,
        "uncosted_records": int(row.records) - int(row.costed_records),
        "energy_without_region_kwh": float(row.energy_no_grid_kwh),
        "records_without_region": int(row.no_grid_records),
    }


def _apply_default_grid(metrics: dict[str, Any], grid_gco2e_per_kwh: float) -> dict[str, Any]:
    """Add the CO2e of energy metered without a region, at the default grid intensity."""
    extra_kg = metrics["energy_without_region_kwh"] * grid_gco2e_per_kwh / G_PER_KG
    return {**metrics, "co2e_kg": metrics["co2e_kg"] + extra_kg, "co2e_default_grid_kg": extra_kg}


def _group_columns(session: Session, group_by: str) -> tuple[list[ColumnElement[Any]], list[Any]]:
    """(columns selected as key and label, outer joins) for *group_by*."""
    if group_by == "org":
        return [U.org_id.label("key"), Organization.name.label("label")], [
            (Organization, Organization.id == U.org_id)
        ]
    if group_by == "team":
        return [U.team_id.label("key"), Team.name.label("label")], [(Team, Team.id == U.team_id)]
    if group_by == "project":
        return [U.project_id.label("key"), Project.name.label("label")], [
            (Project, Project.id == U.project_id)
        ]
    column = {
        "device": U.x_device_type,
        "provider": U.provider_name,
        "region": U.region_id,
        "source": U.source,
    }.get(group_by)
    if column is None:
        column = _period_text(session, group_by)
    return [column.label("key"), column.label("label")], []


def _label(group_by: str, key: Any, label: Any) -> str:
    if key is None:
        return UNATTRIBUTED if group_by in ("org", "team", "project") else "unknown"
    return str(label if label is not None else key)


def usage_report(
    session: Session,
    group_by: str | None = None,
    from_: datetime | None = None,
    to: datetime | None = None,
    org_id: int | None = None,
    default_region: Any = None,
) -> dict[str, Any]:
    """Totals of the ledger in ``[from_, to)`` (of *org_id*, or all when None) and, with *group_by*, per group.

    Energy metered without a region has no CO2e in the ledger; with *default_region* (a catalog ``Region``,
    the grid ``estimate`` uses when none is given) its CO2e is added at that grid's intensity, stated in
    ``co2e_default_grid_kg`` and a ``warnings`` entry, rather than reported as 0.

    Returns ``{"group_by", "from", "to", "total": {...}, "groups": [{"key", "label", ...}, ...]}`` where each
    metrics object has ``records``, ``device_hours``, ``cost_usd`` (Decimal), ``energy_kwh``, ``co2e_kg``,
    ``idle_device_hours``, ``idle_cost_usd`` (Decimal), ``utilization_frac`` (device-hour-weighted, over the
    records that report utilization), ``idle_frac`` (idle / device-hours) and ``uncosted_records``. Groups are
    sorted by cost, then device-hours, descending. The groups' sums equal the total (tested).
    """
    if group_by is not None and group_by not in GROUP_BY:
        raise InputError("group_by", group_by, f"use one of {', '.join(GROUP_BY)}")
    total_row = session.execute(_where(select(*_metrics()), from_, to, org_id)).one()
    groups: list[dict[str, Any]] = []
    if group_by is not None:
        columns, joins = _group_columns(session, group_by)
        stmt = select(*columns, *_metrics()).select_from(U)
        for target, on in joins:
            stmt = stmt.outerjoin(target, on)
        key_columns = [c.element if hasattr(c, "element") else c for c in columns]
        stmt = _where(stmt, from_, to, org_id).group_by(*dict.fromkeys(key_columns))
        for row in session.execute(stmt):
            groups.append(
                {"key": row.key, "label": _label(group_by, row.key, row.label), **_metric_dict(row)}
            )
        groups.sort(key=lambda g: (-g["cost_usd"], -g["device_hours"], g["label"]))
    total = _metric_dict(total_row)
    warnings: list[str] = []
    if default_region is not None and total["records_without_region"]:
        grid = default_region.grid_gco2e_per_kwh
        total = _apply_default_grid(total, grid)
        groups = [_apply_default_grid(g, grid) for g in groups]
        warnings.append(
            f"{total['records_without_region']:,} records ({total['energy_without_region_kwh']:,.0f} kWh) have no "
            f"region: their CO2e uses the grid intensity of {default_region.id} ({grid:g} gCO2e/kWh), as estimate "
            "does; ingest with --region to set it"
        )
    return {
        "group_by": group_by,
        "from": from_,
        "to": to,
        "total": total,
        "groups": groups,
        "warnings": warnings,
    }


def herfindahl_hirschman(amounts: dict[str, float | Decimal]) -> tuple[float, list[tuple[str, float]]]:
    """(HHI on the 0-10,000 scale, [(name, share_frac)] largest first) of non-negative *amounts*.

    HHI = sum over participants of (100 x share)^2; one participant gives 10,000, n equal ones 10,000 / n.
    No positive amount gives (0.0, []).
    """
    positive = {k: float(v) for k, v in amounts.items() if float(v) > 0}
    total = sum(positive.values())
    if total <= 0:
        return 0.0, []
    shares = sorted(((k, v / total) for k, v in positive.items()), key=lambda kv: (-kv[1], kv[0]))
    return sum((100.0 * s) ** 2 for _, s in shares), shares


def catalog_vendor_of(by: str) -> Callable[[str], str | None] | None:
    """For ``by='vendor'``: the *vendor_of* of :func:`concentration_report` from the device catalog (a device
    the catalog does not know has no vendor, so it counts as ``unknown``); None for any other grouping."""
    if by != "vendor":
        return None
    from flopwise.catalog import load_catalog
    from flopwise.errors import CatalogError

    catalog = load_catalog()

    def vendor_of(device: str) -> str | None:
        try:
            return catalog.device(device).vendor
        except CatalogError:
            return None

    return vendor_of


def concentration_report(
    session: Session,
    by: str = "provider",
    measure: str = "cost_usd",
    from_: datetime | None = None,
    to: datetime | None = None,
    org_id: int | None = None,
    vendor_of: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """How concentrated spending (or device-hours) is across providers, device vendors, devices or regions.

    ``by='vendor'`` maps each ``x_device_type`` through *vendor_of* (e.g. the catalog's device vendor); devices
    it does not know count as ``unknown``. Rows with no provider/device/region count under ``unknown`` too, so
    the shares cover the whole measure. Returns ``{"by", "measure", "total", "hhi", "level", "largest":
    {"name", "share_frac"}, "shares": [{"name", "amount", "share_frac"}, ...]}``.
    """
    if by not in CONCENTRATION_BY:
        raise InputError("by", by, f"use one of {', '.join(CONCENTRATION_BY)}")
    if measure not in CONCENTRATION_MEASURES:
        raise InputError("measure", measure, f"use one of {', '.join(CONCENTRATION_MEASURES)}")
    column = {
        "provider": U.provider_name,
        "vendor": U.x_device_type,
        "device": U.x_device_type,
        "region": U.region_id,
    }[by]
    amount = (
        func.coalesce(func.sum(U.cost_usd), _ZERO)
        if measure == "cost_usd"
        else func.coalesce(func.sum(U.x_device_hours), 0.0)
    )
    stmt = _where(select(column.label("name"), amount.label("amount")), from_, to, org_id).group_by(column)
    amounts: dict[str, Any] = {}
    for name, value in session.execute(stmt):
        if by == "vendor" and name is not None:
            name = (vendor_of(name) if vendor_of else None) or None
        key = name if name is not None else "unknown"
        amounts[key] = amounts.get(key, 0) + (to_money(value) if measure == "cost_usd" else float(value))
    hhi, shares = herfindahl_hirschman(amounts)
    total = sum(amounts.values(), _ZERO if measure == "cost_usd" else 0.0)
    level = (
        "unconcentrated"
        if hhi < HHI_UNCONCENTRATED
        else "moderately concentrated"
        if hhi <= HHI_HIGHLY_CONCENTRATED
        else "highly concentrated"
    )
    return {
        "by": by,
        "measure": measure,
        "total": total,
        "hhi": hhi,
        "level": level if shares else "none",
        "largest": {"name": shares[0][0], "share_frac": shares[0][1]} if shares else None,
        "shares": [{"name": n, "amount": amounts[n], "share_frac": s} for n, s in shares],
    }
