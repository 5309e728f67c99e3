"""What the governance core knows about one compute request: ``RequestFacts``.

The server computes these with the estimator (``flopwise.estimate.estimate_train`` / ``estimate_serve``)
or, on the admission path, with :func:`admission_facts` (the worst case of device count x maximum duration
x price), then hands them to :func:`flopwise.govern.decide`. Nothing here reads a clock, a file or a DB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from flopwise.errors import InputError
from flopwise.units import G_PER_KG, J_PER_KWH, S_PER_H
from flopwise.vocab import PRICING_KINDS, WORKLOAD_KINDS, pricing_kind, workload_kind

__all__ = [
    "DATA_CLASSIFICATIONS",
    "PRICING_KINDS",
    "WORKLOAD_KINDS",
    "RequestFacts",
    "admission_facts",
    "to_decimal",
]

#: common data classification labels; any non-empty label is accepted, these are the documented ones
DATA_CLASSIFICATIONS = ("public", "internal", "confidential", "restricted", "biological-sequence")

#: largest magnitude accepted for any Decimal input (far above any budget, price or FLOP line)
MAX_DECIMAL = Decimal("1e40")


def to_decimal(value: object, field: str) -> Decimal:
    """*value* (Decimal, int, str or float) as a finite Decimal; floats go through ``repr`` so 0.1 stays 0.1."""
    if isinstance(value, bool):
        raise InputError(field, value, "give a number (a decimal string such as '12.50' for money)")
    try:
        if isinstance(value, Decimal):
            out = value
        elif isinstance(value, int):
            out = Decimal(value)
        elif isinstance(value, float):
            out = Decimal(repr(value))
        elif isinstance(value, str):
            out = Decimal(value.strip())
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise InputError(field, value, "give a number (a decimal string such as '12.50' for money)") from None
    if not out.is_finite():
        raise InputError(field, value, "give a finite number")
    if abs(out) > MAX_DECIMAL:
        raise InputError(field, value, f"must be at most {MAX_DECIMAL} in magnitude")
    return out


def _finite_nonneg(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(field, value, "give a finite number")
    if value < 0:
        raise InputError(field, value, "must be zero or more")
    return float(value)


@dataclass(frozen=True)
class RequestFacts:
    """The estimated size of one compute request, and who asks for it where.

    Units are in the names: ``flops`` is the total floating-point (or integer) operations the request
    performs, ``duration_s`` its wall-clock length, ``device_hours`` = device_count x duration_s / 3600,
    ``cost_usd`` a Decimal, ``energy_kwh`` facility energy (PUE included) and ``co2e_kg`` its emissions.

    ``base_model_flops`` is the training compute of the model a fine-tune starts from (for the EU AI Act
    one-third modification rule); ``peak_flop_per_s_per_device`` is the device's highest dense peak over
    data types (for the US large-cluster threshold). Both are optional.
    """

    workload: str
    flops: float
    device_type: str
    device_class: str
    device_count: int
    duration_s: float
    device_hours: float
    cost_usd: Decimal
    energy_kwh: float
    co2e_kg: float
    provider: str = ""
    region: str = ""
    pricing: str = "on-demand"
    data_classification: str = "internal"
    requester: str = ""
    requester_teams: tuple[str, ...] = ()
    project: str = ""
    org: str = ""
    base_model_flops: float | None = None
    peak_flop_per_s_per_device: float | None = None

    def __post_init__(self) -> None:
        # one spelling (flopwise.vocab): aliases such as fine_tune or on_demand become the canonical name
        object.__setattr__(self, "workload", workload_kind(self.workload))
        object.__setattr__(self, "pricing", pricing_kind(self.pricing))
        if (
            isinstance(self.device_count, bool)
            or not isinstance(self.device_count, int)
            or self.device_count < 1
        ):
            raise InputError("device_count", self.device_count, "give a whole number of devices, 1 or more")
        for name in ("flops", "duration_s", "device_hours", "energy_kwh", "co2e_kg"):
            _finite_nonneg(getattr(self, name), name)
        for name in ("base_model_flops", "peak_flop_per_s_per_device"):
            value = getattr(self, name)
            if value is not None and _finite_nonneg(value, name) == 0:
                raise InputError(name, value, "must be greater than zero, or left out when unknown")
        if not isinstance(self.cost_usd, Decimal) or not self.cost_usd.is_finite() or self.cost_usd < 0:
            raise InputError("cost_usd", self.cost_usd, "give a Decimal amount of US dollars, zero or more")
        if not self.device_type:
            raise InputError("device_type", self.device_type, "name the catalog device id, e.g. 'h100-sxm'")
        teams = self.requester_teams
        if isinstance(teams, str):
            teams = (teams,)
        if not all(isinstance(t, str) and t for t in teams):
            raise InputError("requester_teams", self.requester_teams, "give a list of team ids (text)")
        object.__setattr__(self, "requester_teams", tuple(teams))


_CONTEXT_FIELDS = (
    "provider", "region", "pricing", "data_classification", "requester", "requester_teams", "project", "org",
    "base_model_flops",
)  # fmt: skip


def admission_facts(
    *,
    workload: str,
    device_type: str,
    device_class: str,
    device_count: int,
    max_duration_s: float,
    usd_per_device_h: Decimal,
    device_power_w: float,
    pue: float,
    grid_gco2e_per_kwh: float,
    peak_flop_per_s_per_device: float | None = None,
    **context: object,
) -> RequestFacts:
    """The worst case a scheduler job can cost: every device busy at full power for the maximum duration.

    device_hours = device_count x max_duration_s / 3600; cost_usd = device_hours x usd_per_device_h;
    energy_kwh = device_count x device_power_w x max_duration_s x pue / 3.6e6 (facility energy, as in
    ``flopwise.estimate.energy``); co2e_kg = energy_kwh x grid_gco2e_per_kwh / 1000; flops = device_count
    x peak_flop_per_s_per_device x max_duration_s (an upper bound at 100 % utilization), 0 when the peak
    is unknown. The admission endpoint reserves exactly these amounts, so a job can never spend more than
    it was admitted for. Other :class:`RequestFacts` fields (provider, region, requester, ...) pass
    through ``context``.
    """
    duration_s = _finite_nonneg(max_duration_s, "max_duration_s")
    if duration_s == 0:
        raise InputError("max_duration_s", max_duration_s, "must be greater than zero (the job's time limit)")
    if isinstance(device_count, bool) or not isinstance(device_count, int) or device_count < 1:
        raise InputError("device_count", device_count, "give a whole number of devices, 1 or more")
    price = to_decimal(usd_per_device_h, "usd_per_device_h")
    if price < 0:
        raise InputError("usd_per_device_h", usd_per_device_h, "must be zero or more")
    power_w = _finite_nonneg(device_power_w, "device_power_w")
    pue_v = _finite_nonneg(pue, "pue")
    if pue_v < 1:
        raise InputError("pue", pue, "power usage effectiveness is 1.0 or more")
    grid = _finite_nonneg(grid_gco2e_per_kwh, "grid_gco2e_per_kwh")
    for key in context:
        if key not in _CONTEXT_FIELDS:
            raise InputError(
                key, context[key], f"admission_facts passes through only {', '.join(_CONTEXT_FIELDS)}"
            )
    device_hours = device_count * duration_s / S_PER_H
    cost = Decimal(device_count) * to_decimal(duration_s, "max_duration_s") * price / Decimal(int(S_PER_H))
    energy_kwh = device_count * power_w * duration_s * pue_v / J_PER_KWH
    peak = peak_flop_per_s_per_device
    flops = device_count * peak * duration_s if peak else 0.0
    return RequestFacts(
        workload=workload,
        flops=flops,
        device_type=device_type,
        device_class=device_class,
        device_count=device_count,
        duration_s=duration_s,
        device_hours=device_hours,
        cost_usd=cost,
        energy_kwh=energy_kwh,
        co2e_kg=energy_kwh * grid / G_PER_KG,
        peak_flop_per_s_per_device=peak,
        **context,  # type: ignore[arg-type]
    )
