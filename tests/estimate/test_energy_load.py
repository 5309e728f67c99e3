"""Load-dependent serving power and the three energy boundaries of estimate_serve."""

from __future__ import annotations

import numpy as np
import pytest

from flopwise.catalog import load_catalog
from flopwise.estimate import estimate_serve
from flopwise.models import load_models


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.fixture(scope="module")
def reg():
    return load_models()


def test_power_rises_with_batch(cat, reg):
    e = estimate_serve(
        reg.get("llama-3.1-8b"),
        cat.devices["h100-sxm"],
        engine="vllm",
        batch=np.array([1, 8, 64, 256]),
        input_tokens=256,
        output_tokens=512,
    )
    p = np.asarray(e.power_per_device_w)
    assert np.all(np.diff(p) > 0), p
    assert p[-1] <= cat.devices["h100-sxm"].tdp_w


def test_tensor_parallel_lowers_power_per_device(cat, reg):
    e = estimate_serve(
        reg.get("llama-3.1-70b"),
        cat.devices["h100-sxm"],
        engine="vllm",
        batch=8,
        device_count=np.array([2, 4, 8]),
        input_tokens=256,
        output_tokens=512,
    )
    p = np.asarray(e.power_per_device_w)
    assert np.all(np.diff(p) < 0), p


def test_three_boundaries_side_by_side(cat, reg):
    e = estimate_serve(
        reg.get("llama-3.1-8b"),
        cat.devices["h100-sxm"],
        engine="vllm",
        batch=16,
        pue=1.2,
        grid_gco2e_per_kwh=400.0,
    )
    dev, node, fac = (
        e.device_energy_per_1m_tokens_kwh,
        e.node_energy_per_1m_tokens_kwh,
        e.facility_energy_per_1m_tokens_kwh,
    )
    host = e.assumptions["host_power_frac"]
    assert node == pytest.approx(dev * (1 + host))
    assert fac == pytest.approx(node * 1.2)
    assert e.energy_per_1m_tokens_kwh == pytest.approx(fac)
    assert e.energy_boundary == "facility"
    assert "facility" in e.assumptions["energy_boundary"]
    co2 = e.co2e_per_1m_tokens_kg_by_boundary
    assert co2["device"] == pytest.approx(dev * 0.4)
    assert e.co2e_per_1m_tokens_kg == pytest.approx(co2["facility"])
    # device energy = power x devices x time / tokens
    per_tok_s = 1.0 / float(e.output_tokens_per_s)
    assert dev == pytest.approx(float(e.power_per_device_w) * per_tok_s * 1e6 / 3.6e6, rel=1e-6)


def test_generation_without_measurement_says_default(cat, reg):
    e = estimate_serve(reg.get("llama-3.1-8b"), cat.devices["b200"], engine="vllm", batch=8)
    assert "no published blackwell measurement" in e.assumptions["power_coeffs_basis"]
    a100 = estimate_serve(reg.get("llama-3.1-8b"), cat.devices["a100-sxm-80gb"], engine="vllm", batch=8)
    assert "fitted on published ampere measurements" in a100.assumptions["power_coeffs_basis"]


def test_power_per_rate_carries_to_other_devices(cat):
    """The activity shares come from watts per TB/s and per TFLOP/s: the same rate costs the same watts."""
    from flopwise.estimate import energy as en
    from flopwise.estimate.timing import device_generation

    for dev_id in ("h100-sxm", "a100-sxm-40gb", "b200", "l40s"):
        dev = cat.devices[dev_id]
        (k_mem, k_compute), _ = en.load_power_coeffs(dev)
        rates = en.DYNAMIC_POWER_W_PER_RATE
        w_mem, w_compute = rates.get(device_generation(dev), rates["default"])
        span = dev.tdp_w - dev.idle_w
        assert k_mem * span == pytest.approx(w_mem * dev.memory_bandwidth_gb_per_s / 1e3)
        assert k_compute * span == pytest.approx(w_compute * en.dense_peak_tflop_per_s(dev))


def test_training_three_boundaries(cat, reg):
    from flopwise.estimate import estimate_train

    e = estimate_train(reg.get("llama-3.1-8b"), cat.devices["h100-sxm"], tokens=1e10, device_count=8, pue=1.3,
                       grid_gco2e_per_kwh=100.0)
    host = e.assumptions["host_power_frac"]
    assert e.node_energy_kwh == pytest.approx(e.device_energy_kwh * (1 + host))
    assert e.facility_energy_kwh == pytest.approx(e.node_energy_kwh * 1.3)
    assert e.energy_kwh == pytest.approx(e.facility_energy_kwh)
    assert e.co2e_kg_by_boundary["device"] == pytest.approx(e.device_energy_kwh * 0.1)
    assert "facility" in e.assumptions["energy_boundary"]


def test_api_names_pue_source_and_region_basis():
    from flopwise.api import estimate_serving

    d = estimate_serving("llama-3.1-8b", "h100-sxm", region="country:FR", engine="vllm").to_dict()
    assert d["region_basis"] == "given", d["region_basis"]
    assert d["pue_source"]  # the on-prem profile here (the catalog prices h100-sxm on-prem by default)
    assert d["energy_boundary"] == "facility"
    assert d["device_energy_per_1m_tokens_kwh"] < d["node_energy_per_1m_tokens_kwh"]


def test_paged_kv_fits_what_vllm_ran(cat, reg):
    """ML.ENERGY v3 ran Llama 3.1 8B on one H100 at max_num_seqs 255 (717-token mean responses): with 1000-token
    prompts paged KV holds the blocks in use, so it fits; the full-length reservation (max_batch, 241) would not."""
    e = estimate_serve(reg.get("llama-3.1-8b"), cat.devices["h100-sxm"], engine="vllm", batch=255,
                       input_tokens=1000, output_tokens=717)
    assert bool(e.fits)
    assert float(e.max_batch_in_use) >= 255 > float(e.max_batch)
    assert "output_tokens / 2" in e.memory.assumptions["kv_tokens_per_sequence"]


def test_one_sequence_must_fit_at_full_length(cat, reg):
    e = estimate_serve(reg.get("llama-3.1-8b"), cat.devices["h100-sxm"], engine="vllm", batch=1,
                       input_tokens=1000, output_tokens=1_000_000)
    assert not bool(e.fits)
