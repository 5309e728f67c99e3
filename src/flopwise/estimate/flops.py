"""FLOP counts of training and inference, one small function per term (unit: FLOPs, multiply-add = 2 FLOPs).

Every function accepts plain floats or numpy arrays (broadcasting) and returns the same kind.
"""

from __future__ import annotations

import numpy as np

from flopwise.models.types import ModelArch

__all__ = [
    "attention_dim",
    "attention_flops_per_token_fwd",
    "decode_flops_per_token",
    "lora_train_flops_per_token",
    "matmul_params",
    "prefill_flops",
    "recompute_flops_per_token",
    "train_flops",
    "train_flops_dense",
]


def matmul_params(non_embedding_active: float, arch: ModelArch) -> float:
    """Parameters that take part in a matmul per token: non-embedding active parameters plus the output head
    (``vocab * d_model``; the input embedding is a table lookup). Kaplan et al. 2020, arXiv:2001.08361, Table 1."""
    return float(non_embedding_active + arch.vocab_size * arch.d_model)


def attention_dim(arch: ModelArch, is_global: bool = False) -> float:
    """``d_attn`` of Kaplan et al. 2020: the width of the query-key and attention-value products.

    GQA/MHA: ``n_heads * head_dim`` (global layers: ``global_head_dim`` where set). MLA:
    ``n_heads * (qk_head_dim + v_head_dim) / 2`` (QK^T uses nope+rope dims, AV uses v dims; DeepSeek-V2
    arXiv:2405.04434).
    """
    if arch.attention == "mla":
        qk = arch.mla_qk_nope_head_dim + arch.mla_qk_rope_head_dim
        return arch.n_heads * (qk + arch.mla_v_head_dim) / 2.0
    head_dim = (arch.global_head_dim or arch.head_dim) if is_global else arch.head_dim
    return float(arch.n_heads * head_dim)


def attention_flops_per_token_fwd(arch: ModelArch, context):
    """Forward attention-score FLOPs per token attending to *context* tokens: ``2 * n_layers * context * d_attn``
    (Kaplan et al. 2020, arXiv:2001.08361, Sec. 2.1, Table 1: ``2 n_layer n_ctx d_attn``), summed over the layers
    that have attention, sliding-window layers attending to at most ``sliding_window`` tokens."""
    n_attn = arch.attention_layer_count
    n_sliding = min(arch.n_sliding_layers, n_attn) if arch.sliding_window > 0 else 0
    n_global = n_attn - n_sliding
    local = n_sliding * np.minimum(context, max(arch.sliding_window, 1)) * attention_dim(arch)
    glob = n_global * context * attention_dim(arch, is_global=n_sliding > 0)
    return 2.0 * (local + glob)


def train_flops_dense(n_params, tokens):
    """Training FLOPs of the dense part: ``6 * N * D`` (forward 2N, backward 4N per token; Kaplan et al. 2020,
    arXiv:2001.08361, Sec. 2.1; Hoffmann et al. 2022 Chinchilla arXiv:2203.15556 Appendix F).

    GPT-3 175B on 300B tokens: 3.14e23 (Brown et al. 2020, arXiv:2005.14165, Table D.1).
    """
    return 6.0 * n_params * tokens


def train_flops(n_matmul_params, arch: ModelArch, tokens, seq_len):
    """Training FLOPs: ``(6*N + 6*n_layers*seq_len*d_attn) * D`` (Kaplan et al. 2020 Sec. 2.1: forward
    ``2N + 2 n_layer n_ctx d_attn``, backward twice the forward; PaLM, Chowdhery et al. 2022, arXiv:2204.02311,
    Appendix B counts the same attention term). For MoE, N is the active parameter count."""
    return (
        train_flops_dense(n_matmul_params, tokens)
        + 3.0 * attention_flops_per_token_fwd(arch, seq_len) * tokens
    )


def lora_train_flops_per_token(n_matmul_params, n_lora_params, arch: ModelArch, seq_len):
    """Training FLOPs per token with a frozen base and LoRA adapters: forward 2N + activation gradients 2N, no
    weight gradients for the base (the backward pass is half activation-gradient, half weight-gradient matmuls;
    Narayanan et al. 2021, arXiv:2104.04473, Sec. 5.1), so 4N = 2/3 of full fine-tuning (Hu et al. 2021 LoRA,
    arXiv:2106.09685, Sec. 4.2), plus ``6 * N_lora`` for the adapters and the attention term forward + backward."""
    return 4.0 * n_matmul_params + 6.0 * n_lora_params + 3.0 * attention_flops_per_token_fwd(arch, seq_len)


def recompute_flops_per_token(n_matmul_params, arch: ModelArch, seq_len, recompute: str):
    """Extra hardware FLOPs per token from activation recomputation.

    full: one more forward pass, ``2N + 2 n_layers s d_attn`` (Narayanan et al. 2021, arXiv:2104.04473, Sec. 5.1:
    "4 passes"); selective: the attention core only, ``2 n_layers s d_attn`` (Korthikanti et al. 2022,
    arXiv:2205.05198, Sec. 5); none: 0.
    """
    attn = attention_flops_per_token_fwd(arch, seq_len)
    if recompute == "full":
        return 2.0 * n_matmul_params + attn
    if recompute == "selective":
        return attn
    return 0.0 * attn


def prefill_flops(n_matmul_params, arch: ModelArch, input_tokens, batch):
    """Prefill FLOPs of *batch* prompts of *input_tokens*: per token ``2*N`` plus causal attention over the
    positions before it, mean context ``(s + 1) / 2`` (Kaplan et al. 2020 forward counts; causal masking halves
    the score work as FlashAttention skips masked blocks, Dao 2023 arXiv:2307.08691)."""
    per_token = 2.0 * n_matmul_params + attention_flops_per_token_fwd(arch, (input_tokens + 1.0) / 2.0)
    return per_token * input_tokens * batch


def decode_flops_per_token(n_matmul_params, arch: ModelArch, context):
    """Decode FLOPs for one new token attending to *context* cached tokens: ``2*N + 2*n_layers*context*d_attn``
    (Kaplan et al. 2020, arXiv:2001.08361, Table 1 forward pass)."""
    return 2.0 * n_matmul_params + attention_flops_per_token_fwd(arch, context)
