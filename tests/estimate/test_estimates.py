"""estimate_train / estimate_serve: sanity against published runs, invariants, vectorization and bad input."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest

from flopwise.errors import InputError, UnsupportedError
from flopwise.estimate import ServeEstimate, TrainEstimate, estimate_serve, estimate_train

from .conftest import (
    A100,
    CPU,
    DEEPSEEK_V3,
    H100,
    LLAMA2_7B,
    LLAMA31_8B,
    LLAMA31_70B,
    MIXTRAL_8X7B,
    ONPREM_H100,
    RTX4090,
)

RTOL_PARTS = 1e-9  # parts must sum to the total up to float rounding
RTOL_VECTOR = 1e-12  # vectorized and scalar paths do the same arithmetic
PAPER_TOLERANCE = 0.35  # whole-run GPU-hours depend on MFU; published runs differ by tens of percent


def _parts_sum(m) -> None:
    parts = (
        m.weights_bytes
        + m.kv_cache_bytes
        + m.activations_bytes
        + m.gradients_bytes
        + m.optimizer_bytes
        + m.overhead_bytes
    )
    np.testing.assert_allclose(parts, m.total_bytes, rtol=RTOL_PARTS)
    np.testing.assert_allclose(m.capacity_bytes - m.total_bytes, m.headroom_bytes, rtol=RTOL_PARTS)


# --- training ------------------------------------------------------------------------------------------------


def test_llama31_70b_gpu_hours_near_published():
    # Llama 3.1 model card: 70B used 7.0M H100-80GB GPU hours for ~15T tokens (https://huggingface.co/meta-llama/
    # Llama-3.1-70B, "Training Energy Use"); that total includes restarts, so the estimate sits below it.
    est = estimate_train(
        LLAMA31_70B, H100, tokens=15e12, device_count=2048, tensor_parallel=8, seq_len=8192, zero_stage=1
    )
    assert isinstance(est, TrainEstimate)
    assert est.device_hours == pytest.approx(7.0e6, rel=PAPER_TOLERANCE)
    assert est.fits
    _parts_sum(est.memory)


def test_train_outputs_are_consistent():
    est = estimate_train(
        LLAMA31_8B,
        H100,
        tokens=1e11,
        device_count=8,
        price_usd_per_device_h=2.0,
        grid_gco2e_per_kwh=400.0,
        pue=1.2,
    )
    assert isinstance(est.train_flops, float) and isinstance(est.fits, bool)
    assert est.device_hours == pytest.approx(est.wall_clock_hours * 8, rel=1e-12)
    assert est.cost_usd == (Decimal(repr(est.device_hours * 2.0))).quantize(Decimal("0.01"))
    assert est.co2e_kg == pytest.approx(est.energy_kwh * 0.4)
    assert est.energy_kwh == pytest.approx(
        est.power_per_device_w * 1.4 * 8 * est.wall_clock_hours * 1.2 / 1000
    )
    assert 0 < est.mfu_frac <= 0.4
    json.dumps(est.to_dict())


def test_full_recompute_slower_but_smaller():
    sel = estimate_train(LLAMA31_8B, H100, tokens=1e10, recompute="selective")
    full = estimate_train(LLAMA31_8B, H100, tokens=1e10, recompute="full")
    none = estimate_train(LLAMA31_8B, H100, tokens=1e10, recompute="none")
    assert full.wall_clock_hours > sel.wall_clock_hours
    assert full.memory.activations_bytes < sel.memory.activations_bytes < none.memory.activations_bytes
    assert full.train_flops == sel.train_flops  # model FLOPs do not count recomputation


def test_zero_and_parallel_shrink_memory():
    base = estimate_train(LLAMA31_70B, H100, tokens=1e10, device_count=64)
    z3 = estimate_train(LLAMA31_70B, H100, tokens=1e10, device_count=64, zero_stage=3, recompute="full")
    fsdp = estimate_train(
        LLAMA31_70B, H100, tokens=1e10, device_count=64, zero_stage="fsdp", recompute="full"
    )
    tp = estimate_train(LLAMA31_70B, H100, tokens=1e10, device_count=64, tensor_parallel=8)
    assert not base.fits and z3.fits
    assert z3.memory.total_bytes == fsdp.memory.total_bytes
    assert tp.memory.weights_bytes == pytest.approx(base.memory.weights_bytes / 8)
    assert any("does not fit" in w for w in base.warnings)


def test_lora_and_qlora():
    full = estimate_train(LLAMA31_8B, RTX4090, tokens=1e8, seq_len=2048)
    lora = estimate_train(LLAMA31_8B, RTX4090, tokens=1e8, seq_len=2048, method="lora")
    qlora = estimate_train(LLAMA31_8B, RTX4090, tokens=1e8, seq_len=2048, method="qlora", recompute="full")
    # 2/3 of the matmul FLOPs; the attention-score term keeps its full backward (activation gradients)
    assert lora.train_flops == pytest.approx(full.train_flops * 2 / 3, rel=0.05)
    assert qlora.memory.weights_bytes < full.memory.weights_bytes < lora.memory.weights_bytes
    assert lora.memory.optimizer_bytes < full.memory.optimizer_bytes / 50
    assert not full.fits and qlora.fits
    assert lora.assumptions["lora_params"] > 0


def test_moe_uses_active_params():
    est = estimate_train(MIXTRAL_8X7B, H100, tokens=1e10, device_count=8, zero_stage=3)
    dense_equiv = 6 * est.assumptions["matmul_params"] * 1e10
    assert est.train_flops == pytest.approx(dense_equiv, rel=0.05)
    assert est.assumptions["params_active"] < est.assumptions["params_total"] / 3


def test_onprem_cost_train():
    est = estimate_train(LLAMA31_8B, H100, tokens=1e10, device_count=8, onprem=ONPREM_H100)
    assert isinstance(est.cost_usd, Decimal) and est.cost_usd > 0
    assert est.assumptions["pue"] == 1.3


def test_fp8_training_needs_fp8_hardware():
    assert estimate_train(LLAMA31_8B, H100, tokens=1e9, precision="fp8").assumptions["compute_dtype"] == "fp8"
    with pytest.raises(UnsupportedError, match="a100-sxm-80gb.*fp8"):
        estimate_train(LLAMA31_8B, A100, tokens=1e9, precision="fp8")


# --- serving -------------------------------------------------------------------------------------------------


def test_llama2_7b_decode_rtx4090_near_llama_cpp():
    # llama.cpp batch-1 decode, Llama 2 7B on RTX 4090 (github.com/XiongjieDai/GPU-Benchmarks-on-LLM-Inference):
    # F16 60.78 tok/s, Q4_0 149.37 tok/s
    f16 = estimate_serve(LLAMA2_7B, RTX4090, quant="fp16", input_tokens=512, output_tokens=128)
    q4 = estimate_serve(LLAMA2_7B, RTX4090, quant="q4_0", input_tokens=512, output_tokens=128)
    # a sanity bound; flopwise validate grades these cases (the hand-built card here has no fp16-accumulate GEMV
    # path of its own, and the GPU decode step adds the p-norm compute term, ~1% at batch 1)
    assert f16.decode_tokens_per_s == pytest.approx(60.78, rel=0.15)
    assert q4.decode_tokens_per_s == pytest.approx(149.37, rel=0.2)
    assert isinstance(f16, ServeEstimate) and f16.fits


def test_serve_outputs_are_consistent():
    est = estimate_serve(LLAMA31_8B, H100, batch=8, price_usd_per_device_h=3.0, grid_gco2e_per_kwh=300.0)
    _parts_sum(est.memory)
    assert est.decode_tokens_per_s == pytest.approx(8 / (est.tpot_ms / 1000))
    assert est.prefill_tokens_per_s == pytest.approx(8 * 512 / (est.ttft_ms / 1000))
    assert est.cost_per_hour_usd == Decimal("3.00")
    assert est.co2e_per_1m_tokens_kg == pytest.approx(est.energy_per_1m_tokens_kwh * 0.3)
    assert est.memory.kv_cache_bytes == 131072 * (512 + 256) * 8
    assert est.assumptions["decode_is_memory_bound"] == 1.0
    json.dumps(est.to_dict())


def test_tensor_parallel_serving():
    one = estimate_serve(LLAMA31_70B, H100, device_count=1)
    four = estimate_serve(LLAMA31_70B, H100, device_count=4)
    assert not one.fits and four.fits
    assert four.memory.weights_bytes == pytest.approx(one.memory.weights_bytes / 4)
    assert four.tpot_ms < one.tpot_ms
    assert four.assumptions["tp_decode_comm_s"] > 0


def test_bigger_batch_more_throughput_slower_steps():
    small = estimate_serve(LLAMA31_8B, H100, batch=1)
    big = estimate_serve(LLAMA31_8B, H100, batch=64)
    assert big.decode_tokens_per_s > 10 * small.decode_tokens_per_s
    assert big.tpot_ms > small.tpot_ms
    assert big.energy_per_1m_tokens_kwh < small.energy_per_1m_tokens_kwh


def test_moe_and_mla_serving():
    mix = estimate_serve(MIXTRAL_8X7B, H100, device_count=2, batch=1)
    assert mix.assumptions["decode_step_bytes_per_device"] < mix.memory.weights_bytes * 0.5
    ds = estimate_serve(DEEPSEEK_V3, H100, device_count=8, quant="fp8", batch=16)
    assert ds.memory.kv_cache_bytes == pytest.approx((512 + 64) * 61 * 2 * 768 * 16)


def test_quant_fallback_warns_and_cpu_serving():
    est = estimate_serve(LLAMA31_8B, A100, quant="fp8")
    assert any("weight-only" in w for w in est.warnings)
    cpu = estimate_serve(LLAMA31_8B, CPU, quant="q4_k_m")
    assert cpu.assumptions["compute_dtype"] == "fp32" and cpu.fits
    with pytest.raises(UnsupportedError, match="interconnect"):
        estimate_serve(LLAMA31_8B, CPU, device_count=2)


def test_onprem_serving_cost():
    est = estimate_serve(LLAMA31_8B, H100, onprem=ONPREM_H100, batch=32)
    assert est.cost_per_hour_usd > Decimal("1.0") and est.cost_per_1m_tokens_usd > 0


# --- vectorized == scalar --------------------------------------------------------------------------------------


def test_serve_vectorized_matches_scalar():
    batch = np.array([1, 4, 16, 64])
    inp = np.array([[128], [2048]])
    vec = estimate_serve(
        LLAMA31_8B,
        H100,
        batch=batch,
        input_tokens=inp,
        output_tokens=256,
        price_usd_per_device_h=2.5,
        grid_gco2e_per_kwh=350.0,
    )
    assert vec.ttft_ms.shape == (2, 4) and vec.cost_per_1m_tokens_usd.shape == (2, 4)
    for i in range(2):
        for j in range(4):
            one = estimate_serve(
                LLAMA31_8B,
                H100,
                batch=int(batch[j]),
                input_tokens=int(inp[i, 0]),
                output_tokens=256,
                price_usd_per_device_h=2.5,
                grid_gco2e_per_kwh=350.0,
            )
            for name in (
                "ttft_ms",
                "tpot_ms",
                "decode_tokens_per_s",
                "prefill_tokens_per_s",
                "memory_gb",
                "power_per_device_w",
                "energy_per_1m_tokens_kwh",
                "co2e_per_1m_tokens_kg",
            ):
                np.testing.assert_allclose(getattr(vec, name)[i, j], getattr(one, name), rtol=RTOL_VECTOR)
            assert vec.cost_per_1m_tokens_usd[i, j] == one.cost_per_1m_tokens_usd
            assert bool(vec.fits[i, j]) == one.fits
    _parts_sum(vec.memory)
    json.dumps(vec.to_dict())


def test_train_vectorized_matches_scalar():
    tokens = np.array([1e9, 1e11, 1e13])
    devices = np.array([[8], [64], [512]])
    vec = estimate_train(
        LLAMA31_8B,
        H100,
        tokens=tokens,
        device_count=devices,
        price_usd_per_device_h=2.0,
        grid_gco2e_per_kwh=400.0,
    )
    assert vec.wall_clock_hours.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            one = estimate_train(
                LLAMA31_8B,
                H100,
                tokens=float(tokens[j]),
                device_count=int(devices[i, 0]),
                price_usd_per_device_h=2.0,
                grid_gco2e_per_kwh=400.0,
            )
            for name in (
                "train_flops",
                "device_hours",
                "wall_clock_hours",
                "memory_per_device_gb",
                "mfu_frac",
                "energy_kwh",
                "co2e_kg",
                "power_per_device_w",
            ):
                np.testing.assert_allclose(getattr(vec, name)[i, j], getattr(one, name), rtol=RTOL_VECTOR)
            assert vec.cost_usd[i, j] == one.cost_usd
    _parts_sum(vec.memory)


def test_vector_mfu_override():
    vec = estimate_train(LLAMA31_8B, H100, tokens=1e10, mfu_frac=np.array([0.2, 0.4]))
    assert vec.wall_clock_hours[0] == pytest.approx(2 * vec.wall_clock_hours[1])


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tokens": -1}, "tokens"),
        ({"tokens": 0}, "tokens"),
        ({"tokens": float("nan")}, "tokens"),
        ({"tokens": 1e31}, "tokens"),
        ({"tokens": np.array([1e9, -5.0])}, "tokens"),
        ({"tokens": 1e9, "device_count": 2.5}, "device_count"),
        ({"tokens": 1e9, "device_count": 12, "tensor_parallel": 8}, "device_count"),
        ({"tokens": 1e9, "precision": "fp12"}, "precision"),
        ({"tokens": 1e9, "method": "dora"}, "method"),
        ({"tokens": 1e9, "recompute": "some"}, "recompute"),
        ({"tokens": 1e9, "optimizer": "lion"}, "optimizer"),
        ({"tokens": 1e9, "zero_stage": 4}, "zero_stage"),
        ({"tokens": 1e9, "zero_stage": "ddp"}, "zero_stage"),
        ({"tokens": 1e9, "mfu_frac": 1.5}, "mfu_frac"),
        ({"tokens": 1e9, "micro_batch": 2e6}, "micro_batch"),
        ({"tokens": 1e9, "pue": 0.5}, "pue"),
        ({"tokens": 1e9, "price_usd_per_device_h": 1.0, "onprem": ONPREM_H100}, "onprem"),
        ({"tokens": "lots"}, "tokens"),
    ],
)
def test_train_bad_input(kwargs, field):
    with pytest.raises(InputError) as err:
        estimate_train(LLAMA31_8B, H100, **kwargs)
    assert err.value.field == field
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch": 0}, "batch"),
        ({"batch": 2e6}, "batch"),
        ({"input_tokens": -3}, "input_tokens"),
        ({"output_tokens": float("inf")}, "output_tokens"),
        ({"quant": "int3"}, "quant"),
        ({"kv_dtype": "fp6"}, "kv_dtype"),
        ({"grid_gco2e_per_kwh": -1}, "grid_gco2e_per_kwh"),
        ({"batch": np.array([1, 2]), "input_tokens": np.array([1, 2, 3])}, "arrays"),
    ],
)
def test_serve_bad_input(kwargs, field):
    with pytest.raises(InputError) as err:
        estimate_serve(LLAMA31_8B, H100, **kwargs)
    assert err.value.field == field


def test_expert_parallel_shards_routed_experts():
    default = estimate_train(
        DEEPSEEK_V3, H100, tokens=1e10, device_count=256, pipeline_parallel=16, zero_stage=1
    )
    none = estimate_train(
        DEEPSEEK_V3,
        H100,
        tokens=1e10,
        device_count=256,
        pipeline_parallel=16,
        zero_stage=1,
        expert_parallel=1,
    )
    assert default.assumptions["expert_parallel"] == 16
    assert default.memory.weights_bytes < none.memory.weights_bytes / 5
    assert default.wall_clock_hours <= none.wall_clock_hours
    with pytest.raises(InputError, match="expert_parallel"):
        estimate_train(
            DEEPSEEK_V3, H100, tokens=1e10, device_count=256, pipeline_parallel=16, expert_parallel=3
        )


def test_hybrid_model_kv_only_in_attention_layers():
    import dataclasses

    hybrid = dataclasses.replace(LLAMA31_8B, n_attention_layers=4)
    full = estimate_serve(LLAMA31_8B, H100)
    part = estimate_serve(hybrid, H100)
    assert part.memory.kv_cache_bytes == pytest.approx(full.memory.kv_cache_bytes * 4 / 32)


def test_decode_time_is_bandwidth_time_plus_fixed_layer_overhead():
    from flopwise.estimate import timing

    est = estimate_serve(LLAMA2_7B, A100, quant="q4_0", input_tokens=1, output_tokens=128)
    a = est.assumptions
    bandwidth_s = a["decode_step_bytes_per_device"] / (A100.memory_bandwidth_gb_per_s * 1e9)
    bandwidth_s /= a["bandwidth_efficiency_frac"]
    overhead_s = LLAMA2_7B.n_layers * timing.DECODE_LAYER_OVERHEAD_S["gpu"]
    assert a["step_overhead_s"] == pytest.approx(overhead_s)
    compute_s = a["decode_step_flops_per_device"] / (a["compute_peak_tflop_per_s"] * 1e12 * a["compute_efficiency_frac"])
    p = timing.ROOFLINE_OVERLAP_P["gpu"]
    step_s = (bandwidth_s**p + compute_s**p) ** (1 / p)  # p-norm of the two times (ROOFLINE_OVERLAP_P)
    assert compute_s < 0.1 * bandwidth_s and step_s < 1.05 * bandwidth_s  # batch 1: bandwidth-bound
    assert est.tpot_ms / 1000 == pytest.approx(step_s + overhead_s, rel=1e-6)
    # llama.cpp Llama 2 7B Q4_0 on A100 ran ~7.3 ms per token (136 tok/s), far above its bandwidth time
    assert est.tpot_ms > 2 * bandwidth_s * 1000


def test_llama_cpp_prefill_uses_the_fp16_accumulate_peak_on_geforce():
    q4 = estimate_serve(LLAMA2_7B, RTX4090, quant="q4_0", input_tokens=512, output_tokens=1)
    bf16 = estimate_serve(LLAMA2_7B, RTX4090, quant="bf16", input_tokens=512, output_tokens=1)
    assert q4.assumptions["is_fp16_accumulate"] and not bf16.assumptions["is_fp16_accumulate"]
    assert q4.assumptions["compute_peak_tflop_per_s"] == pytest.approx(2 * 165.2)
    assert bf16.assumptions["compute_peak_tflop_per_s"] == pytest.approx(165.2)
    on_a100 = estimate_serve(LLAMA2_7B, A100, quant="q4_0", input_tokens=512, output_tokens=1)
    assert on_a100.assumptions["compute_peak_tflop_per_s"] == pytest.approx(312.0)
