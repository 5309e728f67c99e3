"""plan fleet: the cheapest mix of hardware for several services at once, solved as an integer program.

Three layers, each usable on its own:

* :func:`parse_fleet_spec` validates a parsed YAML/JSON mapping into a :class:`FleetSpec` (services with their
  traffic and SLOs, the pricing kinds, providers and regions allowed, an optional on-prem inventory).
* :func:`solve_fleet` is the integer program over plain arrays (:class:`FleetCapacity`): integer instance counts
  per hardware type and integer replica counts per (service, way of running a replica), each service's traffic
  split across hardware types in proportion to the capacity placed there. It is the Mélange formulation
  (Griggs et al. 2024, "Mélange: Cost Efficient Large Language Model Serving by Exploiting GPU Heterogeneity",
  arXiv:2404.14527, Sec. 5) with whole replicas instead of request-size buckets, instance granularity, and
  inventory limits, solved exactly by HiGHS through ``scipy.optimize.milp``. It also solves the same fleet on
  each single hardware type, and reports the best one and the saving of the mix against it.
* :func:`plan_fleet` joins them to the catalog: it asks ``flopwise.plan.candidates`` for every way of running
  one replica of each service and its sustainable request rate under the SLO, groups the candidates by the unit
  that is bought (a cloud instance of one pricing kind, or one on-prem device), solves, and returns a
  :class:`FleetPlan` with ``.to_dict()``.

Pure core: no files, network, clock or environment. See docs/plan-fleet.md for the formulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from flopwise import money
from flopwise.errors import InputError, suggest
from flopwise.units import H_PER_MONTH, PRICE_STEP
from flopwise.vocab import canonical_many

__all__ = [
    "COST_BASES",
    "HOURS_PER_MONTH",
    "MIN_PRECISIONS",
    "FleetCapacity",
    "FleetInventory",
    "FleetPlan",
    "FleetService",
    "FleetSolution",
    "FleetSpec",
    "HardwareType",
    "ReplicaOption",
    "SingleTypeBaseline",
    "parse_fleet_spec",
    "plan_fleet",
    "solve_fleet",
]

#: Average hours in a month (8760 / 12), for the monthly totals.
HOURS_PER_MONTH = H_PER_MONTH  # 730
#: How an on-prem inventory is charged: ``amortized`` (purchase spread over its lifetime, plus electricity) or
#: ``sunk`` (already paid for: only electricity counts).
COST_BASES = ("amortized", "sunk")
#: Lowest precision a service accepts, highest first (as ``plan serve --min-precision``).
MIN_PRECISIONS = ("bf16", "fp8", "int8", "int4")
#: HiGHS wall-clock limit for one integer program; a fleet stopped by it is reported as not proven optimal.
SOLVER_TIME_LIMIT_S = 30.0


# ============================================================================================ the spec


@dataclass(frozen=True)
class FleetService:
    """One service of the fleet: a model, its traffic and its latency targets (p95, milliseconds)."""

    name: str
    model: str
    rps: float
    input_tokens: int
    output_tokens: int
    ttft_p95_ms: float | None = None
    tpot_p95_ms: float | None = None
    min_precision: str = "int4"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "rps": self.rps,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "ttft_p95_ms": self.ttft_p95_ms,
            "tpot_p95_ms": self.tpot_p95_ms,
            "min_precision": self.min_precision,
        }


@dataclass(frozen=True)
class FleetInventory:
    """On-prem devices already owned: device name -> how many, and whether their purchase is ``sunk`` (only
    electricity counts) or ``amortized`` over the lifetime in the on-prem profile."""

    devices: tuple[tuple[str, int], ...] = ()
    cost_basis: str = "amortized"

    def to_dict(self) -> dict:
        return {"devices": dict(self.devices), "cost_basis": self.cost_basis}


@dataclass(frozen=True)
class FleetSpec:
    """A validated fleet file. Build it with :func:`parse_fleet_spec`."""

    services: tuple[FleetService, ...]
    pricing: tuple[str, ...] = ("on-demand",)
    providers: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None
    max_devices: int = 8
    inventory: FleetInventory | None = None

    def to_dict(self) -> dict:
        return {
            "services": [s.to_dict() for s in self.services],
            "pricing": list(self.pricing),
            "providers": None if self.providers is None else list(self.providers),
            "regions": None if self.regions is None else list(self.regions),
            "max_devices": self.max_devices,
            "inventory": None if self.inventory is None else self.inventory.to_dict(),
        }


_SERVICE_KEYS = (
    "name",
    "model",
    "rps",
    "input_tokens",
    "output_tokens",
    "ttft_p95_ms",
    "tpot_p95_ms",
    "min_precision",
)
_TOP_KEYS = ("services", "pricing", "providers", "regions", "max_devices", "inventory")
_INVENTORY_KEYS = ("devices", "cost")


def _check_keys(data: Mapping, allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            close = suggest(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"{where}{key}", data[key], f"{hint}accepted keys: {', '.join(allowed)}")


def _number(value: object, field_path: str, *, integer: bool = False, max_value: float = 1e9) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(field_path, value, "give a number" + (" (a whole number)" if integer else ""))
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise InputError(field_path, value, "give a finite number greater than zero")
    if value > max_value:
        raise InputError(field_path, value, f"must be at most {max_value:g}")
    if integer and float(value) != int(value):
        raise InputError(field_path, value, "give a whole number")
    return float(value)


def _name_list(value: object, field_path: str, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise InputError(field_path, value, "give a non-empty list of names")
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise InputError(f"{field_path}[{i}]", item, "give a non-empty name")
        name = item.strip().lower() if allowed is not None else item.strip()
        if allowed is not None and name not in allowed:
            raise InputError(f"{field_path}[{i}]", item, "accepted: " + ", ".join(allowed))
        if name not in out:
            out.append(name)
    return tuple(out)


def _parse_service(raw: object, where: str) -> FleetService:
    if not isinstance(raw, Mapping):
        raise InputError(where, raw, "give a mapping with name, model, rps, input_tokens, output_tokens")
    _check_keys(raw, _SERVICE_KEYS, f"{where}.")
    for key in ("name", "model", "rps", "input_tokens", "output_tokens"):
        if key not in raw:
            raise InputError(f"{where}.{key}", None, "this field is required")
    for key in ("name", "model"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise InputError(f"{where}.{key}", raw[key], "give a non-empty string")
    slo = {}
    for key in ("ttft_p95_ms", "tpot_p95_ms"):
        value = raw.get(key)
        slo[key] = None if value is None else _number(value, f"{where}.{key}", max_value=1e7)
    precision = raw.get("min_precision", "int4")
    if not isinstance(precision, str) or precision.strip().lower() not in MIN_PRECISIONS:
        raise InputError(f"{where}.min_precision", precision, "accepted: " + ", ".join(MIN_PRECISIONS))
    return FleetService(
        name=raw["name"].strip(),
        model=raw["model"].strip(),
        rps=_number(raw["rps"], f"{where}.rps", max_value=1e7),
        input_tokens=int(_number(raw["input_tokens"], f"{where}.input_tokens", integer=True, max_value=1e7)),
        output_tokens=int(
            _number(raw["output_tokens"], f"{where}.output_tokens", integer=True, max_value=1e7)
        ),
        ttft_p95_ms=slo["ttft_p95_ms"],
        tpot_p95_ms=slo["tpot_p95_ms"],
        min_precision=precision.strip().lower(),
    )


def _parse_inventory(raw: object) -> FleetInventory:
    if not isinstance(raw, Mapping):
        raise InputError("inventory", raw, "give a mapping with 'devices' (device -> count) and 'cost'")
    _check_keys(raw, _INVENTORY_KEYS, "inventory.")
    devices = raw.get("devices")
    if not isinstance(devices, Mapping) or not devices:
        raise InputError(
            "inventory.devices", devices, "give a mapping of device name -> count, e.g. {a100-80gb: 8}"
        )
    items: list[tuple[str, int]] = []
    for name, count in devices.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError("inventory.devices", name, "device names must be non-empty strings")
        n = int(_number(count, f"inventory.devices.{name}", integer=True, max_value=1e6))
        items.append((name.strip(), n))
    cost = raw.get("cost", "amortized")
    if not isinstance(cost, str) or cost.strip().lower() not in COST_BASES:
        raise InputError("inventory.cost", cost, "accepted: " + ", ".join(COST_BASES))
    return FleetInventory(devices=tuple(items), cost_basis=cost.strip().lower())


def parse_fleet_spec(data: Mapping) -> FleetSpec:
    """Validate a parsed fleet file (YAML or JSON, already loaded into a mapping) into a :class:`FleetSpec`.

    Layout (see examples/fleet.yaml)::

        services:                      # required, at least one; names unique
          - {name, model, rps, input_tokens, output_tokens, ttft_p95_ms?, tpot_p95_ms?, min_precision?}
        pricing: [on-demand, spot]     # optional, default [on-demand]; also reserved, onprem (buy more);
                                       # [] with an inventory: owned devices only
        providers: [aws, gcp]          # optional, default all
        regions: [us-east-1]           # optional, default all
        max_devices: 8                 # optional, devices per replica (tensor parallel), default 8
        inventory:                     # optional on-prem devices already owned
          devices: {a100-sxm-80gb: 8}
          cost: sunk                   # or amortized (default)

    Raises InputError naming the field path (``services[1].rps``), the value and what is accepted.
    """
    if not isinstance(data, Mapping):
        raise InputError("fleet file", data, "give a mapping with a 'services' list at the top level")
    _check_keys(data, _TOP_KEYS, "")
    raw_services = data.get("services")
    if not isinstance(raw_services, (list, tuple)) or not raw_services:
        raise InputError("services", raw_services, "give a non-empty list of services")
    services = tuple(_parse_service(s, f"services[{i}]") for i, s in enumerate(raw_services))
    seen: dict[str, int] = {}
    for i, s in enumerate(services):
        if s.name in seen:
            raise InputError(
                f"services[{i}].name", s.name, f"names must be unique; services[{seen[s.name]}] has it"
            )
        seen[s.name] = i
    raw_pricing = data.get("pricing", ["on-demand"])
    if isinstance(raw_pricing, (list, tuple)) and not raw_pricing:
        if data.get("inventory") is None:
            raise InputError(
                "pricing", raw_pricing, "an empty list means 'owned inventory only'; add an inventory"
            )
        pricing: tuple[str, ...] = ()
    else:
        pricing = canonical_many("pricing", _name_list(raw_pricing, "pricing"))
    providers = None if data.get("providers") is None else _name_list(data["providers"], "providers")
    regions = None if data.get("regions") is None else _name_list(data["regions"], "regions")
    max_devices = int(_number(data.get("max_devices", 8), "max_devices", integer=True, max_value=64))
    inventory = None if data.get("inventory") is None else _parse_inventory(data["inventory"])
    return FleetSpec(
        services=services,
        pricing=pricing,
        providers=providers,
        regions=regions,
        max_devices=max_devices,
        inventory=inventory,
    )


# ============================================================================================ the ILP


@dataclass(frozen=True, eq=False)
class FleetCapacity:
    """The integer program's input, as plain arrays.

    S services, T hardware types (a type is the unit that is bought: a cloud instance of one pricing kind, or one
    on-prem device), K options (one way of running one replica of one service on one type).

    * ``demand_rps[s]``: the request rate service *s* must sustain;
    * ``devices_per_unit[t]``: devices in one unit of type *t* (8 for an 8-GPU instance, 1 on-prem);
    * ``option_service[k]``, ``option_type[k]``: the service and the type of option *k*;
    * ``option_devices[k]``: devices one replica occupies (its tensor-parallel degree);
    * ``option_capacity_rps[k]``: the request rate one replica sustains within the service's SLO.
    """

    demand_rps: np.ndarray
    devices_per_unit: np.ndarray
    option_service: np.ndarray
    option_type: np.ndarray
    option_devices: np.ndarray
    option_capacity_rps: np.ndarray
    service_names: tuple[str, ...] = ()
    type_names: tuple[str, ...] = ()
    option_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        s, t = len(self.demand_rps), len(self.devices_per_unit)
        k = len(self.option_service)
        if not self.service_names:
            object.__setattr__(self, "service_names", tuple(f"service-{i}" for i in range(s)))
        if not self.type_names:
            object.__setattr__(self, "type_names", tuple(f"type-{j}" for j in range(t)))
        if not self.option_labels:
            object.__setattr__(self, "option_labels", tuple("" for _ in range(k)))
        for name in ("option_type", "option_devices", "option_capacity_rps", "option_labels"):
            if len(getattr(self, name)) != k:
                raise InputError(name, len(getattr(self, name)), f"needs one entry per option ({k})")
        if len(self.service_names) != s or len(self.type_names) != t:
            raise InputError(
                "service_names/type_names",
                (len(self.service_names), len(self.type_names)),
                f"need {s} service names and {t} type names",
            )
        if np.any(np.asarray(self.demand_rps) <= 0):
            raise InputError("demand_rps", list(np.asarray(self.demand_rps)), "every service needs rps > 0")
        if k and (np.any(self.option_service < 0) or np.any(self.option_service >= s)):
            raise InputError("option_service", list(self.option_service), f"indices must be in [0, {s})")
        if k and (np.any(self.option_type < 0) or np.any(self.option_type >= t)):
            raise InputError("option_type", list(self.option_type), f"indices must be in [0, {t})")
        if np.any(self.option_capacity_rps <= 0) or np.any(self.option_devices < 1):
            raise InputError("option_capacity_rps/option_devices", None, "capacities > 0 and devices >= 1")
        if np.any(self.devices_per_unit < 1):
            raise InputError("devices_per_unit", list(self.devices_per_unit), "every type needs >= 1 device")

    @property
    def n_services(self) -> int:
        return len(self.demand_rps)

    @property
    def n_types(self) -> int:
        return len(self.devices_per_unit)

    @property
    def n_options(self) -> int:
        return len(self.option_service)

    @classmethod
    def from_arrays(
        cls,
        demand_rps: npt.ArrayLike,
        devices_per_unit: npt.ArrayLike,
        option_service: npt.ArrayLike,
        option_type: npt.ArrayLike,
        option_devices: npt.ArrayLike,
        option_capacity_rps: npt.ArrayLike,
        *,
        service_names: Sequence[str] = (),
        type_names: Sequence[str] = (),
        option_labels: Sequence[str] = (),
    ) -> FleetCapacity:
        return cls(
            demand_rps=np.asarray(demand_rps, dtype=float),
            devices_per_unit=np.asarray(devices_per_unit, dtype=np.int64),
            option_service=np.asarray(option_service, dtype=np.int64),
            option_type=np.asarray(option_type, dtype=np.int64),
            option_devices=np.asarray(option_devices, dtype=np.int64),
            option_capacity_rps=np.asarray(option_capacity_rps, dtype=float),
            service_names=tuple(service_names),
            type_names=tuple(type_names),
            option_labels=tuple(option_labels),
        )

    @classmethod
    def from_matrix(
        cls,
        demand_rps: Sequence[float],
        capacity_rps: Sequence[Sequence[float]] | np.ndarray,
        *,
        devices_per_replica: Sequence[Sequence[int]] | np.ndarray | None = None,
        devices_per_unit: Sequence[int] | None = None,
        service_names: Sequence[str] = (),
        type_names: Sequence[str] = (),
    ) -> FleetCapacity:
        """The Mélange-style table: ``capacity_rps[s][t]`` is the rate one replica of service *s* sustains on
        type *t* (0 or NaN: it cannot run there); one replica per device unless *devices_per_replica* says."""
        cap = np.asarray(capacity_rps, dtype=float)
        if cap.ndim != 2 or cap.shape[0] != len(demand_rps):
            raise InputError("capacity_rps", cap.shape, f"give a {len(demand_rps)} x T table")
        dev = (
            np.ones_like(cap, dtype=np.int64)
            if devices_per_replica is None
            else np.asarray(devices_per_replica)
        )
        units = np.ones(cap.shape[1], dtype=np.int64) if devices_per_unit is None else devices_per_unit
        ok = np.nan_to_num(cap) > 0
        s_idx, t_idx = np.nonzero(ok)
        return cls.from_arrays(
            demand_rps,
            units,
            s_idx,
            t_idx,
            dev[s_idx, t_idx],
            cap[s_idx, t_idx],
            service_names=service_names,
            type_names=type_names,
        )


@dataclass(frozen=True)
class SingleTypeBaseline:
    """The cheapest way to serve the whole fleet on one hardware type only."""

    type_index: int
    type_name: str
    units: int
    replicas: tuple[int, ...]  # per option of the FleetCapacity (zero outside this type)
    usd_per_h: Decimal

    def to_dict(self) -> dict:
        return {"type": self.type_name, "units": self.units, "cost_per_hour_usd": _cents(self.usd_per_h)}


@dataclass(frozen=True)
class FleetSolution:
    """What :func:`solve_fleet` found. Money is Decimal (USD per hour); counts are per type and per option.

    ``served_rps[k]`` is the traffic routed to option *k*: each service's rate split across its replicas in
    proportion to their capacity, so all replicas of a service run at the same utilization
    ``utilization_frac[s]``. When ``is_feasible`` is False, ``reason`` says why and by how much.
    """

    is_feasible: bool
    is_optimal: bool
    status: str
    units: tuple[int, ...] = ()
    replicas: tuple[int, ...] = ()
    served_rps: tuple[float, ...] = ()
    utilization_frac: tuple[float, ...] = ()
    usd_per_h: Decimal | None = None
    baseline: SingleTypeBaseline | None = None
    single_type_usd_per_h: tuple[Decimal | None, ...] = ()
    saving_usd_per_h: Decimal | None = None
    saving_frac: float | None = None
    reason: str | None = None
    mip_gap_frac: float | None = None

    def to_dict(self) -> dict:
        return {
            "is_feasible": self.is_feasible,
            "is_optimal": self.is_optimal,
            "status": self.status,
            "units": list(self.units),
            "replicas": list(self.replicas),
            "served_rps": list(self.served_rps),
            "utilization_frac": list(self.utilization_frac),
            "cost_per_hour_usd": _cents(self.usd_per_h),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "saving_usd_per_h": _cents(self.saving_usd_per_h),
            "saving_frac": self.saving_frac,
            "reason": self.reason,
        }


def _money(x: Decimal | float | int | str) -> Decimal:
    """A price per unit-hour: exact input (Decimal, int, text) or a computed float, rounded to PRICE_STEP."""
    if isinstance(x, float):
        return money.from_float(x, "cost_usd_per_h", PRICE_STEP)
    return money.to_money(x, "cost_usd_per_h", PRICE_STEP)


@dataclass(frozen=True)
class _Milp:
    is_feasible: bool
    is_optimal: bool
    status: str
    units: np.ndarray | None
    replicas: np.ndarray | None
    gap: float | None


def _solve_milp(
    cap: FleetCapacity,
    unit_cost: np.ndarray,
    inventory_units: np.ndarray,
    option_mask: np.ndarray,
    time_limit_s: float,
) -> _Milp:
    """min sum_t c_t x_t  s.t.  sum_{k in s} cap_k r_k >= demand_s;  sum_{k in t} d_k r_k <= u_t x_t;
    0 <= x_t <= inventory_t;  x, r integer. Options outside *option_mask* are fixed at zero."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    s_n, t_n, k_n = cap.n_services, cap.n_types, cap.n_options
    # variables: [x_0..x_{T-1}, r_0..r_{K-1}]
    c = np.concatenate([unit_cost, np.zeros(k_n)])
    a_demand = np.zeros((s_n, t_n + k_n))
    a_demand[cap.option_service, t_n + np.arange(k_n)] = cap.option_capacity_rps
    a_devices = np.zeros((t_n, t_n + k_n))
    a_devices[np.arange(t_n), np.arange(t_n)] = -cap.devices_per_unit
    a_devices[cap.option_type, t_n + np.arange(k_n)] = cap.option_devices
    # a replica never needs more units than the demand alone requires: bound r to keep HiGHS' search tight
    need = np.ceil(cap.demand_rps[cap.option_service] / cap.option_capacity_rps)
    type_devices = np.where(np.isfinite(inventory_units), inventory_units * cap.devices_per_unit, np.inf)
    r_upper = np.minimum(need, np.floor(type_devices[cap.option_type] / cap.option_devices))
    r_upper = np.where(option_mask, r_upper, 0.0)
    x_upper = np.where(np.isfinite(inventory_units), inventory_units, np.inf)
    # units never exceed what the largest replica counts could occupy
    max_devices = np.zeros(t_n)
    np.add.at(max_devices, cap.option_type, r_upper * cap.option_devices)
    x_upper = np.minimum(x_upper, np.ceil(max_devices / cap.devices_per_unit))
    constraints = [
        LinearConstraint(a_demand, lb=cap.demand_rps, ub=np.inf),
        LinearConstraint(a_devices, lb=-np.inf, ub=0.0),
    ]
    res = milp(
        c,
        constraints=constraints,
        integrality=np.ones(t_n + k_n),
        bounds=Bounds(np.zeros(t_n + k_n), np.concatenate([x_upper, r_upper])),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-9, "presolve": True},
    )
    if res.x is None:
        # status 2: proven infeasible; 1: stopped by the time or node limit before any fleet was found
        return _Milp(False, res.status == 2, str(res.message), None, None, None)
    x = np.rint(res.x).astype(np.int64)
    gap = getattr(res, "mip_gap", None)
    return _Milp(True, res.status == 0, str(res.message), x[:t_n], x[t_n:], gap)


def _trim(cap: FleetCapacity, units: np.ndarray | None, replicas: np.ndarray | None) -> tuple:
    """Drop replicas the demand does not need (largest first), then units no replica occupies; the cost
    never rises, and the reported fleet carries no idle replicas."""
    assert units is not None and replicas is not None, "a feasible solve has units and replicas"
    replicas = replicas.copy()
    served = np.zeros(cap.n_services)
    np.add.at(served, cap.option_service, cap.option_capacity_rps * replicas)
    for k in np.argsort(-cap.option_devices * 1e6 - cap.option_capacity_rps, kind="stable"):
        s = cap.option_service[k]
        while replicas[k] > 0 and served[s] - cap.option_capacity_rps[k] >= cap.demand_rps[s] * (1 + 1e-12):
            replicas[k] -= 1
            served[s] -= cap.option_capacity_rps[k]
    used = np.zeros(cap.n_types, dtype=np.int64)
    np.add.at(used, cap.option_type, cap.option_devices * replicas)
    needed_units = -(-used // cap.devices_per_unit)
    units = np.minimum(units, needed_units)
    return units, replicas, served


def _usd(units: np.ndarray, prices: Sequence[Decimal]) -> Decimal:
    return sum((p * int(n) for p, n in zip(prices, units, strict=True)), Decimal(0))


def _max_rps_alone(cap: FleetCapacity, s: int, inventory_units: np.ndarray) -> float:
    """The most traffic service *s* could get on its own from the inventory-limited types (inf if any of its
    options sits on an unlimited type)."""
    mine = np.nonzero(cap.option_service == s)[0]
    if mine.size == 0:
        return 0.0
    if np.any(~np.isfinite(inventory_units[cap.option_type[mine]])):
        return math.inf
    from scipy.optimize import Bounds, LinearConstraint, milp

    t_n, k_n = cap.n_types, mine.size
    c = np.concatenate([np.zeros(t_n), -cap.option_capacity_rps[mine]])
    a = np.zeros((t_n, t_n + k_n))
    a[np.arange(t_n), np.arange(t_n)] = -cap.devices_per_unit
    a[cap.option_type[mine], t_n + np.arange(k_n)] = cap.option_devices[mine]
    res = milp(
        c,
        constraints=[LinearConstraint(a, -np.inf, 0.0)],
        integrality=np.ones(t_n + k_n),
        bounds=Bounds(np.zeros(t_n + k_n), np.concatenate([inventory_units, np.full(k_n, np.inf)])),
        options={"time_limit": SOLVER_TIME_LIMIT_S},
    )
    return 0.0 if res.x is None else float(-res.fun)


def _diagnose(cap: FleetCapacity, inventory_units: np.ndarray) -> str:
    reasons = []
    for s in range(cap.n_services):
        name = cap.service_names[s]
        have = _max_rps_alone(cap, s, inventory_units)
        if have == 0.0 and not np.any(cap.option_service == s):
            reasons.append(
                f"service {name!r} has no hardware option: no allowed device runs it within its SLO "
                "(relax the SLO, allow a lower min_precision, more devices, or other pricing/providers/regions)"
            )
        elif have < cap.demand_rps[s]:
            reasons.append(
                f"service {name!r} needs {cap.demand_rps[s]:g} req/s but the inventory can serve at most "
                f"{have:.3g} req/s of it ({have / cap.demand_rps[s]:.0%}); add devices or allow cloud pricing"
            )
    if not reasons:
        reasons.append(
            "each service fits on its own, but together they need more than the inventory holds; "
            "add devices or allow cloud pricing"
        )
    return "; ".join(reasons)


def solve_fleet(
    capacity: FleetCapacity,
    cost: Sequence[Decimal | float],
    inventory: Sequence[int | None] | None = None,
    *,
    time_limit_s: float = SOLVER_TIME_LIMIT_S,
) -> FleetSolution:
    """The cheapest fleet for *capacity* at *cost* (USD per unit-hour of each type), within *inventory* (units of
    each type available; None: unlimited).

    Integer program (Mélange, Griggs et al. 2024, arXiv:2404.14527, Sec. 5, with whole replicas)::

        minimise    sum_t cost_t * x_t
        subject to  sum_{k of service s} cap_k * r_k >= demand_s         every service fully served
                    sum_{k on type t}    dev_k * r_k <= units_t * x_t    replicas fit in the bought units
                    0 <= x_t <= inventory_t,  x_t, r_k integer

    The traffic of a service is split across its replicas in proportion to their capacity (a weighted load
    balancer), so one service may run on several types. Solved by HiGHS (``scipy.optimize.milp``) to a relative
    gap of 1e-9. The same program restricted to each single type gives the baseline and the saving.
    """
    cap = capacity
    if len(cost) != cap.n_types:
        raise InputError("cost", len(cost), f"give one price per hardware type ({cap.n_types})")
    prices = [_money(c) for c in cost]
    if any(p < 0 for p in prices):
        raise InputError("cost", [str(p) for p in prices], "prices must be zero or more")
    unit_cost = np.array([float(p) for p in prices])
    if inventory is None:
        inv = np.full(cap.n_types, np.inf)
    else:
        if len(inventory) != cap.n_types:
            raise InputError(
                "inventory", len(inventory), f"give one limit (or None) per hardware type ({cap.n_types})"
            )
        inv = np.array([np.inf if v is None else float(v) for v in inventory])
        if np.any(inv < 0):
            raise InputError("inventory", list(inventory), "limits must be zero or more")

    all_options = np.ones(cap.n_options, dtype=bool)
    best = _solve_milp(cap, unit_cost, inv, all_options, time_limit_s)
    if not best.is_feasible:
        reason = (
            _diagnose(cap, inv)
            if best.is_optimal
            else f"the solver stopped after {time_limit_s:g} s before finding any fleet ({best.status}); "
            "raise time_limit_s or narrow the providers, regions or pricing kinds"
        )
        return FleetSolution(is_feasible=False, is_optimal=best.is_optimal, status=best.status, reason=reason)
    units, replicas, served = _trim(cap, best.units, best.replicas)
    usd = _usd(units, prices)

    singles: list[Decimal | None] = []
    baseline: SingleTypeBaseline | None = None
    services_all = set(range(cap.n_services))
    for t in range(cap.n_types):
        mask = cap.option_type == t
        if set(cap.option_service[mask].tolist()) != services_all:
            singles.append(None)
            continue
        one = _solve_milp(cap, unit_cost, inv, mask, time_limit_s)
        if not one.is_feasible:
            singles.append(None)
            continue
        u1, r1, _ = _trim(cap, one.units, one.replicas)
        cost1 = _usd(u1, prices)
        singles.append(cost1)
        if baseline is None or cost1 < baseline.usd_per_h:
            baseline = SingleTypeBaseline(t, cap.type_names[t], int(u1[t]), tuple(int(v) for v in r1), cost1)

    if baseline is not None and baseline.usd_per_h < usd:
        # only when a time limit stopped the full program short of its optimum: the single type is a valid mix
        replicas = np.asarray(baseline.replicas, dtype=np.int64)
        units = np.zeros(cap.n_types, dtype=np.int64)
        units[baseline.type_index] = baseline.units
        usd = baseline.usd_per_h
        served = np.zeros(cap.n_services)
        np.add.at(served, cap.option_service, cap.option_capacity_rps * replicas)
    load = np.where(served > 0, cap.demand_rps / np.where(served > 0, served, 1.0), 0.0)
    served_rps = cap.option_capacity_rps * replicas * load[cap.option_service]
    saving = saving_frac = None
    if baseline is not None:
        saving = baseline.usd_per_h - usd
        saving_frac = float(saving / baseline.usd_per_h) if baseline.usd_per_h > 0 else 0.0
    return FleetSolution(
        is_feasible=True,
        is_optimal=best.is_optimal,
        status=best.status,
        units=tuple(int(v) for v in units),
        replicas=tuple(int(v) for v in replicas),
        served_rps=tuple(float(v) for v in served_rps),
        utilization_frac=tuple(float(v) for v in load),
        usd_per_h=usd,
        baseline=baseline,
        single_type_usd_per_h=tuple(singles),
        saving_usd_per_h=saving,
        saving_frac=saving_frac,
        mip_gap_frac=best.gap,
    )


# ============================================================================================ the plan


@dataclass(frozen=True)
class HardwareType:
    """One unit that can be bought for the fleet: a cloud instance of one pricing kind, or one on-prem device."""

    key: str  # e.g. "aws:p5.48xlarge:us-east-1 on-demand", "onprem:h100-sxm owned"
    device_id: str
    pricing: str  # on-demand | spot | reserved | onprem
    provider: str  # aws, gcp, ... or onprem
    instance_type: str | None
    region: str | None
    devices_per_unit: int
    usd_per_unit_h: Decimal
    inventory_units: int | None  # None: unlimited
    is_owned: bool = False
    source_url: str = ""

    def to_dict(self) -> dict:
        return {
            "type": self.key,
            "device": self.device_id,
            "provider": self.provider,
            "instance_type": self.instance_type,
            "region": self.region,
            "pricing": self.pricing,
            "is_owned": self.is_owned,
            "devices_per_unit": self.devices_per_unit,
            "cost_per_unit_hour_usd": str(self.usd_per_unit_h),
            "inventory_units": self.inventory_units,
            "source_url": self.source_url,
        }


@dataclass(frozen=True)
class ReplicaOption:
    """One way of running one replica of a service on a hardware type, with what it sustains within the SLO."""

    service: str
    type_key: str
    device_id: str
    tensor_parallel: int
    quant: str
    batch: int
    capacity_rps: float
    engine: str = "generic"
    kv_dtype: str | None = None

    def label(self) -> str:
        on = "" if self.engine == "generic" else f" on {self.engine}"
        return f"{self.tensor_parallel}x {self.device_id} {self.quant}{on} batch {self.batch}"


@dataclass(frozen=True)
class FleetPlan:
    """The cheapest fleet for a :class:`FleetSpec` on a catalog. Build it with :func:`plan_fleet`.

    ``types`` and ``options`` index the solution's ``units`` and ``replicas``; ``rejected`` holds, per service,
    the strongest candidates that could not serve it and why (from ``plan serve``'s capacity table).
    """

    spec: FleetSpec
    types: tuple[HardwareType, ...]
    options: tuple[ReplicaOption, ...]
    solution: FleetSolution
    rejected: tuple[tuple[str, tuple[dict, ...]], ...]
    assumptions: dict

    @property
    def usd_per_h(self) -> Decimal | None:
        return self.solution.usd_per_h

    @property
    def usd_per_month(self) -> Decimal | None:
        return None if self.solution.usd_per_h is None else _per_month(self.solution.usd_per_h)

    def hardware_rows(self) -> list[dict]:
        """Per hardware type bought: the unit, how many, and the cost."""
        rows = []
        sol = self.solution
        for t, n in enumerate(sol.units):
            if n <= 0:
                continue
            ht = self.types[t]
            usd = ht.usd_per_unit_h * n
            rows.append(
                ht.to_dict()
                | {
                    "units": n,
                    "devices": n * ht.devices_per_unit,
                    "cost_per_hour_usd": _cents(usd),
                    "cost_per_month_usd": str(_per_month(usd)),
                }
            )
        return rows

    def service_rows(self) -> list[dict]:
        """Per service: its assignment across hardware types (replicas and traffic) and its utilization."""
        sol = self.solution
        rejected = dict(self.rejected)
        rows = []
        for s, svc in enumerate(self.spec.services):
            assignment = []
            capacity = 0.0
            if sol.is_feasible:
                for k, opt in enumerate(self.options):
                    if opt.service != svc.name or sol.replicas[k] == 0:
                        continue
                    capacity += opt.capacity_rps * sol.replicas[k]
                    assignment.append(
                        {
                            "type": opt.type_key,
                            "device": opt.device_id,
                            "tensor_parallel": opt.tensor_parallel,
                            "quant": opt.quant,
                            "engine": opt.engine,
                            "kv_dtype": opt.kv_dtype,
                            "batch": opt.batch,
                            "replicas": sol.replicas[k],
                            "devices": sol.replicas[k] * opt.tensor_parallel,
                            "capacity_rps_per_replica": opt.capacity_rps,
                            "rps": sol.served_rps[k],
                        }
                    )
            rows.append(
                svc.to_dict()
                | {
                    "capacity_rps": capacity,
                    "utilization_frac": sol.utilization_frac[s] if sol.is_feasible else None,
                    "assignment": assignment,
                    "rejected": list(rejected.get(svc.name, ())),
                }
            )
        return rows

    def baseline_row(self) -> dict | None:
        b = self.solution.baseline
        if b is None:
            return None
        ht = self.types[b.type_index]
        return ht.to_dict() | {
            "units": b.units,
            "devices": b.units * ht.devices_per_unit,
            "cost_per_hour_usd": _cents(b.usd_per_h),
            "cost_per_month_usd": str(_per_month(b.usd_per_h)),
        }

    def to_dict(self) -> dict:
        sol = self.solution
        saving_month = None if sol.saving_usd_per_h is None else str(_per_month(sol.saving_usd_per_h))
        return {
            "is_feasible": sol.is_feasible,
            "is_optimal": sol.is_optimal,
            "reason": sol.reason,
            "hardware": self.hardware_rows(),
            "services": self.service_rows(),
            "cost_per_hour_usd": _cents(sol.usd_per_h),
            "cost_per_month_usd": None if self.usd_per_month is None else str(self.usd_per_month),
            "baseline": self.baseline_row(),
            "saving_usd_per_hour": _cents(sol.saving_usd_per_h),
            "saving_usd_per_month": saving_month,
            "saving_frac": sol.saving_frac,
            "assumptions": dict(self.assumptions),
        }


def _per_month(usd_per_h: Decimal) -> Decimal:
    return money.quantize(usd_per_h * Decimal(repr(HOURS_PER_MONTH)))


def _cents(usd: Decimal | None) -> str | None:
    return None if usd is None else str(money.quantize(usd))


def _unit_price(offering, pricing: str) -> Decimal | None:
    return {
        "on-demand": offering.on_demand_usd_per_h,
        "spot": offering.spot_usd_per_h,
        "reserved": offering.reserved_usd_per_h,
    }[pricing]


def _onprem_usd_per_device_h(device, profile, *, is_sunk: bool) -> Decimal:
    """Hourly cost of one owned device while serving: the amortized purchase (unless sunk) plus electricity at
    the decode activity share of its idle-to-TDP range, with its host share, times the profile's PUE."""
    from flopwise.estimate.cost import onprem_usd_per_device_h
    from flopwise.estimate.energy import DECODE_ACTIVITY_FRAC, device_power_w, host_power_frac
    from flopwise.units import KILO

    wall_w = device_power_w(device.tdp_w, device.idle_w, DECODE_ACTIVITY_FRAC) * (
        1.0 + host_power_frac(device)
    )
    if is_sunk:
        usd = wall_w / KILO * profile.pue * float(profile.electricity_usd_per_kwh)
    else:
        usd = onprem_usd_per_device_h(profile, wall_w, profile.pue)
    return money.from_float(usd, "usd_per_device_h", PRICE_STEP)


def _cloud_unit_price(offering, pricing: str) -> Decimal:
    price = _unit_price(offering, pricing)
    if price is None:  # candidates are enumerated only where the offering has a price of their kind
        raise InputError("pricing", pricing, f"offering {offering.id} has no {pricing} price")
    return _money(price)  # source prices may carry float noise (1.6764000000000001): one step for all money


def _cloud_type(candidate) -> HardwareType:
    o = candidate.offering
    return HardwareType(
        key=f"{o.id} {candidate.pricing}",
        device_id=candidate.device.id,
        pricing=candidate.pricing,
        provider=o.provider,
        instance_type=o.instance_type,
        region=o.region,
        devices_per_unit=o.device_count,
        usd_per_unit_h=_cloud_unit_price(o, candidate.pricing),
        inventory_units=None,
        source_url=o.source_url,
    )


def _resolve_inventory(spec: FleetSpec, catalog) -> list[tuple[object, object, int]]:
    """(device, on-prem profile, count) per inventory entry; the same device named twice adds up."""
    if spec.inventory is None:
        return []
    merged: dict[str, list] = {}
    for name, count in spec.inventory.devices:
        device = catalog.device(name)
        profile = catalog.onprem.get(device.id)
        if profile is None:
            raise InputError(
                f"inventory.devices.{name}",
                count,
                f"the catalog has no on-prem cost profile for {device.id!r} (needed for its electricity price"
                f"{'' if spec.inventory.cost_basis == 'sunk' else ' and purchase'}); add a row to onprem.csv in "
                "your --catalog directory",
            )
        if device.id in merged:
            merged[device.id][2] += count
        else:
            merged[device.id] = [device, profile, count]
    return [tuple(v) for v in merged.values()]


@dataclass(frozen=True)
class _CapacityRow:
    device_id: str
    tensor_parallel: int
    quant: str
    batch: int
    capacity_rps: float
    rejected: dict | None
    engine: str = "generic"
    kv_dtype: str | None = None


def _capacity_rows(workload, candidates: list) -> list[_CapacityRow]:
    """Sustainable request rate per replica within the SLO for each (device, tensor parallel, quant)
    representative, from ``plan.serve.replica_capacity`` (one vectorized call per service)."""
    from flopwise.plan.serve import replica_capacity

    if not candidates:
        return []
    table = replica_capacity(workload, candidates)
    rows = []
    for i, c in enumerate(table.candidates):
        ok = bool(table.feasible[i]) and float(table.capacity_rps[i]) > 0
        rows.append(
            _CapacityRow(
                device_id=c.device.id,
                tensor_parallel=c.device_count,
                quant=c.quant,
                batch=int(table.batch[i]),
                capacity_rps=float(table.capacity_rps[i]) if ok else 0.0,
                engine=c.engine_id,
                kv_dtype=table.kv_dtype[i] if table.kv_dtype else None,
                rejected=None
                if ok
                else {
                    "device": c.device.id,
                    "tensor_parallel": c.device_count,
                    "quant": c.quant,
                    "engine": c.engine_id,
                    "kind": table.reason[i],
                    "reason": table.detail[i],
                    "shortfall": round(float(table.shortfall[i]), 2),
                    "shortfall_unit": table.shortfall_unit[i],
                },
            )
        )
    return rows


#: how many of the closest rejected candidates a service that cannot be served lists
REJECTED_PER_SERVICE = 5


def _rejected_rows(rows: list[_CapacityRow]) -> list[dict]:
    """The closest misses first: SLO misses (by ms over) before does-not-fit (by GB short)."""
    order = {"misses_slo": 0, "does_not_fit": 1}
    rej = [r.rejected for r in rows if r.rejected is not None]
    rej.sort(key=lambda d: (order.get(d["kind"], 2), d["shortfall"], d["device"], d["tensor_parallel"]))
    return rej[:REJECTED_PER_SERVICE]


def _service_candidates(spec, catalog, models, owned, profiles, engine_pool) -> tuple[list, dict, int]:
    """Per service: (service, workload, cloud / bought on-prem candidates, candidates on owned devices), expanded
    over the engine profiles; the cheapest cloud offering per (device, devices per instance, pricing kind); the
    number of candidates."""
    from flopwise.plan.candidates import CandidateSpace, ServeWorkload, enumerate_serve_space
    from flopwise.plan.serve import expand_engines

    with_engines = [e.id for e in profiles] != ["generic"]
    cloud_kinds = tuple(k for k in spec.pricing if k != "onprem")
    buy_onprem = "onprem" in spec.pricing
    # cheapest cloud offering per (device, devices per instance, pricing kind)
    cheapest: dict[tuple[str, int, str], HardwareType] = {}
    # per service: its workload, its cloud / bought on-prem candidates, and its candidates on owned devices
    per_service: list[tuple[FleetService, ServeWorkload, list, list]] = []
    n_candidates = 0
    for svc in spec.services:
        model = models.resolve(svc.model)
        workload = ServeWorkload(
            model=model,
            rps=svc.rps,
            input_tokens=svc.input_tokens,
            output_tokens=svc.output_tokens,
            ttft_p95_ms=svc.ttft_p95_ms,
            tpot_p95_ms=svc.tpot_p95_ms,
        )
        cands: list = []
        owned_cands: list = []
        if cloud_kinds or buy_onprem:
            space = enumerate_serve_space(
                catalog,
                model,
                pricing=cloud_kinds + (("onprem",) if buy_onprem else ()),
                providers=spec.providers,
                regions=spec.regions,
                min_precision=svc.min_precision,
                max_devices=spec.max_devices,
            )
            cands.extend(space.candidates)
        if owned:
            own_ids = {d.id for d, _, _ in owned}
            space = enumerate_serve_space(
                catalog,
                model,
                pricing=("onprem",),
                min_precision=svc.min_precision,
                max_devices=spec.max_devices,
            )
            owned_cands = [c for c in space.candidates if c.device.id in own_ids and c.region is None]
        if with_engines:
            cands = list(expand_engines(CandidateSpace(tuple(cands), ()), profiles, None, engine_pool).candidates)
            owned_cands = list(
                expand_engines(CandidateSpace(tuple(owned_cands), ()), profiles, None, engine_pool).candidates
            )
        n_candidates += len(cands) + len(owned_cands)
        per_service.append((svc, workload, cands, owned_cands))
        for c in cands:
            if c.pricing == "onprem":
                continue
            ht = _cloud_type(c)
            key = (ht.device_id, ht.devices_per_unit, ht.pricing)
            best = cheapest.get(key)
            if best is None or (ht.usd_per_unit_h, ht.key) < (best.usd_per_unit_h, best.key):
                cheapest[key] = ht
    return per_service, cheapest, n_candidates


def _hardware_types(per_service, cheapest: dict, owned, *, buy_onprem: bool, is_sunk: bool) -> tuple:
    """The hardware types of the ILP: the cheapest cloud offerings, owned inventory and on-prem devices to buy."""
    types: dict[str, HardwareType] = {}
    for ht in sorted(cheapest.values(), key=lambda h: h.key):
        types[ht.key] = ht
    for device, profile, count in owned:
        key = f"onprem:{device.id} owned"
        types[key] = HardwareType(
            key=key,
            device_id=device.id,
            pricing="onprem",
            provider="onprem",
            instance_type=None,
            region=None,
            devices_per_unit=1,
            usd_per_unit_h=_onprem_usd_per_device_h(device, profile, is_sunk=is_sunk),
            inventory_units=count,
            is_owned=True,
            source_url=profile.source_url,
        )
    if buy_onprem:
        for _svc, _workload, cands, _owned in per_service:
            for c in cands:
                if c.pricing != "onprem":
                    continue
                key = f"onprem:{c.device.id} bought"
                if key not in types:
                    types[key] = HardwareType(
                        key=key,
                        device_id=c.device.id,
                        pricing="onprem",
                        provider="onprem",
                        instance_type=None,
                        region=None,
                        devices_per_unit=1,
                        usd_per_unit_h=_onprem_usd_per_device_h(c.device, c.onprem, is_sunk=False),
                        inventory_units=None,
                        source_url=c.onprem.source_url,
                    )
    return tuple(types.values())



def _replica_options(per_service, type_list) -> tuple[dict, list]:
    """The best replica option per (service, hardware type, TP) from plan serve's capacity model, and for each
    service with none the closest rejected candidates."""
    types_by_device: dict[str, list[int]] = {}
    for t, ht in enumerate(type_list):
        types_by_device.setdefault(ht.device_id, []).append(t)
    options: dict[tuple[int, int, int], ReplicaOption] = {}  # (service, type, tp) -> the best option
    rejected: list[tuple[str, tuple[dict, ...]]] = []
    for s, (svc, workload, cands, owned_cands) in enumerate(per_service):
        # capacity depends on the device, tensor parallel degree, quant, engine and KV dtype only: one each
        reps: dict[tuple, object] = {}
        for c in cands + owned_cands:
            reps.setdefault((c.device.id, c.device_count, c.quant, c.engine_id, c.kv_dtype), c)
        rows = _capacity_rows(workload, list(reps.values()))
        good = 0
        for row in rows:
            if row.capacity_rps <= 0:
                continue
            for t in types_by_device.get(row.device_id, ()):
                ht = type_list[t]
                if ht.pricing != "onprem" and row.tensor_parallel > ht.devices_per_unit:
                    continue  # tensor parallelism does not span cloud instances
                opt = ReplicaOption(
                    service=svc.name,
                    type_key=ht.key,
                    device_id=row.device_id,
                    tensor_parallel=row.tensor_parallel,
                    quant=row.quant,
                    batch=row.batch,
                    capacity_rps=row.capacity_rps,
                    engine=row.engine,
                    kv_dtype=row.kv_dtype,
                )
                key = (s, t, row.tensor_parallel)
                if key not in options or opt.capacity_rps > options[key].capacity_rps:
                    options[key] = opt
                good += 1
        if not good:
            rejected.append((svc.name, tuple(_rejected_rows(rows))))

    return options, rejected


def plan_fleet(
    spec: FleetSpec,
    catalog,
    *,
    models=None,
    time_limit_s: float = SOLVER_TIME_LIMIT_S,
    engines: Sequence[str] | None = None,
    catalog_dir: str | None = None,
) -> FleetPlan:
    """The cheapest mix of hardware that serves every service of *spec* within its SLO, on *catalog*.

    1. For each service, every candidate way of running one replica (``plan.candidates.enumerate_serve_space``:
       device x tensor parallel x quantization x price basis, within the spec's pricing, providers, regions,
       ``min_precision`` and ``max_devices``), plus the owned inventory as on-prem candidates.
    2. Their sustainable request rate per replica within the SLO (``plan.serve.replica_capacity``, the queueing
       model of continuous batching), computed once per device x tensor parallel x quantization.
    3. Hardware types: per device, devices-per-instance and pricing kind the cheapest offering in scope; each
       owned device model (limited to the count owned); with ``onprem`` pricing, buying more (unlimited).
    4. :func:`solve_fleet` on those, and the report.

    *models* is a ``ModelRegistry`` (default: the built-in one). Raises UnknownModelError /
    UnknownAcceleratorError for names that resolve to nothing, InputError for an inventory device without an
    on-prem profile. An infeasible fleet is returned with the reason, not raised.
    """
    import time

    from flopwise.plan.serve import engine_profiles

    if models is None:
        from flopwise.models import load_models

        models = load_models()
    started = time.perf_counter()
    profiles, engine_pool = engine_profiles(engines, catalog_dir)
    owned = _resolve_inventory(spec, catalog)
    is_sunk = spec.inventory is not None and spec.inventory.cost_basis == "sunk"
    buy_onprem = "onprem" in spec.pricing

    per_service, cheapest, n_candidates = _service_candidates(spec, catalog, models, owned, profiles, engine_pool)
    type_list = _hardware_types(per_service, cheapest, owned, buy_onprem=buy_onprem, is_sunk=is_sunk)
    options, rejected = _replica_options(per_service, type_list)

    keys = sorted(options, key=lambda k: (k[0], type_list[k[1]].key, k[2]))
    opts = tuple(options[k] for k in keys)
    capacity = FleetCapacity.from_arrays(
        [svc.rps for svc in spec.services],
        [ht.devices_per_unit for ht in type_list] or np.zeros(0, dtype=np.int64),
        [k[0] for k in keys],
        [k[1] for k in keys],
        [o.tensor_parallel for o in opts],
        [o.capacity_rps for o in opts],
        service_names=[svc.name for svc in spec.services],
        type_names=[ht.key for ht in type_list],
        option_labels=[o.label() for o in opts],
    )
    prepared = time.perf_counter()
    solution = solve_fleet(
        capacity,
        [ht.usd_per_unit_h for ht in type_list],
        [ht.inventory_units for ht in type_list],
        time_limit_s=time_limit_s,
    )
    solved = time.perf_counter()
    if not solution.is_feasible and rejected:
        nearest = "; ".join(
            f"nearest for {name!r}: {rows[0]['tensor_parallel']}x {rows[0]['device']} {rows[0]['quant']}, "
            f"{rows[0]['reason']}"
            for name, rows in rejected
            if rows
        )
        solution = replace(solution, reason=f"{solution.reason}; {nearest}" if nearest else solution.reason)
    assumptions = {
        "candidates": n_candidates,
        "engines_searched": [e.id for e in profiles],
        "hardware_types": len(type_list),
        "replica_options": len(opts),
        "formulation": "Mélange-style ILP (Griggs et al. 2024, arXiv:2404.14527) with whole replicas, "
        "instance granularity and inventory limits; see docs/plan-fleet.md",
        "solver": "HiGHS via scipy.optimize.milp, mip_rel_gap 1e-9",
        "solver_status": solution.status,
        "capacity_model": "plan serve's queueing model of continuous batching: the largest request rate per "
        "replica whose p95 TTFT and TPOT meet the service's SLO",
        "traffic_split": "each service's traffic split across its replicas in proportion to their capacity",
        "cloud_type": "cheapest offering per device, devices per instance and pricing kind in scope",
        "onprem_cost": (
            "owned devices: "
            + ("sunk purchase, electricity only" if is_sunk else "amortized purchase plus electricity")
            + " at the decode activity power, with host share and the profile's PUE"
        )
        if owned or buy_onprem
        else None,
        "hours_per_month": HOURS_PER_MONTH,
        "prepare_s": round(prepared - started, 4),
        "solve_s": round(solved - prepared, 4),
    }
    from flopwise.catalog.staleness import data_age

    # the hardware the solution buys (units per type); every type considered when there is no solution
    used = [t for t, n in zip(type_list, solution.units, strict=False) if n] or type_list
    assumptions["data_age"] = data_age(catalog, ((t.provider, t.instance_type, t.region) for t in used))
    return FleetPlan(
        spec=spec,
        types=type_list,
        options=opts,
        solution=solution,
        rejected=tuple(rejected),
        assumptions=assumptions,
    )
