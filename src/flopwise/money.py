"""Money: one type, one rounding rule, and the only places a number becomes money.

* Money is ``decimal.Decimal`` in US dollars. It is rounded with one rule, :data:`ROUNDING` (half-even, the
  "banker's rounding" of IEEE 754 and of Python's ``round``), to a named step from :mod:`flopwise.units`:
  ``CENT`` for amounts shown and reported, ``PRICE_STEP`` for prices per device-hour, ``MICRO_USD`` for
  what the ledger and budgets store (``NUMERIC(20, 6)``).
* Money that *enters* (a price, a budget, a bill typed or sent by a user) goes through :func:`to_money`, which
  takes a ``Decimal``, an ``int`` or a decimal string and refuses floats: a binary float is not an exact amount,
  and ``0.1 + 0.2`` must never become a budget.
* Money that is *computed* from physics (device-hours x price, energy x tariff: floats by nature) becomes a
  Decimal through :func:`from_float` / :func:`from_floats`, via the shortest ``repr`` of the float (so ``0.1``
  becomes ``Decimal('0.1')``, not ``0.1000000000000000055...``), then rounded.

Pure, stdlib only (numpy is imported by :func:`from_floats` alone, for arrays it is given).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from flopwise.errors import InputError
from flopwise.units import CENT, MICRO_USD, PRICE_STEP

__all__ = [
    "CENT",
    "MICRO_USD",
    "ROUNDING",
    "PRICE_STEP",
    "from_float",
    "from_floats",
    "quantize",
    "to_money",
]

#: the one rounding rule of flopwise money
ROUNDING = ROUND_HALF_EVEN
#: far above any price, budget or bill, below where Decimal.quantize raises InvalidOperation
_MAX = Decimal("1e20")


def quantize(value: Decimal, step: Decimal = CENT) -> Decimal:
    """*value* rounded half-even to a multiple of *step* (``CENT``, ``PRICE_STEP`` or ``MICRO_USD``)."""
    return value.quantize(step, rounding=ROUNDING)


def _bounded(dec: Decimal, value: object, field: str, step: Decimal) -> Decimal:
    if not dec.is_finite():
        raise InputError(field, value, "give a finite amount")
    if abs(dec) >= _MAX:
        raise InputError(field, value, "give an amount below 1e20")
    return quantize(dec, step)


def to_money(value: Decimal | int | str, field: str = "amount", step: Decimal = CENT) -> Decimal:
    """Money (or a quota) that enters flopwise: a Decimal, int or decimal string, rounded to *step*; floats are
    refused.

    Raises InputError (a ValueError) naming *field* for floats, booleans, text that is not a number, NaN,
    infinities and magnitudes of 1e20 or more.
    """
    if isinstance(value, (float, bool)):
        raise InputError(
            field,
            value,
            f"amounts are exact: pass a Decimal or a decimal string such as {str(value)!r}, not a {type(value).__name__}",
        )
    try:
        dec = value if isinstance(value, Decimal) else Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise InputError(field, value, "give a decimal amount such as '12.50'") from None
    return _bounded(dec, value, field, step)


def from_float(value: float | Decimal, field: str = "amount", step: Decimal = CENT) -> Decimal:
    """Money computed in floating point (device-hours x price ...) as a Decimal rounded to *step*.

    The float goes through its shortest ``repr``, so ``0.1`` is ``Decimal('0.1')``; a Decimal is only rounded.
    NaN and infinities raise InputError naming *field* (a computation went wrong; never a silent 0).
    """
    if isinstance(value, Decimal):
        return _bounded(value, value, field, step)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(field, value, "give a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(field, value, "the computed amount is not finite; check the inputs it comes from")
    return _bounded(Decimal(repr(float(value))), value, field, step)


#: steps (in units of *step*) above which, or a fraction this close to a half step, an element takes the exact
#: per-element path of :func:`from_floats`
_FAST_MAX_STEPS = 1e15
_TIE_TOL = 1e-6


def from_floats(values: Any, field: str = "amount", step: Decimal = CENT) -> Any:
    """:func:`from_float` of every element of a numpy array: an object array of Decimal of the same shape.

    Vectorized for a power-of-ten *step* (CENT, PRICE_STEP, MICRO_USD): whole steps are rounded in numpy and one
    Decimal is built per distinct amount (amounts repeat a lot across an estimate grid) and shared. Elements
    within 1e-6 step of a half step, non-finite (which raise, as :func:`from_float` does), huge, or a negative
    zero take :func:`from_float` itself, so every result equals it (tested).
    """
    import numpy as np

    arr = np.asarray(values, dtype=float)
    flat = arr.ravel()
    sign, digits, exponent = step.as_tuple()
    if sign or digits != (1,) or not isinstance(exponent, int):  # not a power of ten: the exact path only
        out = np.empty(arr.shape, dtype=object)
        out.ravel()[:] = [from_float(x, field, step) for x in flat.tolist()]
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        units = flat * float(10 ** (-exponent))
        whole = np.rint(units)
        fast = (
            np.isfinite(units)
            & (np.abs(units) < _FAST_MAX_STEPS)
            & (np.abs(np.abs(units - np.floor(units)) - 0.5) > _TIE_TOL)
            & ~((whole == 0.0) & np.signbit(units))  # -0.00 keeps its sign, as Decimal does
        )
    ints = np.where(fast, whole, 0.0).astype(np.int64)
    distinct, inverse = np.unique(ints, return_inverse=True)
    table = np.empty(len(distinct), dtype=object)
    table[:] = [Decimal(i).scaleb(exponent) for i in distinct.tolist()]
    out = table[inverse.ravel()]
    for k in np.flatnonzero(~fast).tolist():
        out[k] = from_float(float(flat[k]), field, step)
    return out.reshape(arr.shape)
