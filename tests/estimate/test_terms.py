"""Per-term golden numbers against published figures (tolerances named per test)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from flopwise.errors import InputError, UnsupportedError
from flopwise.estimate import cost, energy, flops, memory, quant, timing
from flopwise.models.params import count_params

from .conftest import (
    A100,
    CHINCHILLA_70B,
    CPU,
    DEEPSEEK_V3,
    GPT3_175B,
    H100,
    LLAMA2_7B,
    LLAMA31_8B,
    MISTRAL_7B,
    ONPREM_H100,
    RTX4090,
)

PAPER_TOLERANCE = 0.05  # llm-analysis style: published figures are rounded and count slightly different terms


def test_llama2_7b_fp16_weights_13_5_gb():
    # Llama 2 7B has 6.74e9 parameters (HF config); fp16 = 2 B each -> 13.5 GB (Hugging Face model card size)
    n = count_params(LLAMA2_7B).total
    assert memory.weight_bytes(n, quant.get_quant("fp16").bits_per_weight) / 1e9 == pytest.approx(
        13.5, abs=0.05
    )


def test_llama31_8b_kv_cache_per_token_bf16():
    # 2 (K and V) * 32 layers * 8 kv heads * 128 head_dim * 2 bytes
    assert memory.kv_cache_bytes_per_token(LLAMA31_8B, 2.0) == 2 * 32 * 8 * 128 * 2 == 131072
    assert memory.kv_cache_bytes(LLAMA31_8B, 1000, 4, 2.0) == 131072 * 1000 * 4


def test_mla_kv_cache_per_token_deepseek_v3():
    # DeepSeek-V2 paper Table 1: MLA caches (d_c + d_h^R) * l elements per token = (512 + 64) * 61
    assert memory.kv_cache_bytes_per_token(DEEPSEEK_V3, 1.0) == (512 + 64) * 61


def test_sliding_window_caps_kv_cache():
    # Mistral 7B rolling buffer of 4096 tokens: 32k context costs the same as 4096
    assert memory.kv_cache_bytes(MISTRAL_7B, 32768, 1, 2.0) == memory.kv_cache_bytes(MISTRAL_7B, 4096, 1, 2.0)
    assert memory.kv_cache_bytes(MISTRAL_7B, 1000, 1, 2.0) < memory.kv_cache_bytes(MISTRAL_7B, 4096, 1, 2.0)


def test_gpt3_training_flops_paper():
    # Brown et al. 2020, arXiv:2005.14165, Table D.1: GPT-3 175B, 300B tokens -> 3.14e23 FLOPs
    n = count_params(GPT3_175B).total
    assert flops.train_flops_dense(n, 300e9) == pytest.approx(3.14e23, rel=PAPER_TOLERANCE)
    n_mm = flops.matmul_params(count_params(GPT3_175B).non_embedding_active, GPT3_175B)
    assert flops.train_flops(n_mm, GPT3_175B, 300e9, 2048) == pytest.approx(3.14e23, rel=PAPER_TOLERANCE)


def test_chinchilla_training_flops_paper():
    # Hoffmann et al. 2022, arXiv:2203.15556, Table 3: Chinchilla 70B on 1.4T tokens -> 5.76e23 FLOPs
    n_mm = flops.matmul_params(count_params(CHINCHILLA_70B).non_embedding_active, CHINCHILLA_70B)
    assert flops.train_flops(n_mm, CHINCHILLA_70B, 1.4e12, 2048) == pytest.approx(
        5.76e23, rel=PAPER_TOLERANCE
    )


def test_lora_flops_two_thirds_of_full():
    n = 7e9
    full = flops.train_flops(n, LLAMA2_7B, 1.0, 1)
    lora = flops.lora_train_flops_per_token(n, 0, LLAMA2_7B, 1)
    assert lora / full == pytest.approx(2 / 3, rel=1e-3)


def test_recompute_extra_flops():
    n = 7e9
    assert flops.recompute_flops_per_token(n, LLAMA2_7B, 4096, "none") == 0
    full = flops.recompute_flops_per_token(n, LLAMA2_7B, 4096, "full")
    sel = flops.recompute_flops_per_token(n, LLAMA2_7B, 4096, "selective")
    assert full == pytest.approx(2 * n + sel)


def test_decode_flops_grow_with_context():
    assert flops.decode_flops_per_token(7e9, LLAMA2_7B, 0) == 2 * 7e9
    assert flops.decode_flops_per_token(7e9, LLAMA2_7B, 4096) == 2 * 7e9 + 2 * 32 * 4096 * 4096


def test_korthikanti_activation_table2():
    # arXiv:2205.05198 Table 2 with s=2048, b=1, h=12288, a=96, t=8
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    sbh = s * b * h
    assert memory.activation_bytes_per_layer_train(s, b, h, a, t, "none") == pytest.approx(
        sbh / t * (34 + 5 * a * s / h)
    )
    assert memory.activation_bytes_per_layer_train(s, b, h, a, t, "selective") == pytest.approx(34 * sbh / t)
    assert memory.activation_bytes_per_layer_train(s, b, h, a, t, "full") == pytest.approx(2 * sbh)


def test_zero_paper_16_bytes_per_param_and_sharding():
    # ZeRO arXiv:1910.02054 Sec. 3.1: mixed-precision Adam = 2 + 2 + 12 = 16 bytes per parameter
    psi = 7.5e9
    total = (
        memory.weight_bytes(psi, 16)
        + memory.gradient_bytes(psi, 2.0)
        + memory.optimizer_bytes(psi, "adamw", "bf16")
    )
    assert total == pytest.approx(16 * psi)
    # Fig. 1, Nd = 64: stage 1 -> 31.4 GB, stage 2 -> 16.6 GB, stage 3 -> 1.9 GB (Psi = 7.5B)
    for stage, expect_gb in ((1, 31.4), (2, 16.6), (3, 1.9)):
        w, g, o = memory.zero_divisors(stage, 64)
        got = (2 * psi / w + 2 * psi / g + 12 * psi / o) / 1e9
        assert got == pytest.approx(expect_gb, rel=0.02)


def test_qlora_nf4_bits():
    # Dettmers et al. 2023 Sec. 3: double quantization brings 0.5 bits/param of constants to 0.127
    assert abs(quant.NF4_DQ_BITS_PER_WEIGHT - 4.127) < 1e-3


def test_quant_bits_per_weight_table():
    assert quant.get_quant("q8_0").bits_per_weight == 8.5
    assert quant.get_quant("Q4_0").bits_per_weight == 4.5
    assert quant.get_quant("q6_k").bits_per_weight == 6.5625
    assert quant.get_quant("nvfp4").bits_per_weight == 4.5
    assert quant.get_quant("mxfp4").bits_per_weight == 4.25
    assert quant.get_quant("awq").bits_per_weight == pytest.approx(4 + 20 / 128)
    assert quant.group_quant_bits_per_weight(4, 128, 16, 16) == 4.25


def test_quant_fallback_policy():
    assert quant.resolve_serving_quant(quant.get_quant("fp8"), H100)[0] == "fp8"
    dtype, _, warns = quant.resolve_serving_quant(quant.get_quant("fp8"), A100)
    assert dtype == "fp16" and "weight-only" in warns[0]
    with pytest.raises(UnsupportedError, match="nvfp4.*h100-sxm"):
        quant.resolve_serving_quant(quant.get_quant("nvfp4"), H100)
    with pytest.raises(UnsupportedError, match="fp8.*epyc-9654"):
        quant.resolve_serving_quant(quant.get_quant("fp8"), CPU)
    assert quant.resolve_serving_quant(quant.get_quant("mxfp4"), H100)[0] == "fp16"
    assert quant.resolve_compute_peak(CPU, "bf16") == ("fp32", 5.4)
    with pytest.raises(InputError, match="quant"):
        quant.get_quant("q9_9")
    with pytest.raises(InputError, match="kv_dtype"):
        quant.kv_bytes_per_element("fp7")


def test_default_mfu_by_generation():
    # base MFU at 10B times (N/1e10)^0.078: H100 70B 0.23 * 7^0.078 = 0.268, A100 175B 0.39 * 17.5^0.078 = 0.488
    assert timing.default_mfu_frac(H100, 1e10)[0] == pytest.approx(0.23)
    assert timing.default_mfu_frac(H100, 70e9)[0] == pytest.approx(0.23 * 7.0**0.078)
    assert timing.default_mfu_frac(A100, 175e9)[0] == pytest.approx(0.39 * 17.5**0.078)
    # below 1e9 the small-model scale; below 4e8 the size term stops falling (clipped to the fitted runs)
    assert timing.default_mfu_frac(H100, 1e8)[0] == pytest.approx(
        0.23 * 0.04**0.078 * timing.SMALL_MODEL_MFU_SCALE
    )
    assert timing.default_mfu_frac(H100, 70e9, "fp8")[0] == pytest.approx(
        0.23 * 7.0**0.078 * timing.FP8_MFU_SCALE
    )
    assert timing.device_generation(RTX4090) == "consumer-gpu"
    assert timing.device_generation(CPU) == "cpu"
    # generations without size-resolved data keep one value for every size
    assert timing.default_mfu_frac(RTX4090, 7e9)[0] == timing.default_mfu_frac(RTX4090, 70e9)[0] == 0.30


def test_mfu_size_factor():
    assert timing.mfu_size_factor(timing.MFU_SIZE_REF_PARAMS) == pytest.approx(1.0)
    sizes = [4e8, 1e9, 8e9, 7e10, 4.05e11]
    factors = [timing.mfu_size_factor(n) for n in sizes]
    assert factors == sorted(factors) and factors[0] < 0.8 and factors[-1] > 1.3
    lo, hi = timing.MFU_SIZE_PARAMS_RANGE
    assert timing.mfu_size_factor(1e6) == timing.mfu_size_factor(lo)
    assert timing.mfu_size_factor(2e12) == timing.mfu_size_factor(hi)
    # Llama 3 on H100: implied whole-run MFU rises with size (8B 0.15-0.17, 405B 0.36); the default follows
    mfu_8b, note = timing.default_mfu_frac(H100, 8.03e9)
    mfu_405b = timing.default_mfu_frac(H100, 4.06e11)[0]
    assert 0.2 < mfu_8b < mfu_405b < 0.36
    assert "parameters" in note and "0.078" in note


def test_train_time_bloom_like():
    # BLOOM 176B: 384 A100 at ~156 TFLOP/s each counting the recompute forward (arXiv:2211.05100 Sec. 3.5,
    # full activation checkpointing), 366B tokens in about 3.5 months (~105 days)
    n_mm = 176e9
    hw = flops.train_flops_dense(n_mm, 366e9) + 366e9 * 2 * n_mm
    days = timing.train_time_s(hw, 384, 312e12, 156 / 312) / 86400
    assert days == pytest.approx(105, rel=0.1)


def test_allreduce_and_roofline():
    assert timing.allreduce_time_s(1e9, 1, 1e11, 1e-5) == 0
    assert timing.allreduce_time_s(1e9, 8, 1e11, 0.0) == pytest.approx(2 * 7 / 8 * 1e9 / 1e11)
    assert timing.roofline_time_s(1e12, 1e9, 1e12, 1e12) == 1.0
    assert timing.moe_touched_frac(8, 2, 1) == 0
    assert timing.moe_touched_frac(8, 2, 10_000) == pytest.approx(1.0)



def test_energy_terms():
    assert energy.device_power_w(700, 70, 1.0) == 700
    assert energy.device_power_w(700, 70, 0.0) == 70
    assert energy.energy_kwh(1000.0, 0.0, 2, 3.0, 1.5) == pytest.approx(9.0)
    assert energy.co2e_kg(1000.0, 400.0) == pytest.approx(400.0)
    # BLOOM (Luccioni et al. 2022 arXiv:2211.02001): 1,082,990 A100-hours at 400 W TDP -> 433 MWh
    assert energy.energy_kwh(400.0, 0.0, 1, 1_082_990, 1.0) / 1000 == pytest.approx(433, rel=0.01)


def test_onprem_cost_and_money():
    # 30000 * 1.5 / (5 * 8760) + 1 kW * 1.3 * 0.10 = 1.0274 + 0.13
    got = cost.onprem_usd_per_device_h(ONPREM_H100, 1000.0, 1.3)
    assert got == pytest.approx(30000 * 1.5 / (5 * 8760) + 0.13)
    assert cost.to_money(1.005) == Decimal("1.00") or cost.to_money(1.005) == Decimal("1.01")
    assert cost.to_money(2.499) == Decimal("2.50")
    arr = cost.to_money(np.array([1.234, 5.678]))
    assert arr.dtype == object and list(arr) == [Decimal("1.23"), Decimal("5.68")]
    assert not math.isnan(float(arr[0]))


def test_fp16_accumulate_peak_doubles_only_on_geforce():
    # NVIDIA Ada whitepaper Appendix A: RTX 4090 fp16 tensor 330.3 TFLOP/s with fp16 accumulate, 165.2 with fp32
    assert timing.fp16_accumulate_peak_tflop_per_s(RTX4090, 165.2) == pytest.approx(330.4)
    assert timing.fp16_accumulate_peak_tflop_per_s(H100, 989.4) == 989.4  # data-centre: one rate
    assert timing.fp16_accumulate_peak_tflop_per_s(CPU, 5.4) == 5.4
    assert "q4_0" in timing.FP16_ACCUMULATE_QUANTS and "bf16" not in timing.FP16_ACCUMULATE_QUANTS


def test_decode_overhead_is_per_layer_and_zero_without_data():
    per_layer = timing.DECODE_LAYER_OVERHEAD_S["gpu"]
    assert 0 < per_layer < 1e-3
    assert timing.decode_overhead_s(32, "gpu") == pytest.approx(32 * per_layer)
    assert timing.decode_overhead_s(80, "gpu") == pytest.approx(2.5 * timing.decode_overhead_s(32, "gpu"))
    assert timing.decode_overhead_s(32, "tpu") == 0.0
    assert timing.decode_overhead_s(32, "unknown-kind") == 0.0


@pytest.mark.parametrize(
    ("typed", "name", "bpw"),
    [
        ("F16", "fp16", 16.0),
        ("BF16", "bf16", 16.0),
        ("F32", "fp32", 32.0),
        ("Q8_0", "q8_0", 8.5),  # block_q8_0: 34 B / 32
        ("Q4_1", "q4_1", 5.0),  # block_q4_1: 20 B / 32
        ("Q5_1", "q5_1", 6.0),  # block_q5_1: 24 B / 32
        ("IQ4_XS", "iq4_xs", 4.25),  # block_iq4_xs: 136 B / 256
        ("IQ4_NL", "iq4_nl", 4.5),  # block_iq4_nl: 18 B / 32
        ("IQ3_XXS", "iq3_xxs", 3.0625),  # block_iq3_xxs: 98 B / 256
        ("IQ2_XXS", "iq2_xxs", 2.0625),  # block_iq2_xxs: 66 B / 256
        ("IQ1_S", "iq1_s", 1.5625),  # block_iq1_s: 50 B / 256
        ("Q4_K_S", "q4_k_s", 4.58),  # llama.cpp quantize README, Llama 2 7B
        ("Q5_K_S", "q5_k_s", 5.52),
        ("Q3_K_L", "q3_k_l", 4.27),
        ("Q5_K_M", "q5_k_m", 5.68),
        ("Q3_K", "q3_k_m", 3.91),  # llama-quantize: alias for Q3_K_M
        ("IQ3_M", "iq3_m", 3.66),  # llama-quantize: 3.66 bpw quantization mix
    ],
)
def test_gguf_names_as_llama_cpp_users_type_them(typed, name, bpw):
    q = quant.get_quant(typed)
    assert (q.name, q.bits_per_weight) == (name, pytest.approx(bpw))
    assert q.is_weight_only == (name not in ("fp16", "bf16", "fp32"))


def test_gguf_weight_bytes_follow_bits_per_weight():
    """An 8.03B-parameter model in IQ4_XS holds 8.03e9 x 4.25 / 8 bytes of weights (about 4.27 GB)."""
    q = quant.get_quant("IQ4_XS")
    assert 8.03e9 * q.bits_per_weight / 8 == pytest.approx(4.266e9, rel=1e-3)
    with pytest.raises(InputError, match="quant"):
        quant.get_quant("Q4_K_X")
def test_to_money_array_equals_the_scalar_path():
    import numpy as np

    from flopwise.estimate.cost import to_money
    from flopwise.money import from_float

    rng = np.random.default_rng(7)
    x = np.concatenate(
        [rng.uniform(-100, 1e6, 20000), [0.005, 0.015, 0.025, 2.675, 1.005, 0.125, -0.0, 0.0, 1e18, -3.335]]
    )
    fast = to_money(x)
    assert [str(v) for v in fast] == [str(from_float(v, "cost_usd")) for v in x.tolist()]
