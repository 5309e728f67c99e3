"""Hand-built devices and architectures for the estimator tests (figures from the public datasheets/configs).

Built here rather than loaded from the catalog so the estimator is tested on fixed inputs.
"""

from __future__ import annotations

import pytest

from flopwise.catalog.types import Device, OnPremProfile
from flopwise.models.types import ModelArch


def make_device(**kw) -> Device:
    base = dict(
        id="h100-sxm",
        name="NVIDIA H100 SXM",
        vendor="nvidia",
        kind="gpu",
        segment="datacenter",
        memory_gb=80.0,
        memory_bandwidth_gb_per_s=3350.0,
        peak_fp32_tflop_per_s=67.0,
        peak_tf32_tflop_per_s=494.7,
        peak_bf16_tflop_per_s=989.4,
        peak_fp16_tflop_per_s=989.4,
        peak_fp8_tflop_per_s=1978.9,
        peak_int8_tflop_per_s=1978.9,
        peak_fp4_tflop_per_s=None,
        peak_int4_tflop_per_s=None,
        sparse_bf16_tflop_per_s=1978.9,
        sparse_fp8_tflop_per_s=3957.8,
        sparse_int8_tflop_per_s=3957.8,
        sparse_fp4_tflop_per_s=None,
        interconnect="nvlink4",
        interconnect_gb_per_s=450.0,
        tdp_w=700.0,
        idle_w=70.0,
        release_year=2022,
        source_url="https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
    )
    base.update(kw)
    return Device(**base)


H100 = make_device()
A100 = make_device(
    id="a100-sxm-80gb",
    name="NVIDIA A100 SXM 80GB",
    memory_gb=80.0,
    memory_bandwidth_gb_per_s=2039.0,
    peak_fp32_tflop_per_s=19.5,
    peak_tf32_tflop_per_s=156.0,
    peak_bf16_tflop_per_s=312.0,
    peak_fp16_tflop_per_s=312.0,
    peak_fp8_tflop_per_s=None,
    peak_int8_tflop_per_s=624.0,
    interconnect="nvlink3",
    interconnect_gb_per_s=300.0,
    tdp_w=400.0,
    idle_w=50.0,
    release_year=2020,
)
RTX4090 = make_device(
    id="rtx-4090",
    name="GeForce RTX 4090",
    segment="consumer",
    memory_gb=24.0,
    memory_bandwidth_gb_per_s=1008.0,
    peak_fp32_tflop_per_s=82.6,
    peak_tf32_tflop_per_s=82.6,
    peak_bf16_tflop_per_s=165.2,
    peak_fp16_tflop_per_s=165.2,
    peak_fp8_tflop_per_s=330.3,
    peak_int8_tflop_per_s=660.6,
    interconnect="pcie4",
    interconnect_gb_per_s=32.0,
    tdp_w=450.0,
    idle_w=20.0,
)
CPU = make_device(
    id="epyc-9654",
    name="AMD EPYC 9654",
    vendor="amd",
    kind="cpu",
    segment="server-cpu",
    memory_gb=384.0,
    memory_bandwidth_gb_per_s=460.8,
    peak_fp32_tflop_per_s=5.4,
    peak_tf32_tflop_per_s=None,
    peak_bf16_tflop_per_s=None,
    peak_fp16_tflop_per_s=None,
    peak_fp8_tflop_per_s=None,
    peak_int8_tflop_per_s=None,
    interconnect="none",
    interconnect_gb_per_s=0.0,
    tdp_w=360.0,
    idle_w=100.0,
)

LLAMA2_7B = ModelArch(
    id="llama-2-7b",
    name="Llama 2 7B",
    family="llama",
    hf_id="meta-llama/Llama-2-7b-hf",
    n_layers=32,
    d_model=4096,
    n_heads=32,
    n_kv_heads=32,
    head_dim=128,
    d_ff=11008,
    vocab_size=32000,
    max_context=4096,
)
LLAMA31_8B = ModelArch(
    id="llama-3.1-8b",
    name="Llama 3.1 8B",
    family="llama",
    hf_id="meta-llama/Llama-3.1-8B",
    n_layers=32,
    d_model=4096,
    n_heads=32,
    n_kv_heads=8,
    head_dim=128,
    d_ff=14336,
    vocab_size=128256,
    max_context=131072,
)
LLAMA31_70B = ModelArch(
    id="llama-3.1-70b",
    name="Llama 3.1 70B",
    family="llama",
    hf_id="meta-llama/Llama-3.1-70B",
    n_layers=80,
    d_model=8192,
    n_heads=64,
    n_kv_heads=8,
    head_dim=128,
    d_ff=28672,
    vocab_size=128256,
    max_context=131072,
)
GPT3_175B = ModelArch(
    id="gpt-3-175b",
    name="GPT-3 175B",
    family="gpt-3",
    hf_id="",
    n_layers=96,
    d_model=12288,
    n_heads=96,
    n_kv_heads=96,
    head_dim=128,
    d_ff=49152,
    vocab_size=50257,
    max_context=2048,
    ffn_kind="mlp",
    tied_embeddings=True,
    has_bias=True,
)
CHINCHILLA_70B = ModelArch(
    id="chinchilla-70b",
    name="Chinchilla",
    family="chinchilla",
    hf_id="",
    n_layers=80,
    d_model=8192,
    n_heads=64,
    n_kv_heads=64,
    head_dim=128,
    d_ff=32768,
    vocab_size=32000,
    max_context=2048,
    ffn_kind="mlp",
    tied_embeddings=False,
)
MIXTRAL_8X7B = ModelArch(
    id="mixtral-8x7b",
    name="Mixtral 8x7B",
    family="mixtral",
    hf_id="mistralai/Mixtral-8x7B-v0.1",
    n_layers=32,
    d_model=4096,
    n_heads=32,
    n_kv_heads=8,
    head_dim=128,
    d_ff=14336,
    vocab_size=32000,
    max_context=32768,
    n_experts=8,
    n_experts_active=2,
    d_ff_expert=14336,
)
DEEPSEEK_V3 = ModelArch(
    id="deepseek-v3",
    name="DeepSeek-V3",
    family="deepseek",
    hf_id="deepseek-ai/DeepSeek-V3",
    n_layers=61,
    d_model=7168,
    n_heads=128,
    n_kv_heads=128,
    head_dim=128,
    d_ff=18432,
    vocab_size=129280,
    max_context=163840,
    attention="mla",
    n_experts=256,
    n_experts_active=8,
    n_shared_experts=1,
    d_ff_expert=2048,
    n_dense_layers=3,
    mla_q_lora_rank=1536,
    mla_kv_lora_rank=512,
    mla_qk_rope_head_dim=64,
    mla_qk_nope_head_dim=128,
    mla_v_head_dim=128,
)
MISTRAL_7B = ModelArch(
    id="mistral-7b",
    name="Mistral 7B",
    family="mistral",
    hf_id="mistralai/Mistral-7B-v0.1",
    n_layers=32,
    d_model=4096,
    n_heads=32,
    n_kv_heads=8,
    head_dim=128,
    d_ff=14336,
    vocab_size=32000,
    max_context=32768,
    sliding_window=4096,
    n_sliding_layers=32,
)

ONPREM_H100 = OnPremProfile(
    device_id="h100-sxm",
    purchase_usd=__import__("decimal").Decimal("30000"),
    server_overhead_frac=0.5,
    lifetime_years=5.0,
    electricity_usd_per_kwh=__import__("decimal").Decimal("0.10"),
    pue=1.3,
)


@pytest.fixture
def h100() -> Device:
    return H100
