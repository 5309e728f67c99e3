"""Pick the price a workload pays for a device: the cheapest matching offering, or the on-prem profile.

Pure lookup over a loaded catalog (no I/O). The estimator takes the result as numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from flopwise import money
from flopwise.catalog.types import Offering, OnPremProfile, Region
from flopwise.errors import UnsupportedError
from flopwise.units import PRICE_STEP
from flopwise.vocab import PRICING_KINDS, pricing_kind

__all__ = ["PRICING_KINDS", "PriceQuote", "quote_price"]

_COLUMN = {"on-demand": "on_demand_usd_per_h", "spot": "spot_usd_per_h", "reserved": "reserved_usd_per_h"}


@dataclass(frozen=True)
class PriceQuote:
    """The price basis of an estimate. Exactly one of ``usd_per_device_h`` (cloud) or ``onprem`` is set."""

    pricing: str
    usd_per_device_h: Decimal | None
    offering: Offering | None
    onprem: OnPremProfile | None
    region: Region | None

    def describe(self) -> str:
        if self.offering is not None:
            o = self.offering
            return f"{o.provider} {o.instance_type} ({o.region}, {self.pricing}, {o.device_count} devices/instance)"
        if self.onprem is not None:
            return (
                f"on-prem: purchase ${self.onprem.purchase_usd:,} over {self.onprem.lifetime_years:g} years"
            )
        return "no price"

    def to_dict(self) -> dict:
        o = self.offering
        return {
            "pricing": self.pricing,
            "usd_per_device_h": self.usd_per_device_h,
            "offering_id": o.id if o else None,
            "provider": o.provider if o else ("onprem" if self.onprem else None),
            "instance_type": o.instance_type if o else None,
            "region": self.region.id if self.region else None,
            "source_url": (o.source_url if o else self.onprem.source_url if self.onprem else None),
        }


def price_per_device_h(offering: Offering, pricing: str) -> Decimal | None:
    """Instance price of *pricing* kind divided by the devices in the instance."""
    price = getattr(offering, _COLUMN[pricing])
    if price is None:
        return None
    return money.quantize(price / offering.device_count, PRICE_STEP)


def quote_price(
    offerings: Iterable[Offering],
    onprem: OnPremProfile | None,
    device_id: str,
    pricing: str,
    *,
    regions: dict[str, Region] | None = None,
    region_id: str | None = None,
    provider: str | None = None,
    min_vcpus: int | None = None,
) -> PriceQuote:
    """The cheapest per-device-hour price of *pricing* for *device_id*, optionally in one region or provider.

    Raises InputError for an unknown pricing kind and UnsupportedError when nothing matches, naming what is sold.
    """
    pricing = pricing_kind(pricing)
    regions = regions or {}
    if pricing == "onprem":
        if onprem is None:
            raise UnsupportedError(
                f"No on-prem cost profile for device {device_id!r}. Add a row to onprem.csv in your --catalog "
                "directory, or choose --pricing on-demand/spot/reserved."
            )
        return PriceQuote("onprem", None, None, onprem, regions.get(region_id) if region_id else None)
    from flopwise.catalog.cpu import holds_whole_devices

    # a CPU VM smaller than a socket prices a part of the device: only when the caller asks for that many vCPUs
    sold = [
        o
        for o in offerings
        if o.device_id == device_id
        and (holds_whole_devices(o) if min_vcpus is None else o.vcpus >= min_vcpus)
    ]
    matching = [
        o
        for o in sold
        if (region_id is None or o.region == region_id) and (provider is None or o.provider == provider)
    ]
    priced = [(price_per_device_h(o, pricing), o) for o in matching]
    priced = [(p, o) for p, o in priced if p is not None]
    if not priced:
        where = "".join(
            [
                f" in region {region_id!r}" if region_id else "",
                f" from provider {provider!r}" if provider else "",
            ]
        )
        kinds = sorted({k for o in sold for k in _COLUMN if getattr(o, _COLUMN[k]) is not None})
        hint = (
            f"Offerings for it are sold as: {', '.join(kinds)} in "
            f"{', '.join(sorted({o.region for o in sold})[:8])}."
            if sold
            else "No cloud offering in the catalog has it; try --pricing onprem."
        )
        raise UnsupportedError(f"No {pricing} offering of {device_id!r}{where}. {hint}")
    price, best = min(priced, key=lambda po: (po[0], po[1].id))
    return PriceQuote(pricing, price, best, None, regions.get(best.region))
