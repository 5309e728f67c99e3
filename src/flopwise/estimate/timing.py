"""Time terms: training wall-clock from FLOPs and MFU, collectives over the interconnect, and the serving roofline.

Every function accepts plain floats or numpy arrays (broadcasting) and returns the same kind.
"""

from __future__ import annotations

import numpy as np

from flopwise.catalog.types import Device

__all__ = [
    "BANDWIDTH_EFFICIENCY_FRAC",
    "COMPUTE_EFFICIENCY_FRAC",
    "DEFAULT_MFU",
    "FP8_MFU_SCALE",
    "WEIGHT_ONLY_BANDWIDTH_FRAC",
    "WEIGHT_ONLY_COMPUTE_FRAC",
    "allreduce_time_s",
    "collective_latency_s",
    "default_mfu_frac",
    "device_generation",
    "moe_touched_frac",
    "roofline_time_s",
    "train_time_s",
]

#: Default model-FLOPs utilization per device generation, calibrated to whole-run device-hours (so restarts,
#: evaluation and checkpointing are inside it), dense peak of the training precision. The implied MFU of a
#: published run is ``6*N*D (+attention) / (device_hours * 3600 * peak)``; the cases are in
#: src/flopwise/validation/data/cases_train.csv. (mfu_frac, source_url, note)
DEFAULT_MFU = {
    "hopper": (
        0.35,
        "https://arxiv.org/abs/2407.21783",
        "Llama 3.1 405B: 30.84M H100-hours for 15.6T tokens = 36% whole-run MFU (38-43% in steady state, "
        "Table 4); the 70B (27-30%) and 8B (15-17%) runs implied less",
    ),
    "blackwell": (
        0.35,
        "https://arxiv.org/abs/2407.21783",
        "derived: no published whole-run figure; Hopper's value",
    ),
    "ampere": (
        0.40,
        "https://arxiv.org/abs/2302.13971",
        "median implied whole-run MFU of 18 published A100 runs (LLaMA 1/2 Table 15 / model cards, Pythia, MPT, "
        "BLOOM 32%, Falcon, StarCoder; range 0.26-0.52); OPT-175B 147 TFLOP/s (arXiv:2205.01068) is steady state",
    ),
    "volta": (
        0.25,
        "https://arxiv.org/abs/1909.08053",
        "Megatron-LM 2019: 39 TFLOP/s on one V100 (30% of 125), 76% weak-scaling efficiency at 512 GPUs",
    ),
    "tpu": (0.46, "https://arxiv.org/abs/2204.02311", "PaLM 540B on TPU v4: 46.2% MFU (Table 3)"),
    "other-accelerator": (0.30, "", "derived: no comparable published MFU; set below NVIDIA/TPU runs"),
    "consumer-gpu": (0.30, "", "derived: single-node fine-tuning on workstation/consumer GPUs"),
    "soc": (0.25, "", "derived: Apple/edge SoCs (MLX/PyTorch MPS training)"),
    "cpu": (0.15, "", "derived: CPU training"),
}

#: fp8 training runs only the GEMMs in fp8 (attention, norms and communication stay at 16-bit speed), so its MFU
#: against the fp8 peak is lower. Derived from DeepSeek-V3 (arXiv:2412.19437 Table 1: 2.664M H800-hours for 14.8T
#: tokens, 37B active = 19.5% of the fp8 peak, 0.55 of the Hopper default).
FP8_MFU_SCALE = 0.55

#: Small models under-fill the matmul units: below 1e9 parameters the default MFU is multiplied by this
#: (derived; Narayanan et al. 2021 arXiv:2104.04473 Table 1 shows 44% at 1.7B rising to 52% at 1T on A100).
SMALL_MODEL_MFU_SCALE = 0.8
SMALL_MODEL_PARAMS = 1e9

#: Achieved fraction of peak memory bandwidth in batch-1 decode with 16-bit or native weights.
#: Derived from llama.cpp F16 decode of Llama 2 7B (13.5 GB of weights): RTX 4090 60.8 tok/s = 82% of
#: 1008 GB/s, RTX 3090 51.9 tok/s = 75% of 936 GB/s (github.com/XiongjieDai/GPU-Benchmarks-on-LLM-Inference);
#: Apple M2 Ultra 41 tok/s = 69% of 800 GB/s (github.com/ggml-org/llama.cpp/discussions/4167); CPUs 0.5-0.7.
BANDWIDTH_EFFICIENCY_FRAC = {"gpu": 0.78, "tpu": 0.75, "npu": 0.7, "soc": 0.68, "cpu": 0.6}

#: Weight-only formats (block dequantization in the kernel) reach a lower share of bandwidth: Q4_0 vs F16 in the
#: same llama.cpp tables: RTX 4090 0.69, RTX 3090 0.65, M2 Ultra 0.65 of the F16 share (derived, mean 0.68).
WEIGHT_ONLY_BANDWIDTH_FRAC = 0.68

#: Achieved fraction of dense peak in compute-bound phases (prefill, large-batch decode). Derived: llama.cpp F16
#: pp512 of Llama 2 7B on RTX 4090 reaches 99 TFLOP/s (~60% of 165); vLLM prefill on H100 ~50-60% MFU.
COMPUTE_EFFICIENCY_FRAC = {"gpu": 0.6, "tpu": 0.6, "npu": 0.5, "soc": 0.5, "cpu": 0.4}

#: Prefill with weight-only quantized weights vs F16 (llama.cpp pp512 Q4_0/F16: 4090 0.75, 3090 0.85; derived).
WEIGHT_ONLY_COMPUTE_FRAC = 0.8

_HOPPER = ("h100", "h200", "h800", "h20", "gh200")
_BLACKWELL = ("b200", "gb200", "b300", "gb300", "rtx-pro-6000-blackwell")
_AMPERE_DC = ("a100", "a800")


def device_generation(device: Device) -> str:
    """The DEFAULT_MFU row a device belongs to, from its catalog id, kind and segment."""
    dev_id = device.id.lower()
    if dev_id.startswith(_BLACKWELL):
        return "blackwell"
    if dev_id.startswith(_HOPPER):
        return "hopper"
    if dev_id.startswith(_AMPERE_DC):
        return "ampere"
    if dev_id.startswith("v100"):
        return "volta"
    if device.kind == "tpu":
        return "tpu"
    if device.kind == "cpu":
        return "cpu"
    if device.kind == "soc":
        return "soc"
    if device.segment in ("consumer", "workstation", "edge"):
        return "consumer-gpu"
    return "other-accelerator"


def default_mfu_frac(device: Device, n_params: float, precision: str = "bf16") -> tuple[float, str]:
    """(default MFU, provenance note) for training a model of *n_params* on *device* in *precision*
    (see DEFAULT_MFU, FP8_MFU_SCALE, SMALL_MODEL_MFU_SCALE)."""
    generation = device_generation(device)
    mfu, url, note = DEFAULT_MFU[generation]
    text = f"{generation}: {note}" + (f" ({url})" if url else "")
    if precision == "fp8":
        mfu *= FP8_MFU_SCALE
        text += f"; x{FP8_MFU_SCALE} against the fp8 peak (DeepSeek-V3)"
    if n_params < SMALL_MODEL_PARAMS:
        mfu *= SMALL_MODEL_MFU_SCALE
        text += f"; x{SMALL_MODEL_MFU_SCALE} for models under 1B parameters"
    return mfu, text


def train_time_s(train_flops, device_count, peak_flop_per_s, mfu_frac):
    """Training wall-clock seconds: ``FLOPs / (n_devices * peak * MFU)`` (Chowdhery et al. 2022 PaLM,
    arXiv:2204.02311, Appendix B defines MFU as observed model FLOP/s over peak)."""
    return train_flops / (device_count * peak_flop_per_s * mfu_frac)


def collective_latency_s(device: Device) -> float:
    """Fixed latency of one small collective: 10 us over NVLink/NVSwitch-class links (>= 100 GB/s), 25 us over
    PCIe (derived from nccl-tests small-message all_reduce timings; order of magnitude only)."""
    return 10e-6 if device.interconnect_gb_per_s >= 100 else 25e-6


def allreduce_time_s(message_bytes, n_ranks, link_bytes_per_s, latency_s):
    """Ring all-reduce time: ``2 (n-1)/n * bytes / bandwidth + latency`` (Patarasuk & Yuan 2009, bandwidth-optimal
    all-reduce; NCCL docs 'algbw vs busbw'); zero for one rank."""
    n = np.asarray(n_ranks, dtype=float) if isinstance(n_ranks, np.ndarray) else float(n_ranks)
    active = n > 1
    t = 2.0 * (n - 1.0) / n * message_bytes / link_bytes_per_s + latency_s
    return np.where(active, t, 0.0) if isinstance(active, np.ndarray) else (t if active else 0.0 * t)


def roofline_time_s(flops, bytes_moved, peak_flop_per_s, bandwidth_bytes_per_s):
    """Roofline step time: ``max(flops / compute, bytes / bandwidth)`` (Williams et al. 2009, CACM 52(4))."""
    return np.maximum(flops / peak_flop_per_s, bytes_moved / bandwidth_bytes_per_s)


def moe_touched_frac(n_experts: int, n_active: int, tokens):
    """Share of the *not*-per-token-active routed experts that a step over *tokens* tokens reads, assuming uniform
    routing: distinct experts ``E (1 - (1 - k/E)^T)`` minus the ``k`` one token uses, over ``E - k``."""
    if n_experts <= n_active or n_experts == 0:
        return 0.0 * tokens
    distinct = n_experts * (1.0 - (1.0 - n_active / n_experts) ** tokens)
    return np.clip((distinct - n_active) / (n_experts - n_active), 0.0, 1.0)
