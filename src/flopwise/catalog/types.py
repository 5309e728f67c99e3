"""Frozen records of the hardware catalog. Field names equal the CSV column names (units in the name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

__all__ = ["DEVICE_KINDS", "DTYPES", "Device", "OnPremProfile", "Offering", "Region"]

DEVICE_KINDS = ("gpu", "cpu", "tpu", "npu", "soc")
#: data types with a dense peak column ``peak_<dtype>_tflop_per_s`` on Device (int types are TOP/s, same column form)
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4", "int4")


@dataclass(frozen=True)
class Device:
    """One accelerator or processor. Peak figures are dense (no 2:4 sparsity); ``sparse_*`` keep the vendor's sparse headline.

    A peak of ``None`` means the hardware has no native support for that data type.
    Memory is the vendor's nominal capacity in GB (1e9 bytes) as printed on the datasheet.
    For CPUs and SoCs ``memory_gb`` is the typical/maximum system memory of the platform and
    ``memory_bandwidth_gb_per_s`` the peak DRAM bandwidth of one socket/package.
    """

    id: str
    name: str
    vendor: str
    kind: str  # one of DEVICE_KINDS
    segment: str  # datacenter | workstation | consumer | server-cpu | desktop-cpu | edge | mobile | apple
    memory_gb: float
    memory_bandwidth_gb_per_s: float
    peak_fp32_tflop_per_s: float
    peak_tf32_tflop_per_s: float | None
    peak_bf16_tflop_per_s: float | None
    peak_fp16_tflop_per_s: float | None
    peak_fp8_tflop_per_s: float | None
    peak_int8_tflop_per_s: float | None
    peak_fp4_tflop_per_s: float | None
    peak_int4_tflop_per_s: float | None
    sparse_bf16_tflop_per_s: float | None
    sparse_fp8_tflop_per_s: float | None
    sparse_int8_tflop_per_s: float | None
    sparse_fp4_tflop_per_s: float | None
    interconnect: str  # e.g. nvlink4, pcie4, infinity-fabric, ici, none
    interconnect_gb_per_s: float  # per-device, unidirectional-equivalent bandwidth for collectives
    tdp_w: float
    idle_w: float
    release_year: int
    aliases: tuple[str, ...] = ()
    source_url: str = ""
    retrieved: str = ""
    basis: str = "datasheet"  # datasheet | measured | derived
    note: str = ""

    def peak_tflop_per_s(self, dtype: str) -> float | None:
        """Dense peak for *dtype* (one of DTYPES), or None if not natively supported."""
        return getattr(self, f"peak_{dtype}_tflop_per_s")


@dataclass(frozen=True)
class Offering:
    """A purchasable unit of compute: a cloud instance in a region, with its prices."""

    id: str  # provider:instance_type:region
    provider: str
    instance_type: str
    region: str  # region id, as in regions.csv (e.g. "aws:us-east-1")
    device_id: str
    device_count: int
    vcpus: int
    ram_gb: float
    on_demand_usd_per_h: Decimal | None
    spot_usd_per_h: Decimal | None
    reserved_usd_per_h: Decimal | None
    reserved_term: str = ""  # e.g. "1y", "3y"
    source_url: str = ""
    retrieved: str = ""
    basis: str = "datasheet"
    note: str = ""


@dataclass(frozen=True)
class OnPremProfile:
    """What it costs to own one device: purchase, server share, lifetime, electricity and PUE defaults."""

    device_id: str
    purchase_usd: Decimal  # per device
    server_overhead_frac: float  # share of purchase added for host, network, storage, rack
    lifetime_years: float
    electricity_usd_per_kwh: Decimal
    pue: float
    source_url: str = ""
    retrieved: str = ""
    basis: str = "datasheet"
    note: str = ""


@dataclass(frozen=True)
class Region:
    """A cloud region or a country, with grid carbon intensity and data-centre PUE."""

    id: str  # "aws:us-east-1", "gcp:europe-west4", "country:FR"
    provider: str  # aws | gcp | azure | lambda | ... | country
    name: str
    country: str  # ISO 3166-1 alpha-2 (or alpha-3 where the source gives that)
    grid_gco2e_per_kwh: float
    pue: float
    source_url: str = ""
    retrieved: str = ""
    basis: str = "datasheet"
    note: str = ""
    aliases: tuple[str, ...] = field(default=())
