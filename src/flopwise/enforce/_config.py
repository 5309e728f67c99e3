"""Checks shared by the adapters' YAML configs: a mapping with known keys (a misspelled key is an error with a
suggestion) and bounded decimal amounts (prices, hours), each error naming the field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from flopwise.errors import InputError, suggest

__all__ = ["config_decimal", "config_mapping"]


def config_mapping(data: Any, keys: Sequence[str], *, source: str, expected: str) -> Mapping[str, Any]:
    """*data* as a mapping whose every key is one of *keys*; *expected* says what the mapping should hold."""
    if not isinstance(data, Mapping):
        raise InputError(source, data, f"give a mapping with {expected}")
    for key in data:
        if key not in keys:
            hint = suggest(str(key), keys)
            raise InputError(f"{source}.{key}", key, f"use one of {', '.join(keys)}"
                             + (f" (did you mean {hint[0]}?)" if hint else ""))  # fmt: skip
    return data


def config_decimal(value: Any, field: str, what: str, *, positive: bool = False) -> Decimal:
    """*value* as a finite Decimal from 0 (above 0 when *positive*) up to 1,000,000."""
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InputError(field, value, f"give {what}") from None
    if not d.is_finite() or d < 0 or d > 1_000_000 or (positive and d == 0):
        raise InputError(field, value, f"give {what} {'above 0' if positive else 'from 0'} up to 1000000")
    return d
