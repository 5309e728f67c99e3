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

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select, union_all
from sqlalchemy.orm import Session, aliased

from flopwise.errors import InputError
from flopwise.store.ledger import HISTORY_MEASURES, IngestRun, UsageRecordHistory, UsageRecordRow
from flopwise.store.models import Organization, Project, Team
from flopwise.store.rollups import UsageRollup, UsageRollupDaily, choose_rollup
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
    "ledger_as_of",
    "charge_history",
    "unattributed_usage",
    "usage_report",
]

GROUP_BY = (
    "org", "team", "project", "device", "provider", "region", "source", "day", "month",
    "service", "service_category", "charge_category", "sub_account",
)  # fmt: skip
#: FinOps groupings read from the FOCUS columns a bill carried (kept in ``x_extra``): ServiceName, ChargeCategory
FOCUS_EXTRA_GROUPS = {"service": "ServiceName", "charge_category": "ChargeCategory"}
CONCENTRATION_BY = ("provider", "vendor", "device", "region")
CONCENTRATION_MEASURES = ("cost_usd", "device_hours")
UNATTRIBUTED = "unattributed"
#: 2023 Merger Guidelines thresholds on the 0-10,000 scale
HHI_UNCONCENTRATED = 1000
HHI_HIGHLY_CONCENTRATED = 1800
_ZERO = to_money(0)

U = UsageRecordRow


def ledger_as_of(session: Session, as_of: int | None) -> Any:
    """The ledger as it stood when ingest run *as_of* ended (an aliased ``UsageRecordRow``), or the ledger now.

    A row's version as of run R is the one with the largest run id <= R: the row itself when its
    ``ingest_run_id`` <= R, else the ``usage_record_history`` entry that run R's version went to
    (``old_run_id <= R < new_run_id``: its measures, the row's other columns). Rows ingested after R, and rows
    from no run (the agent) ingested after R ended, are left out.
    """
    if as_of is None:
        return U
    run = session.get(IngestRun, as_of)
    if run is None:
        raise InputError("as_of", as_of, "no ingest run has this id; list them with `flopwise ingest runs`")
    cutoff = run.finished_at or run.started_at
    H = UsageRecordHistory  # noqa: N806 - a mapped class, named like one
    table = U.__table__
    current = select(*table.c).where(
        or_(U.ingest_run_id <= as_of, and_(U.ingest_run_id.is_(None), U.ingested_at <= cutoff))
    )
    replaced_columns = []
    for column in table.c:
        if column.name in HISTORY_MEASURES:
            replaced_columns.append(getattr(H, column.name).label(column.name))
        elif column.name == "ingest_run_id":
            replaced_columns.append(H.old_run_id.label(column.name))
        else:
            replaced_columns.append(column)
    replaced = (
        select(*replaced_columns)
        .select_from(table.join(H.__table__, H.usage_record_id == U.id))
        .where(func.coalesce(H.old_run_id, literal(0)) <= as_of, H.new_run_id > as_of)
    )
    return aliased(U, union_all(current, replaced).subquery("ledger_as_of"))


def _check_period(from_: datetime | None, to: datetime | None) -> None:
    for name, value in (("from", from_), ("to", to)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise InputError(name, value, "give a timezone-aware time, e.g. 2025-01-01T00:00:00Z")
    if from_ is not None and to is not None and to <= from_:
        raise InputError("to", to, f"must be after from ({from_.isoformat()})")


def _where(
    stmt: Select[Any], from_: datetime | None, to: datetime | None, org_id: int | None, u: Any = U
) -> Select[Any]:
    _check_period(from_, to)
    if from_ is not None:
        stmt = stmt.where(u.charge_period_start >= from_)
    if to is not None:
        stmt = stmt.where(u.charge_period_start < to)
    if org_id is not None:
        stmt = stmt.where(u.org_id == org_id)
    return stmt


def _period_text(session: Session, width: str, u: Any = U) -> ColumnElement[Any]:
    """``YYYY-MM-DD`` (width 'day') or ``YYYY-MM`` ('month') of charge_period_start (of a rollup's hour) in UTC,
    on either backend."""
    start = u.hour if _is_rollup(u) else u.charge_period_start
    if session.get_bind().dialect.name == "postgresql":
        fmt = "YYYY-MM-DD" if width == "day" else "YYYY-MM"
        return func.to_char(func.timezone("UTC", start), fmt)
    return func.substr(start, 1, 10 if width == "day" else 7)


def _metrics(u: Any = U) -> list[ColumnElement[Any]]:
    util_known = u.x_gpu_utilization.is_not(None) & u.x_device_hours.is_not(None)
    no_grid = u.x_co2e_kg.is_(None) & u.x_energy_kwh.is_not(None)  # energy metered where no region was known
    return [
        func.count().label("records"),
        func.coalesce(func.sum(u.x_device_hours), 0.0).label("device_hours"),
        func.coalesce(func.sum(u.cost_usd), _ZERO).label("cost_usd"),
        func.coalesce(func.sum(u.billed_cost), _ZERO).label("billed_cost"),
        func.coalesce(func.sum(u.effective_cost), _ZERO).label("effective_cost"),
        func.coalesce(func.sum(u.x_energy_kwh), 0.0).label("energy_kwh"),
        func.coalesce(func.sum(case((u.energy_basis == "measured", u.x_energy_kwh), else_=0.0)), 0.0).label(
            "measured_energy_kwh"
        ),
        func.coalesce(func.sum(u.x_co2e_kg), 0.0).label("co2e_kg"),
        func.coalesce(func.sum(u.idle_device_hours), 0.0).label("idle_device_hours"),
        func.coalesce(func.sum(u.idle_cost_usd), _ZERO).label("idle_cost_usd"),
        func.coalesce(func.sum(case((util_known, u.x_device_hours), else_=0.0)), 0.0).label("util_hours"),
        func.coalesce(
            func.sum(case((util_known, u.x_device_hours * u.x_gpu_utilization), else_=0.0)), 0.0
        ).label("busy_hours"),
        func.count(u.cost_usd).label("costed_records"),
        func.coalesce(func.sum(case((no_grid, u.x_energy_kwh), else_=0.0)), 0.0).label("energy_no_grid_kwh"),
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
        # FinOps: what the bill charged (BilledCost) beside the amortized cost (EffectiveCost: commitments spread
        # over the usage they cover); records with no bill (Slurm, DCGM) have neither
        "billed_cost": to_money(row.billed_cost),
        "effective_cost": to_money(row.effective_cost),
        "energy_kwh": float(row.energy_kwh),
        # the ledger's energy is the device (accelerator) boundary: DCGM/NVML counters, or the power model
        "energy_boundary": "device",
        "measured_energy_kwh": float(row.measured_energy_kwh),
        "co2e_kg": float(row.co2e_kg),
        # what the CO2e covers, stated rather than implied: the meter prices device energy x the region's PUE
        # (no host share); energy with no region is added at the default grid (co2e_default_grid_kg), without PUE
        "co2e_boundary": "device energy x region PUE x grid intensity (no host share)",
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


def _group_columns(session: Session, group_by: str, u: Any = U) -> tuple[list[ColumnElement[Any]], list[Any]]:
    """(columns selected as key and label, outer joins) for *group_by*, over the ledger *u* or the rollups."""
    if group_by == "org":
        return [u.org_id.label("key"), Organization.name.label("label")], [
            (Organization, Organization.id == u.org_id)
        ]
    if group_by == "team":
        return [u.team_id.label("key"), Team.name.label("label")], [(Team, Team.id == u.team_id)]
    if group_by == "project":
        return [u.project_id.label("key"), Project.name.label("label")], [
            (Project, Project.id == u.project_id)
        ]
    column = {
        "device": u.x_device_type,
        "provider": u.provider_name,
        "region": u.region_id,
        "source": u.source,
        "service_category": u.service_category,
        "sub_account": u.x_account,
    }.get(group_by)
    if group_by in FOCUS_EXTRA_GROUPS:
        if _is_rollup(u):
            column = u.service_name if group_by == "service" else u.charge_category
        else:
            column = u.x_extra[FOCUS_EXTRA_GROUPS[group_by]].as_string()
    if column is None:
        column = _period_text(session, group_by, u)
    return [column.label("key"), column.label("label")], []


def _is_rollup(u: Any) -> bool:
    return u is UsageRollup or u is UsageRollupDaily


def _rollup_metrics(r: Any) -> list[ColumnElement[Any]]:
    """The labels of :func:`_metrics`, as sums of the rollup table *r*'s sums."""
    out: list[ColumnElement[Any]] = []
    for name in ("records", "costed_records", "no_grid_records"):
        out.append(func.coalesce(func.sum(getattr(r, name)), 0).label(name))
    for name in ("cost_usd", "billed_cost", "effective_cost", "idle_cost_usd"):
        out.append(func.coalesce(func.sum(getattr(r, name)), _ZERO).label(name))
    for name in ("device_hours", "energy_kwh", "measured_energy_kwh", "co2e_kg", "idle_device_hours",
                 "util_hours", "busy_hours"):  # fmt: skip
        out.append(func.coalesce(func.sum(getattr(r, name)), 0.0).label(name))
    out.append(func.coalesce(func.sum(r.energy_no_grid_kwh), 0.0).label("energy_no_grid_kwh"))
    return out


def _rollup_where(
    stmt: Select[Any], from_: datetime | None, to: datetime | None, org_id: int | None, r: Any
) -> Select[Any]:
    """The ledger's ``[from_, to)`` on ``charge_period_start``, on the buckets of rollup table *r* (which
    :func:`flopwise.store.rollups.choose_rollup` picked for this window)."""
    if from_ is not None:
        stmt = stmt.where(r.hour >= from_)
    if to is not None:
        stmt = stmt.where(r.hour < to)
    if org_id is not None:
        stmt = stmt.where(r.org_id == org_id)
    return stmt


def _label(group_by: str, key: Any, label: Any) -> str:
    if key is None:
        return UNATTRIBUTED if group_by in ("org", "team", "project") else "unknown"
    return str(label if label is not None else key)


#: the energy and CO2e fields each usage-report metrics object carries beside ``energy_kwh`` (device boundary)
BOUNDARY_FIELDS = (
    "node_energy_kwh", "facility_energy_kwh", "device_co2e_kg", "node_co2e_kg", "facility_co2e_kg",
)  # fmt: skip


def _boundary_buckets(
    session: Session,
    group_by: str | None,
    from_: datetime | None,
    to: datetime | None,
    org_id: int | None,
    u: Any,
    rollup: bool = False,
) -> list[Any]:
    """Energy and CO2e sums per (group key, device type, provider, region): the pieces the host share (by
    device) and the PUE (by region) apply to. One ``GROUP BY`` query, on the ledger *u* or, with *rollup*, on
    the rollup table *u* (which keeps device type, provider and region as keys and the same three sums)."""
    key = _group_columns(session, group_by, u)[0][0] if group_by is not None else literal(None).label("key")
    key_expr = key.element if hasattr(key, "element") else key
    if rollup:
        sums = (
            func.coalesce(func.sum(u.energy_kwh), 0.0).label("energy_kwh"),
            func.coalesce(func.sum(u.co2e_kg), 0.0).label("co2e_kg"),
            func.coalesce(func.sum(u.energy_no_grid_kwh), 0.0).label("energy_no_grid_kwh"),
        )
    else:
        no_grid = u.x_co2e_kg.is_(None) & u.x_energy_kwh.is_not(None)
        sums = (
            func.coalesce(func.sum(u.x_energy_kwh), 0.0).label("energy_kwh"),
            func.coalesce(func.sum(u.x_co2e_kg), 0.0).label("co2e_kg"),
            func.coalesce(func.sum(case((no_grid, u.x_energy_kwh), else_=0.0)), 0.0).label("energy_no_grid_kwh"),
        )
    stmt = select(
        key,
        u.x_device_type.label("device"),
        u.provider_name.label("provider"),
        u.region_id.label("region"),
        *sums,
    ).select_from(u)
    if rollup:
        stmt = _rollup_where(stmt, from_, to, org_id, u)
    else:
        stmt = _where(stmt, from_, to, org_id, u).where(u.x_energy_kwh.is_not(None))
    group_cols = [u.x_device_type, u.provider_name, u.region_id]
    if group_by is not None:
        group_cols.insert(0, key_expr)
    return list(session.execute(stmt.group_by(*group_cols)))


def _add_boundaries(
    buckets: list[Any], catalog: Any, default_region: Any, metrics_by_key: dict[Any, dict[str, Any]]
) -> dict[str, Any]:
    """Node and facility energy, and CO2e at the device, node and facility boundaries, added to each metrics
    object of *metrics_by_key* (key None = the total) from the device-boundary buckets:

    - node = device x (1 + host share of the device: ``estimate.energy.host_power_frac``, the estimator's
      constant, sourced there; a device type the catalog does not know takes the datacenter share);
    - facility = node x PUE of the record's region (the catalog's, resolved from provider and RegionId as the
      meter does); a record with no resolvable region takes the default region's PUE, else 1.0;
    - the ledger's CO2e is device energy x PUE x grid (no host share), so device CO2e = it / PUE, node = device x
      (1 + host), facility = node x PUE; energy with no CO2e in the ledger (no region when ingested) gets the
      default region's grid when one is given, as ``co2e_default_grid_kg`` does.

    Returns the basis of the figures (host shares and PUEs used, energy that fell back)."""
    from flopwise.catalog.resolve import record_region
    from flopwise.errors import FlopwiseError
    from flopwise.estimate.energy import DEFAULT_PUE, HOST_POWER_FRAC, host_power_frac

    hosts: dict[str, float] = {}
    pues: dict[str, float] = {}
    unknown_device_kwh = 0.0
    default_pue_kwh = 0.0
    default_pue = default_region.pue if default_region is not None else DEFAULT_PUE
    default_grid = default_region.grid_gco2e_per_kwh if default_region is not None else None
    for m in metrics_by_key.values():
        for f in BOUNDARY_FIELDS:
            m[f] = 0.0
    for b in buckets:
        e, c, e_no_grid = float(b.energy_kwh), float(b.co2e_kg), float(b.energy_no_grid_kwh)
        if not (e or c or e_no_grid):  # no energy: nothing to scale, and no host share or PUE "used"
            continue
        try:
            device = catalog.device(b.device) if b.device else None
        except FlopwiseError:
            device = None
        if device is not None:
            host = host_power_frac(device)
            hosts[device.id] = host
        else:
            host = HOST_POWER_FRAC["datacenter"]
            unknown_device_kwh += e
        region = record_region(catalog.regions, b.provider, b.region)
        if region is not None:
            pue = region.pue
            pues[region.id] = pue
        else:
            pue = default_pue
            default_pue_kwh += e
        device_co2e = c / pue
        if e_no_grid and default_grid is not None:
            device_co2e += e_no_grid * default_grid / G_PER_KG
        adds = {
            "node_energy_kwh": e * (1.0 + host),
            "facility_energy_kwh": e * (1.0 + host) * pue,
            "device_co2e_kg": device_co2e,
            "node_co2e_kg": device_co2e * (1.0 + host),
            "facility_co2e_kg": device_co2e * (1.0 + host) * pue,
        }
        for k in {None, b.key}:
            if k in metrics_by_key:
                for f, v in adds.items():
                    metrics_by_key[k][f] += v
    return {
        "device": "the ledger's energy_kwh: DCGM/NVML counters, or the power model where nothing was measured",
        "node": "device x (1 + host share of the device; flopwise.estimate.energy.HOST_POWER_FRAC: DGX H100 "
        "rated 10.2 kW for 8 x 700 W GPUs, about half drawn in practice -> 0.4 for datacenter accelerators)",
        "facility": "node x PUE of the record's region (catalog regions); records with no resolvable region: "
        + (f"{default_region.id}'s PUE {default_pue:g}" if default_region is not None else f"PUE {default_pue:g}"),
        "host_power_frac": dict(sorted(hosts.items())),
        "pue": dict(sorted(pues.items())),
        "energy_default_pue_kwh": default_pue_kwh,
        "energy_unknown_device_kwh": unknown_device_kwh,
    }


def usage_report(
    session: Session,
    group_by: str | None = None,
    from_: datetime | None = None,
    to: datetime | None = None,
    org_id: int | None = None,
    default_region: Any = None,
    as_of: int | None = None,
    catalog: Any = None,
    *,
    use_rollups: bool = True,
) -> dict[str, Any]:
    """Totals of the ledger in ``[from_, to)`` (of *org_id*, or all when None) and, with *group_by*, per group;
    with *as_of* (an ingest run id), of the ledger as it stood when that run ended (:func:`ledger_as_of`).

    Energy and CO2e come at three boundaries side by side: ``energy_kwh`` (device, the ledger's),
    ``node_energy_kwh`` and ``facility_energy_kwh``, and ``device_co2e_kg``, ``node_co2e_kg``,
    ``facility_co2e_kg`` (host share by device, PUE by region from *catalog*, default the built-in one; the
    report's ``energy_boundaries`` says what was used). ``co2e_kg`` stays the ledger's sum (device energy x PUE x
    grid, no host share).

    Energy metered without a region has no CO2e in the ledger; with *default_region* (a catalog ``Region``,
    the grid ``estimate`` uses when none is given) its CO2e is added at that grid's intensity, stated in
    ``co2e_default_grid_kg`` and a ``warnings`` entry, rather than reported as 0.

    Returns ``{"group_by", "from", "to", "total": {...}, "groups": [{"key", "label", ...}, ...]}`` where each
    metrics object has ``records``, ``device_hours``, ``cost_usd`` (Decimal), ``billed_cost`` and
    ``effective_cost`` (Decimal: FOCUS BilledCost and the amortized EffectiveCost, side by side), ``energy_kwh``, ``co2e_kg``,
    ``idle_device_hours``, ``idle_cost_usd`` (Decimal), ``utilization_frac`` (device-hour-weighted, over the
    records that report utilization), ``idle_frac`` (idle / device-hours) and ``uncosted_records``. Groups are
    sorted by cost, then device-hours, descending. The groups' sums equal the total (tested).

    The sums are read from the hourly rollups (:mod:`flopwise.store.rollups`) when they can answer (no *as_of*,
    *from_*/*to* on whole UTC hours, nothing changed since their last refresh), else from the ledger;
    ``source`` says which (``hourly rollups``, ``daily rollups`` or ``ledger``) and ``notes`` why the ledger
    was read. *use_rollups*
    False always reads the ledger. The answer is the same either way.
    """
    if group_by is not None and group_by not in GROUP_BY:
        raise InputError("group_by", group_by, f"use one of {', '.join(GROUP_BY)}")
    _check_period(from_, to)
    notes: list[str] = []
    table: Any = None
    if use_rollups:
        table, why = choose_rollup(session, from_, to, as_of)
        notes += [why] if why else []
    from_rollups = table is not None
    if from_rollups:
        u: Any = table
        metrics = lambda: _rollup_metrics(table)  # noqa: E731
        where: Callable[..., Select[Any]] = lambda stmt, *a: _rollup_where(stmt, *a, table)  # noqa: E731
    else:
        u = ledger_as_of(session, as_of)
        metrics = lambda: _metrics(u)  # noqa: E731
        where = lambda stmt, *a: _where(stmt, *a, u)  # noqa: E731
    total_row = session.execute(where(select(*metrics()).select_from(u), from_, to, org_id)).one()
    groups: list[dict[str, Any]] = []
    if group_by is not None:
        columns, joins = _group_columns(session, group_by, u)
        stmt = select(*columns, *metrics()).select_from(u)
        for target, on in joins:
            stmt = stmt.outerjoin(target, on)
        key_columns = [c.element if hasattr(c, "element") else c for c in columns]
        stmt = where(stmt, from_, to, org_id).group_by(*dict.fromkeys(key_columns))
        for row in session.execute(stmt):
            groups.append(
                {"key": row.key, "label": _label(group_by, row.key, row.label), **_metric_dict(row)}
            )
        groups.sort(key=lambda g: (-g["cost_usd"], -g["device_hours"], g["label"]))
    total = _metric_dict(total_row)
    if catalog is None:
        from flopwise.catalog import load_catalog

        catalog = load_catalog()
    by_key: dict[Any, dict[str, Any]] = {None: total}
    if group_by is not None:
        by_key.update({g["key"]: g for g in groups if g["key"] is not None})
    boundaries = _add_boundaries(
        _boundary_buckets(session, group_by, from_, to, org_id, u, rollup=from_rollups),
        catalog,
        default_region,
        by_key,
    )
    if group_by is not None:  # the unattributed / unknown group has key None, as the total's slot here
        nones = [g for g in groups if g["key"] is None]
        if nones:
            part = {f: 0.0 for f in BOUNDARY_FIELDS}
            known = {f: sum(g[f] for g in groups if g["key"] is not None) for f in BOUNDARY_FIELDS}
            for f in BOUNDARY_FIELDS:
                part[f] = total[f] - known[f]
            nones[0].update(part)
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
        "as_of": as_of,
        "total": total,
        "groups": groups,
        "energy_boundaries": boundaries,
        "warnings": warnings,
        "source": ("hourly rollups" if table is UsageRollup else "daily rollups") if from_rollups else "ledger",
        "notes": notes,
    }


def charge_history(session: Session, source_key: str) -> dict[str, Any]:
    """Every version of one charge (ledger key), oldest first: the run that wrote it, when, who replaced it, and
    its cost; the last one is the ledger's current row. Raises InputError for a key the ledger does not hold."""
    row = session.scalars(select(U).where(U.source_key == source_key)).first()
    if row is None:
        raise InputError("KEY", source_key, "the ledger has no charge with this key (x_SourceKey of an export)")
    versions = []
    for h in session.scalars(
        select(UsageRecordHistory)
        .where(UsageRecordHistory.usage_record_id == row.id)
        .order_by(UsageRecordHistory.id)
    ):
        versions.append(
            {
                "run_id": h.old_run_id,
                "billed_cost": h.billed_cost,
                "effective_cost": h.effective_cost,
                "cost_usd": h.cost_usd,
                "x_device_hours": h.x_device_hours,
                "replaced_by_run": h.new_run_id,
                "replaced_at": h.replaced_at,
                "replaced_by": h.replaced_by,
                "changed": sorted(h.changes or {}),
            }
        )
    versions.append(
        {
            "run_id": row.ingest_run_id,
            "billed_cost": row.billed_cost,
            "effective_cost": row.effective_cost,
            "cost_usd": row.cost_usd,
            "x_device_hours": row.x_device_hours,
            "replaced_by_run": None,
            "replaced_at": None,
            "replaced_by": None,
            "changed": [],
        }
    )
    return {
        "source_key": source_key,
        "source": row.source,
        "charge_period_start": row.charge_period_start,
        "charge_period_end": row.charge_period_end,
        "versions": versions,
    }


def unattributed_usage(
    session: Session, org_id: int | None = None, run_id: int | None = None
) -> dict[str, Any]:
    """Usage that belongs to no project (of *org_id*, or all; of ingest run *run_id*, or the whole ledger):
    ``records``, ``no_org`` (of them, those with no organization either), ``cost_usd`` and ``device_hours``."""
    stmt = select(
        func.count(),
        func.count(U.id).filter(U.org_id.is_(None)),
        func.coalesce(func.sum(U.cost_usd), _ZERO),
        func.coalesce(func.sum(U.x_device_hours), 0.0),
    ).where(U.project_id.is_(None))
    if org_id is not None:
        stmt = stmt.where(U.org_id == org_id)
    if run_id is not None:
        stmt = stmt.where(U.ingest_run_id == run_id)
    records, no_org, cost, hours = session.execute(stmt).one()
    return {
        "records": int(records),
        "no_org": int(no_org),
        "cost_usd": to_money(cost),
        "device_hours": float(hours),
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
    *,
    use_rollups: bool = True,
) -> dict[str, Any]:
    """How concentrated spending (or device-hours) is across providers, device vendors, devices or regions.

    ``by='vendor'`` maps each ``x_device_type`` through *vendor_of* (e.g. the catalog's device vendor); devices
    it does not know count as ``unknown``. Rows with no provider/device/region count under ``unknown`` too, so
    the shares cover the whole measure. Read from the hourly rollups when they can answer (see
    :func:`usage_report`), else the ledger; the same numbers either way. Returns ``{"by", "measure", "total", "hhi", "level", "largest":
    {"name", "share_frac"}, "shares": [{"name", "amount", "share_frac"}, ...]}``.
    """
    if by not in CONCENTRATION_BY:
        raise InputError("by", by, f"use one of {', '.join(CONCENTRATION_BY)}")
    if measure not in CONCENTRATION_MEASURES:
        raise InputError("measure", measure, f"use one of {', '.join(CONCENTRATION_MEASURES)}")
    _check_period(from_, to)
    table, _why = choose_rollup(session, from_, to) if use_rollups else (None, None)
    use = table is not None
    u: Any = table if use else U
    column = {
        "provider": u.provider_name,
        "vendor": u.x_device_type,
        "device": u.x_device_type,
        "region": u.region_id,
    }[by]
    summed = u.cost_usd if measure == "cost_usd" else (u.device_hours if use else U.x_device_hours)
    amount = func.coalesce(func.sum(summed), _ZERO if measure == "cost_usd" else 0.0)
    stmt = select(column.label("name"), amount.label("amount"))
    stmt = (_rollup_where(stmt, from_, to, org_id, u) if use else _where(stmt, from_, to, org_id)).group_by(column)
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
