"""Cost terms: price per device-hour (cloud, given by the caller, or on-prem from an OnPremProfile) and money out.

Money leaves this module as ``Decimal`` quantized to cents (ROUND_HALF_EVEN); arrays give object arrays of Decimal.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

from flopwise.catalog.types import OnPremProfile
from flopwise.units import H_PER_YEAR, KILO

__all__ = ["CENT", "onprem_usd_per_device_h", "to_money"]

CENT = Decimal("0.01")


def onprem_usd_per_device_h(profile: OnPremProfile, wall_power_w_per_device, pue):
    """On-prem cost of one device-hour:
    ``purchase * (1 + server_overhead) / (lifetime_years * 8760) + power_kW * PUE * electricity_usd_per_kWh``.

    Straight-line depreciation with no residual value, and electricity at the facility meter (total cost of
    ownership as in Barroso, Hoelzle & Ranganathan, "The Datacenter as a Computer", 3rd ed., ch. 6).
    *wall_power_w_per_device* includes the host share.
    """
    capital = (
        float(profile.purchase_usd)
        * (1.0 + profile.server_overhead_frac)
        / (profile.lifetime_years * H_PER_YEAR)
    )
    return capital + wall_power_w_per_device / KILO * pue * float(profile.electricity_usd_per_kwh)


def _one(x: float) -> Decimal:
    return Decimal(repr(float(x))).quantize(CENT, rounding=ROUND_HALF_EVEN)


def to_money(usd):
    """USD amount(s) as Decimal quantized to cents: a float gives a Decimal, an array an object array of Decimal."""
    if isinstance(usd, np.ndarray):
        flat = [_one(x) for x in usd.ravel().tolist()]
        out = np.empty(usd.shape, dtype=object)
        out.ravel()[:] = flat
        return out
    return _one(usd)
