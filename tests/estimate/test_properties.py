"""Hypothesis properties: monotone in size and tokens, linear in tokens, parts sum to totals, nothing negative."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwise.estimate import estimate_serve, estimate_train

from .conftest import H100, LLAMA31_8B

RTOL_PARTS = 1e-9
RTOL_LINEAR = 1e-9

layers = st.integers(min_value=2, max_value=96)
widths = st.sampled_from([512, 1024, 2048, 4096, 8192])
tokens = st.floats(min_value=1e6, max_value=1e14)
FAST = settings(max_examples=40, deadline=None)


def _arch(n_layers: int, d_model: int):
    return dataclasses.replace(
        LLAMA31_8B,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=d_model // 128,
        n_kv_heads=max(d_model // 1024, 1),
        d_ff=int(3.5 * d_model),
    )


def _nonneg(obj) -> None:
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float):
            assert v >= 0 or f.name == "headroom_bytes", f.name


@FAST
@given(n_layers=layers, d_model=widths, n_tokens=tokens, k=st.floats(min_value=1.01, max_value=100.0))
def test_train_flops_linear_in_tokens_and_time_grows(n_layers, d_model, n_tokens, k):
    arch = _arch(n_layers, d_model)
    a = estimate_train(arch, H100, tokens=n_tokens, device_count=8, zero_stage=3)
    b = estimate_train(arch, H100, tokens=n_tokens * k, device_count=8, zero_stage=3)
    np.testing.assert_allclose(b.train_flops, a.train_flops * k, rtol=RTOL_LINEAR)
    assert b.wall_clock_hours >= a.wall_clock_hours
    assert b.energy_kwh >= a.energy_kwh
    _nonneg(a)
    _nonneg(a.memory)


@FAST
@given(n_layers=layers, d_model=widths, extra=st.integers(min_value=1, max_value=16))
def test_memory_and_flops_grow_with_params(n_layers, d_model, extra):
    small, big = _arch(n_layers, d_model), _arch(n_layers + extra, d_model)
    ts, tb = (estimate_train(m, H100, tokens=1e10) for m in (small, big))
    assert tb.train_flops > ts.train_flops
    assert tb.memory.total_bytes > ts.memory.total_bytes
    ss, sb = (estimate_serve(m, H100) for m in (small, big))
    assert sb.memory.weights_bytes > ss.memory.weights_bytes
    assert sb.memory.kv_cache_bytes > ss.memory.kv_cache_bytes
    assert sb.tpot_ms > ss.tpot_ms


@FAST
@given(
    n_layers=layers,
    d_model=widths,
    batch=st.integers(min_value=1, max_value=512),
    n_in=st.integers(min_value=1, max_value=32768),
    n_out=st.integers(min_value=1, max_value=8192),
    tp=st.sampled_from([1, 2, 4, 8]),
    quant=st.sampled_from(["bf16", "fp8", "int4-awq", "q4_k_m", "q8_0"]),
)
def test_serve_parts_sum_and_nonnegative(n_layers, d_model, batch, n_in, n_out, tp, quant):
    est = estimate_serve(
        _arch(n_layers, d_model),
        H100,
        device_count=tp,
        batch=batch,
        input_tokens=n_in,
        output_tokens=n_out,
        quant=quant,
        price_usd_per_device_h=2.0,
        grid_gco2e_per_kwh=100.0,
    )
    m = est.memory
    parts = (
        m.weights_bytes
        + m.kv_cache_bytes
        + m.activations_bytes
        + m.gradients_bytes
        + m.optimizer_bytes
        + m.overhead_bytes
    )
    np.testing.assert_allclose(parts, m.total_bytes, rtol=RTOL_PARTS)
    assert est.fits == (m.total_bytes <= m.capacity_bytes)
    _nonneg(est)
    _nonneg(m)
    assert est.ttft_ms > 0 and est.tpot_ms > 0 and est.cost_per_1m_tokens_usd >= 0


@FAST
@given(
    seq=st.sampled_from([512, 2048, 8192]),
    mb=st.integers(min_value=1, max_value=8),
    stage=st.sampled_from([None, 1, 2, 3]),
    recompute=st.sampled_from(["none", "selective", "full"]),
    method=st.sampled_from(["full", "lora", "qlora"]),
    optimizer=st.sampled_from(["adamw", "adamw-8bit", "sgd"]),
)
def test_train_parts_sum(seq, mb, stage, recompute, method, optimizer):
    est = estimate_train(
        LLAMA31_8B,
        H100,
        tokens=1e9,
        device_count=16,
        seq_len=seq,
        micro_batch=mb,
        zero_stage=stage,
        recompute=recompute,
        method=method,
        optimizer=optimizer,
    )
    m = est.memory
    parts = (
        m.weights_bytes
        + m.kv_cache_bytes
        + m.activations_bytes
        + m.gradients_bytes
        + m.optimizer_bytes
        + m.overhead_bytes
    )
    np.testing.assert_allclose(parts, m.total_bytes, rtol=RTOL_PARTS)
    _nonneg(est)
    _nonneg(m)
