"""What-ifs on a chosen serve option: what one change would save, and what it risks.

Each what-if re-plans the same workload with one thing changed (precision, price basis, region, prompt tokens
after prefix caching, a smaller model of the same family) through ``plan_serve`` and compares the cost per hour
with the chosen option. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from flopwise.models.params import count_params
from flopwise.plan.candidates import CandidateSpace, ServeWorkload, enumerate_serve_space
from flopwise.plan.serve import plan_serve

__all__ = ["PREFIX_CACHE_HIT_FRAC", "WhatIf", "what_ifs"]

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


def _only(space: CandidateSpace, **match: Any) -> CandidateSpace:
    keep = tuple(
        c
        for c in space.candidates
        if all((c.device.id if k == "device" else getattr(c, k)) == v for k, v in match.items())
    )
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


def what_ifs(option: dict, workload: ServeWorkload, catalog: Any) -> list[WhatIf]:
    """What-ifs for *option* (an option dict of a ServePlan for *workload*), cheapest first."""
    device = option["device"]
    all_prices = ("on-demand", "spot", "reserved", "onprem")
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
    spot = _best(workload, catalog, _only(space, device=device, pricing="spot", quant=option["quant"]))
    out.append(
        _what(
            "spot",
            f"spot instead of {option['pricing']} for {device}",
            option,
            spot,
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
    out.sort(key=lambda x: -(x.saving_frac if x.saving_frac is not None else -1e9))
    return out
