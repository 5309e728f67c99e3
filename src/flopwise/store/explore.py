"""Queries behind the web dashboard: the usage explorer's time series, the utilization histogram, the data's
freshness and the ingest runs of an organization.

Like :mod:`flopwise.store.reports`, every aggregate is one ``GROUP BY`` in the database (one scan of the
ledger per chart, never the rows in Python); money sums are exact. Periods are half-open ``[from_, to)`` on
``charge_period_start``, in UTC. ``usage_explore`` groups by the period and up to two keys in one query and
derives the per-group totals and the grand total from that result, so the chart, the table and the totals
are the same numbers by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.orm import Session

from flopwise.errors import InputError
from flopwise.store.ledger import IngestReject, IngestRun, UsageRecordRow
from flopwise.store.models import Organization, Project, Team
from flopwise.store.reports import UNATTRIBUTED, _check_period
from flopwise.store.rollups import UTIL_BINS, UsageRollup, choose_rollup
from flopwise.store.types import to_money

__all__ = [
    "DIMENSIONS",
    "STEPS",
    "UNKNOWN",
    "data_freshness",
    "ingest_rejects",
    "ingest_runs",
    "usage_explore",
    "utilization_histogram",
]

U = UsageRecordRow
#: keys the explorer groups and filters by; org/team/project are ids (labels joined), the rest are text columns
DIMENSIONS = ("org", "team", "project", "user", "device", "provider", "region", "service", "source")
STEPS = ("day", "week", "month")
UNKNOWN = "unknown"
_ID_DIMS = {"org": (U.org_id, Organization), "team": (U.team_id, Team), "project": (U.project_id, Project)}
_TEXT_DIMS: dict[str, Any] = {
    "user": U.x_user,
    "device": U.x_device_type,
    "provider": U.provider_name,
    "region": U.region_id,
    "service": U.service_category,
    "source": U.source,
}


def _dims_of(r: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The id and text dimensions on rollup table *r* (the same keys as :data:`DIMENSIONS` on the ledger)."""
    ids = {"org": (r.org_id, Organization), "team": (r.team_id, Team), "project": (r.project_id, Project)}
    texts = {"user": r.x_user, "device": r.x_device_type, "provider": r.provider_name, "region": r.region_id,
             "service": r.service_category, "source": r.source}  # fmt: skip
    return ids, texts


_ZERO = to_money(0)
#: the metrics of each explorer cell, summed in SQL
METRICS = (
    "records",
    "cost_usd",
    "billed_cost",
    "effective_cost",
    "idle_cost_usd",
    "device_hours",
    "idle_device_hours",
    "energy_kwh",
    "co2e_kg",
)
_MONEY = frozenset({"cost_usd", "billed_cost", "effective_cost", "idle_cost_usd"})


def _period(session: Session, step: str, start: Any = U.charge_period_start) -> ColumnElement[Any]:
    """The UTC day, Monday of the ISO week (both ``YYYY-MM-DD``) or month (``YYYY-MM``) of charge_period_start
    (or of *start*, a rollup's hour)."""
    if session.get_bind().dialect.name == "postgresql":
        utc = func.timezone("UTC", start)
        if step == "week":
            return func.to_char(func.date_trunc("week", utc), "YYYY-MM-DD")
        return func.to_char(utc, "YYYY-MM-DD" if step == "day" else "YYYY-MM")
    if step == "week":  # SQLite stores 'YYYY-MM-DD HH:MM:SS' in UTC; back up to the Monday on or before
        return func.date(func.substr(start, 1, 10), "-6 days", "weekday 1")
    return func.substr(start, 1, 10 if step == "day" else 7)


def _metric_columns(r: Any = None) -> list[ColumnElement[Any]]:
    """The sums of :data:`METRICS` over the ledger, or over rollup table *r*."""
    if r is not None:
        return [
            func.coalesce(func.sum(r.records), 0).label("records"),
            *(func.coalesce(func.sum(getattr(r, m)), _ZERO).label(m) for m in
              ("cost_usd", "billed_cost", "effective_cost", "idle_cost_usd")),
            *(func.coalesce(func.sum(getattr(r, m)), 0.0).label(m) for m in
              ("device_hours", "idle_device_hours", "energy_kwh", "co2e_kg")),
        ]  # fmt: skip
    return [
        func.count().label("records"),
        func.coalesce(func.sum(U.cost_usd), _ZERO).label("cost_usd"),
        func.coalesce(func.sum(U.billed_cost), _ZERO).label("billed_cost"),
        func.coalesce(func.sum(U.effective_cost), _ZERO).label("effective_cost"),
        func.coalesce(func.sum(U.idle_cost_usd), _ZERO).label("idle_cost_usd"),
        func.coalesce(func.sum(U.x_device_hours), 0.0).label("device_hours"),
        func.coalesce(func.sum(U.idle_device_hours), 0.0).label("idle_device_hours"),
        func.coalesce(func.sum(U.x_energy_kwh), 0.0).label("energy_kwh"),
        func.coalesce(func.sum(U.x_co2e_kg), 0.0).label("co2e_kg"),
    ]


def _check_dims(group_by: Sequence[str], filters: Mapping[str, str]) -> None:
    if len(group_by) > 2:
        raise InputError("group_by", list(group_by), "group by at most two keys")
    if len(set(group_by)) != len(group_by):
        raise InputError("group_by", list(group_by), "give two different keys")
    for name in (*group_by, *filters):
        if name not in DIMENSIONS:
            raise InputError("group_by" if name in group_by else name, name, f"use one of {', '.join(DIMENSIONS)}")


def _filtered(stmt: Select[Any], filters: Mapping[str, str], r: Any = None) -> Select[Any]:
    """Equality filters (on the ledger, or rollup table *r*); ``unattributed``/``unknown`` select the rows where the
    key is NULL. An id key must be a whole number (an ``InputError`` naming the key otherwise)."""
    id_dims, text_dims = _dims_of(r) if r is not None else (_ID_DIMS, _TEXT_DIMS)
    for name, value in filters.items():
        if name in id_dims:
            column = id_dims[name][0]
            if value == UNATTRIBUTED:
                stmt = stmt.where(column.is_(None))
                continue
            if not str(value).isdigit() or len(str(value)) > 18:
                raise InputError(name, value, f"give a {name} id (a whole number) or '{UNATTRIBUTED}'")
            stmt = stmt.where(column == int(value))
        else:
            column = text_dims[name]
            stmt = stmt.where(column.is_(None)) if value == UNKNOWN else stmt.where(column == value)
    return stmt


def _window(
    stmt: Select[Any], from_: datetime | None, to: datetime | None, org_id: int | None, r: Any = None
) -> Select[Any]:
    _check_period(from_, to)
    start, org = (r.hour, r.org_id) if r is not None else (U.charge_period_start, U.org_id)
    if from_ is not None:
        stmt = stmt.where(start >= from_)
    if to is not None:
        stmt = stmt.where(start < to)
    if org_id is not None:
        stmt = stmt.where(org == org_id)
    return stmt


def _cell(row: Any) -> dict[str, Any]:
    return {m: (to_money(getattr(row, m)) if m in _MONEY else
                int(row.records) if m == "records" else float(getattr(row, m))) for m in METRICS}  # fmt: skip


def _add(into: dict[str, Any], cell: Mapping[str, Any]) -> None:
    for m in METRICS:
        into[m] = into.get(m, _ZERO if m in _MONEY else 0) + cell[m]


def _empty() -> dict[str, Any]:
    return {m: (_ZERO if m in _MONEY else 0 if m == "records" else 0.0) for m in METRICS}


def usage_explore(
    session: Session,
    org_id: int | None,
    from_: datetime | None = None,
    to: datetime | None = None,
    *,
    step: str = "day",
    group_by: Sequence[str] = (),
    filters: Mapping[str, str] | None = None,
    use_rollups: bool = True,
) -> dict[str, Any]:
    """Usage of *org_id* in ``[from_, to)`` per *step* and per group of up to two keys of :data:`DIMENSIONS`.

    Returns ``{"step", "group_by", "filters", "series": [{"period", "group", "keys": [{"dim", "key",
    "label"}], **metrics}], "groups": [{"group", "keys", **metrics}], "total": metrics}`` where the metrics are
    :data:`METRICS` (money Decimal: ``cost_usd`` is what flopwise attributes, ``billed_cost`` and
    ``effective_cost`` what the bills said, 0 where a source has no bill; ``idle_*`` the idle share). ``group``
    is the groups' labels joined by `` / ``; groups are sorted by cost, then device-hours, descending.

    Read from the hourly rollups when they can answer (*from_*/*to* on whole UTC hours, nothing changed since
    their refresh; :func:`flopwise.store.rollups.rollup_coverage`), else from the ledger (*use_rollups* False:
    always); ``source`` says which and ``notes`` why. The numbers are the same either way.
    """
    filters = dict(filters or {})
    if step not in STEPS:
        raise InputError("step", step, f"use one of {', '.join(STEPS)}")
    _check_dims(group_by, filters)
    _check_period(from_, to)
    needs_user = "user" in group_by or "user" in filters
    r, why = choose_rollup(session, from_, to, needs_user=needs_user) if use_rollups else (None, None)
    id_dims, text_dims = _dims_of(r) if r is not None else (_ID_DIMS, _TEXT_DIMS)
    period = _period(session, step, r.hour if r is not None else U.charge_period_start).label("period")
    key_cols: list[ColumnElement[Any]] = []
    for i, dim in enumerate(group_by):
        column = id_dims[dim][0] if dim in id_dims else text_dims[dim]
        key_cols.append(column.label(f"k{i}"))
    stmt = _filtered(_window(select(period, *key_cols, *_metric_columns(r)), from_, to, org_id, r), filters, r)
    # group by the ids alone (no join per row); the few names are read afterwards
    stmt = stmt.group_by(*[c.element for c in (period, *key_cols)])
    rows = session.execute(stmt).all()
    names: dict[str, dict[Any, str]] = {}
    for i, dim in enumerate(group_by):
        if dim in _ID_DIMS:
            table = _ID_DIMS[dim][1]
            ids = {getattr(r, f"k{i}") for r in rows} - {None}
            names[dim] = dict(session.execute(select(table.id, table.name).where(table.id.in_(ids))).all()) if ids else {}
    series: list[dict[str, Any]] = []
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    total = _empty()
    for row in rows:
        keys = []
        for i, dim in enumerate(group_by):
            key = getattr(row, f"k{i}")
            if key is None:
                text = UNATTRIBUTED if dim in _ID_DIMS else UNKNOWN
            else:
                text = str(names[dim].get(key, key)) if dim in _ID_DIMS else str(key)
            keys.append({"dim": dim, "key": key, "label": text})
        name = " / ".join(k["label"] for k in keys) if keys else "all"
        cell = _cell(row)
        series.append({"period": row.period, "group": name, "keys": keys, **cell})
        ident = tuple(k["key"] for k in keys)
        if ident not in groups:
            groups[ident] = {"group": name, "keys": keys, **_empty()}
        _add(groups[ident], cell)
        _add(total, cell)
    series.sort(key=lambda s: (s["period"], s["group"]))
    ordered = sorted(groups.values(), key=lambda g: (-g["cost_usd"], -g["device_hours"], g["group"]))
    return {
        "step": step,
        "group_by": list(group_by),
        "filters": filters,
        "series": series,
        "groups": ordered,
        "total": total,
        "source": "ledger" if r is None else "hourly rollups" if r is UsageRollup else "daily rollups",
        "notes": [why] if why else [],
    }


def utilization_histogram(
    session: Session,
    org_id: int | None,
    from_: datetime | None = None,
    to: datetime | None = None,
    *,
    bins: int = 10,
    use_rollups: bool = True,
) -> list[dict[str, Any]]:
    """Device-hours by GPU utilization bin (``bins`` equal bins over 0-100 %), over the records that report a
    utilization: ``[{"lo_frac", "hi_frac", "device_hours", "records"}]``, every bin present (zeros included).
    Ten bins are read from the rollups' utilization deciles when they can answer, else from the ledger."""
    if not 1 <= bins <= 100:
        raise InputError("bins", bins, "give 1 to 100 bins")
    _check_period(from_, to)
    r = choose_rollup(session, from_, to)[0] if use_rollups and bins == UTIL_BINS else None
    if r is not None:
        sums = [func.coalesce(func.sum(getattr(r, f"util_d{i}_{m}")), 0) for i in range(bins) for m in ("hours",
                "records")]  # fmt: skip
        row = session.execute(_window(select(*sums), from_, to, org_id, r)).one()
        return _bins({i: (float(row[2 * i]), int(row[2 * i + 1])) for i in range(bins)}, bins)
    util = func.min(func.max(U.x_gpu_utilization, 0.0), 1.0) if session.get_bind().dialect.name == "sqlite" else (
        func.least(func.greatest(U.x_gpu_utilization, 0.0), 1.0))  # fmt: skip
    index = func.min(func.cast(util * bins, _int_type()), bins - 1) if session.get_bind().dialect.name == "sqlite" \
        else func.least(func.floor(util * bins), bins - 1)  # fmt: skip
    stmt = _window(
        select(index.label("bin"), func.coalesce(func.sum(U.x_device_hours), 0.0), func.count())
        .where(U.x_gpu_utilization.is_not(None))
        .group_by(index),
        from_,
        to,
        org_id,
    )
    found = {int(b): (float(h), int(n)) for b, h, n in session.execute(stmt)}
    return _bins(found, bins)


def _bins(found: Mapping[int, tuple[float, int]], bins: int) -> list[dict[str, Any]]:
    return [
        {
            "lo_frac": i / bins,
            "hi_frac": (i + 1) / bins,
            "device_hours": found.get(i, (0.0, 0))[0],
            "records": found.get(i, (0.0, 0))[1],
        }
        for i in range(bins)
    ]


def _int_type() -> Any:
    from sqlalchemy import Integer

    return Integer


def data_freshness(session: Session, org_id: int | None) -> dict[str, datetime | None]:
    """When the organization's ledger last grew (``ingested_at`` of its newest row) and the latest usage it covers
    (``charge_period_end`` of its latest-starting row); both None for an empty ledger. Two index lookups (the
    primary key backwards, and the ``(org_id, charge_period_start)`` index), never a scan of the ledger."""
    newest = select(U.ingested_at).order_by(U.id.desc()).limit(1)
    latest = select(U.charge_period_end).order_by(U.charge_period_start.desc()).limit(1)
    if org_id is not None:
        newest, latest = newest.where(U.org_id == org_id), latest.where(U.org_id == org_id)
    return {"ingested_at": session.scalar(newest), "covers_until": session.scalar(latest)}


def ingest_runs(session: Session, org_id: int, *, limit: int = 100) -> list[IngestRun]:
    """The newest ingest runs that wrote at least one record of *org_id* (runs are not owned by an organization:
    a run is shown to an organization when its ledger holds that run's records)."""
    has_rows = exists().where(U.ingest_run_id == IngestRun.id, U.org_id == org_id)
    stmt = select(IngestRun).where(has_rows).order_by(IngestRun.started_at.desc(), IngestRun.id.desc())
    return list(session.scalars(stmt.limit(limit)))


def ingest_rejects(session: Session, run_id: int, *, limit: int = 200) -> list[IngestReject]:
    """The first *limit* rejected rows of one ingest run, in line order."""
    stmt = select(IngestReject).where(IngestReject.ingest_run_id == run_id).order_by(IngestReject.line)
    return list(session.scalars(stmt.limit(limit)))
