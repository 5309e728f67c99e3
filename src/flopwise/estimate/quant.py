"""Numeric precisions and quantization formats: storage bits per weight and the dtype the hardware computes in.

Sources:

* GGUF block and mixture sizes: llama.cpp ``tools/quantize/README.md`` (bits per weight of whole Llama 2 7B files)
  https://github.com/ggml-org/llama.cpp/blob/master/tools/quantize/README.md and the k-quants PR
  https://github.com/ggml-org/llama.cpp/pull/1684 (Q6_K = 6.5625 bpw); Q8_0/Q5_0/Q4_0 follow from their block
  layout (32 weights + one fp16 scale: 34, 22 and 18 bytes).
* GGUF tensor types llama.cpp users name (Q4_1, Q5_1, IQ1_S ... IQ4_XS): ggml's block sizes, bytes per block /
  weights per block x 8, from the ``block_*`` structs and their ``static_assert`` sizes in
  ``ggml/src/ggml-common.h`` (https://github.com/ggml-org/llama.cpp/blob/master/ggml/src/ggml-common.h), e.g.
  ``block_iq4_xs`` = 136 B per 256 weights = 4.25 bpw. File mixtures without a per-tensor size (IQ3_M, IQ3_XS,
  IQ2_M) take the bpw ``llama-quantize`` prints for them (``QUANT_OPTIONS`` in ``tools/quantize/quantize.cpp``).
* AWQ / GPTQ: 4-bit weights in groups of 128 with one fp16 scale and one 4-bit packed zero point per group
  (AutoAWQ / AutoGPTQ ``qweight``/``qzeros``/``scales`` tensors): 4 + (16 + 4) / 128 = 4.15625 bpw.
  Lin et al. 2023 arXiv:2306.00978 (AWQ), Frantar et al. 2022 arXiv:2210.17323 (GPTQ).
* NVFP4: 4-bit e2m1 values in 16-element blocks with an fp8 (e4m3) scale = 4 + 8/16 = 4.5 bpw (NVIDIA Blackwell).
  https://developer.nvidia.com/blog/introducing-nvfp4-for-efficient-and-accurate-low-precision-inference/
* MXFP4: OCP Microscaling spec v1.0, 32-element blocks with an e8m0 scale = 4 + 8/32 = 4.25 bpw.
  https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf
* NF4 with double quantization (QLoRA): 4 + 8/64 + 32/(64*256) = 4.127 bpw. Dettmers et al. 2023 arXiv:2305.14314.

Fallback policy (what happens when the device lacks the native format), chosen to match what engines do:

* ``fp8`` serving on a GPU without fp8 tensor cores falls back to weight-only fp8 with fp16 compute (vLLM runs fp8
  checkpoints on Ampere through its FP8 Marlin W8A16 kernel) and warns; on a non-GPU it raises UnsupportedError.
* ``mxfp4`` serving without fp4 tensor cores falls back to weight-only dequantization to bf16/fp16 (vLLM and
  llama.cpp run gpt-oss MXFP4 weights on Hopper/Ampere/CPUs this way) and warns.
* ``nvfp4`` needs native fp4 (Blackwell); otherwise UnsupportedError.
* Training in ``fp8`` needs native fp8 (Transformer Engine on Hopper/Blackwell/MI300); otherwise UnsupportedError.
* Weight-only formats (int4 AWQ/GPTQ, GGUF) dequantize to fp16 for the matmuls (fp32 on devices with no fp16 rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from flopwise.catalog.types import Device
from flopwise.errors import InputError, UnsupportedError

__all__ = [
    "KV_DTYPE_BYTES",
    "NF4_DQ_BITS_PER_WEIGHT",
    "QUANT_FORMATS",
    "TRAIN_PRECISIONS",
    "QuantFormat",
    "get_quant",
    "group_quant_bits_per_weight",
    "kv_bytes_per_element",
    "resolve_compute_peak",
    "resolve_serving_quant",
]

_LLAMA_CPP_QUANTIZE = "https://github.com/ggml-org/llama.cpp/blob/master/tools/quantize/README.md"
_LLAMA_CPP_KQUANTS = "https://github.com/ggml-org/llama.cpp/pull/1684"
_GGML_COMMON = "https://github.com/ggml-org/llama.cpp/blob/master/ggml/src/ggml-common.h"
_LLAMA_QUANTIZE_CPP = "https://github.com/ggml-org/llama.cpp/blob/master/tools/quantize/quantize.cpp"


def _gguf(name: str, block_bytes: int, block_weights: int, note: str) -> QuantFormat:
    """A GGUF tensor type: ``block_bytes * 8 / block_weights`` bits per weight (ggml-common.h block structs)."""
    bpw = block_bytes * 8 / block_weights
    return QuantFormat(
        name, bpw, "fp16", None, "dequant", True, _GGML_COMMON, f"{note}: {block_bytes} B per {block_weights}"
    )


def _gguf_mix(name: str, bpw: float, url: str, note: str) -> QuantFormat:
    """A GGUF file mixture (tensor types chosen per tensor): the whole-file bits per weight llama.cpp reports."""
    return QuantFormat(name, bpw, "fp16", None, "dequant", True, url, note)


def group_quant_bits_per_weight(
    bits: float, group_size: int, scale_bits: float, zero_bits: float = 0.0
) -> float:
    """Storage bits per weight of a group-wise quantization: ``bits + (scale_bits + zero_bits) / group_size``.

    E.g. AWQ/GPTQ 4-bit, group 128, fp16 scale and 4-bit zero: 4 + 20/128 = 4.15625 (unit: bits per weight).
    """
    return bits + (scale_bits + zero_bits) / group_size


#: NF4 with double quantization: 4 + 8/64 + 32/(64*256) bits (Dettmers et al. 2023, arXiv:2305.14314, Sec. 3).
NF4_DQ_BITS_PER_WEIGHT = 4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0)


@dataclass(frozen=True)
class QuantFormat:
    """A weight storage format.

    ``bits_per_weight`` is the storage cost including block scales. ``compute_dtype`` is the dtype whose peak
    (``Device.peak_<dtype>_tflop_per_s``) the matmuls run at when the hardware supports the format natively.
    ``native_dtype`` names the hardware dtype the format needs to run natively (None = any device);
    ``fallback`` is ``"dequant"`` (weight-only: dequantize to fp16 with a warning) or ``"error"``.
    """

    name: str
    bits_per_weight: float
    compute_dtype: str
    native_dtype: str | None
    fallback: str
    is_weight_only: bool
    source_url: str
    note: str


def _q(name, bpw, compute, native, fallback, weight_only, url, note) -> QuantFormat:
    return QuantFormat(name, bpw, compute, native, fallback, weight_only, url, note)


_AWQ_BPW = group_quant_bits_per_weight(4, 128, 16, 4)

QUANT_FORMATS: dict[str, QuantFormat] = {
    q.name: q
    for q in (
        _q(
            "fp32",
            32.0,
            "fp32",
            None,
            "error",
            False,
            "https://en.wikipedia.org/wiki/IEEE_754",
            "IEEE binary32",
        ),
        _q(
            "bf16",
            16.0,
            "bf16",
            None,
            "dequant",
            False,
            "https://cloud.google.com/tpu/docs/bfloat16",
            "bfloat16",
        ),
        _q(
            "fp16", 16.0, "fp16", None, "dequant", False, "https://en.wikipedia.org/wiki/IEEE_754", "binary16"
        ),
        _q(
            "fp8",
            8.0,
            "fp8",
            "fp8",
            "dequant",
            False,
            "https://arxiv.org/abs/2209.05433",
            "W8A8 e4m3 with per-tensor scales (Micikevicius et al. 2022)",
        ),
        _q(
            "int8",
            8.0,
            "int8",
            "int8",
            "dequant",
            False,
            "https://arxiv.org/abs/2211.10438",
            "W8A8 int8 (SmoothQuant, Xiao et al. 2022); weight-only int8 without int8 units",
        ),
        _q(
            "int4-awq",
            _AWQ_BPW,
            "fp16",
            None,
            "dequant",
            True,
            "https://arxiv.org/abs/2306.00978",
            "4-bit, group 128, fp16 scale + 4-bit zero per group: 4 + 20/128 bpw",
        ),
        _q(
            "int4-gptq",
            _AWQ_BPW,
            "fp16",
            None,
            "dequant",
            True,
            "https://arxiv.org/abs/2210.17323",
            "4-bit, group 128, fp16 scale + 4-bit zero per group: 4 + 20/128 bpw",
        ),
        _q(
            "q8_0",
            8.5,
            "fp16",
            None,
            "dequant",
            True,
            _LLAMA_CPP_QUANTIZE,
            "32 x int8 + fp16 scale = 34 B/32",
        ),
        _q("q6_k", 6.5625, "fp16", None, "dequant", True, _LLAMA_CPP_KQUANTS, "k-quant super-blocks of 256"),
        _q("q5_k_m", 5.68, "fp16", None, "dequant", True, _LLAMA_CPP_QUANTIZE, "mixture; Llama 2 7B file"),
        _q(
            "q5_0",
            5.5,
            "fp16",
            None,
            "dequant",
            True,
            _LLAMA_CPP_QUANTIZE,
            "32 x 5 bit + fp16 scale = 22 B/32",
        ),
        _q("q4_k_m", 4.84, "fp16", None, "dequant", True, _LLAMA_CPP_QUANTIZE, "mixture; Llama 2 7B file"),
        _q(
            "q4_0",
            4.5,
            "fp16",
            None,
            "dequant",
            True,
            _LLAMA_CPP_QUANTIZE,
            "32 x 4 bit + fp16 scale = 18 B/32",
        ),
        _q("q3_k_m", 3.91, "fp16", None, "dequant", True, _LLAMA_CPP_QUANTIZE, "mixture; Llama 2 7B file"),
        _q(
            "q2_k",
            3.35,
            "fp16",
            None,
            "dequant",
            True,
            _LLAMA_CPP_QUANTIZE,
            "mixture (Q2_K tensors 2.5625 bpw plus higher-precision attention/output); Llama 2 7B file",
        ),
        # GGUF names llama.cpp users type: tensor types (ggml block sizes) and file mixtures
        _gguf("q5_1", 24, 32, "32 x 5 bit + fp16 scale and min"),
        _gguf("q4_1", 20, 32, "32 x 4 bit + fp16 scale and min"),
        _gguf("iq4_nl", 18, 32, "non-linear 4 bit, fp16 scale per 32"),
        _gguf("iq4_xs", 136, 256, "non-linear 4 bit, 6-bit sub-block scales"),
        _gguf("iq3_s", 110, 256, "3.4375 bpw lattice codebook"),
        _gguf("iq3_xxs", 98, 256, "3.0625 bpw lattice codebook"),
        _gguf("iq2_s", 82, 256, "2.5625 bpw lattice codebook"),
        _gguf("iq2_xs", 74, 256, "2.3125 bpw lattice codebook"),
        _gguf("iq2_xxs", 66, 256, "2.0625 bpw lattice codebook"),
        _gguf("iq1_m", 56, 256, "1.75 bpw"),
        _gguf("iq1_s", 50, 256, "1.5625 bpw"),
        _gguf_mix("q5_k_s", 5.52, _LLAMA_CPP_QUANTIZE, "mixture; Llama 2 7B file"),
        _gguf_mix("q4_k_s", 4.58, _LLAMA_CPP_QUANTIZE, "mixture; Llama 2 7B file"),
        _gguf_mix("q3_k_l", 4.27, _LLAMA_CPP_QUANTIZE, "mixture; Llama 2 7B file"),
        _gguf_mix("q3_k_s", 3.50, _LLAMA_CPP_QUANTIZE, "mixture; Llama 2 7B file"),
        _gguf_mix("iq3_m", 3.66, _LLAMA_QUANTIZE_CPP, "mixture; llama-quantize: 3.66 bpw quantization mix"),
        _gguf_mix("iq3_xs", 3.3, _LLAMA_QUANTIZE_CPP, "mixture; llama-quantize: 3.3 bpw"),
        _gguf_mix("iq2_m", 2.7, _LLAMA_QUANTIZE_CPP, "mixture; llama-quantize: 2.7 bpw"),
        _q(
            "nvfp4",
            4.5,
            "fp4",
            "fp4",
            "error",
            False,
            "https://developer.nvidia.com/blog/introducing-nvfp4-for-efficient-and-accurate-low-precision-inference/",
            "e2m1 in 16-element blocks with an e4m3 scale: 4 + 8/16 bpw",
        ),
        _q(
            "mxfp4",
            4.25,
            "fp4",
            "fp4",
            "dequant",
            False,
            "https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf",
            "e2m1 in 32-element blocks with an e8m0 scale: 4 + 8/32 bpw",
        ),
    )
}

#: training precisions: bytes per weight held for compute (fp8 training keeps bf16 weights, casts per GEMM)
TRAIN_PRECISIONS: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 2.0}

#: KV-cache element sizes in bytes; q8_0/q4_0 are llama.cpp's cache types (block scales included)
KV_DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "q8_0": 8.5 / 8,
    "q4_0": 4.5 / 8,
}

_ALIASES = {
    "awq": "int4-awq",
    "gptq": "int4-gptq",
    "int4": "int4-awq",
    "float16": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "fp8_e4m3": "fp8",
    "e4m3": "fp8",
    "q4_k": "q4_k_m",
    "q5_k": "q5_k_m",
    "q3_k": "q3_k_m",  # llama-quantize: "Q3_K: alias for Q3_K_M"
    # GGUF file types as llama.cpp spells them (llama-quantize F16 / F32 / BF16)
    "f16": "fp16",
    "f32": "fp32",
}


def get_quant(name: str) -> QuantFormat:
    """The QuantFormat called *name* (case-insensitive; ``awq``/``gptq``/``int4`` are aliases); InputError if unknown."""
    key = str(name).strip().lower().replace("-", "_") if isinstance(name, str) else ""
    key = key.replace("int4_awq", "int4-awq").replace("int4_gptq", "int4-gptq")
    key = _ALIASES.get(key, key)
    if key not in QUANT_FORMATS:
        raise InputError("quant", name, "use one of " + ", ".join(QUANT_FORMATS))
    return QUANT_FORMATS[key]


def kv_bytes_per_element(kv_dtype: str) -> float:
    """Bytes per cached K or V element for *kv_dtype* (one of KV_DTYPE_BYTES); InputError if unknown."""
    key = str(kv_dtype).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in KV_DTYPE_BYTES:
        raise InputError("kv_dtype", kv_dtype, "use one of " + ", ".join(KV_DTYPE_BYTES))
    return KV_DTYPE_BYTES[key]


_FALLBACK_CHAIN = {
    "fp32": ("fp32",),
    "tf32": ("tf32", "fp32"),
    "bf16": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16", "bf16", "fp32"),
    "fp8": ("fp8",),
    "int8": ("int8",),
    "fp4": ("fp4",),
    "int4": ("int4",),
}


def resolve_compute_peak(device: Device, dtype: str) -> tuple[str, float]:
    """The dtype actually used and its dense peak in TFLOP/s for matmuls requested in *dtype* on *device*.

    Walks the fallback chain (bf16 -> fp16 -> fp32, fp16 -> bf16 -> fp32); raises UnsupportedError when none of
    them has a peak in the catalog row.
    """
    for candidate in _FALLBACK_CHAIN[dtype]:
        peak = device.peak_tflop_per_s(candidate)
        if peak:
            return candidate, float(peak)
    raise UnsupportedError(
        f"device {device.id!r} has no {dtype} compute rate in the catalog; choose another precision or device"
    )


def resolve_serving_quant(quant: QuantFormat, device: Device) -> tuple[str, float, tuple[str, ...]]:
    """(compute dtype, its dense peak TFLOP/s, warnings) for serving *quant* on *device*, per the module's policy."""
    warnings: list[str] = []
    if quant.native_dtype is not None and not device.peak_tflop_per_s(quant.native_dtype):
        if quant.fallback == "error" or (quant.name == "fp8" and device.kind != "gpu"):
            raise UnsupportedError(
                f"quant {quant.name!r} needs native {quant.native_dtype} support, which device {device.id!r} "
                f"lacks; use a weight-only format (e.g. 'int4-awq', 'q4_k_m') or a device with "
                f"{quant.native_dtype} tensor cores"
            )
        dtype, peak = resolve_compute_peak(device, "fp16")
        warnings.append(
            f"{device.id} has no native {quant.native_dtype}: {quant.name} runs weight-only "
            f"(weights dequantized to {dtype} for the matmuls), as vLLM/llama.cpp do"
        )
        return dtype, peak, tuple(warnings)
    dtype, peak = resolve_compute_peak(device, quant.compute_dtype)
    if dtype != quant.compute_dtype:
        warnings.append(f"{device.id} has no {quant.compute_dtype} rate; matmuls costed at {dtype}")
    return dtype, peak, tuple(warnings)
