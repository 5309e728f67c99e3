"""Input validation and scalar/array handling shared by estimate_train and estimate_serve."""

from __future__ import annotations

from dataclasses import fields
from decimal import Decimal
from typing import Any

import numpy as np

from flopwise.errors import InputError

__all__ = ["Inputs", "check_choice", "check_int", "jsonable"]


class Inputs:
    """Collects numeric arguments, validates them and remembers whether any was an array.

    ``num`` returns a float (scalar input) or a float64 array (array input); ``finish`` broadcasts results to the
    common shape of the array inputs, or turns 0-d results into plain floats when every input was a scalar.
    """

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self._inputs: list[np.ndarray] = []  # the arrays num() returned (may be the caller's own)
        self._shape: tuple[int, ...] | None = None

    @property
    def is_vector(self) -> bool:
        return bool(self.shapes)

    def num(
        self,
        value: Any,
        name: str,
        *,
        max_value: float,
        min_value: float = 0.0,
        allow_min: bool = False,
        integer: bool = False,
    ) -> Any:
        if isinstance(value, bool) or value is None:
            raise InputError(name, value, "give a number")
        if isinstance(value, Decimal):
            value = float(value)
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise InputError(name, value, "give a number or an array of numbers") from None
        if arr.size == 0:
            raise InputError(name, value, "give at least one value")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(name, arr[bad].flat[0].item(), "give a finite number")
        low = arr < min_value if allow_min else arr <= min_value
        if low.any():
            bound = f"at least {min_value:g}" if allow_min else f"greater than {min_value:g}"
            raise InputError(name, arr[low].flat[0].item(), f"must be {bound}")
        high = arr > max_value
        if high.any():
            raise InputError(name, arr[high].flat[0].item(), f"must be at most {max_value:g}")
        if integer:
            frac = arr != np.round(arr)
            if frac.any():
                raise InputError(name, arr[frac].flat[0].item(), "must be a whole number")
        if arr.ndim == 0:
            return float(arr)
        self.shapes.append(arr.shape)
        self._inputs.append(arr)
        self._shape = None
        return arr

    def shape(self) -> tuple[int, ...]:
        if self._shape is not None:
            return self._shape
        try:
            self._shape = np.broadcast_shapes(*self.shapes)
            return self._shape
        except ValueError:
            raise InputError(
                "arrays", [list(s) for s in self.shapes], "array arguments must broadcast together"
            ) from None

    def finish(self, value: Any) -> Any:
        """Broadcast *value* to the common shape (vector mode) or make it a plain float/bool (scalar mode)."""
        if value is None:
            return None
        if self.is_vector:
            shape = self.shape()
            if (
                isinstance(value, np.ndarray)
                and value.shape == shape
                and value.base is None
                and value.flags.writeable
                and not any(value is a for a in self._inputs)
            ):
                return value  # a fresh full-shape result: no copy needed
            return np.broadcast_to(np.asarray(value), shape).copy()
        if isinstance(value, np.ndarray):
            value = value.item()
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        return float(value)


def check_choice(value: Any, name: str, options: tuple[str, ...] | dict) -> str:
    """*value* lower-cased if it is one of *options*, else InputError listing them."""
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in options:
        raise InputError(name, value, "use one of " + ", ".join(repr(o) for o in options))
    return key


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """*value* as an int in [low, high], else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) or value != int(value):
        raise InputError(name, value, f"give a whole number from {low} to {high}")
    if not low <= int(value) <= high:
        raise InputError(name, value, f"give a whole number from {low} to {high}")
    return int(value)


def jsonable(obj: Any) -> Any:
    """A JSON-ready copy: dataclasses to dicts, arrays to lists, Decimal to str, numpy scalars to Python."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()] if obj.dtype == object else obj.tolist()
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
