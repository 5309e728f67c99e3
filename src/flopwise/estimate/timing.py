"""Time terms: training wall-clock from FLOPs and MFU, collectives over the interconnect, and the serving roofline.

Every function accepts plain floats or numpy arrays (broadcasting) and returns the same kind.
"""

from __future__ import annotations

import numpy as np

from flopwise.catalog.types import Device

__all__ = [
    "BANDWIDTH_EFFICIENCY_FRAC",
    "COMPUTE_EFFICIENCY_FRAC",
    "DECODE_LAYER_OVERHEAD_S",
    "DEFAULT_MFU",
    "FP16_ACCUMULATE_QUANTS",
    "FP8_MFU_SCALE",
    "FP8_STEADY_MFU_SCALE",
    "LOW_PRECISION_GEMM_TIME_FRAC",
    "LOW_PRECISION_SPEEDUP",
    "low_precision_compute_scale",
    "STEADY_STATE_MFU",
    "steady_state_mfu_frac",
    "WEIGHT_ONLY_BANDWIDTH_FRAC",
    "WEIGHT_ONLY_COMPUTE_FRAC",
    "allreduce_time_s",
    "collective_latency_s",
    "decode_overhead_s",
    "default_mfu_frac",
    "device_generation",
    "fp16_accumulate_peak_tflop_per_s",
    "MFU_SIZE_EXPONENT",
    "MFU_SIZE_GENERATIONS",
    "MFU_SIZE_PARAMS_RANGE",
    "MFU_SIZE_REF_PARAMS",
    "mfu_size_factor",
    "moe_touched_frac",
    "roofline_time_s",
    "ROOFLINE_OVERLAP_P",
    "train_time_s",
]

#: Default model-FLOPs utilization per device generation, calibrated to whole-run device-hours (so restarts,
#: evaluation and checkpointing are inside it), dense peak of the training precision. The implied MFU of a
#: published run is ``6*N*D (+attention) / (device_hours * 3600 * peak)``; the cases are in
#: src/flopwise/validation/data/cases_train.csv. For the generations in MFU_SIZE_GENERATIONS the value is the MFU
#: of a model of MFU_SIZE_REF_PARAMS (10B) parameters and is multiplied by mfu_size_factor(N); the other rows are
#: used as they are for every size. (mfu_frac, source_url, note)
DEFAULT_MFU = {
    "hopper": (
        0.23,
        "https://arxiv.org/abs/2407.21783",
        "fitted at 10B parameters with the size term (flopwise.validation.calibrate) to 5 published H100 runs: "
        "Llama 3/3.1 8B (implied whole-run MFU 0.15-0.17), 70B (0.27-0.30), 405B (0.36; 38-43% in steady "
        "state, Table 4); the model cards' hours include more than the main pass for the smaller models",
    ),
    "blackwell": (
        0.23,
        "https://arxiv.org/abs/2407.21783",
        "derived: no published whole-run figure; Hopper's value",
    ),
    "ampere": (
        0.39,
        "https://arxiv.org/abs/2302.13971",
        "fitted at 10B parameters with the size term (flopwise.validation.calibrate) to 18 published A100 runs "
        "(LLaMA 1/2 Table 15 / model cards, Pythia, MPT, BLOOM, Falcon, StarCoder, TinyLlama; implied whole-run "
        "MFU 0.26-0.52); OPT-175B 147 TFLOP/s (arXiv:2205.01068) is steady state",
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

#: Steady-state model-FLOPs utilization (what training benchmarks publish: the step throughput of a running job,
#: no restarts, evaluation, checkpoints or downtime) per device generation, bf16 against the dense bf16 peak.
#: FITTED by flopwise.validation.steady (median ratio, leave-one-source-out errors in
#: src/flopwise/validation/README.md) to the steady-state cases of src/flopwise/validation/data/cases_steady.csv:
#: MosaicML llm-foundry benchmark tables (H100 and A100, MPT 7B/30B), Llama 3 Table 4 (405B on 8-16k H100s,
#: 38-43% MFU) and Megatron-Bridge performance tables (Llama 3 8B/70B/405B, fp8 on H100/B200/GB200). Nearly flat in
#: model size (MosaicML H100 1B-70B: 0.40-0.46), so no size term. Blackwell has bf16 cases from no source: Hopper's
#: value. (mfu_frac, source_url, note)
STEADY_STATE_MFU = {
    "hopper": (
        0.42,
        "https://github.com/mosaicml/llm-foundry/blob/main/scripts/train/benchmarking/README.md",
        "fitted to MosaicML H100 MPT 7B/30B (MFU 0.40-0.46) and Llama 3 405B Table 4 (0.38-0.43, "
        "https://arxiv.org/abs/2407.21783)",
    ),
    "ampere": (
        0.51,
        "https://github.com/mosaicml/llm-foundry/blob/main/scripts/train/benchmarking/README.md",
        "fitted to MosaicML A100 40GB MPT 7B/30B (MFU 0.50-0.52)",
    ),
    "blackwell": (0.42, "", "derived: no bf16 steady-state case; Hopper's value"),
}
#: fp8 steady-state MFU against the fp8 peak over the bf16 one: FITTED to the Megatron-Bridge fp8 tables (Llama 3 on
#: H100 ~0.37 of 1979 TFLOP/s; B200/GB200 ~0.35-0.41 of 4500/5000) against STEADY_STATE_MFU; when that source is
#: held out the fit falls back to FP8_MFU_SCALE (DeepSeek-V3, whole run), and its cases come out ~29% low.
FP8_STEADY_MFU_SCALE = 0.89

#: Default goodput (steady-state time over whole-run time) is not a constant: it is the calibrated whole-run MFU
#: (DEFAULT_MFU, fitted to published whole-run device-hours) over the steady-state MFU, e.g. 0.55 for a 10B model on
#: H100 (model-card hours that include more than the main pass) and 0.76 on A100. A well-run large job reaches
#: more: Llama 3 405B had "higher than 90% effective training time" (arXiv:2407.21783, Sec. 3.3.4), which is what
#: GOODPUT_LLAMA3_FRAC records for a caller who passes goodput_frac explicitly.
GOODPUT_LLAMA3_FRAC = 0.90

#: Model-size term of the default training MFU: ``mfu = DEFAULT_MFU[gen] * (clip(N, *MFU_SIZE_PARAMS_RANGE) /
#: MFU_SIZE_REF_PARAMS) ** MFU_SIZE_EXPONENT``. Larger hidden sizes give larger, more efficient GEMMs and leave a
#: smaller share of the step to memory-bound kernels (norms, softmax) and communication: Megatron-LM reports
#: achieved TFLOP/s per A100 rising with model size at fixed hardware (Narayanan et al. 2021,
#: https://arxiv.org/abs/2104.04473, Table 1: 137 TFLOP/s at 1.7B to 163 at 1T), and the Llama 3 runs imply 0.15-0.17
#: (8B), 0.27-0.30 (70B) and 0.36 (405B; 38-43% in steady state, https://arxiv.org/abs/2407.21783 Table 4). One
#: exponent shared by both generations, fitted with the bases (flopwise.validation.calibrate; a separate
#: exponent per generation did not lower the leave-one-out error). N is clipped to the sizes of the fitted runs
#: (Pythia-410M to Llama 3.1 405B) so the term is not extrapolated.
MFU_SIZE_EXPONENT = 0.078
MFU_SIZE_REF_PARAMS = 1e10
MFU_SIZE_PARAMS_RANGE = (4e8, 4.1e11)
#: The DEFAULT_MFU rows fitted with the size term (Blackwell takes Hopper's value).
MFU_SIZE_GENERATIONS = ("ampere", "hopper", "blackwell")

#: fp8 training runs only the GEMMs in fp8 (attention, norms and communication stay at 16-bit speed), so its MFU
#: against the fp8 peak is lower. Derived from DeepSeek-V3 alone (arXiv:2412.19437 Table 1: 2.664M H800-hours for
#: 14.8T tokens, 37B active = 19.5% of the fp8 peak): 0.195 / (0.23 x mfu_size_factor(N)) with N the 671B total
#: parameters the estimator passes (clipped to 410B, factor 1.34) = 0.63; in-sample by construction.
FP8_MFU_SCALE = 0.63

#: Share of a 16-bit step's compute time spent in the GEMMs that a lower-precision format speeds up, derived from
#: FP8_MFU_SCALE by Amdahl's law: fp8 runs GEMMs at 2x the bf16 rate and everything else (attention softmax,
#: norms, activations, activation quantization, communication) at the 16-bit rate, so ``1 / (2 x FP8_MFU_SCALE) =
#: (1 - f) + f / 2`` gives ``f = 2 (1 - 1 / (2 x FP8_MFU_SCALE))`` = 0.41. Not fitted to any serving case.
LOW_PRECISION_GEMM_TIME_FRAC = 2.0 * (1.0 - 1.0 / (2.0 * FP8_MFU_SCALE))

#: Peak-rate multiple of each low-precision compute dtype over the 16-bit dense rate (NVIDIA Hopper and Blackwell
#: datasheets: fp8 2x, fp4 4x the bf16 dense tensor rate). int8 is left out: llama.cpp's CPU int8 path is fitted
#: at the int8 peak as it is (flopwise.validation.calibrate).
LOW_PRECISION_SPEEDUP = {"fp8": 2.0, "fp4": 4.0}


def low_precision_compute_scale(dtype: str) -> float:
    """Achieved share of a low-precision dtype's peak relative to the 16-bit share, by Amdahl's law with the GEMM
    time share LOW_PRECISION_GEMM_TIME_FRAC: ``1 / (s ((1 - f) + f / s))`` with ``s`` the dtype's peak multiple
    (LOW_PRECISION_SPEEDUP). fp8: FP8_MFU_SCALE (0.63) by construction; fp4 (NVFP4/MXFP4 on Blackwell): 0.36, i.e.
    a 4x-peak format delivers 1.45x the 16-bit throughput, since only the GEMMs get faster (Amdahl 1967, AFIPS
    30:483). 1.0 for other dtypes."""
    s = LOW_PRECISION_SPEEDUP.get(dtype)
    if s is None:
        return 1.0
    f = LOW_PRECISION_GEMM_TIME_FRAC
    return 1.0 / (s * ((1.0 - f) + f / s))


#: Small models under-fill the matmul units: below 1e9 parameters the default MFU is multiplied by this
#: (derived; Narayanan et al. 2021 arXiv:2104.04473 Table 1 shows 44% at 1.7B rising to 52% at 1T on A100).
SMALL_MODEL_MFU_SCALE = 0.8
SMALL_MODEL_PARAMS = 1e9

# Serving efficiencies. The GPU and Apple (soc) entries are FITTED to the llama.cpp batch-1 cases of
# src/flopwise/validation/data/cases_serve.csv by flopwise.validation.calibrate (least absolute log error); their
# in-sample and leave-one-out errors are in src/flopwise/validation/README.md. The other kinds have no case and
# keep derived values.

#: Achieved fraction of peak memory bandwidth on the bytes of a decode step (16-bit or native weights), once the
#: fixed per-layer overhead (DECODE_LAYER_OVERHEAD_S) is taken out. gpu, soc: fitted (see above); tpu/npu/cpu:
#: derived (STREAM-like sustained shares of 0.6-0.75).
BANDWIDTH_EFFICIENCY_FRAC = {"gpu": 0.92, "tpu": 0.75, "npu": 0.7, "soc": 0.89, "cpu": 0.6}

#: Weight-only formats (block dequantization in the kernel) reach a lower share of bandwidth than 16-bit
#: weights; fitted on the Q4_0 / Q4_K_M cases (one value for all kinds).
WEIGHT_ONLY_BANDWIDTH_FRAC = 1.0

#: Fixed time per transformer layer per decode or prefill step that does not shrink with bandwidth: kernel
#: launches and host synchronization (llama.cpp ran ~10-15 kernels per layer, each launched from the host before
#: CUDA graphs; NVIDIA, "Optimizing llama.cpp AI Inference with CUDA Graphs", 2024,
#: https://developer.nvidia.com/blog/optimizing-llama-cpp-ai-inference-with-cuda-graphs/). It bounds batch-1
#: decode of small models on fast GPUs: Llama 2 7B Q4_0 on A100/H100 ran at ~7.4 ms/token against ~2.5 ms of
#: bandwidth time. gpu, soc (Metal command buffers): fitted; other kinds: 0 (no case; not modelled).
DECODE_LAYER_OVERHEAD_S = {"gpu": 1.1e-4, "soc": 2.0e-4, "tpu": 0.0, "npu": 0.0, "cpu": 0.0}

#: Achieved fraction of the dense peak in compute-bound phases (prefill, large-batch decode). gpu, soc: fitted to
#: llama.cpp pp512 (the GPU value is against the fp16-accumulate peak where it applies, see
#: fp16_accumulate_peak_tflop_per_s); tpu/npu/cpu: derived.
COMPUTE_EFFICIENCY_FRAC = {"gpu": 0.32, "tpu": 0.6, "npu": 0.5, "soc": 0.75, "cpu": 0.4}

#: Prefill with weight-only quantized weights vs 16-bit weights (dequantization before the matmul); fitted.
WEIGHT_ONLY_COMPUTE_FRAC = 0.81

#: Quant formats whose matmuls run with fp16 accumulation: llama.cpp (GGUF weights and its F16 path) calls
#: cuBLAS with CUBLAS_COMPUTE_16F for fp16 GEMMs on tensor-core GPUs
#: (https://github.com/ggml-org/llama.cpp/blob/master/ggml/src/ggml-cuda/ggml-cuda.cu, ggml_cuda_op_mul_mat_cublas).
#: bf16 and the vLLM/AWQ/GPTQ kernels accumulate in fp32.
FP16_ACCUMULATE_QUANTS = ("fp16", "q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0", "q3_k_m", "q2_k")

#: GeForce tensor cores run fp16 with fp16 accumulation at twice the fp32-accumulate rate; workstation and
#: data-centre parts run both at the same rate (NVIDIA Ampere GA102 whitepaper, Appendix A, and Ada whitepaper,
#: Appendix A: RTX 4090 330.3 vs 165.2 dense TFLOP/s; the catalog's GeForce peaks are the fp32-accumulate rates,
#: as each row's note says).
FP16_ACCUMULATE_SPEEDUP = 2.0

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


def mfu_size_factor(n_params: float) -> float:
    """Model-size factor of the default training MFU: ``(clip(N, *MFU_SIZE_PARAMS_RANGE) / MFU_SIZE_REF_PARAMS)
    ** MFU_SIZE_EXPONENT`` (1 at 10B; rises with size as in Narayanan et al. 2021, arXiv:2104.04473, Table 1)."""
    lo, hi = MFU_SIZE_PARAMS_RANGE
    return float((min(max(float(n_params), lo), hi) / MFU_SIZE_REF_PARAMS) ** MFU_SIZE_EXPONENT)


def default_mfu_frac(device: Device, n_params: float, precision: str = "bf16") -> tuple[float, str]:
    """(default MFU, provenance note) for training a model of *n_params* parameters (per token: the active ones
    of a mixture of experts) on *device* in *precision*: ``DEFAULT_MFU[generation]``, times
    ``mfu_size_factor(n_params)`` for the MFU_SIZE_GENERATIONS, times FP8_MFU_SCALE for fp8 and
    SMALL_MODEL_MFU_SCALE under SMALL_MODEL_PARAMS."""
    generation = device_generation(device)
    mfu, url, note = DEFAULT_MFU[generation]
    text = f"{generation}: {note}" + (f" ({url})" if url else "")
    if generation in MFU_SIZE_GENERATIONS:
        size = mfu_size_factor(n_params)
        mfu *= size
        text += (
            f"; x{size:.3f} for {float(n_params):.3g} parameters "
            f"((N/{MFU_SIZE_REF_PARAMS:.0e})^{MFU_SIZE_EXPONENT}, N clipped to "
            f"{MFU_SIZE_PARAMS_RANGE[0]:.1e}-{MFU_SIZE_PARAMS_RANGE[1]:.1e})"
        )
    if precision == "fp8":
        mfu *= FP8_MFU_SCALE
        text += f"; x{FP8_MFU_SCALE} against the fp8 peak (DeepSeek-V3)"
    if n_params < SMALL_MODEL_PARAMS:
        mfu *= SMALL_MODEL_MFU_SCALE
        text += f"; x{SMALL_MODEL_MFU_SCALE} for models under 1B parameters"
    return mfu, text


def steady_state_mfu_frac(device: Device, precision: str = "bf16") -> tuple[float, str]:
    """(steady-state MFU, provenance note) of training on *device* in *precision*: ``STEADY_STATE_MFU[generation]``
    (x FP8_STEADY_MFU_SCALE for fp8); other generations (consumer GPUs, TPUs, ...) have no steady-state case and
    take their whole-run DEFAULT_MFU over GOODPUT_LLAMA3_FRAC (derived)."""
    generation = device_generation(device)
    if generation in STEADY_STATE_MFU:
        mfu, url, note = STEADY_STATE_MFU[generation]
        text = f"{generation} steady state: {note}" + (f" ({url})" if url else "")
    else:
        mfu = DEFAULT_MFU[generation][0] / GOODPUT_LLAMA3_FRAC
        text = f"{generation}: derived, whole-run default / {GOODPUT_LLAMA3_FRAC} (no steady-state case)"
    if precision == "fp8":
        mfu *= FP8_STEADY_MFU_SCALE
        text += f"; x{FP8_STEADY_MFU_SCALE} against the fp8 peak (Megatron-Bridge fp8 tables)"
    return mfu, text


def fp16_accumulate_peak_tflop_per_s(device: Device, peak_fp16_tflop_per_s: float) -> float:
    """Dense fp16 tensor peak with fp16 accumulation: ``FP16_ACCUMULATE_SPEEDUP`` x the catalog's fp32-accumulate
    figure on NVIDIA GeForce (segment ``consumer``) GPUs, the catalog figure elsewhere (NVIDIA Ampere GA102 and Ada
    whitepapers, Appendix A, list both rates)."""
    if device.vendor == "nvidia" and device.kind == "gpu" and device.segment == "consumer":
        return peak_fp16_tflop_per_s * FP16_ACCUMULATE_SPEEDUP
    return peak_fp16_tflop_per_s


def decode_overhead_s(n_layers: int, kind: str) -> float:
    """Fixed seconds per forward step that do not scale with bytes or FLOPs: ``n_layers x
    DECODE_LAYER_OVERHEAD_S[kind]`` (kernel launch and synchronization; NVIDIA CUDA Graphs blog, see the constant)."""
    return n_layers * DECODE_LAYER_OVERHEAD_S.get(kind, 0.0)


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


#: Overlap of compute and memory traffic in a GPU decode step. The roofline (Williams et al. 2009) takes the larger
#: of the compute time t_c and the memory time t_m, i.e. perfect overlap; with none the step takes t_c + t_m. A step
#: near the ridge point (batches of a few hundred sequences on datacenter GPUs: GEMMs with M of a few hundred, KV
#: reads of every sequence) gets neither, so the step time is the p-norm ``(t_c^p + t_m^p)^(1/p)`` (p = 1: no
#: overlap, p -> infinity: the roofline), which equals the roofline where one term dominates (batch-1 decode,
#: long prefills). p = 1.25 for GPUs is CHOSEN by the pooled leave-one-source-out error of the engine efficiency
#: fit (flopwise.validation.engine_fit) over the 62 published TensorRT-LLM, vLLM and SGLang cases among p in {1,
#: 1.25, 1.5, 2, 3, 4, roofline}: pooled LOSO median 0.22, 0.14, 0.19, 0.20, 0.27, 0.27, 0.30 (in-sample 0.11, 0.10,
#: 0.11, 0.15, 0.18, 0.20, 0.22). A hyperparameter chosen on these cases, reported as such. Other device kinds have
#: no batched case and keep the roofline (no entry).
ROOFLINE_OVERLAP_P = {"gpu": 1.25}


def roofline_time_s(flops, bytes_moved, peak_flop_per_s, bandwidth_bytes_per_s, overlap_p=None):
    """Roofline step time: ``max(flops / compute, bytes / bandwidth)`` (Williams et al. 2009, CACM 52(4)); with
    *overlap_p* (a number or an array; entries <= 0 mean the roofline) the p-norm of the two times, see
    ROOFLINE_OVERLAP_P."""
    tc = flops / peak_flop_per_s
    tmem = bytes_moved / bandwidth_bytes_per_s
    if overlap_p is None:
        return np.maximum(tc, tmem)
    if np.ndim(overlap_p) == 0:  # one p for every entry (estimate_serve): times in seconds cannot overflow
        p = float(overlap_p)
        return (tc**p + tmem**p) ** (1.0 / p) if p > 0 else np.maximum(tc, tmem)
    roof = np.maximum(tc, tmem)
    p = np.asarray(overlap_p, dtype=float)
    values = np.unique(p[p > 0])
    if values.size == 0:
        return roof
    if values.size == 1:  # one p (the planner's GPU rows): scalar exponents, much cheaper on large arrays
        v = float(values[0])
        norm = (tc**v + tmem**v) ** (1.0 / v)
    else:
        safe = np.where(p > 0, p, 1.0)
        norm = (tc**safe + tmem**safe) ** (1.0 / safe)
    return np.where(p > 0, norm, roof)


def moe_touched_frac(n_experts: int, n_active: int, tokens):
    """Share of the *not*-per-token-active routed experts that a step over *tokens* tokens reads, assuming uniform
    routing: distinct experts ``E (1 - (1 - k/E)^T)`` minus the ``k`` one token uses, over ``E - k``."""
    if n_experts <= n_active or n_experts == 0:
        return 0.0 * tokens
    distinct = n_experts * (1.0 - (1.0 - n_active / n_experts) ** tokens)
    return np.clip((distinct - n_active) / (n_experts - n_active), 0.0, 1.0)

