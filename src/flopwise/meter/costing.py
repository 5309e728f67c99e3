"""Cost, energy, CO2e and idle time of a usage record, including usage that has no bill (on-prem, Slurm, DCGM).

::

    coster = Coster(load_catalog(), CostingOptions(default_region="country:NL"))
    costed = coster.cost(record)       # CostedUsage(cost_usd, cost_basis, energy_kwh, energy_basis, ...)

Pure: numbers and catalog records in, a frozen :class:`CostedUsage` out (no I/O, no clock). The rules, in order
(docs/ingest/index.md has them with their sources):

**Cost** (``cost_basis``)
  * ``billed``: the record carries ``BilledCost`` in USD (or with no currency): that is the cost.
  * ``catalog-onprem``: no bill, the device is in the catalog and has an on-prem profile: device-hours x
    :func:`flopwise.estimate.cost.onprem_usd_per_device_h` (straight-line depreciation plus electricity at the
    facility meter), with the wall power per device from the record's energy (measured or estimated, plus the
    host share :func:`flopwise.estimate.energy.host_power_frac`) and the profile's PUE.
  * ``catalog-cloud``: no bill and no on-prem profile: device-hours x the cheapest on-demand price per
    device-hour among the catalog's offerings of the device (:func:`flopwise.catalog.pricing.price_per_device_h`).
  * ``none``: neither (no device, unknown device, no device-hours, or a bill in another currency).

  Fractional GPUs (MIG slices, time-slicing) need nothing special: their ``x_device_hours`` is already the share
  times the wall time, so they are priced by their share.

**Idle** (by allocation and by utilization)
  ``cost_usd`` is the cost by allocation. Where the GPU utilization ``u`` is known,
  ``idle_device_hours = device_hours x (1 - u)`` and ``idle_cost_usd = cost_usd x (1 - u)``; the cost by
  utilization is ``cost_usd - idle_cost_usd`` (:attr:`CostedUsage.used_cost_usd`). OpenCost's ``__idle__``
  allocation is idle as a whole.

**Energy** (``energy_basis``): accelerator energy. ``measured`` when the record has it (DCGM and NVML energy
  counters, nvidia-smi power, Slurm's energy plugin); else ``estimated`` with the estimator's linear power model
  :func:`flopwise.estimate.energy.device_power_w` at the record's utilization (at
  :data:`UNKNOWN_UTILIZATION_ACTIVITY_FRAC` when the utilization is unknown) over its device-hours; else ``none``.

**CO2e**: a CO2e the record already carries is kept; else ``energy x PUE x grid intensity``
  (:func:`flopwise.estimate.energy.co2e_kg`) with the PUE and intensity of the record's region (``RegionId``,
  with the provider as prefix) or of :attr:`CostingOptions.default_region` (e.g. a country for on-prem usage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal

from flopwise import money
from flopwise.catalog import Catalog, Device, OnPremProfile, Region
from flopwise.catalog.pricing import price_per_device_h
from flopwise.catalog.resolve import PROVIDER_REGION_PREFIX, record_region
from flopwise.errors import CatalogError, InputError
from flopwise.estimate.cost import onprem_usd_per_device_h
from flopwise.estimate.energy import TRAIN_ACTIVITY_FRAC, co2e_kg, device_power_w, host_power_frac
from flopwise.meter.record import UsageRecord
from flopwise.units import KILO, MICRO_USD

__all__ = [
    "MONEY_QUANTUM",
    "PROVIDER_REGION_PREFIX",
    "UNKNOWN_UTILIZATION_ACTIVITY_FRAC",
    "CostedUsage",
    "Coster",
    "CostingOptions",
    "cost_usage",
]

#: money in the ledger has six decimal places (the store's ``NUMERIC(20, 6)``)
MONEY_QUANTUM = MICRO_USD
#: activity share of the idle-to-TDP power range assumed for an allocated accelerator whose utilization the
#: source does not report: the training share (estimate.energy.TRAIN_ACTIVITY_FRAC), an upper-side assumption,
#: since an allocation is paid for whether it is used or not
UNKNOWN_UTILIZATION_ACTIVITY_FRAC = TRAIN_ACTIVITY_FRAC
_USD = "USD"


@dataclass(frozen=True)
class CostingOptions:
    """Assumptions of :class:`Coster`.

    *default_region*: the catalog region (``"country:NL"``, ``"aws:us-east-1"``) of usage that names none
    (on-prem clusters, DCGM, nvidia-smi); None leaves such records without CO2e. *prefer_onprem*: price unbilled
    usage of a device from its on-prem profile when it has one (True), or always from the cheapest cloud offering
    (False: what the same hours would cost to rent).
    """

    default_region: str | None = None
    prefer_onprem: bool = True

    def __post_init__(self) -> None:
        if self.default_region is not None and not self.default_region.strip():
            raise InputError(
                "default_region", self.default_region, "give a catalog region such as 'country:NL'"
            )


@dataclass(frozen=True)
class CostedUsage:
    """A record with the cost, energy and CO2e flopwise attributes to it, and how each was obtained.

    ``record`` is the input with ``x_energy_kwh`` and ``x_co2e_kg`` filled in where they were computed.
    ``assumptions`` says, in words, what each computed value rests on.
    """

    record: UsageRecord
    cost_usd: Decimal | None
    cost_basis: str  # billed | catalog-onprem | catalog-cloud | none
    energy_basis: str  # measured | estimated | none
    idle_device_hours: float | None
    idle_cost_usd: Decimal | None
    usd_per_device_h: Decimal | None = None
    region_id: str | None = None
    assumptions: tuple[str, ...] = field(default=())

    @property
    def used_cost_usd(self) -> Decimal | None:
        """The cost by utilization: cost by allocation minus idle cost (None when either is unknown)."""
        if self.cost_usd is None:
            return None
        if self.idle_cost_usd is None:
            return None
        return self.cost_usd - self.idle_cost_usd


def _money(value: Decimal | float) -> Decimal:
    return money.from_float(value, "cost_usd", MONEY_QUANTUM)


def _frac(value: float) -> float:
    return min(1.0, max(0.0, value))


class Coster:
    """Prices records against one catalog; lookups of devices, offerings and regions are memoized."""

    def __init__(self, catalog: Catalog, options: CostingOptions | None = None) -> None:
        self.catalog = catalog
        self.options = options or CostingOptions()
        self._devices: dict[str, Device | None] = {}
        self._cloud_price: dict[str, Decimal | None] = {}
        self._regions: dict[tuple[str | None, str | None], Region | None] = {}
        self._default_region: Region | None = None
        # per-device and per-region constants of cost(): the notes it writes and the power at unknown use
        self._notes: dict[tuple[str, str], str] = {}
        self._onprem_default_rate: dict[str, Decimal] = {}
        if self.options.default_region is not None:
            # an unknown default region is the caller's mistake: raise UnknownRegionError with suggestions
            self._default_region = catalog.region(self.options.default_region)

    # --- lookups ------------------------------------------------------------------------------------------

    def device(self, name: str | None) -> Device | None:
        """The catalog device called *name*, or None when it does not resolve."""
        if not name:
            return None
        if name not in self._devices:
            try:
                self._devices[name] = self.catalog.device(name)
            except CatalogError:
                self._devices[name] = None
        return self._devices[name]

    def cheapest_on_demand_usd_per_device_h(self, device_id: str) -> Decimal | None:
        """The lowest on-demand price per device-hour among the catalog's offerings of *device_id*."""
        if device_id not in self._cloud_price:
            prices = [
                p
                for o in self.catalog.offerings_for(device_id)
                if (p := price_per_device_h(o, "on-demand")) is not None
            ]
            self._cloud_price[device_id] = min(prices) if prices else None
        return self._cloud_price[device_id]

    def region(self, provider: str | None, region_id: str | None) -> Region | None:
        """The catalog region of a record: ``<provider prefix>:<RegionId>``, then ``RegionId`` alone, then the
        default region; None when nothing resolves."""
        key = (provider, region_id)
        if key not in self._regions:
            found = record_region(self.catalog.regions, provider, region_id)
            self._regions[key] = found if found is not None else self._default_region
        return self._regions[key]

    # --- costing ------------------------------------------------------------------------------------------

    def cost(self, record: UsageRecord) -> CostedUsage:
        """Cost, energy, CO2e and idle of *record* by the rules in the module docstring."""
        notes: list[str] = []
        device = self.device(record.x_device_type)
        hours = record.x_device_hours
        util = record.x_gpu_utilization
        if util is not None:
            util = _frac(util)
        if hours is not None and hours < 0:
            hours = None  # parsers reject negative quantities; never price one

        # energy (accelerator)
        energy_kwh = record.x_energy_kwh
        if energy_kwh is not None and energy_kwh >= 0:
            energy_basis = "measured"
        elif device is not None and hours is not None:
            activity = util if util is not None else UNKNOWN_UTILIZATION_ACTIVITY_FRAC
            if util is None:
                notes.append(self._note("utilization-unknown", ""))
            energy_kwh = float(device_power_w(device.tdp_w, device.idle_w, activity)) * hours / KILO
            energy_basis = "estimated"
            notes.append(self._note("energy", device.id))
        else:
            energy_kwh = None
            energy_basis = "none"

        # cost by allocation
        cost_usd: Decimal | None = None
        usd_per_device_h: Decimal | None = None
        currency = record.billing_currency
        if currency and currency != _USD:
            currency = currency.strip().upper()
        if record.billed_cost is not None and currency in (None, "", _USD):
            cost_usd, cost_basis = _money(record.billed_cost), "billed"
        elif record.billed_cost is not None:
            cost_basis = "none"
            notes.append(f"billed in {currency}: no USD cost (flopwise does not convert currencies)")
        elif device is not None and hours is not None:
            profile = self.catalog.onprem.get(device.id) if self.options.prefer_onprem else None
            if profile is not None:
                usd_per_device_h = self._onprem_usd_per_device_h(device, profile, energy_kwh, hours)
                cost_basis = "catalog-onprem"
                notes.append(self._note("onprem", device.id))
            else:
                usd_per_device_h = self.cheapest_on_demand_usd_per_device_h(device.id)
                cost_basis = "catalog-cloud" if usd_per_device_h is not None else "none"
                if usd_per_device_h is not None:
                    notes.append(self._note("cloud", device.id))
            if usd_per_device_h is not None:
                cost_usd = _money(usd_per_device_h * Decimal(repr(hours)))
        else:
            cost_basis = "none"

        # idle
        idle_h: float | None = None
        idle_cost: Decimal | None = None
        is_idle_allocation = bool(record.x_extra) and record.x_extra.get("x_OpenCostSpecial") == "idle"
        idle_share = 1.0 if is_idle_allocation else (None if util is None else 1.0 - util)
        if idle_share is not None and hours is not None:
            idle_h = hours * idle_share
        if idle_share is not None and cost_usd is not None and cost_usd > 0:
            idle_cost = _money(cost_usd * Decimal(repr(idle_share)))

        # CO2e
        region = self.region(record.provider_name, record.region_id)
        co2e = record.x_co2e_kg
        if co2e is None and energy_kwh is not None and region is not None:
            co2e = float(co2e_kg(energy_kwh * region.pue, region.grid_gco2e_per_kwh))
            notes.append(self._note("co2e", region.id))
        return CostedUsage(
            record=_with_energy(record, energy_kwh, co2e),
            cost_usd=cost_usd,
            cost_basis=cost_basis,
            energy_basis=energy_basis,
            idle_device_hours=idle_h,
            idle_cost_usd=idle_cost,
            usd_per_device_h=usd_per_device_h,
            region_id=region.id if region is not None else None,
            assumptions=tuple(notes),
        )

    def _note(self, kind: str, item_id: str) -> str:
        """The assumption note of *kind* about a device or region (the same text for every record: memoized)."""
        key = (kind, item_id)
        note = self._notes.get(key)
        if note is None:
            if kind == "utilization-unknown":
                activity = UNKNOWN_UTILIZATION_ACTIVITY_FRAC
                note = f"utilization unknown: energy at activity {activity:g} of the idle-to-TDP range"
            elif kind == "energy":
                device = self.catalog.device(item_id)
                note = (
                    f"energy estimated: {device.id} {device.idle_w:g}-{device.tdp_w:g} W linear power model"
                )
            elif kind == "onprem":
                profile = self.catalog.onprem[item_id]
                note = (
                    f"priced on-prem: {item_id} ${profile.purchase_usd} over {profile.lifetime_years:g} y, "
                    f"{profile.electricity_usd_per_kwh} USD/kWh, PUE {profile.pue:g}"
                )
            elif kind == "cloud":
                note = f"priced at the cheapest on-demand offering of {item_id}"
            else:  # co2e
                region = self.catalog.region(item_id)
                note = f"CO2e: {region.id} grid {region.grid_gco2e_per_kwh:g} gCO2e/kWh, PUE {region.pue:g}"
            self._notes[key] = note
        return note

    def _onprem_usd_per_device_h(
        self, device: Device, profile: OnPremProfile, energy_kwh: float | None, hours: float
    ) -> Decimal:
        """:meth:`_onprem_rate`, memoized per device for records without a usable power (hours == 0)."""
        if energy_kwh is not None and hours > 0:
            return self._onprem_rate(device, profile, energy_kwh, hours)
        rate = self._onprem_default_rate.get(device.id)
        if rate is None:
            rate = self._onprem_default_rate[device.id] = self._onprem_rate(device, profile, None, hours)
        return rate

    @staticmethod
    def _onprem_rate(
        device: Device, profile: OnPremProfile, energy_kwh: float | None, hours: float
    ) -> Decimal:
        """USD per device-hour of an owned device: capital plus electricity at the wall power the record shows."""
        device_w = energy_kwh * KILO / hours if energy_kwh is not None and hours > 0 else math.inf
        if not math.isfinite(device_w):
            # no energy, no hours, or energy over a vanishing span (e.g. 1 kWh in 5e-324 h): the power is unknown
            device_w = float(device_power_w(device.tdp_w, device.idle_w, UNKNOWN_UTILIZATION_ACTIVITY_FRAC))
        wall_w = device_w * (1.0 + host_power_frac(device))
        return Decimal(repr(float(onprem_usd_per_device_h(profile, wall_w, profile.pue))))


#: UsageRecord has no ``__post_init__`` (no validation on construction), so a copy with two fields changed can
#: skip ``dataclasses.replace``'s generic path (a third of the time of costing a row)
_RECORD_HAS_POST_INIT = hasattr(UsageRecord, "__post_init__")


def _with_energy(record: UsageRecord, energy_kwh: float | None, co2e: float | None) -> UsageRecord:
    """*record* with ``x_energy_kwh`` and ``x_co2e_kg`` set: the record itself when neither changes."""
    if energy_kwh is record.x_energy_kwh and co2e is record.x_co2e_kg:
        return record
    if _RECORD_HAS_POST_INIT:
        return replace(record, x_energy_kwh=energy_kwh, x_co2e_kg=co2e)
    out = object.__new__(UsageRecord)
    fields_ = out.__dict__
    fields_.update(record.__dict__)
    fields_["x_energy_kwh"] = energy_kwh
    fields_["x_co2e_kg"] = co2e
    return out


def cost_usage(record: UsageRecord, catalog: Catalog, options: CostingOptions | None = None) -> CostedUsage:
    """:meth:`Coster.cost` for one record (build a :class:`Coster` once to price many)."""
    return Coster(catalog, options).cost(record)
