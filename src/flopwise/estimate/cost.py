"""Cost terms: price per device-hour (cloud, given by the caller, or on-prem from an OnPremProfile) and money out.

Money leaves this module as ``Decimal`` in cents (``flopwise.money``: half-even); arrays give object arrays of Decimal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flopwise import money
from flopwise.catalog.types import OnPremProfile
from flopwise.units import H_PER_YEAR, KILO

__all__ = ["onprem_usd_per_device_h", "to_money"]


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


def to_money(usd: Any) -> Any:
    """Computed USD amount(s) in cents (:func:`flopwise.money.from_float`): a float gives a Decimal, an array an
    object array of Decimal. NaN or infinite cost raises InputError instead of printing ``NaN`` dollars."""
    if isinstance(usd, np.ndarray):
        return money.from_floats(usd, "cost_usd")
    return money.from_float(usd, "cost_usd")
