"""Named constants and parsing of human quantities ("2T" tokens, "500ms", "30d", "80GB").

Every conversion in flopwise goes through here; no bare magic numbers elsewhere.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from flopwise.errors import InputError

__all__ = [
    "BYTES_PER_GB",
    "BYTES_PER_GIB",
    "BYTES_PER_MB",
    "CENT",
    "GIGA",
    "G_PER_KG",
    "H_PER_MONTH",
    "H_PER_YEAR",
    "J_PER_KWH",
    "KILO",
    "MEGA",
    "MICRO_USD",
    "MILLIJOULES_PER_J",
    "MILLIWATTS_PER_W",
    "MS_PER_S",
    "PETA",
    "S_PER_DAY",
    "S_PER_H",
    "S_PER_YEAR",
    "TERA",
    "PRICE_STEP",
    "W_PER_KW",
    "check_positive",
    "parse_count",
    "parse_duration_s",
]

KILO = 1e3
MEGA = 1e6
GIGA = 1e9
TERA = 1e12
PETA = 1e15
EXA = 1e18
BYTES_PER_GB = 1e9
BYTES_PER_GIB = 2.0**30
S_PER_H = 3600.0
S_PER_DAY = 86400.0
S_PER_YEAR = 365.0 * S_PER_DAY
H_PER_YEAR = 8760.0
#: an average month, as cloud price pages quote monthly prices (8760 / 12)
H_PER_MONTH = H_PER_YEAR / 12
J_PER_KWH = 3.6e6
G_PER_KG = 1e3
MS_PER_S = 1e3
W_PER_KW = 1e3
#: NVML and DCGM report energy in millijoules and power in milliwatts
MILLIJOULES_PER_J = 1e3
MILLIWATTS_PER_W = 1e3
BYTES_PER_MB = 1e6

# money quanta (exact Decimals; the rounding rule is in flopwise.money)
#: amounts shown and reported: whole cents
CENT = Decimal("0.01")
#: prices per device-hour and per 1M tokens: a hundredth of a cent (an 8-GPU instance's price / 8 stays exact)
PRICE_STEP = Decimal("0.0001")
#: amounts stored in the ledger and budgets (``NUMERIC(20, 6)``): micro-dollars
MICRO_USD = Decimal("0.000001")

_SUFFIX = {"": 1.0, "k": KILO, "m": MEGA, "b": GIGA, "g": GIGA, "t": TERA, "p": PETA, "e": EXA}
_COUNT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgtpe]?)\s*$", re.IGNORECASE)
_DUR = {
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": S_PER_H,
    "d": S_PER_DAY,
    "w": 7 * S_PER_DAY,
    "y": S_PER_YEAR,
}
_DUR_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|sec|min|s|m|h|d|w|y)?\s*$", re.IGNORECASE)


def parse_count(text: str | float | int, field: str = "value", max_value: float = 1e30) -> float:
    """Parse "2T", "1.5e12", "300B", "7b" or a number into a positive float.

    Suffixes: k=1e3, M=1e6, B/G=1e9, T=1e12, P=1e15, E=1e18 (case-insensitive).
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _COUNT_RE.match(str(text))
        if not m:
            raise InputError(field, text, "give a number, optionally with a suffix k, M, B, T, P (e.g. '2T')")
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    return check_positive(value, field, max_value)


def parse_duration_s(text: str | float | int, field: str = "duration", require_unit: bool = False) -> float:
    """Parse "500ms", "30d", "2h", "90" (seconds) into seconds.

    With *require_unit*, a bare number is refused (for fields where "30" could be days as well as seconds).
    """
    if isinstance(text, (int, float)):
        return check_positive(float(text), field, 1e12)
    m = _DUR_RE.match(str(text))
    if not m:
        raise InputError(field, text, "give a duration such as '500ms', '90s', '2h', '30d'")
    if require_unit and not m.group(2):
        n = m.group(1)
        raise InputError(field, text, f"a bare number is ambiguous; give a unit, e.g. '{n}d' (days) or '{n}h' (hours)")
    return check_positive(float(m.group(1)) * _DUR[(m.group(2) or "s").lower()], field, 1e12)


def check_positive(value: float, field: str, max_value: float = 1e30, allow_zero: bool = False) -> float:
    """Return *value* if finite, positive (or zero when allowed) and at most *max_value*; else raise InputError."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise InputError(field, value, "give a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(field, value, "must be " + ("zero or more" if allow_zero else "greater than zero"))
    if value > max_value:
        raise InputError(field, value, f"must be at most {max_value:g}")
    return float(value)
