"""Memory terms (bytes) of training and serving, one small function per term, and the MemoryEstimate record.

Every function accepts plain floats or numpy arrays (broadcasting) and returns the same kind.
Sources are cited per function; docs/methodology.md has the formulas and symbol tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from flopwise.models.params import expert_params
from flopwise.models.types import ModelArch
from flopwise.units import BYTES_PER_GIB

__all__ = [
    "ENGINE_MEMORY_UTILIZATION_FRAC",
    "PREFILL_CHUNK_TOKENS",
    "RUNTIME_CONTEXT_BYTES",
    "TRAIN_FRAGMENTATION_FRAC",
    "MemoryEstimate",
    "activation_bytes_per_layer_train",
    "gradient_bytes",
    "kv_cache_bytes",
    "kv_cache_bytes_per_token",
    "lora_param_count",
    "optimizer_bytes",
    "optimizer_bytes_per_param",
    "routed_expert_params",
    "serving_activation_bytes",
    "serving_overhead_bytes",
    "training_activation_bytes",
    "training_overhead_bytes",
    "weight_bytes",
    "zero_divisors",
]

#: CUDA/HIP context, cuBLAS/NCCL workspaces and allocator pools held by the runtime on each accelerator.
#: Derived: a CUDA context with cuBLAS handles takes about 0.3-0.8 GiB on recent GPUs (PyTorch
#: ``torch.cuda.mem_get_info`` before/after the first matmul); 1 GiB is a round, conservative figure.
RUNTIME_CONTEXT_BYTES = {
    "gpu": 1.0 * BYTES_PER_GIB,
    "tpu": 1.0 * BYTES_PER_GIB,
    "npu": 1.0 * BYTES_PER_GIB,
    "cpu": 0.5 * BYTES_PER_GIB,
    "soc": 0.5 * BYTES_PER_GIB,
}

#: Share of device memory a serving engine lets itself use. GPU: vLLM's default ``gpu_memory_utilization=0.9``
#: (https://docs.vllm.ai/en/latest/configuration/engine_args.html). Apple SoC: Metal's
#: ``recommendedMaxWorkingSetSize`` is about 75% of unified memory (llama.cpp prints it at start-up).
#: CPU: 0.9 leaves room for the OS (derived).
ENGINE_MEMORY_UTILIZATION_FRAC = {"gpu": 0.9, "tpu": 0.9, "npu": 0.9, "cpu": 0.9, "soc": 0.75}

#: Training allocator fragmentation as a share of the modelled tensors (derived: PyTorch caching allocator
#: ``reserved - allocated`` is typically 5-10% in large-model training; 5% is used).
TRAIN_FRAGMENTATION_FRAC = 0.05

#: Korthikanti et al. 2022 (arXiv:2205.05198) Table 2: activation bytes per layer = s*b*h*(34 + 5*a*s/h) / t with
#: tensor + sequence parallelism; selective recompute keeps 34*s*b*h/t; full recompute keeps 2*s*b*h.
_KORTHIKANTI_SBH = 34.0
_KORTHIKANTI_ATTN = 5.0
_FULL_RECOMPUTE_SBH = 2.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory per device in bytes, by part. ``total_bytes`` is the sum of the six parts.

    Each field is a float for a scalar estimate or a numpy array for a vectorized one; ``fits`` is
    ``total_bytes <= capacity_bytes``; ``headroom_bytes = capacity_bytes - total_bytes`` (negative = does not fit).
    """

    weights_bytes: Any
    kv_cache_bytes: Any
    activations_bytes: Any
    gradients_bytes: Any
    optimizer_bytes: Any
    overhead_bytes: Any
    total_bytes: Any
    capacity_bytes: Any
    fits: Any
    headroom_bytes: Any
    assumptions: dict = field(default_factory=dict)

    @classmethod
    def from_parts(
        cls,
        *,
        weights_bytes,
        kv_cache_bytes,
        activations_bytes,
        gradients_bytes,
        optimizer_bytes,
        overhead_bytes,
        capacity_bytes,
        assumptions: dict,
    ) -> MemoryEstimate:
        """Build from the parts; total, fits and headroom follow."""
        total = (
            weights_bytes
            + kv_cache_bytes
            + activations_bytes
            + gradients_bytes
            + optimizer_bytes
            + overhead_bytes
        )
        return cls(
            weights_bytes,
            kv_cache_bytes,
            activations_bytes,
            gradients_bytes,
            optimizer_bytes,
            overhead_bytes,
            total,
            capacity_bytes,
            total <= capacity_bytes,
            capacity_bytes - total,
            assumptions,
        )

    def to_dict(self) -> dict:
        return asdict(self)


# --- weights -----------------------------------------------------------------------------------------------


def weight_bytes(n_params, bits_per_weight):
    """Weight storage in bytes: ``n_params * bits_per_weight / 8``.

    E.g. Llama 2 7B (6.74e9 parameters) in fp16: 13.5e9 bytes. Bits per weight per format: see quant.py.
    """
    return n_params * bits_per_weight / 8.0


# --- KV cache ----------------------------------------------------------------------------------------------


def _kv_elements_per_token_per_layer(arch: ModelArch, is_global: bool = False) -> float:
    """Cached elements per token in one attention layer.

    GQA/MQA/MHA: ``2 * n_kv_heads * head_dim`` (K and V; Ainslie et al. 2023, arXiv:2305.13245); global layers of
    models with a separate global layout (Gemma 4: ``global_head_dim``, ``n_global_kv_heads``, ``global_k_eq_v``
    storing one tensor for K and V) use theirs. MLA: ``kv_lora_rank + qk_rope_head_dim`` (compressed latent plus
    the decoupled RoPE key; DeepSeek-V2, arXiv:2405.04434, Sec. 2.1 and Table 1).
    """
    if arch.attention == "mla":
        return float(arch.mla_kv_lora_rank + arch.mla_qk_rope_head_dim)
    if is_global:
        tensors = 1.0 if arch.global_k_eq_v else 2.0
        return tensors * (arch.n_global_kv_heads or arch.n_kv_heads) * (arch.global_head_dim or arch.head_dim)
    return 2.0 * arch.n_kv_heads * arch.head_dim


def _attention_layer_split(arch: ModelArch) -> tuple[int, int]:
    """(sliding-window layers, global layers) among the layers that have attention (hybrids have fewer)."""
    n_attn = arch.attention_layer_count
    n_sliding = min(arch.n_sliding_layers, n_attn) if arch.sliding_window > 0 else 0
    return n_sliding, n_attn - n_sliding


def kv_cache_bytes_per_token(arch: ModelArch, bytes_per_element: float) -> float:
    """KV-cache bytes per token summed over all attention layers, ignoring sliding windows (unit: bytes/token).

    Llama 3.1 8B in bf16: 2 * 32 layers * 8 kv heads * 128 * 2 B = 131072 B.
    """
    n_sliding, n_global = _attention_layer_split(arch)
    elements = n_sliding * _kv_elements_per_token_per_layer(
        arch
    ) + n_global * _kv_elements_per_token_per_layer(arch, is_global=n_sliding > 0)
    return elements * bytes_per_element


def kv_cache_bytes(arch: ModelArch, context_tokens, batch, bytes_per_element: float):
    """KV-cache bytes for *batch* sequences of *context_tokens* each.

    Global layers hold every token; the ``n_sliding_layers`` sliding-window layers hold at most
    ``sliding_window`` tokens (Mistral 7B, Jiang et al. 2023, arXiv:2310.06825, rolling buffer cache); layers
    without attention (Mamba layers of hybrids) hold none.
    """
    n_sliding, n_global = _attention_layer_split(arch)
    local = (
        n_sliding
        * _kv_elements_per_token_per_layer(arch)
        * np.minimum(context_tokens, max(arch.sliding_window, 1))
    )
    glob = n_global * _kv_elements_per_token_per_layer(arch, is_global=n_sliding > 0) * context_tokens
    return (local + glob) * bytes_per_element * batch


# --- training ----------------------------------------------------------------------------------------------


def activation_bytes_per_layer_train(
    seq_len, micro_batch, d_model: int, n_heads: int, tensor_parallel: int, recompute: str
):
    """Activation bytes stored per transformer layer for the backward pass (16-bit activations).

    Korthikanti et al. 2022, arXiv:2205.05198, Table 2, with sequence parallelism whenever t > 1:
    none: ``s*b*h*(34 + 5*a*s/h) / t``; selective: ``34*s*b*h / t``; full: ``2*s*b*h`` (layer inputs only).
    """
    sbh = seq_len * micro_batch * d_model
    if recompute == "full":
        return _FULL_RECOMPUTE_SBH * sbh
    if recompute == "selective":
        return _KORTHIKANTI_SBH * sbh / tensor_parallel
    return sbh * (_KORTHIKANTI_SBH + _KORTHIKANTI_ATTN * n_heads * seq_len / d_model) / tensor_parallel


def training_activation_bytes(
    arch: ModelArch, seq_len, micro_batch, tensor_parallel: int, pipeline_parallel: int, recompute: str
):
    """Activation bytes on the busiest device of a 1F1B pipeline.

    With 1F1B scheduling the first stage keeps ``p`` micro-batches of ``L/p`` layers in flight, i.e. ``L`` layers'
    worth regardless of ``p`` (Korthikanti et al. 2022, Sec. 4.2.3). Without pipelining the same device also
    holds the fp32 logits for the loss, ``4*s*b*v / t`` (Sec. 4.3).
    """
    per_layer = activation_bytes_per_layer_train(
        seq_len, micro_batch, arch.d_model, arch.n_heads, tensor_parallel, recompute
    )
    logits = (
        4.0 * seq_len * micro_batch * arch.vocab_size / tensor_parallel if pipeline_parallel == 1 else 0.0
    )
    return arch.n_layers * per_layer + logits


def optimizer_bytes_per_param(optimizer: str, precision: str) -> float:
    """Optimizer-state bytes per trainable parameter.

    Mixed precision AdamW: fp32 master copy 4 + first moment 4 + second moment 4 = 12 B (Rajbhandari et al. 2019,
    ZeRO, arXiv:1910.02054, Sec. 3.1: "K = 12"). 8-bit Adam: master 4 + 1 + 1 = 6 B (Dettmers et al. 2021,
    arXiv:2110.02861). SGD with momentum: master 4 + momentum 4 = 8 B. In fp32 training the weights are the master
    copy, so 4 B less.
    """
    states = {"adamw": 8.0, "adamw-8bit": 2.0, "sgd": 4.0}[optimizer]
    master = 0.0 if precision == "fp32" else 4.0
    return states + master


def optimizer_bytes(n_trainable, optimizer: str, precision: str, shard_divisor=1.0):
    """Optimizer-state bytes per device: ``n_trainable * optimizer_bytes_per_param / shard_divisor``."""
    return n_trainable * optimizer_bytes_per_param(optimizer, precision) / shard_divisor


def gradient_bytes(n_trainable, bytes_per_grad: float, shard_divisor=1.0):
    """Gradient bytes per device: one gradient per trainable parameter in the compute precision (2 B in bf16/fp16,
    4 B in fp32; ZeRO's 2*Psi term, arXiv:1910.02054 Sec. 3.1), divided by the sharding."""
    return n_trainable * bytes_per_grad / shard_divisor


def zero_divisors(zero_stage: int, data_parallel):
    """(weights, gradients, optimizer) divisors for ZeRO stage 0-3 over *data_parallel* ranks.

    Stage 1 shards optimizer states, stage 2 also gradients, stage 3 (= FSDP FULL_SHARD) also weights
    (Rajbhandari et al. 2019, arXiv:1910.02054, Fig. 1).
    """
    one = np.ones_like(data_parallel, dtype=float) if isinstance(data_parallel, np.ndarray) else 1.0
    return (
        data_parallel if zero_stage >= 3 else one,
        data_parallel if zero_stage >= 2 else one,
        data_parallel if zero_stage >= 1 else one,
    )


def routed_expert_params(arch: ModelArch) -> int:
    """Parameters of all routed experts: ``moe_layers * n_experts * expert_params`` (the part that expert
    parallelism shards; Lepikhin et al. 2020 GShard, arXiv:2006.16668)."""
    return arch.moe_layer_count * arch.n_experts * expert_params(arch) if arch.is_moe else 0


def lora_param_count(arch: ModelArch, rank: int) -> int:
    """Trainable LoRA parameters when adapters of rank *r* sit on every linear layer of every block (as QLoRA does,
    Dettmers et al. 2023, arXiv:2305.14314, Sec. 4): ``r * (d_in + d_out)`` per matrix (Hu et al. 2021,
    arXiv:2106.09685). Attention: q, k, v, o; FFN: 3 matrices (gated) or 2 (mlp), per dense FFN and per expert
    (routed and shared).
    """
    h = arch.d_model
    q_out = arch.n_heads * arch.head_dim
    kv_out = arch.n_kv_heads * arch.head_dim
    attn = rank * ((h + q_out) * 2 + (h + kv_out) * 2)
    n_mats = 3 if arch.ffn_kind == "gated" else 2
    n_moe = arch.moe_layer_count
    n_dense = arch.ffn_layer_count - n_moe
    ffn_total = n_dense * n_mats * rank * (h + arch.d_ff)
    if n_moe:
        shared_width = arch.d_ff_shared_expert or arch.d_ff_expert
        per_layer = arch.n_experts * (h + arch.d_ff_expert) + arch.n_shared_experts * (h + shared_width)
        ffn_total += n_moe * n_mats * rank * per_layer
    return int(arch.attention_layer_count * attn + ffn_total)


def training_overhead_bytes(device_kind: str, modelled_bytes):
    """Runtime context plus allocator fragmentation: ``RUNTIME_CONTEXT_BYTES + TRAIN_FRAGMENTATION_FRAC * modelled``."""
    return (
        RUNTIME_CONTEXT_BYTES.get(device_kind, RUNTIME_CONTEXT_BYTES["gpu"])
        + TRAIN_FRAGMENTATION_FRAC * modelled_bytes
    )


# --- serving -----------------------------------------------------------------------------------------------

#: Tokens a serving engine processes in one prefill step (chunked prefill budget). Derived: vLLM's
#: ``max_num_batched_tokens`` defaults are 2048-8192 depending on version and usage; 8192 is used.
PREFILL_CHUNK_TOKENS = 8192.0


def serving_activation_bytes(
    arch: ModelArch, batch, input_tokens, bytes_per_activation: float = 2.0, chunk_tokens: float = PREFILL_CHUNK_TOKENS
):
    """Peak transient activation workspace of a forward pass while serving, in bytes.

    Tokens in flight ``n = min(batch * input_tokens, chunk_tokens)`` (the engine's prefill chunk); per token the residual stream, the
    attention output and the FFN intermediate are live: ``(4*h + 2*d_ff_eff) * bytes``; plus fp32 logits for the
    sampled positions ``batch * vocab * 4``. Derived from the tensor shapes of a decoder block (no stored
    activations at inference); engines such as vLLM profile exactly this peak before sizing the KV cache.
    """
    d_ff = (
        arch.d_ff_expert * max(arch.n_experts_active + arch.n_shared_experts, 1) if arch.is_moe else arch.d_ff
    )
    tokens = np.minimum(batch * input_tokens, chunk_tokens)
    return tokens * (4.0 * arch.d_model + 2.0 * d_ff) * bytes_per_activation + batch * arch.vocab_size * 4.0


def serving_overhead_bytes(device_kind: str, capacity_bytes):
    """Engine reserve: runtime context plus the share of memory the engine leaves unused,
    ``RUNTIME_CONTEXT_BYTES + (1 - ENGINE_MEMORY_UTILIZATION_FRAC) * capacity``."""
    util = ENGINE_MEMORY_UTILIZATION_FRAC.get(device_kind, 0.9)
    return (
        RUNTIME_CONTEXT_BYTES.get(device_kind, RUNTIME_CONTEXT_BYTES["gpu"]) + (1.0 - util) * capacity_bytes
    )
