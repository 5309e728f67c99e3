"""What-ifs on a chosen serve option: each changes one thing and reports the saving against the option."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flopwise.catalog import load_catalog
from flopwise.models import load_models
from flopwise.plan import ServeWorkload, plan_serve
from flopwise.plan.whatif import sparse_device, what_ifs


@pytest.fixture(scope="module")
def setup():
    catalog = load_catalog()
    w = ServeWorkload(
        load_models().resolve("llama-3.1-8b"), 20.0, 1000, 200, ttft_p95_ms=1000.0, tpot_p95_ms=100.0
    )
    option = plan_serve(w, catalog, min_precision="bf16").options[0]
    return catalog, w, option


def test_what_ifs_report_savings_and_caveats(setup):
    catalog, w, option = setup
    items = what_ifs(option, w, catalog)
    names = {x.name for x in items}
    assert {
        "quantize", "spot", "reserved", "greener_region", "prefix_caching", "sparsity_2_4", "larger_batch"
    } <= names  # fmt: skip
    for x in items:
        assert x.caveat
        x.to_dict()
        if x.option is not None:
            base = Decimal(str(option["cost_per_hour_usd"]))
            assert x.saving_usd_per_h == base - Decimal(str(x.option["cost_per_hour_usd"]))
    quant = next(x for x in items if x.name == "quantize")
    # bf16 chosen: a lower precision on the same device is never more expensive than the bf16 option
    assert quant.saving_frac is not None and quant.saving_frac >= 0
    green = next(x for x in items if x.name == "greener_region")
    assert green.option["co2e_per_1m_tokens_kg"] <= option["co2e_per_1m_tokens_kg"] + 1e-9
    assert green.option["quant"] == option["quant"]


def _option_on(plan, device: str) -> dict:
    return next(o for o in plan.options if o["device"] == device)


@pytest.fixture(scope="module")
def h100_option():
    # the same service with tight p95 targets on an H100 SXM (bf16, on-demand): the SLO caps the batch
    catalog = load_catalog()
    w = ServeWorkload(
        load_models().resolve("llama-3.1-8b"), 20.0, 1000, 200, ttft_p95_ms=500.0, tpot_p95_ms=20.0
    )
    plan = plan_serve(w, catalog, min_precision="bf16", top_k=1000)
    return catalog, w, _option_on(plan, "h100-sxm")


def test_sparse_device_uses_the_sparse_peaks_only_where_the_catalog_has_them(setup):
    catalog = setup[0]
    h100 = catalog.devices["h100-sxm"]
    sparse = sparse_device(h100)
    assert sparse is not None
    assert sparse.peak_bf16_tflop_per_s == h100.sparse_bf16_tflop_per_s > h100.peak_bf16_tflop_per_s
    assert sparse.peak_fp8_tflop_per_s == h100.sparse_fp8_tflop_per_s
    # memory is untouched: memory-bound decode does not speed up
    assert sparse.memory_bandwidth_gb_per_s == h100.memory_bandwidth_gb_per_s
    assert sparse.memory_gb == h100.memory_gb
    no_sparse = [d for d in catalog.devices.values() if d.kind == "cpu" or d.vendor.lower() == "google"]
    assert no_sparse and all(sparse_device(d) is None for d in no_sparse)


def test_sparsity_speeds_up_prefill_on_the_same_deployment(h100_option):
    catalog, w, option = h100_option
    sp = next(x for x in what_ifs(option, w, catalog) if x.name == "sparsity_2_4")
    assert sp.option is not None, sp.caveat
    for key in ("device", "quant", "pricing", "provider", "region"):
        assert sp.option[key] == option[key]
    # only compute-bound prefill gains: TTFT drops, capacity per replica does not fall, TPOT barely moves
    assert sp.option["ttft_p95_ms"] < option["ttft_p95_ms"]
    assert sp.option["capacity_rps_per_replica"] >= option["capacity_rps_per_replica"]
    assert sp.saving_frac is not None and sp.saving_frac >= 0
    assert "2:4-pruned checkpoint" in sp.caveat and "arXiv:2104.08378" in sp.caveat


def test_sparsity_is_not_applicable_without_sparse_hardware(setup):
    catalog, w, _ = setup
    plan = plan_serve(w, catalog, min_precision="bf16", top_k=1000, pricing=("on-demand", "onprem"))
    dense_only = next(o for o in plan.options if sparse_device(catalog.devices[o["device"]]) is None)
    sp = next(x for x in what_ifs(dense_only, w, catalog) if x.name == "sparsity_2_4")
    assert sp.option is None and sp.saving_usd_per_h is None
    assert sp.caveat.startswith("not applicable")
    assert sp.to_dict()["option"] is None


def test_larger_batch_saves_replicas_and_says_what_it_costs_in_latency(h100_option):
    catalog, w, option = h100_option
    lb = next(x for x in what_ifs(option, w, catalog) if x.name == "larger_batch")
    assert lb.option is not None, lb.caveat
    assert lb.option["batch"] > option["batch"]
    assert lb.option["capacity_rps_per_replica"] > option["capacity_rps_per_replica"]
    assert lb.option["replicas"] <= option["replicas"]
    assert lb.saving_frac is not None and lb.saving_frac >= 0
    # the price is latency: TPOT p95 rises with the load per replica (with the same replicas and an engine that
    # mixes prefills into decode steps, the running batch follows the load, not the cap: it stays), and whether
    # the original targets still hold is said
    if lb.option["replicas"] < option["replicas"]:
        assert lb.option["tpot_p95_ms"] > option["tpot_p95_ms"]
    else:
        assert lb.option["tpot_p95_ms"] >= option["tpot_p95_ms"]
    meets = lb.option["ttft_p95_ms"] <= w.ttft_p95_ms and lb.option["tpot_p95_ms"] <= w.tpot_p95_ms
    assert lb.option["meets_slo"] is meets
    if not meets:
        assert "misses the p95 targets" in lb.caveat
    assert f"batch cap {option['batch']} -> {lb.option['batch']}" in lb.description


def test_spot_what_if_without_any_spot_price_says_so(setup, tmp_path):
    # a catalog where the chosen device has no spot price anywhere: the what-if names the missing price,
    # it does not claim that no option meets the targets
    catalog, w, option = setup
    from dataclasses import replace as dc_replace

    from flopwise.catalog import Catalog
    from flopwise.catalog.loader import read_builtin

    data = read_builtin()
    stripped = dc_replace(
        data,
        offerings={
            k: (dc_replace(o, spot_usd_per_h=None) if o.device_id == option["device"] else o)
            for k, o in data.offerings.items()
        },
    )
    no_spot = Catalog(stripped)
    spot = next(x for x in what_ifs(option, w, no_spot) if x.name == "spot")
    assert spot.option is None
    assert spot.caveat.startswith(f"no spot price known for {option['device']} in {option['region']}")
    assert "no option meets" not in spot.caveat
