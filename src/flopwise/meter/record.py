"""The usage record every ingester produces: FOCUS column names plus ``x_`` columns for compute.

FOCUS (FinOps Open Cost and Usage Specification, https://focus.finops.org/) names the billing columns;
flopwise adds the compute columns a GPU ledger needs. Python attribute names are the FOCUS names in
snake_case; ``FOCUS_NAMES`` maps them back for export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = ["FOCUS_NAMES", "RejectedRow", "UsageRecord"]


@dataclass(frozen=True)
class UsageRecord:
    """One metered line: a period, what was used, what it cost, and where it came from.

    ``source_key`` makes ingestion idempotent: the same input row always yields the same key
    (e.g. ``slurm:<cluster>:<jobid>``, ``focus:<sha256 of the canonical row>``), so re-ingesting changes nothing.
    Timestamps are timezone-aware UTC. Money is Decimal. Quantities that the source does not give are None,
    never zero-filled.
    """

    source: str  # x_Source: slurm | focus | aws-cur | azure | oci | dcgm | nvidia-smi | opencost | nvml
    source_key: str
    charge_period_start: datetime
    charge_period_end: datetime
    billed_cost: Decimal | None = None
    effective_cost: Decimal | None = None
    list_cost: Decimal | None = None
    billing_currency: str | None = None
    provider_name: str | None = None
    region_id: str | None = None
    resource_id: str | None = None
    service_category: str | None = None
    sku_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    x_device_type: str | None = None  # catalog device id when it resolves, else the raw name
    x_device_count: float | None = None  # fractional for MIG slices / time-slicing
    x_device_hours: float | None = None
    x_gpu_utilization: float | None = None  # 0-1 fraction, mean over the period
    x_energy_kwh: float | None = None
    x_co2e_kg: float | None = None
    x_job_id: str | None = None
    x_request_id: str | None = None
    x_user: str | None = None
    x_account: str | None = None  # Slurm account, cloud billing account, k8s namespace
    x_extra: dict[str, Any] = field(default_factory=dict)  # source-specific fields kept for attribution


@dataclass(frozen=True)
class RejectedRow:
    """An input row that was not ingested, with where it was and why."""

    path: str
    line: int
    reason: str
    raw: str = ""


FOCUS_NAMES = {
    "charge_period_start": "ChargePeriodStart",
    "charge_period_end": "ChargePeriodEnd",
    "billed_cost": "BilledCost",
    "effective_cost": "EffectiveCost",
    "list_cost": "ListCost",
    "billing_currency": "BillingCurrency",
    "provider_name": "ProviderName",
    "region_id": "RegionId",
    "resource_id": "ResourceId",
    "service_category": "ServiceCategory",
    "sku_id": "SkuId",
    "tags": "Tags",
    "x_device_type": "x_DeviceType",
    "x_device_count": "x_DeviceCount",
    "x_device_hours": "x_DeviceHours",
    "x_gpu_utilization": "x_GpuUtilization",
    "x_energy_kwh": "x_EnergyKwh",
    "x_co2e_kg": "x_Co2eKg",
    "x_job_id": "x_JobId",
    "x_request_id": "x_RequestId",
    "source": "x_Source",
}
