"""Physical and storage bounds of metered values, in one place: every parser calls these where it builds a
record or a sample, so a value no machine could produce becomes a rejected row (line and reason), never a
record.

Bounds and their sources:

- **GPUs per job** at most ``MAX_DEVICES_PER_JOB`` (1,000,000). The largest single clusters announced hold
  about 200,000 GPUs (xAI Colossus, 2025; Meta's two 24,576-GPU Llama 3 clusters, 2024), so a million is five
  times anything that exists; ``gres/gpu:h100=99999999`` is a typo or a corrupt line, not a job.
- **Utilization** 0-100 % (a 0-1 fraction here): NVML's ``nvmlUtilization_t.gpu`` and DCGM's
  ``DCGM_FI_DEV_GPU_UTIL`` are percentages of time in [0, 100] (NVML API reference, "Device Queries").
- **Power** finite, not negative and at most ``POWER_TDP_FACTOR`` (2x) the device's TDP from the catalog:
  board power may spike above TDP for milliseconds (NVIDIA's H100 power-excursion notes) but a sampled or
  averaged reading above twice the TDP is a unit error (mW read as W) or a corrupt line. With the device
  unknown, at most ``MAX_POWER_W_UNKNOWN_DEVICE`` (2x the largest TDP in the built-in catalog, a GB300 board
  at 1,400 W, rounded up).
- **Money** per record below ``MAX_MONEY_ABS`` (1e12): the store keeps money as integer micro-units on SQLite
  (int64: at most 9.22e12) and ``NUMERIC(20, 6)`` on PostgreSQL (below 1e14); 1e12 leaves room for sums of
  many records. No single billing line of any cloud is a trillion of any currency.
"""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = [
    "MAX_DEVICES_PER_JOB",
    "MAX_MONEY_ABS",
    "MAX_POWER_W_UNKNOWN_DEVICE",
    "POWER_TDP_FACTOR",
    "check_device_count",
    "check_money",
    "check_power_w",
    "check_utilization_frac",
]

MAX_DEVICES_PER_JOB = 1_000_000
POWER_TDP_FACTOR = 2.0
MAX_POWER_W_UNKNOWN_DEVICE = 3_000.0
MAX_MONEY_ABS = Decimal("1e12")


def check_device_count(count: float, field: str = "GPU count") -> float:
    """*count* if it is a finite number of devices from 0 to ``MAX_DEVICES_PER_JOB``; else ValueError."""
    if not math.isfinite(count) or count < 0:
        raise ValueError(f"{field} {count!r} is not a number of devices (finite, 0 or more)")
    if count > MAX_DEVICES_PER_JOB:
        raise ValueError(
            f"{field} {count:,.0f} is more than any cluster holds (at most {MAX_DEVICES_PER_JOB:,} per job); "
            "a typo or a corrupt line"
        )
    return count


def check_utilization_frac(frac: float | None, field: str = "utilization") -> float | None:
    """*frac* (0-1) if it is within 0-100 %; None passes; else ValueError quoting the percentage."""
    if frac is None:
        return None
    if not math.isfinite(frac) or frac < 0 or frac > 1.0 + 1e-9:
        raise ValueError(f"{field} {frac * 100:g} % is outside 0-100 %")
    return frac


def check_power_w(
    power_w: float | None, field: str = "power", tdp_w: float | None = None, device: str | None = None
) -> float | None:
    """*power_w* if finite, not negative and at most 2x *tdp_w* (or ``MAX_POWER_W_UNKNOWN_DEVICE`` when the
    device is unknown); None passes; else ValueError."""
    if power_w is None:
        return None
    if not math.isfinite(power_w) or power_w < 0:
        raise ValueError(f"{field} {power_w!r} W is not a power reading (finite, 0 or more)")
    if tdp_w:
        limit = POWER_TDP_FACTOR * tdp_w
        if power_w > limit:
            raise ValueError(
                f"{field} {power_w:g} W is more than {POWER_TDP_FACTOR:g}x the {tdp_w:g} W TDP of "
                f"{device or 'the device'}; a unit error or a corrupt line"
            )
    elif power_w > MAX_POWER_W_UNKNOWN_DEVICE:
        raise ValueError(
            f"{field} {power_w:g} W is more than any accelerator draws (at most {MAX_POWER_W_UNKNOWN_DEVICE:g} W)"
        )
    return power_w


def check_money(value: Decimal | None, field: str = "cost") -> Decimal | None:
    """*value* if finite and below ``MAX_MONEY_ABS`` in magnitude (what the store holds); None passes."""
    if value is None:
        return None
    if not value.is_finite():
        raise ValueError(f"{field} {value} is not a finite amount")
    if abs(value) >= MAX_MONEY_ABS:
        raise ValueError(
            f"{field} {value:.6g} is beyond what one billing line can be (|amount| below {MAX_MONEY_ABS:.0e})"
        )
    return value
