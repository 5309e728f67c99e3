"""What-ifs on a chosen serve option: what one change would save, and what it risks.

Each what-if re-plans the same workload with one thing changed (precision, price basis, region, prompt tokens
after prefix caching, a smaller model of the same family, 2:4 structured sparsity, a larger batch cap) through
``plan_serve`` and compares the cost per hour with the chosen option. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from flopwise.catalog.types import Device
from flopwise.estimate.quant import get_quant, resolve_serving_quant
from flopwise.models.params import count_params
from flopwise.plan.candidates import CandidateSpace, ServeWorkload, enumerate_serve_space
from flopwise.plan.serve import plan_serve
from flopwise.vocab import PRICING_KINDS

__all__ = ["PREFIX_CACHE_HIT_FRAC", "WhatIf", "sparse_device", "what_ifs"]

#: dense peak field -> the catalog's 2:4 sparse peak that replaces it (fp16 runs at the bf16 sparse rate, scaled
#: by the device's own fp16/bf16 dense ratio)
_SPARSE_PEAKS = {
    "bf16": "sparse_bf16_tflop_per_s",
    "fp16": "sparse_bf16_tflop_per_s",
    "fp8": "sparse_fp8_tflop_per_s",
    "int8": "sparse_int8_tflop_per_s",
    "fp4": "sparse_fp4_tflop_per_s",
}

#: share of prompt tokens served from the prefix cache (shared system prompt / chat history). Derived: SGLang's
#: RadixAttention reports 50-99% hit rates on multi-turn and few-shot workloads (Zheng et al. 2023,
#: arXiv:2312.07104, Fig. 8); 0.5 is a conservative single value.
PREFIX_CACHE_HIT_FRAC = 0.5


@dataclass(frozen=True)
class WhatIf:
    """One change: its best option, the saving against the chosen option (USD per hour and fraction), the caveat."""

    name: str
    description: str
    option: dict | None
    saving_usd_per_h: Decimal | None
    saving_frac: float | None
    caveat: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "option": self.option,
            "saving_usd_per_h": None if self.saving_usd_per_h is None else str(self.saving_usd_per_h),
            "saving_frac": self.saving_frac,
            "caveat": self.caveat,
        }


def sparse_device(device: Device) -> Device | None:
    """*device* with its dense matmul peaks replaced by the vendor's 2:4 structured-sparsity peaks (the catalog's
    ``sparse_*_tflop_per_s``), or None when it has none. The sparse Tensor Core skips the zero half of each
    group of four weights, doubling the math rate of compute-bound matmuls (Mishra et al. 2021, "Accelerating
    Sparse Deep Neural Networks", arXiv:2104.08378); memory traffic is left dense, so memory-bound decode steps
    do not speed up (the roofline keeps whichever bound dominates)."""
    changes: dict[str, Any] = {}
    for dtype, field in _SPARSE_PEAKS.items():
        sparse = getattr(device, field)
        dense = device.peak_tflop_per_s(dtype)
        if not sparse or not dense:
            continue
        if dtype == "fp16" and device.peak_bf16_tflop_per_s:
            sparse = sparse * dense / device.peak_bf16_tflop_per_s
        if sparse > dense:
            changes[f"peak_{dtype}_tflop_per_s"] = float(sparse)
    return replace(device, **changes) if changes else None


def _region_id(c: Any) -> str | None:
    return c.region.id if c.region is not None else None


def _only(space: CandidateSpace, **match: Any) -> CandidateSpace:
    def value(c: Any, k: str) -> Any:
        if k == "device":
            return c.device.id
        if k == "region":
            return _region_id(c)
        return getattr(c, k)

    keep = tuple(c for c in space.candidates if all(value(c, k) == v for k, v in match.items()))
    return CandidateSpace(keep, ())


def _best(
    workload: ServeWorkload, catalog: Any, space: CandidateSpace, objective: str = "cost"
) -> dict | None:
    if not space.candidates:
        return None
    plan = plan_serve(workload, catalog, space=space, objective=objective, top_k=1)
    return plan.options[0] if plan.options else None


def _what(name, description, base: dict, option: dict | None, caveat: str) -> WhatIf:
    if option is None:
        return WhatIf(name, description, None, None, None, caveat + " (no option meets the targets this way)")
    base_cost = Decimal(str(base["cost_per_hour_usd"]))
    saving = base_cost - Decimal(str(option["cost_per_hour_usd"]))
    frac = float(saving / base_cost) if base_cost > 0 else None
    return WhatIf(name, description, option, saving, frac, caveat)


def _has_spot_price(catalog: Any, device: str) -> bool:
    return any(o.device_id == device and o.spot_usd_per_h is not None for o in catalog.offerings)


def what_ifs(option: dict, workload: ServeWorkload, catalog: Any) -> list[WhatIf]:
    """What-ifs for *option* (an option dict of a ServePlan for *workload*), cheapest first."""
    device = option["device"]
    all_prices = PRICING_KINDS
    space = enumerate_serve_space(
        catalog, workload.model, pricing=all_prices, min_precision="int4", max_devices=64
    )
    same = dict(device=device, pricing=option["pricing"])
    same_q = dict(device=device, pricing=option["pricing"], quant=option["quant"])
    out: list[WhatIf] = []
    quant = _best(workload, catalog, _only(space, **same))
    out.append(
        _what(
            "quantize",
            f"the best precision down to int4 on {device} ({option['pricing']})",
            option,
            quant,
            "int4/fp8 weights can cost accuracy; check the model's quantized evals (AWQ/GPTQ report <1 point "
            "on most benchmarks for 7B+ models)",
        )
    )
    spot_space = _only(space, device=device, pricing="spot", quant=option["quant"])
    spot_desc = f"spot instead of {option['pricing']} for {device}"
    if not spot_space.candidates and not _has_spot_price(catalog, device):
        # nothing to price, which is not the same as "no option meets the targets"
        where = option.get("region") or "any region"
        out.append(
            WhatIf(
                "spot",
                spot_desc,
                None,
                None,
                None,
                f"no spot price known for {device} in {where} (nor in any other region of the catalog); "
                "refresh the catalog or price it by hand",
            )
        )
    else:
        out.append(
            _what(
                "spot",
                spot_desc,
                option,
                _best(workload, catalog, spot_space),
                "spot capacity can be reclaimed with ~2 minutes notice; keep on-demand replicas for the floor load",
            )
        )
    reserved = _best(
        workload, catalog, _only(space, device=device, pricing="reserved", quant=option["quant"])
    )
    out.append(
        _what(
            "reserved",
            f"reserved capacity for {device} at the baseline load",
            option,
            reserved,
            "a 1- or 3-year commitment paid whether used or not",
        )
    )
    green = _best(workload, catalog, _only(space, **same_q), objective="co2")
    w = _what(
        "greener_region",
        f"the lowest-CO2 region selling {device} ({option['pricing']})",
        option,
        green,
        "latency to users and data residency change with the region",
    )
    out.append(w)
    cached = replace(
        workload, input_tokens=max(1, round(workload.input_tokens * (1 - PREFIX_CACHE_HIT_FRAC)))
    )
    out.append(
        _what(
            "prefix_caching",
            f"prefix caching with {PREFIX_CACHE_HIT_FRAC:.0%} of prompt tokens hit",
            option,
            _best(cached, catalog, _only(space, **same_q)),
            "needs shared prefixes (system prompts, multi-turn chat); the hit rate is an assumption",
        )
    )
    # a smaller model of the same family from the registry
    try:
        from flopwise.models import load_models

        registry = load_models()
    except Exception:  # registry unavailable: skip this what-if rather than fail the others
        registry = None
    if registry is not None:
        own = count_params(workload.model).total
        smaller = sorted(
            (m for m in registry if m.family == workload.model.family and count_params(m).total < own),
            key=lambda m: -count_params(m).total,
        )
        if smaller:
            m = smaller[0]
            small_space = enumerate_serve_space(catalog, m, pricing=(option["pricing"],), max_devices=64)
            out.append(
                _what(
                    "distilled_model",
                    f"{m.id} (the next smaller {workload.model.family} model) on the best device",
                    option,
                    _best(replace(workload, model=m), catalog, small_space),
                    "a smaller or distilled model loses quality; evaluate it on your task first",
                )
            )
    out.append(_sparsity(option, workload, catalog, space))
    out.append(_larger_batch(option, workload, catalog, space))
    out.sort(key=lambda x: -(x.saving_frac if x.saving_frac is not None else -1e9))
    return out


_SPARSITY_CAVEAT = (
    "needs a 2:4-pruned checkpoint (prune + fine-tune to recover accuracy: a quality risk to evaluate on your "
    "task) and an engine with sparse kernels (TensorRT-LLM, vLLM's 2:4 sparse CUTLASS kernels); the speed-up "
    "assumed is the vendor's sparse peak (2x on compute-bound matmuls), an upper bound: Mishra et al. "
    "(arXiv:2104.08378) measure less end to end; only compute-bound prefill gains, memory-bound decode does not"
)


def _sparsity(option: dict, workload: ServeWorkload, catalog: Any, space: CandidateSpace) -> WhatIf:
    """The same device, quant, pricing, provider and region with the device's 2:4 sparse peaks."""
    device = catalog.devices[option["device"]]
    name, desc = "sparsity_2_4", f"2:4 structured sparsity on {option['device']} ({option['quant']})"
    sparse = sparse_device(device)
    dtype = resolve_serving_quant(get_quant(option["quant"]), device)[0]
    if sparse is None or sparse.peak_tflop_per_s(dtype) == device.peak_tflop_per_s(dtype):
        return WhatIf(
            name,
            desc,
            None,
            None,
            None,
            f"not applicable: {device.id} has no 2:4 sparse {dtype} rate in the catalog (sparse Tensor Cores "
            "start with NVIDIA Ampere)",
        )
    same = _only(
        space,
        device=option["device"],
        quant=option["quant"],
        pricing=option["pricing"],
        provider=option["provider"],
        region=option["region"],
    )
    swapped = CandidateSpace(tuple(replace(c, device=sparse) for c in same.candidates), ())
    best = _best(workload, catalog, swapped)
    if best is not None:
        desc += (
            f": {dtype} peak {device.peak_tflop_per_s(dtype):g} -> {sparse.peak_tflop_per_s(dtype):g} TFLOP/s, "
            f"TTFT p95 {option['ttft_p95_ms']:g} -> {best['ttft_p95_ms']:g} ms, capacity per replica "
            f"{option['capacity_rps_per_replica']:g} -> {best['capacity_rps_per_replica']:g} req/s"
        )
    return _what(name, desc, option, best, _SPARSITY_CAVEAT)


def _larger_batch(option: dict, workload: ServeWorkload, catalog: Any, space: CandidateSpace) -> WhatIf:
    """The same deployment with the SLOs lifted: the planner then raises the batch cap to the one with the most
    throughput per replica that fits in memory (below the utilization ceiling); the option shows the p95 TTFT and
    TPOT that costs, and ``meets_slo`` says whether it still meets the original targets."""
    name = "larger_batch"
    same = _only(
        space,
        device=option["device"],
        quant=option["quant"],
        pricing=option["pricing"],
        provider=option["provider"],
        region=option["region"],
        device_count=option["tensor_parallel"],
    )
    relaxed = replace(workload, ttft_p95_ms=None, tpot_p95_ms=None)
    best = _best(relaxed, catalog, same)
    if best is None or best["batch"] <= option["batch"]:
        return WhatIf(
            name,
            f"a batch cap above {option['batch']} on {option['device']}",
            None,
            None,
            None,
            f"not applicable: batch {option['batch']} is already the cap with the most throughput per replica "
            "that fits in memory",
        )
    meets = (workload.ttft_p95_ms is None or best["ttft_p95_ms"] <= workload.ttft_p95_ms) and (
        workload.tpot_p95_ms is None or best["tpot_p95_ms"] <= workload.tpot_p95_ms
    )
    best = {**best, "meets_slo": meets}
    desc = (
        f"batch cap {option['batch']} -> {best['batch']} on {option['device']}: capacity per replica "
        f"{option['capacity_rps_per_replica']:g} -> {best['capacity_rps_per_replica']:g} req/s, replicas "
        f"{option['replicas']} -> {best['replicas']}; TTFT p95 {option['ttft_p95_ms']:g} -> "
        f"{best['ttft_p95_ms']:g} ms, TPOT p95 {option['tpot_p95_ms']:g} -> {best['tpot_p95_ms']:g} ms"
    )
    caveat = (
        "larger batches trade latency for throughput: each decode step carries more sequences and queued "
        "prompts wait for slots" + ("" if meets else "; this one misses the p95 targets (meets_slo is false)")
    )
    return _what(name, desc, option, best, caveat)
