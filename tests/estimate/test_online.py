"""Time per output token under load (estimate.serve.online_decode): Little's law and the step time at that load."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flopwise.catalog import load_catalog
from flopwise.catalog.engines import get_engine
from flopwise.errors import InputError
from flopwise.estimate import estimate_serve
from flopwise.estimate import serve as sv
from flopwise.estimate.serve import online_decode
from flopwise.models import load_models

_CAT, _MODELS = load_catalog(), load_models()
A100, H100 = _CAT.devices["a100-sxm-80gb"], _CAT.devices["h100-sxm"]
LLAMA31_8B, LLAMA31_70B = _MODELS.resolve("llama-3.1-8b"), _MODELS.resolve("llama-3.1-70b")
KW = {"input_tokens": 230, "output_tokens": 194}


def _engine(name: str, mixed: bool):
    return dataclasses.replace(get_engine(name), mixed_prefill=mixed)


def _online_extra_ms(model, device, engine) -> float:
    rates = sv.serving_rates(sv.get_quant("bf16"), device, model.n_layers, engine)
    per_layer = rates.layer_overhead_s / model.n_layers
    return model.n_layers * max(sv.ONLINE_LAYER_OVERHEAD_S - per_layer, 0.0) * 1e3


@pytest.mark.parametrize("mixed", [True, False])
@pytest.mark.parametrize("name", ["vllm", "sglang", "trt-llm"])
def test_tpot_grows_with_the_request_rate(name, mixed):
    eng = _engine(name, mixed)
    rps = np.array([1e-4, 0.5, 1, 2, 4, 8, 12, 16, 24, 32, 64, 128])
    est = estimate_serve(LLAMA31_8B, A100, engine=eng, arrival_rps=rps, **KW)
    tpot = np.asarray(est.tpot_ms)
    assert np.all(np.diff(tpot) >= -1e-9), tpot
    assert tpot[-1] > 1.5 * tpot[0]
    batch = np.asarray(est.running_batch)
    assert np.all(np.diff(batch) >= -1e-9) and batch[0] == pytest.approx(1.0, abs=1e-3)
    # far past what one replica completes: saturated, every slot busy, admissions below the offered rate
    assert bool(est.is_saturated[-1]) and not bool(est.is_saturated[0])
    assert est.arrival_rps[-1] < rps[-1]


@pytest.mark.parametrize("name", ["vllm", "sglang", "trt-llm"])
def test_tpot_grows_with_concurrency(name):
    est = estimate_serve(LLAMA31_70B, H100, device_count=4, engine=name, concurrency=np.array([1, 2, 8, 32, 128, 512]),
                         **KW)  # fmt: skip
    tpot = np.asarray(est.tpot_ms)
    assert np.all(np.diff(tpot) > 0), tpot


@pytest.mark.parametrize("mixed", [True, False])
def test_light_load_is_the_batch_1_decode_step(mixed):
    """lambda -> 0 (and a single client) leave the tagged request alone: the batch-1 decode step, plus the online
    server's per-step overhead."""
    eng = _engine("vllm", mixed)
    static = estimate_serve(LLAMA31_8B, H100, engine=eng, batch=1, **KW)
    extra = _online_extra_ms(LLAMA31_8B, H100, eng)
    one = estimate_serve(LLAMA31_8B, H100, engine=eng, concurrency=1, **KW)
    assert float(one.tpot_ms) == pytest.approx(float(static.tpot_ms) + extra, rel=1e-6)
    assert float(one.running_batch) == 1.0
    idle = estimate_serve(LLAMA31_8B, H100, engine=eng, arrival_rps=1e-6, **KW)
    assert float(idle.tpot_ms) == pytest.approx(float(static.tpot_ms) + extra, rel=1e-4)
    assert static.running_batch is None and static.arrival_rps is None  # no load given: static batch only


def test_mixed_prefill_interferes_less_than_prefill_stalls_when_decode_is_memory_bound():
    rps = np.array([2.0, 4.0, 8.0])
    mixed = estimate_serve(LLAMA31_8B, A100, engine=_engine("sglang", True), arrival_rps=rps, **KW)
    stall = estimate_serve(LLAMA31_8B, A100, engine=_engine("sglang", False), arrival_rps=rps, **KW)
    assert np.all(np.asarray(mixed.tpot_ms) < np.asarray(stall.tpot_ms))
    assert stall.assumptions["online_prefill"].startswith("own steps")


def test_vectorized_equals_scalar_calls():
    rps = np.array([0.5, 3.0, 9.0, 40.0])
    vec = estimate_serve(LLAMA31_8B, H100, engine="vllm", arrival_rps=rps, **KW)
    for i, r in enumerate(rps):
        one = estimate_serve(LLAMA31_8B, H100, engine="vllm", arrival_rps=float(r), **KW)
        assert float(one.tpot_ms) == pytest.approx(float(vec.tpot_ms[i]), rel=1e-9)


def test_saturation_warns():
    est = estimate_serve(LLAMA31_8B, A100, engine="sglang", arrival_rps=500.0, **KW)
    assert bool(est.is_saturated)
    assert any("exceeds what one replica completes" in w for w in est.warnings)


def test_online_decode_solves_the_fixed_point_of_a_linear_step():
    """With step(B, P) = a + b B (prefill as its own step of p1), the open-loop fixed point is
    T = a + b (1 + lambda (p1 + T + d T)) + lambda p1 T: solve it in closed form and compare."""
    a, b, p1, lam, n_out = 0.010, 0.0002, 0.030, 5.0, 101
    d = n_out - 1

    def step(batch, pre):
        return a + b * batch + 0.0 * pre

    got = online_decode(step, p1, 200, n_out, slots=1e4, mixed_prefill=False, arrival_rps=lam)
    # T (1 - b lam (1 + d) - lam p1) = a + b + b lam p1
    want = (a + b + b * lam * p1) / (1.0 - b * lam * (1 + d) - lam * p1)
    assert float(got.tpot_s) == pytest.approx(want, rel=1e-6)
    assert float(got.running_batch) == pytest.approx(1 + lam * (p1 + want + d * want), rel=1e-6)
    # mixed prefill: step(B, P) = a + b B + c P with P = lam I T
    c, n_in = 1e-5, 200
    got = online_decode(lambda bt, pre: a + b * bt + c * pre, p1, n_in, n_out, slots=1e4, mixed_prefill=True,
                        arrival_rps=lam)  # fmt: skip
    want = (a + b + b * lam * p1) / (1.0 - b * lam * (1 + d) - c * lam * n_in)
    assert float(got.tpot_s) == pytest.approx(want, rel=1e-6)


def test_bad_load_inputs_name_the_field():
    with pytest.raises(InputError, match="not both"):
        estimate_serve(LLAMA31_8B, H100, arrival_rps=1.0, concurrency=4)
    with pytest.raises(InputError, match="batch"):
        estimate_serve(LLAMA31_8B, H100, arrival_rps=1.0, batch=8)
    with pytest.raises(InputError, match="arrival_rps"):
        estimate_serve(LLAMA31_8B, H100, arrival_rps=0.0)
    with pytest.raises(InputError, match="concurrency"):
        estimate_serve(LLAMA31_8B, H100, concurrency=2.5)
    with pytest.raises(InputError, match="arrival_rps"):
        online_decode(lambda b, p: 0.01, 0.02, 100, 100, slots=8, mixed_prefill=True)


@pytest.mark.parametrize(
    ("model_id", "device_id", "tp", "engine"),
    [("llama-3.1-8b", "h100-sxm", 1, "vllm"), ("llama-3.1-70b", "h100-sxm", 4, "sglang"),
     ("llama-3.1-8b", "rtx-4090", 1, "llama.cpp")],
)  # fmt: skip
def test_linear_online_step_equals_the_decode_step(model_id, device_id, tp, engine):
    """The online step's precomputed linear terms give exactly estimate.serve's decode step (plus the overhead)."""
    model, device = _MODELS.resolve(model_id), _CAT.devices[device_id]
    quant = "q4_k_m" if engine == "llama.cpp" else "bf16"
    r = sv._read_inputs(device, engine, quant, None, tp, 1, 1000, 200, None, None, None, None)
    rates = sv.serving_rates(r.q, device, model.n_layers, r.engine)
    sp = sv._split_of(model, r.engine, r.tp)
    n_mm = sv.fl.matmul_params(sv.count_params(model).non_embedding_active, model)
    wread = sv._weight_read_fn(model, r.q, sp.shard)
    ctx = r.n_in + r.n_out / 2.0
    fast = sv._online_step_fn(model, r, rates, sp, n_mm, wread, device, ctx, 0.001)
    b, pre = np.array([1.0, 7.0, 64.0, 300.0]), np.array([0.0, 13.0, 500.0, 0.0])
    slow = sv._decode_step_s(model, r, rates, sp, n_mm, wread, device, b, ctx, pre)[0] + 0.001
    assert np.allclose(fast(b, pre), slow, rtol=1e-12)


def test_more_clients_than_slots_wait_for_a_slot():
    eng = dataclasses.replace(get_engine("vllm"), default_max_seqs=16)
    est = estimate_serve(LLAMA31_8B, H100, engine=eng, concurrency=np.array([8, 16, 64]), **KW)
    assert list(np.asarray(est.is_saturated)) == [False, False, True]
    assert np.asarray(est.running_batch)[-1] == 16.0
    assert float(est.tpot_ms[-1]) == pytest.approx(float(est.tpot_ms[1]), rel=1e-6)
    assert any("wait for a slot" in w for w in est.warnings)


def test_an_engine_without_online_cases_is_said_to_be_derived():
    gguf = estimate_serve(LLAMA31_8B, H100, engine="llama.cpp", quant="q4_k_m", arrival_rps=1.0, **KW)
    assert any("no published online case covers engine 'llama.cpp'" in w for w in gguf.warnings)
    vllm = estimate_serve(LLAMA31_8B, H100, engine="vllm", arrival_rps=1.0, **KW)
    assert not any("no published online case" in w for w in vllm.warnings)
