"""Hand-built devices and architectures for the estimator tests (figures from the public datasheets/configs).

Built here rather than loaded from the catalog so the estimator is tested on fixed inputs.
"""

from __future__ import annotations

import pytest

from archs import (  # noqa: F401 - re-exported to the estimator tests
    CHINCHILLA_70B,
    DEEPSEEK_V3,
    GPT3_175B,
    LLAMA2_7B,
    LLAMA31_8B,
    LLAMA31_70B,
    LLAMA31_405B,
    MISTRAL_7B,
    MIXTRAL_8X7B,
)
from flopwise.catalog.types import Device, OnPremProfile


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
