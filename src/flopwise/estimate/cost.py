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


#: cents above which (or a fraction this close to a half cent) an amount takes the exact per-element path
_FAST_MAX_CENTS = 1e15
_TIE_TOL = 1e-6


def _many(usd: np.ndarray) -> np.ndarray:
    """``[_one(x) for x in usd]`` as a flat object array, much faster: whole cents are rounded in numpy, one
    ``Decimal(cents).scaleb(-2)`` is built per distinct amount (amounts in cents repeat a lot across a grid) and
    shared; amounts within 1e-6 cent of a half cent, non-finite, huge or negative zero go through ``_one`` so
    every result equals it."""
    flat = usd.ravel()
    cents = flat * 100.0
    whole = np.rint(cents)
    exact = (
        np.isfinite(cents)
        & (np.abs(cents) < _FAST_MAX_CENTS)
        & (np.abs(np.abs(cents - np.floor(cents)) - 0.5) > _TIE_TOL)
        & ~((whole == 0.0) & np.signbit(cents))  # -0.00 keeps its sign, as Decimal does
    )
    ints = np.where(exact, whole, 0.0).astype(np.int64)
    distinct, inverse = np.unique(ints, return_inverse=True)
    table = np.empty(len(distinct), dtype=object)
    table[:] = [Decimal(i).scaleb(-2) for i in distinct.tolist()]
    out = table[inverse.ravel()]
    for k in np.flatnonzero(~exact).tolist():
        out[k] = _one(flat[k])
    return out


def to_money(usd):
    """USD amount(s) as Decimal quantized to cents: a float gives a Decimal, an array an object array of Decimal."""
    if isinstance(usd, np.ndarray):
        return _many(usd.astype(float, copy=False)).reshape(usd.shape)
    return _one(usd)
