"""plan_train: catalog-wide training search, spot preemption overhead, on-prem break-even, rejections."""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from flopwise.catalog import Catalog, load_catalog
from flopwise.catalog.loader import CatalogData
from flopwise.catalog.types import Offering, OnPremProfile, Region
from flopwise.errors import InputError, UnknownRegionError
from flopwise.estimate import energy as en
from flopwise.estimate import estimate_train
from flopwise.models import load_models
from flopwise.plan.train import (
    RESTART_S,
    breakeven_utilization,
    onprem_effective_usd_per_device_h,
    plan_train,
    preemption_time_ratio,
    young_daly_interval_s,
)

RTOL = 1e-9
REQUIRED_OPTION_KEYS = {
    "device",
    "count",
    "parallelism",
    "wall_clock_hours",
    "device_hours",
    "cost_usd",
    "energy_kwh",
    "co2e_kg",
    "pricing",
    "provider",
    "region",
    "meets_deadline",
    "within_budget",
}


@pytest.fixture(scope="module")
def real_catalog() -> Catalog:
    return load_catalog()


def _offering(provider, itype, region, device_id, count, od, spot=None):
    return Offering(
        id=f"{provider}:{itype}:{region}",
        provider=provider,
        instance_type=itype,
        region=region,
        device_id=device_id,
        device_count=count,
        vcpus=(192 if device_id == "epyc-9654" else 8) * count,  # a CPU offering holds whole sockets
        ram_gb=64.0 * count,
        on_demand_usd_per_h=Decimal(od),
        spot_usd_per_h=None if spot is None else Decimal(spot),
        reserved_usd_per_h=None,
        source_url="https://example.org/test",
        retrieved="2026-01-01",
    )


@pytest.fixture(scope="module")
def small_catalog(real_catalog) -> Catalog:
    """Two real devices (H100 SXM, EPYC 9654), hand-made offerings with round prices in two regions."""
    devices = {k: real_catalog.devices[k] for k in ("h100-sxm", "epyc-9654")}
    regions = {
        "test:dirty": Region("test:dirty", "test", "Dirty grid", "US", 500.0, 1.2),
        "test:clean": Region("test:clean", "test", "Clean grid", "SE", 20.0, 1.1),
        "country:US": real_catalog.regions["country:US"],
    }
    offerings = [
        _offering("test", "h100x8", "test:dirty", "h100-sxm", 8, "16.00", spot="6.40"),
        _offering("test", "h100x8", "test:clean", "h100-sxm", 8, "24.00", spot="8.00"),
        _offering("test", "cpu1", "test:dirty", "epyc-9654", 1, "4.00"),
    ]
    onprem = {
        "h100-sxm": OnPremProfile("h100-sxm", Decimal("30000"), 0.3, 5.0, Decimal("0.10"), 1.4),
    }
    origins = {("offering", o.id): ("test", i + 2) for i, o in enumerate(offerings)}
    origins.update({("onprem", k): ("test", 2) for k in onprem})
    data = CatalogData(
        devices=devices,
        offerings={o.id: o for o in offerings},
        onprem=onprem,
        regions=regions,
        origins=origins,
    )
    return Catalog(data)


# ------------------------------------------------------------------------------------------ closed forms


def test_preemption_ratio_first_order():
    # Young 1974 / Daly 2006: to first order the overhead is delta/tau + (tau/2 + R)/M
    delta, restart, mtbf = 30.0, 600.0, 1e7
    tau = float(young_daly_interval_s(delta, mtbf))
    exact = float(preemption_time_ratio(tau, delta, restart, mtbf))
    first = 1 + delta / tau + (tau / 2 + restart) / mtbf
    assert exact == pytest.approx(first, rel=1e-4)
    assert float(preemption_time_ratio(tau, delta, restart, np.inf)) == pytest.approx(
        1 + delta / tau, rel=RTOL
    )


def test_young_daly_interval_is_near_the_numeric_optimum():
    delta, restart, mtbf = 20.0, 600.0, 50_000.0
    res = minimize_scalar(
        lambda t: float(preemption_time_ratio(t, delta, restart, mtbf)), bounds=(1, 1e5), method="bounded"
    )
    assert float(young_daly_interval_s(delta, mtbf)) == pytest.approx(res.x, rel=0.05)


def test_breakeven_utilization_closed_form():
    prof = OnPremProfile("h100-sxm", Decimal("30000"), 0.3, 5.0, Decimal("0.10"), 1.4)
    power_w = 850.0
    u = breakeven_utilization(prof, 2.5, power_w)
    assert 0 < u < 1
    assert onprem_effective_usd_per_device_h(prof, power_w, u) == pytest.approx(2.5, rel=RTOL)
    assert onprem_effective_usd_per_device_h(prof, power_w, min(1.0, u * 1.2)) < 2.5  # busier: owning wins
    assert onprem_effective_usd_per_device_h(prof, power_w, u * 0.8) > 2.5
    assert breakeven_utilization(prof, 0.10, power_w) == math.inf  # cloud below the electricity bill
    assert breakeven_utilization(prof, 0.3, power_w) > 1.0  # cloud cheaper even at full use


# ------------------------------------------------------------------------------------------ small catalog


def test_options_are_consistent(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    plan = plan_train(model, 1e11, small_catalog, spot_ok=True, interruption_rate_per_h=0.0)
    assert plan.options
    regions = small_catalog.regions
    for o in plan.options:
        p = o.parallelism
        assert p.tp * p.pp * p.dp == o.count
        assert p.tp <= 8
        assert o.fits and o.meets_deadline and o.within_budget
        assert o.memory_per_device_gb <= o.memory_capacity_gb
        # usd_per_device_h is shown to 4 decimals; the cost uses the unrounded price
        assert float(o.cost_usd) == pytest.approx(o.device_hours * float(o.usd_per_device_h), rel=1e-4)
        assert o.device_hours == pytest.approx(o.wall_clock_hours * o.count, rel=1e-9)
        if o.pricing != "onprem":
            size = 8 if o.instance_type == "h100x8" else 1
            assert o.count % size == 0  # whole instances only
            reg = regions[o.region]
            assert o.co2e_kg == pytest.approx(o.energy_kwh * reg.grid_gco2e_per_kwh / 1000, rel=RTOL)
        d = o.to_dict()
        assert set(d) >= REQUIRED_OPTION_KEYS
        assert set(d["parallelism"]) == {"tp", "pp", "dp", "zero_stage"}
    json.dumps(plan.to_dict())
    costs = [float(o.cost_usd) for o in plan.options]
    assert costs == sorted(costs)


def test_vectorized_search_matches_a_scalar_estimate(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    plan = plan_train(model, 1e11, small_catalog, pricing=["on-demand"], regions=["test:dirty"])
    o = plan.options[0]
    est = estimate_train(
        model,
        small_catalog.devices[o.device],
        tokens=1e11,
        device_count=o.count,
        zero_stage=o.parallelism.zero_stage,
        tensor_parallel=o.parallelism.tp,
        pipeline_parallel=o.parallelism.pp,
        recompute=o.recompute,
        lora_rank=16,
    )
    assert o.wall_clock_hours == pytest.approx(est.wall_clock_hours * (1 + o.pipeline_bubble_frac), rel=1e-9)
    assert o.energy_kwh == pytest.approx(est.energy_kwh * (1 + o.pipeline_bubble_frac) * 1.2, rel=1e-9)
    assert o.memory_per_device_gb == pytest.approx(est.memory_per_device_gb, rel=1e-9)


def test_objectives_pick_different_winners(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    kw = dict(pricing=["on-demand"], deadline_s=7 * 86400)
    cheap = plan_train(model, 1e11, small_catalog, objective="cost", **kw).options[0]
    green = plan_train(model, 1e11, small_catalog, objective="co2", **kw).options
    fast = plan_train(model, 1e11, small_catalog, objective="time", **kw).options
    assert cheap.region == "test:dirty"  # $2/device-h beats $3
    assert green[0].region == "test:clean"  # 20 gCO2e/kWh beats 500
    assert [o.co2e_kg for o in green] == sorted(o.co2e_kg for o in green)
    assert fast[0].wall_clock_hours == min(o.wall_clock_hours for o in fast)
    assert fast[0].wall_clock_hours <= cheap.wall_clock_hours


def test_deadline_needs_more_devices(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    loose = plan_train(model, 1e11, small_catalog, pricing=["on-demand"], regions=["test:dirty"]).options[0]
    deadline_s = loose.wall_clock_hours * 3600 / 5
    tight = plan_train(
        model, 1e11, small_catalog, pricing=["on-demand"], regions=["test:dirty"], deadline_s=deadline_s
    ).options[0]
    assert tight.count >= 5 * loose.count
    assert tight.wall_clock_hours * 3600 <= deadline_s


def test_impossible_deadline_says_by_how_much(small_catalog, models):
    model = models.resolve("Llama 3.1 70B")
    plan = plan_train(model, 15e12, small_catalog, pricing=["on-demand"], deadline_s=3600, max_devices=64)
    assert plan.options == ()
    assert plan.rejected
    h100 = next(r for r in plan.rejected if r.device == "h100-sxm")
    reason = h100.reasons[0]
    assert reason.kind == "deadline"
    assert reason.needed > reason.limit == pytest.approx(1.0)
    assert reason.excess_frac > 100
    assert h100.option is not None and h100.option.count == 64
    assert "nearest" in plan.assumptions["no_feasible_option"]
    d = plan.to_dict()
    assert d["options"] == [] and d["rejected"][0]["reasons"][0]["excess_frac"] is not None


def test_budget_rejection(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    plan = plan_train(model, 1e11, small_catalog, pricing=["on-demand"], budget_usd=10)
    assert plan.options == ()
    r = next(r for r in plan.rejected if r.device == "h100-sxm")
    assert r.reasons[0].kind == "budget"
    assert r.reasons[0].needed > 10 and r.reasons[0].limit == 10


def test_too_big_for_memory_then_qlora_fits(small_catalog, models):
    model = models.resolve("Llama 3.1 405B")
    plan = plan_train(model, 1e9, small_catalog, pricing=["on-demand"], max_devices=8)
    assert plan.options == ()
    r = next(r for r in plan.rejected if r.device == "h100-sxm")
    assert r.reasons[0].kind == "memory"
    assert r.reasons[0].needed > 80 and r.reasons[0].limit == 80
    cpu = next(r for r in plan.rejected if r.device == "epyc-9654")
    assert cpu.option.count == 1  # no interconnect: single device only
    fits = plan_train(model, 1e9, small_catalog, pricing=["on-demand"], max_devices=8, method="qlora")
    assert fits.options and fits.options[0].device == "h100-sxm"


def test_recompute_full_is_used_only_when_needed(real_catalog, models):
    # Llama 3.1 70B full training on at most 32 devices: 48 GB L40S only fit with full activation recomputation
    model = models.resolve("Llama 3.1 70B")
    plan = plan_train(
        model, 1e10, real_catalog, pricing=["on-demand"], regions=["aws:us-east-1"], max_devices=32
    )
    l40s = next(o for o in plan.options if o.device == "l40s")
    assert l40s.recompute == "full"
    assert l40s.memory_per_device_gb <= 48
    roomy = plan_train(
        models.resolve("Llama 3.1 8B"), 1e10, real_catalog, pricing=["on-demand"], providers=["lambda"]
    )
    assert roomy.options and all(x.recompute == "selective" for x in roomy.options)


def test_spot_adds_preemption_overhead(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    kw = dict(regions=["test:dirty"], spot_ok=True, max_devices=64)
    plan = plan_train(
        model, 1e11, small_catalog, pricing=["spot", "on-demand"], interruption_rate_per_h=0.05, **kw
    )
    spot = next(o for o in plan.options if o.pricing == "spot")
    od = next(o for o in plan.options if o.pricing == "on-demand")
    assert spot.preemption_overhead_frac > 0 and od.preemption_overhead_frac == 0
    assert spot.checkpoint_interval_s > 0 and od.checkpoint_interval_s is None
    assert float(spot.usd_per_device_h) == pytest.approx(0.80)
    assert float(spot.cost_usd) < float(od.cost_usd)  # 60% off outweighs the overhead
    # the same count on spot takes longer by exactly the overhead
    same = plan_train(model, 1e11, small_catalog, pricing=["on-demand"], **kw)
    base = (
        next(o for o in same.options if o.count == spot.count)
        if any(o.count == spot.count for o in same.options)
        else None
    )
    if base is not None:
        assert spot.wall_clock_hours == pytest.approx(
            base.wall_clock_hours * (1 + spot.preemption_overhead_frac)
        )
    # no interruptions: no overhead; a given interval is used as given
    calm = plan_train(model, 1e11, small_catalog, pricing=["spot"], interruption_rate_per_h=0.0, **kw)
    assert calm.options[0].preemption_overhead_frac == 0.0
    fixed = plan_train(
        model, 1e11, small_catalog, pricing=["spot"], checkpoint_interval_s=1800, checkpoint_write_s=60, **kw
    )
    o = fixed.options[0]
    n_inst = o.count / 8
    mtbf = 3600 / (0.01 * n_inst)
    assert o.checkpoint_interval_s == 1800
    assert o.preemption_overhead_frac == pytest.approx(
        float(preemption_time_ratio(1800, 60, RESTART_S, mtbf)) - 1, rel=1e-9
    )
    assert fixed.assumptions["spot"]["interruption_rate_per_h"] == 0.01


def test_onprem_uses_utilization_and_reports_breakeven(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    plan = plan_train(model, 1e11, small_catalog, pricing=["onprem", "on-demand"], utilization_frac=0.5)
    o = next(x for x in plan.options if x.pricing == "onprem")
    prof = small_catalog.onprem["h100-sxm"]
    dev = small_catalog.devices["h100-sxm"]
    power = en.device_power_w(dev.tdp_w, dev.idle_w, en.TRAIN_ACTIVITY_FRAC) * (1 + en.host_power_frac(dev))
    assert float(o.usd_per_device_h) == pytest.approx(
        onprem_effective_usd_per_device_h(prof, power, 0.5), abs=1e-4
    )
    assert o.breakeven_utilization_frac["on-demand"] == pytest.approx(breakeven_utilization(prof, 2.0, power))
    table = plan.assumptions["cloud_vs_onprem"]["h100-sxm"]
    assert table["cloud_usd_per_device_h"]["on-demand"] == 2.0
    assert o.region == "country:US"
    busier = plan_train(model, 1e11, small_catalog, pricing=["onprem"], utilization_frac=1.0).options[0]
    assert busier.cost_usd < o.cost_usd


def test_pareto_fronts_are_non_dominated(small_catalog, models):
    plan = plan_train(models.resolve("Llama 3.1 8B"), 1e11, small_catalog, spot_ok=True)
    time_front, co2_front = plan.pareto
    assert time_front.x == "cost_usd" and time_front.y == "wall_clock_hours"
    pts = time_front.points
    assert len(pts) >= 2
    for a, b in zip(pts, pts[1:], strict=False):
        assert a.cost_usd <= b.cost_usd and a.wall_clock_hours > b.wall_clock_hours
    assert all(p.co2e_kg is not None for p in co2_front.points)


def test_contradictory_and_bad_input(small_catalog, models):
    model = models.resolve("Llama 3.1 8B")
    with pytest.raises(InputError, match="spot_ok"):
        plan_train(model, 1e11, small_catalog, pricing=["spot"])
    with pytest.raises(InputError, match="objective"):
        plan_train(model, 1e11, small_catalog, objective="cheapest")
    with pytest.raises(InputError, match="method"):
        plan_train(model, 1e11, small_catalog, method="dpo")
    with pytest.raises(InputError, match="did you mean 'test'"):
        plan_train(model, 1e11, small_catalog, providers=["tset"])
    with pytest.raises(InputError, match="tokens"):
        plan_train(model, -1, small_catalog)
    with pytest.raises(InputError, match="utilization_frac"):
        plan_train(model, 1e11, small_catalog, utilization_frac=1.5)
    with pytest.raises(InputError, match="max_devices"):
        plan_train(model, 1e11, small_catalog, max_devices=0)
    with pytest.raises(UnknownRegionError):
        plan_train(model, 1e11, small_catalog, regions=["mars-1"])


# ------------------------------------------------------------------------------------------ real catalog


def test_whole_catalog(real_catalog, models):
    model = models.resolve("Llama 3.1 70B")
    t0 = time.perf_counter()
    plan = plan_train(model, "1T", real_catalog, deadline_s=30 * 86400, spot_ok=True, top=50)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0
    assert plan.options and plan.rejected
    assert {o.pricing for o in plan.options} >= {"onprem", "on-demand"}
    for o in plan.options:
        assert o.wall_clock_hours <= 30 * 24
    for r in plan.rejected:
        assert r.reasons and r.reasons[0].message
    assert plan.assumptions["device_types_considered"] > 40
    # cloud vs on-prem table covers devices sold both ways
    assert "h100-sxm" in plan.assumptions["cloud_vs_onprem"]
    json.dumps(plan.to_dict())


def test_lora_finetune_prefers_few_devices(real_catalog, models):
    plan = plan_train(models.resolve("Llama 3.1 8B"), 2e8, real_catalog, method="lora", providers=["aws"])
    assert plan.options
    assert all(o.count <= 16 for o in plan.options)
    assert all(float(o.cost_usd) < 200 for o in plan.options[:5])
    assert all(o.provider == "aws" for o in plan.options)


def test_options_give_energy_at_three_boundaries(small_catalog):
    model = load_models().resolve("llama-3.1-8b")
    o = plan_train(model, 1e11, small_catalog, pricing=["on-demand"], regions=["test:dirty"]).options[0]
    assert o.energy_boundary == "facility"
    assert o.device_energy_kwh < o.node_energy_kwh
    assert o.energy_kwh == pytest.approx(o.node_energy_kwh * o.pue)
