"""Bench: plan_serve over the whole built-in catalog, vectorized vs the same search one configuration at a time
through scalar ``estimate_serve`` calls; and the saving of the recommended plan against "an H100 on-demand".

Run: ``.venv/bin/python bench/bench_plan_serve.py`` (``--no-scalar`` skips the slow scalar path). The every-engine
search is also timed in process CPU time, which other processes on a shared machine do not inflate, beside the
per-candidate baseline: the same search with one ``ServeCandidate`` object per offering x engine x KV dtype row
(what the planner built before the columnar ``CandidateRows``), the configuration found per row, and ranking and
rejection by a Python loop over every feasible / infeasible row, with one option dict per group tie member; and
beside the unpruned capacity search (``serve._PRUNE = False``: every fitting batch cap, every refinement and the
queue state at every occupancy, as before issue 8's pruning), which must give the same answer. Service: llama-3.1-8b, 20 req/s, 1000 in / 200 out tokens,
TTFT p95 1 s, TPOT p95 100 ms. The scalar path evaluates each distinct device x quant x TP configuration and batch
cap with scalar estimator calls (prefill at batch 1, memory and step time at integer occupancies) and the same
queueing model on plain floats, bisecting the occupancy for the capacity.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from flopwise.catalog import load_catalog
from flopwise.estimate import estimate_serve
from flopwise.models import load_models
from flopwise.plan import ServeWorkload, enumerate_serve_space, plan_serve
from flopwise.plan import serve as serve_mod
from flopwise.plan.queueing import continuous_batching_state
from flopwise.plan.serve import (
    BATCH_CAPS,
    MAX_UTILIZATION_FRAC,
    _configs_of,
    _instance_cost,
    engine_profiles,
    expand_engines,
    replica_capacity,
)


def per_candidate_plan(w: ServeWorkload, space, engines, top_k: int = 10) -> list[tuple]:
    """Baseline: the every-engine search with per-row objects and loops (see the module docstring); returns the
    ranked (device, TP, quant, engine, pricing, provider, cost) of the top *top_k*."""
    profiles, pool = engine_profiles(engines)
    cands = tuple(expand_engines(space, profiles, None, pool).candidates)  # one object per row
    _configs_of(cands)  # the configuration of each row, by a dict lookup per row
    table = replica_capacity(w, cands)
    first = np.asarray(table.cost_per_hour_usd, dtype=float)
    groups: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(table.feasible).tolist():
        c = cands[i]
        groups.setdefault((c.device.id, c.device_count, c.quant, c.engine_id, c.pricing, c.provider), []).append(i)
    best: dict[tuple, dict] = {}
    for key, members in groups.items():
        k0 = first[members]
        for i in np.asarray(members)[k0 <= k0.min() * (1.0 + 1e-9) + 1e-12][:2].tolist():
            c = cands[i]
            opt = {
                "i": i,
                "device": c.device.id,
                "region": c.region.id if c.region is not None else None,
                "cost": float(_instance_cost(c, int(table.instances[i]), float(table.cost_per_hour_usd[i]))),
                "ttft": round(float(table.ttft_p95_ms[i]), 1),
                "tpot": round(float(table.tpot_p95_ms[i]), 2),
                "energy": round(float(table.energy_per_1m_tokens_kwh[i]), 4),
                "co2": round(float(table.co2e_per_1m_tokens_kg[i]), 4),
            }
            if key not in best or (opt["cost"], opt["ttft"]) < (best[key]["cost"], best[key]["ttft"]):
                best[key] = opt
    ranked = sorted(best.items(), key=lambda kv: (kv[1]["cost"], kv[1]["ttft"]))
    for y in ("ttft", "co2"):  # the two Pareto fronts
        sorted(best.values(), key=lambda o, y=y: (o["cost"], o[y]))
    infeas = np.flatnonzero(~table.feasible).tolist()
    rel = [table.shortfall[i] / max(cands[i].device.memory_gb, 1e-9) for i in infeas]
    seen: set[tuple] = set()
    for i in np.asarray(infeas)[np.argsort(rel, kind="stable")].tolist():
        c = cands[i]
        if (c.device.id, c.device_count, c.quant, c.engine_id) not in seen:
            seen.add((c.device.id, c.device_count, c.quant, c.engine_id))
            if len(seen) >= top_k:
                break
    return [(*key[:4], key[4], key[5], round(o["cost"], 2)) for key, o in ranked[:top_k]]


def scalar_capacity(model, device, quant, tp, w: ServeWorkload) -> float:
    """Largest rps per replica meeting the SLOs, one estimate_serve call per point (scalar path)."""
    steps = max(w.output_tokens - 1, 1)

    def est(batch):
        return estimate_serve(
            model,
            device,
            device_count=tp,
            quant=quant,
            batch=batch,
            input_tokens=w.input_tokens,
            output_tokens=w.output_tokens,
        )

    p1 = est(1).ttft_ms / 1e3
    best = 0.0
    for cap in BATCH_CAPS:
        full = est(cap)
        if not full.fits:
            break
        t_full = full.tpot_ms / 1e3

        def state(n, cap=cap, t_full=t_full):
            t = est(max(1, math.ceil(n))).tpot_ms / 1e3
            t_tag = est(min(cap, math.ceil(n) + 1)).tpot_ms / 1e3
            return continuous_batching_state(
                n,
                slots=cap,
                step_s=t,
                step_s_tagged=t_tag,
                step_s_full=t_full,
                prefill_s=p1,
                decode_steps=steps,
            )

        def ok(s):
            return (
                bool(s.is_stable)
                and float(s.utilization) <= MAX_UTILIZATION_FRAC
                and float(s.ttft_p95_s) * 1e3 <= (w.ttft_p95_ms or math.inf)
                and float(s.tpot_p95_s) * 1e3 <= (w.tpot_p95_ms or math.inf)
            )

        lo, hi = 0.0, cap * 0.999
        if not ok(state(1e-3 * cap)):
            continue
        lo = 1e-3 * cap
        for _ in range(14):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ok(state(mid)) else (lo, mid)
        best = max(best, float(state(lo).arrival_rps))
    return best


def main() -> None:
    catalog = load_catalog()
    model = load_models().resolve("llama-3.1-8b")
    w = ServeWorkload(model, 20.0, 1000, 200, ttft_p95_ms=1000.0, tpot_p95_ms=100.0)
    pricing = ("on-demand", "spot", "reserved", "onprem")
    t0 = time.perf_counter()
    space = enumerate_serve_space(catalog, model, pricing=pricing)
    t_enum = time.perf_counter() - t0
    plan_serve(w, catalog, space=space)  # warm caches (imports, count_params)
    runs = 5
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        plan = plan_serve(w, catalog, space=space)
        times.append(time.perf_counter() - t0)
    t_vec = min(times)
    plan_serve(w, catalog, space=space, engines=["all"])
    per_candidate_plan(w, space, ["all"])
    times_all, cpu_all, cpu_base, cpu_full = [], [], [], []
    for _ in range(runs):  # figure and baselines alternate, so all see the same machine load
        t0, c0 = time.perf_counter(), time.process_time()
        plan_all = plan_serve(w, catalog, space=space, engines=["all"])
        times_all.append(time.perf_counter() - t0)
        cpu_all.append(time.process_time() - c0)
        c0 = time.process_time()
        base_top = per_candidate_plan(w, space, ["all"])
        cpu_base.append(time.process_time() - c0)
        serve_mod._PRUNE = False  # the capacity search without pruning: every pair, refinement and queue state
        try:
            c0 = time.process_time()
            plan_full = plan_serve(w, catalog, space=space, engines=["all"])
            cpu_full.append(time.process_time() - c0)
        finally:
            serve_mod._PRUNE = True
    configs = {(c.device.id, c.quant, c.device_count): c for c in space.candidates}
    print(
        f"candidates: {len(space.candidates)} ({len(configs)} distinct device x quant x TP), pricing {pricing}"
    )
    print(f"enumeration: {t_enum:.3f} s")
    print(f"vectorized plan_serve (generic engine): best of {runs} {t_vec:.3f} s, mean {sum(times) / runs:.3f} s")
    print(
        f"vectorized plan_serve, every engine ({', '.join(plan_all.assumptions['engines_searched'])}; "
        f"{plan_all.candidates_evaluated} candidates): best of {runs} {min(times_all):.3f} s wall, "
        f"{min(cpu_all):.3f} s CPU (wall above CPU = other processes on the machine; target < 0.5 s)"
    )
    print(
        f"baseline, per-candidate objects and loops, every engine: best of {runs} {min(cpu_base):.3f} s CPU -> "
        f"columnar is {min(cpu_base) / min(cpu_all):.1f}x faster"
    )
    print(
        f"baseline, the same search unpruned (every batch cap, refinement and queue state; serve._PRUNE=False): "
        f"best of {runs} {min(cpu_full):.3f} s CPU -> pruned is {min(cpu_full) / min(cpu_all):.1f}x faster; "
        f"same answer: {plan_full.to_dict() == plan_all.to_dict()}"
    )
    same = base_top == [
        (o["device"], o["tensor_parallel"], o["quant"], o["engine"], o["pricing"], o["provider"],
         round(float(o["cost_per_hour_usd"]), 2))
        for o in plan_all.options
    ]  # fmt: skip
    print(f"top-10 ranking equal to the baseline's: {same}")
    top = plan_all.options[0]
    print(
        f"recommended over every engine: {top['replicas']} x {top['tensor_parallel']} {top['device']} "
        f"{top['quant']} on {top['engine']} (kv {top['kv_dtype']}) {top['pricing']}: ${top['cost_per_hour_usd']}/h"
    )
    if "--no-scalar" in sys.argv:
        return
    t0 = time.perf_counter()
    scalar = {k: scalar_capacity(model, c.device, c.quant, c.device_count, w) for k, c in configs.items()}
    t_scalar = time.perf_counter() - t0
    print(f"scalar path (one configuration at a time, estimate_serve per point): {t_scalar:.2f} s")
    print(f"speed-up: {t_scalar / t_vec:.0f}x")
    feasible_vec = {
        (o["device"], o["quant"], o["tensor_parallel"])
        for o in plan_serve(w, catalog, space=space, top_k=1000).options
    }
    feasible_sc = {k for k, v in scalar.items() if v > 0}
    print(
        f"feasible configurations: vectorized {len(feasible_vec)}, scalar {len(feasible_sc)}, "
        f"in both {len(feasible_vec & feasible_sc)}"
    )
    best = plan.options[0]
    print(
        f"recommended: {best['replicas']} x {best['tensor_parallel']} {best['device']} {best['quant']} "
        f"{best['pricing']} {best['provider']} {best['region']}: ${best['cost_per_hour_usd']}/h, "
        f"${best['cost_per_1m_tokens_usd']}/1M tokens"
    )
    h100 = plan_serve(
        w,
        catalog,
        space=enumerate_serve_space(
            catalog, model, pricing=("on-demand",), min_precision="bf16", max_devices=1
        ),
        top_k=1000,
    )
    base = [o for o in h100.options if o["device"].startswith("h100") and o["quant"] == "bf16"]
    if base:
        b = min(base, key=lambda o: float(o["cost_per_hour_usd"]))
        saving = 1 - float(best["cost_per_hour_usd"]) / float(b["cost_per_hour_usd"])
        print(
            f"baseline 'an H100 on-demand' (bf16, cheapest offering): {b['replicas']} x {b['device']} "
            f"{b['provider']} {b['region']}: ${b['cost_per_hour_usd']}/h -> saving {saving:.0%}"
        )


if __name__ == "__main__":
    main()
