"""plan_train: the cheapest, fastest or greenest way to train a model, searched across the whole catalog.

For every device type that is sold (cloud offerings, in each pricing kind) or owned (on-prem profiles), every device
count on a grid (the instance size times 1, 2, 3, 4, 6, 8, 12, ... up to ``max_devices``) and every parallelism
(tensor parallel within a node, pipeline parallel, data parallel, ZeRO stage), the estimator's memory and time model
(:func:`flopwise.estimate.estimate_train`, vectorized over the device counts) says whether it fits and how long it
takes. This module adds what a plan needs on top of one estimate:

* the 1F1B pipeline bubble ``(p - 1) / m`` (Narayanan et al. 2021, arXiv:2104.04473, Sec. 2.2.1);
* on spot capacity, the expected cost of preemption with periodic checkpoints (Young 1974; Daly 2006);
* on-prem cost at an expected utilization, and the break-even utilization against the cloud (closed form);
* prices, regions (grid carbon intensity and PUE), deadline and budget, ranking and the reasons for rejection.

Pure: records and numbers in, a frozen :class:`TrainPlan` out. See docs/plan-train.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from flopwise.catalog.pricing import price_per_device_h
from flopwise.catalog.types import Device, Offering, OnPremProfile, Region
from flopwise.errors import FlopwiseError, InputError, UnsupportedError, suggest
from flopwise.estimate import energy as en
from flopwise.estimate._inputs import check_choice, jsonable
from flopwise.estimate.cost import to_money
from flopwise.estimate.memory import lora_param_count
from flopwise.estimate.train import DEVICES_PER_NODE, GLOBAL_BATCH_TOKENS, estimate_train
from flopwise.models.params import count_params
from flopwise.models.types import ModelArch
from flopwise.units import GIGA, H_PER_YEAR, KILO, S_PER_H, check_positive, parse_count
from flopwise.vocab import PRICING_KINDS, pricing_kind

__all__ = [
    "CHECKPOINT_BYTES_PER_PARAM",
    "CHECKPOINT_WRITE_GB_PER_S_PER_NODE",
    "DEFAULT_INTERRUPTION_RATE_PER_H",
    "DEFAULT_ONPREM_REGION",
    "DEFAULT_UTILIZATION_FRAC",
    "OBJECTIVES",
    "RESTART_S",
    "Parallelism",
    "RejectedTrainOption",
    "Rejection",
    "TrainOption",
    "TrainPlan",
    "breakeven_utilization",
    "onprem_effective_usd_per_device_h",
    "plan_train",
    "preemption_time_ratio",
    "young_daly_interval_s",
]

OBJECTIVES = ("cost", "time", "energy", "co2")
METHODS = ("full", "lora", "qlora")

#: Spot interruptions per instance-hour when the caller gives none. An assumption, not a published figure: AWS's
#: Spot Instance Advisor (https://aws.amazon.com/ec2/spot/instance-advisor/) buckets instance types by the share
#: interrupted over a month, the worst bucket being ">20%" (about 3e-4 per hour); GPU capacity is reclaimed far more
#: often in practice and interruptions of a multi-instance job are correlated, so one interruption per 100
#: instance-hours is used. Override it with measured data.
DEFAULT_INTERRUPTION_RATE_PER_H = 0.01
#: Time from an interruption to training again: get a replacement instance, start the container, load the last
#: checkpoint. An assumption (10 minutes); set ``restart_s`` from your own runs.
RESTART_S = 600.0
#: Bytes in a full-training checkpoint per trainable parameter: bf16 weights 2 + fp32 master 4 + Adam moments 8
#: (the 16 B/param of Rajbhandari et al. 2019, ZeRO, arXiv:1910.02054 Sec. 3.1, less the 2 B of gradients).
CHECKPOINT_BYTES_PER_PARAM = 14.0
#: Write bandwidth of one node to shared checkpoint storage, every node writing its shard in parallel. An
#: assumption (1 GB/s, i.e. a few NVMe-backed parallel-filesystem or object-store streams per node).
CHECKPOINT_WRITE_GB_PER_S_PER_NODE = 1.0
#: Share of the hours in a year that owned hardware does useful work, when the caller gives none (an assumption;
#: state your own).
DEFAULT_UTILIZATION_FRAC = 0.6
#: Grid intensity used for on-prem hardware when the caller names no region (catalog region id).
DEFAULT_ONPREM_REGION = "country:US"
#: LoRA rank used for LoRA/QLoRA plans (the estimator's default).
LORA_RANK = 16
#: Device-count multipliers of the instance size: a 1-1.5-2 progression.
_COUNT_STEPS = (1, 2, 3, 4, 6)
_MAX_PP = 64
_REASON_ORDER = {"budget": 0, "deadline": 1, "memory": 2, "unsupported": 3}


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Parallelism:
    """How the devices split the work: tensor parallel (within a node), pipeline parallel, data parallel, ZeRO."""

    tp: int
    pp: int
    dp: int
    zero_stage: int

    def to_dict(self) -> dict:
        return {"tp": self.tp, "pp": self.pp, "dp": self.dp, "zero_stage": self.zero_stage}


@dataclass(frozen=True)
class TrainOption:
    """One way to run the training: a device type and count, its parallelism, where it is bought, and the outcome.

    Times, device-hours, energy and CO2e include the pipeline bubble and, on spot, the expected preemption overhead
    (``preemption_overhead_frac``). ``cost_usd`` is Decimal (cents). ``breakeven_utilization_frac`` is set on
    on-prem options: per cloud pricing kind, the utilization above which owning beats renting that device.
    """

    device: str
    count: int
    parallelism: Parallelism
    recompute: str
    pricing: str
    provider: str
    region: str | None
    instance_type: str | None
    usd_per_device_h: Decimal
    wall_clock_hours: float
    device_hours: float
    cost_usd: Decimal
    energy_kwh: float
    co2e_kg: float | None
    meets_deadline: bool
    within_budget: bool
    fits: bool
    memory_per_device_gb: float
    memory_capacity_gb: float
    mfu_frac: float
    pipeline_bubble_frac: float
    preemption_overhead_frac: float
    checkpoint_interval_s: float | None
    breakeven_utilization_frac: dict[str, float] | None = None
    device_energy_kwh: float | None = None  # GPU only (what NVML/DCGM measure)
    node_energy_kwh: float | None = None  # device + host share
    pue: float | None = None
    energy_boundary: str = "facility"  # energy_kwh and co2e_kg: node x PUE

    def to_dict(self) -> dict:
        out = jsonable(self)
        out["parallelism"] = self.parallelism.to_dict()
        return out


@dataclass(frozen=True)
class Rejection:
    """Why an option fails: ``kind`` is memory | deadline | budget | unsupported; ``needed`` vs ``limit`` in
    ``unit`` says by how much (``excess_frac = needed / limit - 1``)."""

    kind: str
    message: str
    needed: float | None = None
    limit: float | None = None
    unit: str = ""

    @property
    def excess_frac(self) -> float | None:
        if self.needed is None or not self.limit:
            return None
        return self.needed / self.limit - 1.0

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "message": self.message,
            "needed": self.needed,
            "limit": self.limit,
            "unit": self.unit,
            "excess_frac": self.excess_frac,
        }


@dataclass(frozen=True)
class RejectedTrainOption:
    """The closest a (device, pricing, provider) comes to a feasible plan, and why it still fails.

    ``option`` is the representative candidate (None when the estimator cannot model the device at all)."""

    device: str
    pricing: str
    provider: str
    reasons: tuple[Rejection, ...]
    option: TrainOption | None

    def to_dict(self) -> dict:
        out = self.option.to_dict() if self.option is not None else {}
        out.update(
            {
                "device": self.device,
                "pricing": self.pricing,
                "provider": self.provider,
                "reasons": [r.to_dict() for r in self.reasons],
            }
        )
        return out


@dataclass(frozen=True)
class ParetoPoint:
    device: str
    count: int
    pricing: str
    provider: str
    region: str | None
    cost_usd: Decimal
    wall_clock_hours: float
    co2e_kg: float | None
    meets_deadline: bool

    def to_dict(self) -> dict:
        return jsonable(self)


@dataclass(frozen=True)
class ParetoFront:
    """Candidates no other candidate beats on both ``x`` and ``y`` (both minimized), ordered by ``x``."""

    x: str
    y: str
    points: tuple[ParetoPoint, ...]

    def to_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "points": [p.to_dict() for p in self.points]}


@dataclass(frozen=True)
class TrainPlan:
    """The answer of :func:`plan_train`: feasible options best first, the strongest rejected alternatives with
    reasons, Pareto fronts (cost vs time, cost vs CO2e) over every candidate that fits, and the assumptions."""

    options: tuple[TrainOption, ...]
    rejected: tuple[RejectedTrainOption, ...]
    pareto: tuple[ParetoFront, ...]
    assumptions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "options": [o.to_dict() for o in self.options],
            "rejected": [r.to_dict() for r in self.rejected],
            "pareto": [p.to_dict() for p in self.pareto],
            "assumptions": jsonable(self.assumptions),
        }


# ------------------------------------------------------------------------------------------ closed forms


def young_daly_interval_s(checkpoint_write_s, mtbf_s):
    """Optimal checkpoint interval to first order: ``sqrt(2 * C * M)`` for checkpoint cost C and mean time between
    failures M (Young 1974, "A first order approximation to the optimum checkpoint interval", CACM 17(9);
    Daly 2006, "A higher order estimate of the optimum checkpoint interval for restart dumps", FGCS 22(3))."""
    return np.sqrt(2.0 * np.asarray(checkpoint_write_s, dtype=float) * mtbf_s)


def preemption_time_ratio(interval_s, checkpoint_write_s, restart_s, mtbf_s):
    """Expected wall-clock over failure-free compute time with checkpoints every *interval_s* (tau), checkpoint
    cost delta, restart time R and exponential failures with mean M:
    ``(M / tau) * exp(R / M) * (exp((tau + delta) / M) - 1)`` (Daly 2006, FGCS 22(3), eq. (13)).

    To first order this is ``1 + delta/tau + (tau/2 + R)/M``: each checkpoint costs delta, and each interruption
    loses half an interval of work plus the restart. ``mtbf_s = inf`` gives ``1 + delta/tau``. Arrays broadcast.
    """
    tau = np.asarray(interval_s, dtype=float)
    delta = np.asarray(checkpoint_write_s, dtype=float)
    m = np.asarray(mtbf_s, dtype=float)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        exact = (m / tau) * np.exp(restart_s / m) * np.expm1((tau + delta) / m)
    return np.where(np.isinf(m), 1.0 + delta / tau, exact)


def _onprem_capital_usd_per_device_h(profile: OnPremProfile) -> float:
    return (
        float(profile.purchase_usd)
        * (1.0 + profile.server_overhead_frac)
        / (profile.lifetime_years * H_PER_YEAR)
    )


def _onprem_power_usd_per_device_h(profile: OnPremProfile, power_w: float) -> float:
    return power_w / KILO * profile.pue * float(profile.electricity_usd_per_kwh)


def onprem_effective_usd_per_device_h(
    profile: OnPremProfile, power_w: float, utilization_frac: float
) -> float:
    """What one busy device-hour of owned hardware costs when it is busy *utilization_frac* of the time:
    ``purchase * (1 + server_overhead) / (lifetime_years * 8760) / utilization + power_kW * PUE * USD/kWh``.

    Straight-line depreciation spread over the busy hours only; electricity only while busy (TCO as in Barroso,
    Hoelzle & Ranganathan, "The Datacenter as a Computer", 3rd ed., ch. 6). *power_w* is the wall power per
    device, host share included."""
    u = check_positive(utilization_frac, "utilization_frac", 1.0)
    return _onprem_capital_usd_per_device_h(profile) / u + _onprem_power_usd_per_device_h(profile, power_w)


def breakeven_utilization(onprem_profile: OnPremProfile, cloud_usd_per_device_h, power_w: float) -> float:
    """Utilization at which owning costs the same per busy device-hour as renting at *cloud_usd_per_device_h*:
    solving ``capital / u + power = cloud`` gives ``u* = capital / (cloud - power)``.

    Above ``u*`` on-prem is cheaper. A value above 1 means the cloud price is lower even at full use; ``inf`` means
    the cloud price does not even cover the electricity. *power_w* is the wall power per device (host included)."""
    cloud = check_positive(float(cloud_usd_per_device_h), "cloud_usd_per_device_h", 1e6)
    margin = cloud - _onprem_power_usd_per_device_h(onprem_profile, power_w)
    if margin <= 0:
        return math.inf
    return _onprem_capital_usd_per_device_h(onprem_profile) / margin


# ------------------------------------------------------------------------------------------ search parts


@dataclass(frozen=True)
class _Source:
    """Where a device is bought: a cloud offering in one pricing kind, or an on-prem profile."""

    device_id: str
    pricing: str
    provider: str
    region: Region | None
    instance_type: str | None
    instance_size: int
    usd_per_device_h: float
    offering: Offering | None = None
    onprem: OnPremProfile | None = None


@dataclass
class _DeviceGrid:
    """Per device: the count grid and, per tensor-parallel cap, the best parallelism at each count."""

    counts: np.ndarray
    by_cap: dict[int, dict[str, np.ndarray]]
    warnings: set[str]
    error: str | None = None


def _pow2_floor(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


#: most devices of a non-datacenter segment (workstation, consumer, Apple, CPU, edge) planned together: one machine
ONE_MACHINE_MAX_DEVICES = 8


def _count_grid(sizes: Iterable[int], max_devices: int, multi: bool) -> np.ndarray:
    """Device counts to try: each instance size times 1, 2, 3, 4, 6, 8, 12, 16, ... up to *max_devices*
    (only 1 for devices without an interconnect)."""
    counts: set[int] = set()
    for size in sizes:
        if not multi:
            if size == 1:
                counts.add(1)
            continue
        mult = 1
        while size * mult <= max_devices:
            counts.add(size * mult)
            if mult >= 2 and size * mult * 3 // 2 <= max_devices:
                counts.add(size * mult * 3 // 2)
            mult *= 2
    return np.array(sorted(counts), dtype=float)


def _evaluate_device(
    model: ModelArch,
    device: Device,
    counts: np.ndarray,
    tp_caps: Sequence[int],
    *,
    tokens: float,
    method: str,
    precision: str,
    seq_len: int,
    recompute: str,
) -> _DeviceGrid:
    """Run the estimator once per (tp, pp, ZeRO) with all counts as one array; keep the fastest fitting parallelism
    per count (ties to the smaller model-parallel degree and ZeRO stage), and the least memory per count."""
    tp_max = max(tp_caps)
    tps = [t for t in (1, 2, 4, 8, 16) if t <= tp_max and model.n_heads % t == 0]
    rows: list[tuple[int, int, int, str, dict[str, np.ndarray]]] = []
    warnings: set[str] = set()
    n = counts.size
    # data parallelism beyond one sequence per replica per step would exceed the global batch (micro_batch 1)
    max_dp = max(1.0, math.floor(GLOBAL_BATCH_TOKENS / seq_len))

    def sweep(mode: str) -> None:
        for tp in tps:
            pp = 1
            while pp <= min(model.n_layers, _MAX_PP):
                mp = tp * pp
                valid = (counts >= mp) & (np.mod(counts, mp) == 0) & (counts / mp <= max_dp)
                if not valid.any():
                    if (counts >= mp).any() and pp < min(model.n_layers, _MAX_PP):
                        pp *= 2
                        continue
                    break
                stages = (1, 2, 3) if pp == 1 else (1,)  # DeepSpeed ZeRO-2/3 do not combine with pipelines
                all_fit = True
                for stage in stages:
                    sub = counts[valid]
                    est = estimate_train(
                        model,
                        device,
                        tokens=tokens,
                        device_count=sub,
                        precision=precision,
                        method=method,
                        seq_len=seq_len,
                        zero_stage=stage,
                        tensor_parallel=tp,
                        pipeline_parallel=pp,
                        recompute=mode,
                        lora_rank=LORA_RANK,
                    )
                    warnings.update(
                        w
                        for w in est.warnings
                        if not w.startswith(("does not fit", "tensor-parallel", "data-parallel"))
                    )
                    dp = sub / mp
                    micro = np.asarray(est.assumptions["tokens_per_step"]) / (dp * seq_len)
                    bubble = (pp - 1) / np.maximum(micro, 1.0)
                    grow = 1.0 + bubble

                    def full(x, fill=np.nan, valid=valid):
                        out = np.full(n, fill, dtype=float)
                        out[valid] = x
                        return out

                    data = {
                        "valid": valid.copy(),
                        "fits": full(np.asarray(est.fits, dtype=float), 0.0) > 0,
                        "mem_gb": full(est.memory_per_device_gb, np.inf),
                        "wall_h": full(est.wall_clock_hours * grow, np.inf),
                        "device_h": full(est.device_hours * grow, np.inf),
                        "it_kwh": full(est.energy_kwh * grow, np.inf),
                        "dev_kwh": full(est.device_energy_kwh * grow, np.inf),
                        "mfu": full(est.mfu_frac / grow, 0.0),
                        "bubble": full(bubble, 0.0),
                    }
                    rows.append((tp, pp, stage, mode, data))
                    all_fit = all_fit and bool(np.all(est.fits))
                if all_fit:
                    break  # more pipeline stages only add bubble
                pp *= 2

    sweep(recompute)
    fitted = np.zeros(n, dtype=bool)
    for r in rows:
        fitted |= r[4]["fits"] & r[4]["valid"]
    if recompute != "full" and not fitted.all():
        sweep("full")  # full activation recomputation (Chen et al. 2016, arXiv:1604.06174) where nothing fits
    by_cap: dict[int, dict[str, np.ndarray]] = {}
    for cap in sorted(set(tp_caps)):
        sel = [r for r in rows if r[0] <= cap]
        if not sel:
            continue
        # rank: fastest fitting first; tie -> smaller tp*pp, then lower ZeRO stage
        order = sorted(range(len(sel)), key=lambda i: (sel[i][0] * sel[i][1], sel[i][2], sel[i][3] == "full"))
        sel = [sel[i] for i in order]
        wall = np.stack([np.where(r[4]["fits"] & r[4]["valid"], r[4]["wall_h"], np.inf) for r in sel])
        rank = np.arange(len(sel))[:, None]
        best = np.lexsort((np.broadcast_to(rank, wall.shape), wall), axis=0)[0]
        mem = np.stack([np.where(r[4]["valid"], r[4]["mem_gb"], np.inf) for r in sel])
        lean = np.argmin(mem, axis=0)
        cols = np.arange(n)
        fits = np.isfinite(wall[best, cols])
        pick = np.where(fits, best, lean)
        grid = {k: np.stack([r[4][k] for r in sel])[pick, cols] for k in sel[0][4]}
        grid["fits"] = fits
        grid["tp"] = np.array([sel[i][0] for i in pick])
        grid["pp"] = np.array([sel[i][1] for i in pick])
        grid["zero"] = np.array([sel[i][2] for i in pick])
        grid["recompute"] = np.array([sel[i][3] for i in pick])
        by_cap[cap] = grid
    return _DeviceGrid(counts=counts, by_cap=by_cap, warnings=warnings)


def _checkpoint_bytes(model: ModelArch, method: str) -> float:
    n_trainable = count_params(model).total if method == "full" else lora_param_count(model, LORA_RANK)
    return CHECKPOINT_BYTES_PER_PARAM * n_trainable


def _objective_key(objective: str, cost, wall, kwh, co2, counts):
    """(primary, secondary, tertiary) arrays to minimize. Cost is compared in cents and the other measures to six
    significant digits, so that equal outcomes tie and the smaller device count wins (fewer machines to get)."""
    co2v = co2 if co2 is not None else np.full_like(cost, np.inf)

    def sig6(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(np.isfinite(x) & (x > 0), 10.0 ** (np.floor(np.log10(np.abs(x))) - 5), 1.0)
        return np.where(np.isfinite(x), np.round(x / scale) * scale, x)

    primary = {"cost": np.round(cost, 2), "time": sig6(wall), "energy": sig6(kwh), "co2": sig6(co2v)}[
        objective
    ]
    secondary = np.round(cost, 2) if objective != "cost" else sig6(kwh)
    return primary, secondary, counts


def _pareto(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in (x, y), both minimized, ordered by x."""
    order = np.lexsort((ys, xs))
    best = np.minimum.accumulate(ys[order])
    keep = np.concatenate(([True], ys[order][1:] < best[:-1]))
    return order[keep]


# ------------------------------------------------------------------------------------------------ plan


def _resolve_filters(catalog, pricing, providers, regions, spot_ok):
    if pricing is None:
        kinds = ["on-demand", "reserved"] + (["spot"] if spot_ok else [])
        if providers is None or "onprem" in providers:
            kinds.append("onprem")
    else:
        kinds = [pricing] if isinstance(pricing, str) else list(pricing)
        kinds = [pricing_kind(k) for k in kinds]
        if "spot" in kinds and not spot_ok:
            raise InputError(
                "pricing", "spot", "spot pricing needs spot_ok=True (--spot-ok); add it or drop spot"
            )
        if not kinds:
            raise InputError("pricing", pricing, "give at least one of " + ", ".join(PRICING_KINDS))
    provider_set = None
    if providers is not None:
        known = {o.provider for o in catalog.offerings} | {"onprem"}
        provider_set = set()
        for p in [providers] if isinstance(providers, str) else providers:
            key = p.strip().lower()
            if key not in known:
                hints = suggest(key, known)
                raise InputError(
                    "providers",
                    p,
                    ("did you mean " + ", ".join(repr(h) for h in hints) + "? " if hints else "")
                    + "known providers: "
                    + ", ".join(sorted(known)),
                )
            provider_set.add(key)
    region_set = None
    if regions is not None:
        region_set = {catalog.region(r).id for r in ([regions] if isinstance(regions, str) else regions)}
    return kinds, provider_set, region_set


def _sources(catalog, kinds, provider_set, region_set, onprem_region, power_w, utilization):
    from flopwise.catalog.cpu import holds_whole_devices

    out: list[_Source] = []
    for o in catalog.offerings:
        if provider_set is not None and o.provider not in provider_set:
            continue
        if region_set is not None and o.region not in region_set:
            continue
        if o.device_id not in catalog.devices or not holds_whole_devices(o):
            continue  # a CPU VM smaller than a socket: training plans count whole devices
        for kind in kinds:
            if kind == "onprem":
                continue
            price = price_per_device_h(o, kind)
            if price is None:
                continue
            out.append(
                _Source(
                    o.device_id,
                    kind,
                    o.provider,
                    catalog.regions.get(o.region),
                    o.instance_type,
                    o.device_count,
                    float(price),
                    offering=o,
                )
            )
    if "onprem" in kinds:
        for dev_id, prof in sorted(catalog.onprem.items()):
            if dev_id not in catalog.devices:
                continue
            price = onprem_effective_usd_per_device_h(prof, power_w(catalog.devices[dev_id]), utilization)
            out.append(_Source(dev_id, "onprem", "onprem", onprem_region, None, 1, price, onprem=prof))
    return out


@dataclass(frozen=True)
class _TrainInputs:
    """plan_train's arguments, checked (each field named in the InputError that refuses it)."""

    tokens: float
    method: str
    objective: str
    deadline_s: float | None
    budget_usd: float | None
    interruption_rate_per_h: float
    checkpoint_interval_s: float | None
    checkpoint_write_s: float | None
    restart_s: float
    utilization_frac: float


def _check_train_inputs(
    model: Any,
    tokens: float | str,
    method: str,
    objective: str,
    deadline_s: float | None,
    budget_usd: Decimal | float | None,
    max_devices: int,
    top: int,
    interruption_rate_per_h: float,
    checkpoint_interval_s: float | None,
    checkpoint_write_s: float | None,
    restart_s: float,
    utilization_frac: float,
) -> _TrainInputs:
    if not isinstance(model, ModelArch):
        raise InputError("model", model, "give a ModelArch (flopwise.models.load_models().resolve(name))")
    tokens_v = parse_count(tokens, "tokens", max_value=1e16)
    method = check_choice(method, "method", METHODS)
    objective = check_choice(objective, "objective", OBJECTIVES)
    deadline = None if deadline_s is None else check_positive(float(deadline_s), "deadline_s", 1e10)
    budget = None if budget_usd is None else check_positive(float(budget_usd), "budget_usd", 1e13)
    if isinstance(max_devices, bool) or not isinstance(max_devices, int) or not 1 <= max_devices <= 1_000_000:
        raise InputError("max_devices", max_devices, "give a whole number from 1 to 1000000")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError("top", top, "give a whole number of at least 1")
    rate = check_positive(float(interruption_rate_per_h), "interruption_rate_per_h", 100.0, allow_zero=True)
    interval = (
        None
        if checkpoint_interval_s is None
        else check_positive(float(checkpoint_interval_s), "checkpoint_interval_s", 1e9)
    )
    write_s = (
        None
        if checkpoint_write_s is None
        else check_positive(float(checkpoint_write_s), "checkpoint_write_s", 1e7, allow_zero=True)
    )
    restart = check_positive(float(restart_s), "restart_s", 1e7, allow_zero=True)
    util = check_positive(float(utilization_frac), "utilization_frac", 1.0)
    return _TrainInputs(tokens_v, method, objective, deadline, budget, rate, interval, write_s, restart, util)


def _train_wall_power_w(device: Device) -> float:
    """Wall power of one training device, its host share included."""
    return en.device_power_w(device.tdp_w, device.idle_w, en.TRAIN_ACTIVITY_FRAC) * (
        1.0 + en.host_power_frac(device)
    )


def _evaluate_grids(
    model: ModelArch,
    catalog: Any,
    sources: list[_Source],
    inp: _TrainInputs,
    *,
    max_devices: int,
    precision: str,
    seq_len: int,
    recompute: str,
) -> tuple[dict[str, _DeviceGrid], set[str]]:
    """Evaluate every device type once, vectorized over device counts: grids per device id, and warnings."""
    by_device: dict[str, list[_Source]] = {}
    for s in sources:
        by_device.setdefault(s.device_id, []).append(s)
    grids: dict[str, _DeviceGrid] = {}
    warnings: set[str] = set()
    for dev_id, srcs in sorted(by_device.items()):
        device = catalog.devices[dev_id]
        multi = device.interconnect_gb_per_s > 0
        sizes = sorted({s.instance_size for s in srcs} | ({1} if any(s.onprem for s in srcs) else set()))
        # Multi-node training needs a datacenter fabric (InfiniBand/RoCE or NVLink domains) that the catalog
        # models only for datacenter parts: other segments are planned within one machine.
        device_limit = (
            max_devices if device.segment == "datacenter" else min(max_devices, ONE_MACHINE_MAX_DEVICES)
        )
        counts = _count_grid(sizes, device_limit, multi)
        if counts.size == 0:
            grids[dev_id] = _DeviceGrid(
                counts,
                {},
                set(),
                error=(
                    f"{dev_id} has no interconnect in the catalog, so only single-device training is modelled, "
                    f"and it is sold only in instances of {', '.join(str(s) for s in sizes)} devices"
                    if not multi
                    else f"its smallest instance ({min(sizes)} devices) exceeds max_devices={max_devices}"
                ),
            )
            continue
        caps = sorted({_tp_cap(s) for s in srcs})
        try:
            grids[dev_id] = _evaluate_device(
                model,
                device,
                counts,
                caps,
                tokens=inp.tokens,
                method=inp.method,
                precision=precision,
                seq_len=seq_len,
                recompute=recompute,
            )
        except FlopwiseError as err:
            if isinstance(err, InputError) and err.field not in ("device_count",):
                raise
            grids[dev_id] = _DeviceGrid(counts, {}, set(), error=str(err))
        warnings |= grids[dev_id].warnings
    return grids, warnings


@dataclass(frozen=True)
class _Priced:
    """One source over its device-count grid: time, device-hours, cost, energy and CO2e per count, and the
    masks of the constraints each count meets."""

    source: _Source
    device: Device
    grid: dict[str, np.ndarray]
    counts: np.ndarray
    usable: np.ndarray
    ratio: np.ndarray
    tau: np.ndarray
    wall: np.ndarray
    dev_h: np.ndarray
    cost: np.ndarray
    kwh: np.ndarray
    co2: np.ndarray | None
    fits: np.ndarray
    meets: np.ndarray
    within: np.ndarray
    pue: float


def _price_source(
    s: _Source, device: Device, g: _DeviceGrid, inp: _TrainInputs, ckpt_bytes: float
) -> _Priced | None:
    """Price *s* at every count of its device grid, spot interruption overhead included; None if no count is
    a whole number of its instances."""
    grid = g.by_cap[_tp_cap(s)]
    counts = g.counts
    usable = grid["valid"] & (np.mod(counts, s.instance_size) == 0)
    if not usable.any():
        return None
    n_inst = counts / s.instance_size
    if s.pricing == "spot":
        nodes = np.ceil(counts / DEVICES_PER_NODE)
        delta = (
            inp.checkpoint_write_s
            if inp.checkpoint_write_s is not None
            else ckpt_bytes / (CHECKPOINT_WRITE_GB_PER_S_PER_NODE * GIGA * nodes)
        )
        rate = inp.interruption_rate_per_h
        mtbf = np.where(rate > 0, S_PER_H / np.maximum(rate * n_inst, 1e-300), np.inf)
        interval = inp.checkpoint_interval_s
        tau = np.broadcast_to(
            interval if interval is not None else young_daly_interval_s(delta, mtbf), counts.shape
        ).astype(float)
        tau = np.where(np.isfinite(tau) & (tau > 0), tau, np.inf)
        ratio = np.where(np.isinf(tau), 1.0, preemption_time_ratio(tau, delta, inp.restart_s, mtbf))
    else:
        tau = np.full(counts.shape, np.nan)
        ratio = np.ones(counts.shape)
    pue = (
        s.onprem.pue
        if s.onprem is not None
        else (s.region.pue if s.region is not None else en.DEFAULT_PUE)
    )
    wall = grid["wall_h"] * ratio
    dev_h = grid["device_h"] * ratio
    cost = dev_h * s.usd_per_device_h
    kwh = grid["it_kwh"] * ratio * pue
    co2 = None if s.region is None else en.co2e_kg(kwh, s.region.grid_gco2e_per_kwh)
    fits = grid["fits"] & usable
    meets = np.ones_like(fits) if inp.deadline_s is None else wall * S_PER_H <= inp.deadline_s
    within = np.ones_like(fits) if inp.budget_usd is None else cost <= inp.budget_usd
    return _Priced(
        s, device, grid, counts, usable, ratio, tau, wall, dev_h, cost, kwh, co2, fits, meets, within, float(pue)
    )


def _train_option(p: _Priced, i: int, cloud_best: dict[str, dict[str, float]]) -> TrainOption:
    """The TrainOption at count index *i* of priced source *p*."""
    s, grid, device = p.source, p.grid, p.device
    count = int(p.counts[i])
    mp = int(grid["tp"][i]) * int(grid["pp"][i])
    dp = count // mp
    be = None
    if s.onprem is not None and s.device_id in cloud_best:
        be = {
            k: breakeven_utilization(s.onprem, v, _train_wall_power_w(device))
            for k, v in sorted(cloud_best[s.device_id].items())
        }
    return TrainOption(
        device=s.device_id,
        count=count,
        parallelism=Parallelism(
            int(grid["tp"][i]), int(grid["pp"][i]), dp, int(grid["zero"][i]) if dp > 1 else 0
        ),
        recompute=str(grid["recompute"][i]),
        pricing=s.pricing,
        provider=s.provider,
        region=s.region.id if s.region else None,
        instance_type=s.instance_type,
        usd_per_device_h=Decimal(repr(round(s.usd_per_device_h, 4))),
        wall_clock_hours=float(p.wall[i]),
        device_hours=float(p.dev_h[i]),
        cost_usd=to_money(float(p.cost[i])),
        energy_kwh=float(p.kwh[i]),
        co2e_kg=None if p.co2 is None else float(p.co2[i]),
        device_energy_kwh=float(grid["dev_kwh"][i] * p.ratio[i]),
        node_energy_kwh=float(grid["it_kwh"][i] * p.ratio[i]),
        pue=p.pue,
        meets_deadline=bool(p.meets[i]),
        within_budget=bool(p.within[i]),
        fits=bool(grid["fits"][i]),
        memory_per_device_gb=float(grid["mem_gb"][i]),
        memory_capacity_gb=device.memory_gb,
        mfu_frac=float(grid["mfu"][i]),
        pipeline_bubble_frac=float(grid["bubble"][i]),
        preemption_overhead_frac=float(p.ratio[i] - 1.0),
        checkpoint_interval_s=None if not np.isfinite(p.tau[i]) else float(p.tau[i]),
        breakeven_utilization_frac=be,
    )


def _nearest_miss(p: _Priced, inp: _TrainInputs) -> tuple[int, list[Rejection], int]:
    """Why no count of *p* is feasible: (count index of the nearest miss, reasons, rank of the first reason)."""
    grid, counts, device = p.grid, p.counts, p.device
    deadline, budget = inp.deadline_s, inp.budget_usd
    fit_idx = np.flatnonzero(p.fits)
    reasons: list[Rejection] = []
    if not fit_idx.size:
        idx = np.flatnonzero(p.usable)
        i = int(idx[np.argmin(grid["mem_gb"][idx])])
        need, cap = float(grid["mem_gb"][i]), device.memory_gb
        reasons.append(
            Rejection(
                "memory",
                f"does not fit: at least {need:.1f} GB per device needed ({int(counts[i])} devices, "
                f"tp={int(grid['tp'][i])}, pp={int(grid['pp'][i])}, ZeRO-{int(grid['zero'][i])}), {cap:g} GB "
                "available; try method='lora' or 'qlora', a larger max_devices or a device with more memory",
                need,
                cap,
                "GB per device",
            )
        )
        order = _REASON_ORDER["memory"]
    elif deadline is not None and not (p.fits & p.meets).any():
        i = int(fit_idx[np.argmin(p.wall[fit_idx])])
        reasons.append(
            Rejection(
                "deadline",
                f"misses the deadline: {p.wall[i]:,.1f} h on {int(counts[i])} devices (the fastest that fits), "
                f"deadline {deadline / S_PER_H:,.1f} h",
                float(p.wall[i]),
                deadline / S_PER_H,
                "h",
            )
        )
        order = _REASON_ORDER["deadline"]
    else:
        assert budget is not None  # fits and meets somewhere, yet not ok: the budget is what excludes it
        idx = np.flatnonzero(p.fits & p.meets)
        i = int(idx[np.argmin(p.cost[idx])])
        reasons.append(
            Rejection(
                "budget",
                f"over budget: ${p.cost[i]:,.2f} on {int(counts[i])} devices (the cheapest that fits"
                + (" and meets the deadline" if deadline is not None else "")
                + f"), budget ${budget:,.2f}",
                float(p.cost[i]),
                budget,
                "USD",
            )
        )
        order = _REASON_ORDER["budget"]
    if order != _REASON_ORDER["budget"] and budget is not None and not p.within[i]:
        reasons.append(
            Rejection(
                "budget",
                f"also over budget: ${p.cost[i]:,.2f} vs ${budget:,.2f}",
                float(p.cost[i]),
                budget,
                "USD",
            )
        )
    return i, reasons, order


def _cheapest_cloud(sources: list[_Source]) -> dict[str, dict[str, float]]:
    """The cheapest cloud price per device-hour, per device id and pricing kind (for on-prem break-even)."""
    cloud_best: dict[str, dict[str, float]] = {}
    for s in sources:
        if s.pricing != "onprem":
            d = cloud_best.setdefault(s.device_id, {})
            d[s.pricing] = min(d.get(s.pricing, math.inf), s.usd_per_device_h)
    return cloud_best


def _choose_per_group(
    sources: list[_Source],
    grids: dict[str, _DeviceGrid],
    catalog: Any,
    inp: _TrainInputs,
    ckpt_bytes: float,
    cloud_best: dict[str, dict[str, float]],
) -> tuple[dict[tuple[str, str, str], tuple[tuple, TrainOption]], dict[tuple[str, str, str], tuple], list[tuple]]:
    """Price every source and keep, per (device, pricing, provider) group, the best feasible option by the
    objective, or else the nearest miss; with the Pareto rows of every fitting option."""
    best: dict[tuple[str, str, str], tuple[tuple, TrainOption]] = {}
    misses: dict[tuple[str, str, str], tuple[tuple, RejectedTrainOption]] = {}
    pareto_rows: list[tuple] = []
    for s in sorted(
        sources,
        key=lambda s: (
            s.device_id,
            s.pricing,
            s.provider,
            s.region.id if s.region else "",
            s.instance_type or "",
        ),
    ):
        key = (s.device_id, s.pricing, s.provider)
        g = grids[s.device_id]
        if g.error is not None or _tp_cap(s) not in g.by_cap:
            rej = RejectedTrainOption(
                s.device_id,
                s.pricing,
                s.provider,
                (Rejection("unsupported", g.error or "no parallelism applies"),),
                None,
            )
            _keep_miss(misses, key, (_REASON_ORDER["unsupported"], 0.0), rej)
            continue
        p = _price_source(s, catalog.devices[s.device_id], g, inp, ckpt_bytes)
        if p is None:
            continue
        for j in np.flatnonzero(p.fits).tolist():
            pareto_rows.append(
                (
                    float(p.cost[j]),
                    float(p.wall[j]),
                    math.inf if p.co2 is None else float(p.co2[j]),
                    s,
                    int(p.counts[j]),
                    bool(p.meets[j]),
                )
            )
        ok = p.fits & p.meets & p.within
        if ok.any():
            primary, secondary, tertiary = _objective_key(inp.objective, p.cost, p.wall, p.kwh, p.co2, p.counts)
            idx = np.flatnonzero(ok)
            i = int(idx[np.lexsort((tertiary[idx], secondary[idx], primary[idx]))[0]])
            rank = (float(primary[i]), float(secondary[i]), float(tertiary[i]))
            if key not in best or rank < best[key][0]:
                best[key] = (rank, _train_option(p, i, cloud_best))
            continue
        i, reasons, order = _nearest_miss(p, inp)
        rej = RejectedTrainOption(s.device_id, s.pricing, s.provider, tuple(reasons), _train_option(p, i, cloud_best))
        _keep_miss(misses, key, (order, reasons[0].excess_frac or 0.0), rej)

    return best, misses, pareto_rows


def plan_train(
    model: ModelArch,
    tokens: float | str,
    catalog: Any,
    *,
    method: str = "full",
    deadline_s: float | None = None,
    budget_usd: Decimal | float | None = None,
    objective: str = "cost",
    spot_ok: bool = False,
    pricing: str | Sequence[str] | None = None,
    providers: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    max_devices: int = 16384,
    checkpoint_interval_s: float | None = None,
    interruption_rate_per_h: float = DEFAULT_INTERRUPTION_RATE_PER_H,
    checkpoint_write_s: float | None = None,
    restart_s: float = RESTART_S,
    utilization_frac: float = DEFAULT_UTILIZATION_FRAC,
    onprem_region: str | None = DEFAULT_ONPREM_REGION,
    precision: str = "bf16",
    seq_len: int = 4096,
    recompute: str = "selective",
    top: int = 20,
) -> TrainPlan:
    """Search the catalog for the best ways to train *model* on *tokens* tokens.

    *catalog* is a loaded :class:`flopwise.catalog.Catalog` (devices, offerings, onprem, regions). *pricing* picks
    the pricing kinds (default on-demand, reserved and on-prem, plus spot when *spot_ok*); *providers* and *regions*
    restrict cloud offerings (``"onprem"`` in *providers* keeps on-prem). Options meet the deadline and budget
    and fit in memory; the best per (device, pricing, provider) is kept, ranked by *objective*
    (cost | time | energy | co2), and the first *top* returned. ``rejected`` holds, for the (device, pricing,
    provider) groups with no feasible plan, the nearest miss and why.

    Spot: with interruption rate lambda per instance-hour, a job on k instances has MTBF ``1 / (k lambda)``; the
    checkpoint interval defaults to Young/Daly's ``sqrt(2 C M)`` and the expected overhead
    (:func:`preemption_time_ratio`) is added to time, cost and energy. On-prem cost uses
    :func:`onprem_effective_usd_per_device_h` at *utilization_frac*, with :func:`breakeven_utilization` against
    the cheapest cloud price of the same device per pricing kind.

    The steps, one function each: check the inputs (:func:`_check_train_inputs`), list the sources
    (:func:`_sources`), evaluate each device type over its count grid (:func:`_evaluate_grids`), price each source
    (:func:`_price_source`), keep the best option or the nearest miss per group (:func:`_train_option`,
    :func:`_nearest_miss`), and state the assumptions (:func:`_train_assumptions`).
    """
    inp = _check_train_inputs(
        model,
        tokens,
        method,
        objective,
        deadline_s,
        budget_usd,
        max_devices,
        top,
        interruption_rate_per_h,
        checkpoint_interval_s,
        checkpoint_write_s,
        restart_s,
        utilization_frac,
    )
    kinds, provider_set, region_set = _resolve_filters(catalog, pricing, providers, regions, spot_ok)
    onprem_reg = catalog.region(onprem_region) if onprem_region else None
    sources = _sources(
        catalog, kinds, provider_set, region_set, onprem_reg, _train_wall_power_w, inp.utilization_frac
    )
    if not sources:
        raise UnsupportedError(
            f"No device is sold as {', '.join(kinds)}"
            + (f" by {', '.join(sorted(provider_set))}" if provider_set else "")
            + (f" in {', '.join(sorted(region_set))}" if region_set else "")
            + "; widen --providers/--regions or add --pricing onprem"
        )
    grids, warnings = _evaluate_grids(
        model, catalog, sources, inp, max_devices=max_devices, precision=precision, seq_len=seq_len,
        recompute=recompute,
    )  # fmt: skip

    ckpt_bytes = _checkpoint_bytes(model, inp.method)
    cloud_best = _cheapest_cloud(sources)
    best, misses, pareto_rows = _choose_per_group(sources, grids, catalog, inp, ckpt_bytes, cloud_best)

    rank_opts = sorted(best.values(), key=lambda kv: (kv[0], kv[1].device, kv[1].pricing, kv[1].provider))
    options = tuple(o for _, o in rank_opts[:top])
    rejected_all = sorted(
        (v for k, v in misses.items() if k not in best),
        key=lambda kv: (kv[0], kv[1].device, kv[1].pricing, kv[1].provider),
    )
    rejected = tuple(r for _, r in rejected_all[:top])
    searched = {
        "device_types_considered": len(grids),
        "sources_considered": len(sources),
        "groups_feasible": len(best),
        "groups_rejected": len(rejected_all),
    }
    assumptions = _train_assumptions(
        model, inp, kinds, provider_set, region_set, onprem_reg, budget_usd, max_devices, precision, seq_len,
        recompute, interruption_rate_per_h, ckpt_bytes, searched,
        _cloud_vs_onprem(catalog, sources, cloud_best, _train_wall_power_w, inp.utilization_frac), warnings,
    )  # fmt: skip
    from flopwise.catalog.staleness import data_age

    assumptions["data_age"] = data_age(catalog, ((o.provider, o.instance_type, o.region) for o in options))
    if "spot" in assumptions:
        assumptions["spot"]["prices"] = _spot_price_basis(catalog, options)
    if not options:
        nearest = rejected[0] if rejected else None
        assumptions["no_feasible_option"] = "no device type meets every constraint" + (
            f"; nearest: {nearest.device} ({nearest.pricing}, {nearest.provider}): {nearest.reasons[0].message}"
            if nearest
            else ""
        )
    return TrainPlan(options=options, rejected=rejected, pareto=_fronts(pareto_rows), assumptions=assumptions)


def _train_assumptions(
    model: ModelArch,
    inp: _TrainInputs,
    kinds: list[str],
    provider_set: set[str] | None,
    region_set: set[str] | None,
    onprem_reg: Region | None,
    budget_usd: Decimal | float | None,
    max_devices: int,
    precision: str,
    seq_len: int,
    recompute: str,
    interruption_rate_per_h: float,
    ckpt_bytes: float,
    searched: dict[str, int],
    cloud_vs_onprem: dict[str, dict],
    warnings: set[str],
) -> dict[str, Any]:
    """What a train plan rests on, in words and numbers (the plan's ``assumptions``)."""
    deadline = inp.deadline_s
    assumptions: dict[str, Any] = {
        "model": model.id,
        "tokens": inp.tokens,
        "method": inp.method,
        "precision": precision,
        "seq_len": seq_len,
        "recompute": recompute,
        "objective": inp.objective,
        "pricing": kinds,
        "providers": sorted(provider_set) if provider_set else None,
        "regions": sorted(region_set) if region_set else None,
        "deadline_h": None if deadline is None else deadline / S_PER_H,
        "budget_usd": None if inp.budget_usd is None else str(budget_usd),
        "max_devices": max_devices,
        "non_datacenter_devices": f"planned within one machine (at most {ONE_MACHINE_MAX_DEVICES} devices): the "
        "catalog models no multi-node fabric for workstation, consumer, Apple, CPU or edge hardware",
        **searched,
        "memory_and_time": "flopwise.estimate.estimate_train per (tp, pp, ZeRO stage), vectorized over counts; "
        "tensor parallel within one instance (at most 8), ZeRO-2/3 only without pipeline stages; the fastest "
        "fitting parallelism per count, ties to the smaller tp*pp and ZeRO stage",
        "pipeline_bubble": "1F1B bubble (p-1)/m with m micro-batches per step per pipeline, added to time, "
        "device-hours and energy (Narayanan et al. 2021, arXiv:2104.04473, Sec. 2.2.1)",
        "energy": "estimator IT energy (host share included) times the region's PUE (cloud) or the profile's PUE "
        "(on-prem); CO2e with the region's grid intensity",
        "onprem": {
            "utilization_frac": inp.utilization_frac,
            "region": onprem_reg.id if onprem_reg else None,
            "cost": "purchase * (1 + server_overhead) / (lifetime_years * 8760) / utilization + power_kW * PUE "
            "* USD/kWh; breakeven_utilization_frac = capital / (cloud - power) per cloud pricing kind",
        },
        "reserved": "reserved prices assume the commitment (1y/3y) is used by other work outside this run",
        "cloud_vs_onprem": cloud_vs_onprem,
        "warnings": sorted(warnings),
    }
    if "spot" in kinds:
        interval, write_s = inp.checkpoint_interval_s, inp.checkpoint_write_s
        assumptions["spot"] = {
            "interruption_rate_per_h": inp.interruption_rate_per_h,
            "interruption_rate_source": "given"
            if interruption_rate_per_h != DEFAULT_INTERRUPTION_RATE_PER_H
            else "default assumption (see DEFAULT_INTERRUPTION_RATE_PER_H)",
            "mtbf": "1 / (rate * instances): any interruption stops a synchronous job",
            "checkpoint_interval_s": interval
            if interval is not None
            else "Young/Daly optimum sqrt(2 * checkpoint_write_s * MTBF) per option (Young 1974; Daly 2006)",
            "checkpoint_write_s": write_s
            if write_s is not None
            else f"{ckpt_bytes / GIGA:,.1f} GB ({CHECKPOINT_BYTES_PER_PARAM:g} B per trainable parameter) at "
            f"{CHECKPOINT_WRITE_GB_PER_S_PER_NODE:g} GB/s per node, nodes writing in parallel",
            "restart_s": inp.restart_s,
            "overhead": "expected time ratio (M/tau) e^(R/M) (e^((tau+delta)/M) - 1) (Daly 2006), applied to "
            "time, device-hours, cost and energy",
        }
    return assumptions


def _spot_price_basis(catalog: Any, options: Sequence[TrainOption]) -> dict[str, Any]:
    """Where the spot prices of the spot options come from: a market price at fetch time, or a provider's published
    fixed preemptible discount (the offering's note says which rule, with its source)."""
    from flopwise.catalog.fetch.skypilot import SPOT_RULE_NOTE

    by_id = {o.id: o for o in catalog.offerings}
    rule = sorted(
        oid
        for o in options
        if o.pricing == "spot" and o.region and o.instance_type
        for oid in [f"{o.provider}:{o.instance_type}:{o.region.split(':', 1)[-1]}"]
        if oid in by_id and SPOT_RULE_NOTE in by_id[oid].note
    )
    return {
        "basis": "the source's spot price at fetch time (lowest zone), except the offerings listed under "
        "derived_from_published_rule",
        "derived_from_published_rule": rule,
    }


def _tp_cap(s: _Source) -> int:
    """Largest tensor-parallel degree inside one instance (on-prem: one 8-device server)."""
    size = DEVICES_PER_NODE if s.onprem is not None else s.instance_size
    return min(DEVICES_PER_NODE, _pow2_floor(size))


def _keep_miss(misses: dict, key: tuple, rank: tuple, rej: RejectedTrainOption) -> None:
    if key not in misses or rank < misses[key][0]:
        misses[key] = (rank, rej)


def _fronts(rows: list[tuple]) -> tuple[ParetoFront, ...]:
    if not rows:
        return (ParetoFront("cost_usd", "wall_clock_hours", ()), ParetoFront("cost_usd", "co2e_kg", ()))
    cost = np.array([r[0] for r in rows])
    wall = np.array([r[1] for r in rows])
    co2 = np.array([r[2] for r in rows])

    def point(i: int) -> ParetoPoint:
        c, w, k, s, n, meets = rows[i]
        return ParetoPoint(
            s.device_id,
            n,
            s.pricing,
            s.provider,
            s.region.id if s.region else None,
            to_money(c),
            w,
            None if math.isinf(k) else k,
            meets,
        )

    fronts = [ParetoFront("cost_usd", "wall_clock_hours", tuple(point(int(i)) for i in _pareto(cost, wall)))]
    finite = np.flatnonzero(np.isfinite(co2))
    co2_front = finite[_pareto(cost[finite], co2[finite])] if finite.size else np.array([], dtype=int)
    fronts.append(ParetoFront("cost_usd", "co2e_kg", tuple(point(int(i)) for i in co2_front)))
    return tuple(fronts)


def _cloud_vs_onprem(catalog, sources, cloud_best, wall_power_w, util) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for dev_id in sorted({s.device_id for s in sources if s.onprem is not None} & set(cloud_best)):
        prof = catalog.onprem[dev_id]
        power = wall_power_w(catalog.devices[dev_id])
        out[dev_id] = {
            "onprem_usd_per_device_h": round(onprem_effective_usd_per_device_h(prof, power, util), 4),
            "cloud_usd_per_device_h": {k: round(v, 4) for k, v in sorted(cloud_best[dev_id].items())},
            "breakeven_utilization_frac": {
                k: breakeven_utilization(prof, v, power) for k, v in sorted(cloud_best[dev_id].items())
            },
            "wall_power_w": round(power, 1),
        }
    return out
