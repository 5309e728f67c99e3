"""NVIDIA rows against published numbers, and consistency rules between related parts.

Golden figures (dense, no sparsity) from:
- H100 SXM5: NVIDIA H100 Tensor Core GPU Architecture whitepaper (GTC22), Table 3 "H100 SXM5".
- A100: NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf).
- L4: NVIDIA L4 datasheet (sparse figures halved).
- RTX 4090: Ada Lovelace architecture whitepaper, Appendix A, Table 2 (fp32-accumulate column).
- RTX 3090: GA102 whitepaper, Appendix A, Table 9.
- T4: T4 datasheet.  V100 SXM2: V100 datasheet.
"""

from __future__ import annotations

import math

import pytest

from flopwise.catalog import BUILTIN_DATA_DIR, load_catalog
from flopwise.catalog.loader import read_devices

RTOL = 0.01  # published tables round to 3-4 significant figures

_NVIDIA_IDS_TEXT = """
v100-sxm2-16gb v100-sxm2-32gb v100-pcie-16gb t4 t4g p100-pcie-16gb tesla-p4 tesla-k80-gk210 tesla-m60-gm204 a10 a10g a40 a100-sxm-40gb a100-sxm-80gb a100-pcie-40gb
a100-pcie-80gb a800-sxm-80gb l4 l40 l40s h100-sxm h100-pcie h100-nvl h800-sxm h20 h200-sxm h200-nvl gh200 b200
gb200 b300 gb300 rtx-a4000 rtx-a5000 rtx-a6000 rtx-4000-ada rtx-5000-ada rtx-6000-ada rtx-pro-6000-blackwell
rtx-3060 rtx-3060-ti rtx-3070 rtx-3070-ti rtx-3080-10gb rtx-3080-12gb rtx-3080-ti rtx-3090 rtx-3090-ti rtx-4060
rtx-4060-ti-8gb rtx-4060-ti-16gb rtx-4070 rtx-4070-super rtx-4070-ti rtx-4070-ti-super rtx-4080 rtx-4080-super
rtx-4090 rtx-5070 rtx-5070-ti rtx-5080 rtx-5090
"""
NVIDIA_IDS = _NVIDIA_IDS_TEXT.split()


@pytest.fixture(scope="module")
def devices():
    return load_catalog().devices


def _close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=RTOL)


def test_nvidia_csv_holds_exactly_the_nvidia_ids():
    rows = read_devices(BUILTIN_DATA_DIR / "devices" / "nvidia.csv")
    ids = [d.id for d, _, _ in rows]
    assert sorted(ids) == sorted(NVIDIA_IDS)
    assert all(d.vendor == "nvidia" and d.kind == "gpu" for d, _, _ in rows)


@pytest.mark.parametrize(
    ("device_id", "column", "value"),
    [
        ("h100-sxm", "peak_bf16_tflop_per_s", 989.4),
        ("h100-sxm", "peak_fp8_tflop_per_s", 1978.9),
        ("h100-sxm", "peak_tf32_tflop_per_s", 494.7),
        ("h100-sxm", "peak_fp32_tflop_per_s", 66.9),
        ("h100-sxm", "memory_bandwidth_gb_per_s", 3350),
        ("h100-sxm", "tdp_w", 700),
        ("h100-sxm", "interconnect_gb_per_s", 450),
        ("h100-sxm", "sparse_fp8_tflop_per_s", 3957.8),
        ("a100-sxm-80gb", "peak_bf16_tflop_per_s", 312),
        ("a100-sxm-80gb", "peak_fp32_tflop_per_s", 19.5),
        ("a100-sxm-80gb", "peak_tf32_tflop_per_s", 156),
        ("a100-sxm-80gb", "peak_int8_tflop_per_s", 624),
        ("a100-sxm-80gb", "memory_bandwidth_gb_per_s", 2039),
        ("a100-sxm-40gb", "memory_bandwidth_gb_per_s", 1555),
        ("a100-sxm-80gb", "interconnect_gb_per_s", 300),
        ("l4", "peak_bf16_tflop_per_s", 121),
        ("l4", "memory_bandwidth_gb_per_s", 300),
        ("l4", "tdp_w", 72),
        ("rtx-4090", "peak_bf16_tflop_per_s", 165.2),
        ("rtx-4090", "peak_fp32_tflop_per_s", 82.6),
        ("rtx-4090", "peak_int8_tflop_per_s", 660.6),
        ("rtx-4090", "memory_bandwidth_gb_per_s", 1008),
        ("rtx-3090", "peak_bf16_tflop_per_s", 71),
        ("rtx-3090", "peak_tf32_tflop_per_s", 35.6),
        ("rtx-3090", "peak_int8_tflop_per_s", 284),
        ("rtx-5090", "peak_fp4_tflop_per_s", 1676),
        ("rtx-5090", "memory_bandwidth_gb_per_s", 1792),
        ("t4", "peak_fp16_tflop_per_s", 65),
        ("t4", "peak_int8_tflop_per_s", 130),
        # T4G (AWS G5g): 16 GB per GPU (AWS); fp32 = 2560 CUDA cores x 2 x 1.59 GHz (third-party inputs); the T4
        # datasheet's Tensor Core peaks for the same TU104 configuration
        ("t4g", "memory_gb", 16),
        ("t4g", "peak_fp32_tflop_per_s", 2560 * 2 * 1.59e9 / 1e12),
        ("t4g", "peak_fp16_tflop_per_s", 65),
        ("t4g", "peak_int4_tflop_per_s", 260),
        ("v100-sxm2-32gb", "peak_fp16_tflop_per_s", 125),
        ("v100-sxm2-32gb", "peak_fp32_tflop_per_s", 15.7),
        # one GK210 = half a K80 board (Azure: "1 GPU = one-half K80 card"): datasheet board figures / 2
        ("tesla-k80-gk210", "peak_fp32_tflop_per_s", 8.73 / 2),
        ("tesla-k80-gk210", "memory_bandwidth_gb_per_s", 480 / 2),
        ("tesla-k80-gk210", "memory_gb", 24 / 2),
        ("tesla-k80-gk210", "tdp_w", 300 / 2),
        # one GM204 = half an M60 board: datasheet 8 GB per GPU and 300 W / 2; fp32 = 2048 cores x 2 x 1.178 GHz
        ("tesla-m60-gm204", "memory_gb", 8),
        ("tesla-m60-gm204", "tdp_w", 300 / 2),
        ("tesla-m60-gm204", "peak_fp32_tflop_per_s", 2048 * 2 * 1.178e9 / 1e12),
    ],
)
def test_published_figures(devices, device_id, column, value):
    assert _close(getattr(devices[device_id], column), value), f"{device_id}.{column}"


def test_unsupported_types_are_empty(devices):
    for device_id in ("v100-sxm2-16gb", "v100-sxm2-32gb", "v100-pcie-16gb", "t4", "t4g"):
        d = devices[device_id]
        assert (
            d.peak_bf16_tflop_per_s is None
            and d.peak_tf32_tflop_per_s is None
            and d.peak_fp8_tflop_per_s is None
        )
    for device_id in (
        "tesla-k80-gk210",
        "tesla-m60-gm204",
    ):  # Kepler, Maxwell: fp32 only (others at fp32 rate)
        old = devices[device_id]
        assert all(
            old.peak_tflop_per_s(t) is None for t in ("tf32", "bf16", "fp16", "fp8", "int8", "fp4", "int4")
        ), device_id
    for device_id in ("a100-sxm-80gb", "a10", "a40", "rtx-3090", "rtx-a6000"):
        assert devices[device_id].peak_fp8_tflop_per_s is None, device_id  # Ampere has no fp8
    for device_id in ("h100-sxm", "h200-sxm", "l40s", "rtx-4090"):
        assert devices[device_id].peak_fp4_tflop_per_s is None, device_id  # fp4 arrives with Blackwell


def test_same_silicon_same_compute(devices):
    same = [
        ("h100-sxm", "h200-sxm"),
        ("h100-sxm", "h800-sxm"),
        ("h100-sxm", "gh200"),
        ("a100-sxm-80gb", "a800-sxm-80gb"),
        ("a100-sxm-40gb", "a100-sxm-80gb"),
        ("h100-nvl", "h200-nvl"),
        ("rtx-4060-ti-8gb", "rtx-4060-ti-16gb"),
    ]
    for a, b in same:
        for dtype in ("fp32", "tf32", "bf16", "fp8", "int8"):
            assert devices[a].peak_tflop_per_s(dtype) == devices[b].peak_tflop_per_s(dtype), (a, b, dtype)
    assert devices["h800-sxm"].interconnect_gb_per_s < devices["h100-sxm"].interconnect_gb_per_s
    assert devices["a800-sxm-80gb"].interconnect_gb_per_s < devices["a100-sxm-80gb"].interconnect_gb_per_s


def test_dtype_ordering(devices):
    """Within a device: tf32 <= bf16 <= fp8 <= fp4 and bf16 == fp16 where both exist."""
    for device_id in NVIDIA_IDS:
        d = devices[device_id]
        chain = [
            d.peak_tf32_tflop_per_s,
            d.peak_bf16_tflop_per_s,
            d.peak_fp8_tflop_per_s,
            d.peak_fp4_tflop_per_s,
        ]
        present = [v for v in chain if v is not None]
        assert present == sorted(present), device_id
        if d.peak_bf16_tflop_per_s is not None:
            assert d.peak_bf16_tflop_per_s == d.peak_fp16_tflop_per_s, device_id
        assert d.peak_fp32_tflop_per_s <= (d.peak_fp16_tflop_per_s or math.inf), device_id


def test_sparse_is_twice_dense_except_blackwell_ultra_fp4(devices):
    for device_id in NVIDIA_IDS:
        d = devices[device_id]
        for dtype in ("bf16", "fp8", "int8", "fp4"):
            dense, sparse = d.peak_tflop_per_s(dtype), getattr(d, f"sparse_{dtype}_tflop_per_s")
            if dense is None or sparse is None:
                continue
            expected = 4 / 3 if device_id in ("b300", "gb300") and dtype == "fp4" else 2.0
            assert math.isclose(sparse / dense, expected, rel_tol=0.01), (device_id, dtype)


def test_geforce_notes_state_the_accumulate(devices):
    for device_id in NVIDIA_IDS:
        d = devices[device_id]
        if d.segment == "consumer":
            assert "FP32 accumulate" in d.note, device_id
            assert d.interconnect.startswith("pcie"), device_id


def test_generations_get_faster(devices):
    ladder = ["v100-sxm2-32gb", "a100-sxm-80gb", "h100-sxm", "b200", "gb300"]
    fp16 = [devices[i].peak_fp16_tflop_per_s for i in ladder]
    assert fp16 == sorted(fp16)
    bandwidth = [devices[i].memory_bandwidth_gb_per_s for i in ladder]
    assert bandwidth == sorted(bandwidth)
