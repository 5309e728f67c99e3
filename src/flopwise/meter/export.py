"""The usage ledger out again: :class:`~flopwise.meter.record.UsageRecord` objects read back from the store, and
the ledger written as FOCUS CSV (``flopwise report export-focus``) with every FOCUS column the bills gave, so that
an export re-ingested gives the same ledger.

This lives in ``meter`` (not ``store``) so imports point one way: ``meter`` reads and writes the store, the store
never imports ``meter``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flopwise.meter.focus import focus_csv_lines
from flopwise.meter.record import UsageRecord
from flopwise.store.ledger import UsageRecordRow as U
from flopwise.store.reports import _where
from flopwise.store.types import to_money

__all__ = ["EXPORT_EXTRA_COLUMNS", "export_focus_csv", "ledger_records"]

_ZERO = to_money(0)


def ledger_records(
    session: Session,
    from_: datetime | None = None,
    to: datetime | None = None,
    org_id: int | None = None,
    batch_size: int = 5000,
) -> Iterator[Any]:
    """The ledger as :class:`flopwise.meter.record.UsageRecord` objects, in period order, streamed in batches.

    ``cost_usd`` is exported as ``BilledCost`` when the bill gave none, and 0 when nothing priced the usage
    (``x_CostBasis`` says which); flopwise's own columns (cost basis, idle, scope) go to ``x_extra``.
    """
    stmt = _where(select(U), from_, to, org_id).order_by(U.charge_period_start, U.id)
    for row in session.scalars(stmt.execution_options(yield_per=batch_size)):
        # BilledCost is mandatory in FOCUS: usage that no bill and no price covers exports as 0 (x_CostBasis none)
        billed = next(c for c in (row.billed_cost, row.cost_usd, _ZERO) if c is not None)
        yield UsageRecord(
            source=row.source,
            source_key=row.source_key,
            charge_period_start=row.charge_period_start,
            charge_period_end=row.charge_period_end,
            billed_cost=billed,
            effective_cost=row.effective_cost if row.effective_cost is not None else billed,
            list_cost=row.list_cost,
            billing_currency=row.billing_currency or "USD",
            provider_name=row.provider_name,
            region_id=row.region_id,
            resource_id=row.resource_id,
            service_category=row.service_category,
            sku_id=row.sku_id,
            tags=dict(row.tags or {}),
            x_device_type=row.x_device_type,
            x_device_count=row.x_device_count,
            x_device_hours=row.x_device_hours,
            x_gpu_utilization=row.x_gpu_utilization,
            x_energy_kwh=row.x_energy_kwh,
            x_co2e_kg=row.x_co2e_kg,
            x_job_id=row.x_job_id,
            x_request_id=row.x_request_id,
            x_user=row.x_user,
            x_account=row.x_account,
            x_extra={
                # every FOCUS column the bill gave that is not a record field (ServiceName, ChargeCategory,
                # BillingPeriodStart, SubAccountId, ...), so the export round-trips
                **{k: v for k, v in (row.x_extra or {}).items() if _is_bill_column(k)},
                "x_CostUsd": row.cost_usd,
                "x_CostBasis": row.cost_basis,
                "x_EnergyBasis": row.energy_basis,
                "x_IdleDeviceHours": row.idle_device_hours,
                "x_IdleCostUsd": row.idle_cost_usd,
                "x_OrgId": row.org_id,
                "x_TeamId": row.team_id,
                "x_ProjectId": row.project_id,
                "x_SourceKey": row.source_key,
            },
        )


def _focus_extra_columns() -> tuple[str, ...]:
    from flopwise.meter.focus import FOCUS_1_0_COLUMNS, FOCUS_1_1_ADDED, FOCUS_1_2_ADDED
    from flopwise.meter.record import FOCUS_NAMES

    known = FOCUS_1_0_COLUMNS | FOCUS_1_1_ADDED | FOCUS_1_2_ADDED
    return tuple(sorted(known - set(FOCUS_NAMES.values())))


def _is_bill_column(name: str) -> bool:
    """A column a bill gave (FOCUS PascalCase, or a provider's ``x_`` column), not flopwise's own bookkeeping."""
    return bool(name) and (name[0].isupper() or name.startswith("x_")) and name not in _BOOKKEEPING


def _bill_columns(
    session: Session, from_: datetime | None, to: datetime | None, org_id: int | None
) -> list[str]:
    """The bill columns (:func:`_is_bill_column`) found in the ``x_extra`` of the rows to export, in the database
    (SQLite ``json_each``, PostgreSQL ``json_object_keys``)."""
    from sqlalchemy import true

    if session.get_bind().dialect.name == "postgresql":
        keys = func.json_object_keys(U.x_extra).label("k")
        stmt = _where(
            select(keys).where(func.json_typeof(U.x_extra) == "object"), from_, to, org_id
        ).subquery()
        found = session.scalars(select(stmt.c.k).distinct())
    else:
        each = func.json_each(U.x_extra).table_valued("key").alias("j")
        stmt = _where(select(each.c.key).select_from(U).join(each, true()), from_, to, org_id).distinct()
        found = session.scalars(stmt)
    return sorted(k for k in found if isinstance(k, str) and _is_bill_column(k))


EXPORT_EXTRA_COLUMNS = (
    *_focus_extra_columns(),
    "x_CostUsd",
    "x_CostBasis",
    "x_EnergyBasis",
    "x_IdleDeviceHours",
    "x_IdleCostUsd",
    "x_OrgId",
    "x_TeamId",
    "x_ProjectId",
    "x_SourceKey",
)
_BOOKKEEPING = frozenset(EXPORT_EXTRA_COLUMNS[len(_focus_extra_columns()) :])


def export_focus_csv(
    session: Session,
    out: IO[str],
    from_: datetime | None = None,
    to: datetime | None = None,
    org_id: int | None = None,
) -> int:
    """Write the ledger to *out* as FOCUS CSV (``flopwise.meter.focus.focus_csv_lines``: FOCUS column names from
    ``meter.record.FOCUS_NAMES``, every other FOCUS 1.0-1.2 column the bills gave (ServiceName, ChargeCategory,
    BillingPeriodStart, SubAccountId, ...), plus x_ columns, ``x_SourceKey`` the ledger key); returns the number of
    records written. Streams. Re-ingesting the file (``flopwise ingest focus``) gives the same ledger: same keys,
    same values, every FOCUS column."""
    count = 0

    def counted() -> Iterator[Any]:
        nonlocal count
        for record in ledger_records(session, from_, to, org_id):
            count += 1
            yield record

    bill = _bill_columns(session, from_, to, org_id)
    columns = [*dict.fromkeys([*EXPORT_EXTRA_COLUMNS[: -len(_BOOKKEEPING)], *bill]), *_BOOKKEEPING]
    for line in focus_csv_lines(counted(), extra_columns=columns):
        out.write(line)
    return count
