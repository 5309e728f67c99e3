"""Parameter counting for decoder-only transformers, dense and mixture-of-experts.

One small function per term, summed by :func:`count_params` (the layout of cli99/llm-analysis).
The per-layer formulas follow the reference implementations in Hugging Face ``transformers``
(``modeling_llama.py``, ``modeling_mixtral.py``, ``modeling_deepseek_v3.py``, ``modeling_gpt_oss.py``,
``modeling_gpt2.py``, ``modeling_gpt_neox.py``, ``modeling_bloom.py``, ``modeling_opt.py``,
``modeling_falcon.py``, ``modeling_llama4.py``, ``modeling_gemma3.py``) and the papers:

* dense block, 12·d² per layer plus biases: Kaplan et al. 2020, Table 1, https://arxiv.org/abs/2001.08361
* gated (SwiGLU) FFN with three matrices: Shazeer 2020, https://arxiv.org/abs/2002.05202
* grouped-query attention: Ainslie et al. 2023, https://arxiv.org/abs/2305.13245
* multi-head latent attention, shared experts and leading dense layers: DeepSeek-V3 technical report,
  https://arxiv.org/abs/2412.19437 (section 2.1)
* top-k routed experts: Fedus et al. 2021, https://arxiv.org/abs/2101.03961 and Mixtral, https://arxiv.org/abs/2401.04088

All counts are plain integers (number of parameters, no unit).
"""

from __future__ import annotations

from dataclasses import dataclass

from flopwise.models.types import ModelArch

__all__ = [
    "ParamCount",
    "attention_params_per_layer",
    "count_params",
    "embedding_params",
    "expert_params",
    "ffn_params",
    "mla_params_per_layer",
    "norm_params",
    "router_params",
]


@dataclass(frozen=True)
class ParamCount:
    """Where the parameters of a model are. ``total == embedding + attention + ffn + norm + other``.

    ``active`` is what one token uses: the attention of every layer, the dense FFNs, the shared experts,
    the ``n_experts_active`` routed experts and the routers of each MoE layer, the norms, the extra
    per-token parameters (``extra_active_params``) and the embeddings (input table and untied head).
    """

    total: int  # all parameters, embeddings and lm head included (tied head counted once)
    active: int  # parameters used per token (MoE: shared + top-k routed experts), embeddings included
    embedding: int  # input embedding + untied output head + learned position table
    attention: int  # all layers (projections, their biases, q/k norms, MLA latent norms, sinks)
    ffn: int  # all layers, all experts (dense ffn + routed + shared + routers)
    ffn_active: int  # per token
    norm: int = 0  # layer norms of the blocks and the final norm
    other: int = 0  # extra_params + extra_active_params (vision towers, Mamba mixers, ...)

    @property
    def non_embedding_active(self) -> int:
        return self.active - self.embedding

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def _norm_size(arch: ModelArch, width: int) -> int:
    """Parameters of one norm over *width* features: RMSNorm and bias-free LayerNorm have a weight only."""
    return 2 * width if arch.norm_kind == "layernorm" else width


def embedding_params(arch: ModelArch) -> int:
    """Input table ``vocab x d_model``, plus the output head when untied, plus learned positions."""
    table = arch.vocab_size * arch.d_model
    head = 0 if arch.tied_embeddings else table
    return table + head + arch.learned_positions * arch.d_model


def attention_params_per_layer(arch: ModelArch, is_global: bool = False) -> int:
    """One GQA/MQA/MHA attention block: W_q (d x H·hd), W_k and W_v (d x KV·hd), W_o (H·hd x d).

    Biases: ``has_bias`` on q, k, v and o; ``has_qkv_bias`` on q, k, v only. ``qk_norm`` adds two
    RMSNorm weights of ``head_dim``. ``has_attention_sinks`` adds one logit per head. For the global
    layers of a model with ``global_head_dim`` / ``n_global_kv_heads`` (Gemma 4) those replace the
    local values, and ``global_k_eq_v`` drops W_v.
    """
    if arch.attention == "mla":
        return mla_params_per_layer(arch)
    d, h = arch.d_model, arch.n_heads
    hd, kv = arch.head_dim, arch.n_kv_heads
    has_v = True
    if is_global:
        hd = arch.global_head_dim or hd
        kv = arch.n_global_kv_heads or kv
        has_v = not arch.global_k_eq_v
    q_out, kv_out = h * hd, kv * hd
    n_kv_proj = 2 if has_v else 1
    weights = d * q_out + n_kv_proj * d * kv_out + q_out * d
    bias = 0
    if arch.has_bias or arch.has_qkv_bias:
        bias += q_out + n_kv_proj * kv_out
    if arch.has_bias:
        bias += d
    qk = 2 * hd if arch.qk_norm else 0
    sinks = h if arch.has_attention_sinks else 0
    return weights + bias + qk + sinks


def mla_params_per_layer(arch: ModelArch) -> int:
    """DeepSeek multi-head latent attention (DeepSeek-V3 report, eqs. 1-11, https://arxiv.org/abs/2412.19437).

    q: W_DQ (d x q_lora) + RMSNorm(q_lora) + W_UQ (q_lora x H·(nope+rope)), or W_Q (d x H·(nope+rope))
    when ``mla_q_lora_rank`` is 0; kv: W_DKV+W_KR (d x (kv_lora+rope)) + RMSNorm(kv_lora) +
    W_UK,W_UV (kv_lora x H·(nope+v)); out: W_O (H·v x d).
    """
    d, h = arch.d_model, arch.n_heads
    qk_head = arch.mla_qk_nope_head_dim + arch.mla_qk_rope_head_dim
    if arch.mla_q_lora_rank:
        q = d * arch.mla_q_lora_rank + arch.mla_q_lora_rank + arch.mla_q_lora_rank * h * qk_head
    else:
        q = d * h * qk_head
    kv_down = d * (arch.mla_kv_lora_rank + arch.mla_qk_rope_head_dim) + arch.mla_kv_lora_rank
    kv_up = arch.mla_kv_lora_rank * h * (arch.mla_qk_nope_head_dim + arch.mla_v_head_dim)
    out = h * arch.mla_v_head_dim * d
    return q + kv_down + kv_up + out


def ffn_params(arch: ModelArch, width: int) -> int:
    """One FFN of hidden *width*: gated (SwiGLU/GeGLU) has W_gate, W_up, W_down = 3·d·width;
    plain MLP has W_in, W_out = 2·d·width. With ``has_bias``: bias on every matrix."""
    d = arch.d_model
    if arch.ffn_kind == "gated":
        return 3 * d * width + ((2 * width + d) if arch.has_bias else 0)
    return 2 * d * width + ((width + d) if arch.has_bias else 0)


def expert_params(arch: ModelArch) -> int:
    """One routed expert: an FFN of width ``d_ff_expert``."""
    return ffn_params(arch, arch.d_ff_expert)


def router_params(arch: ModelArch) -> int:
    """The gate of one MoE layer: d_model x n_experts (plus a bias with ``has_bias``, as gpt-oss)."""
    return arch.d_model * arch.n_experts + (arch.n_experts if arch.has_bias else 0)


def norm_params(arch: ModelArch) -> int:
    """``norms_per_layer`` norms in each of ``n_layers`` blocks plus the final norm."""
    return (arch.n_layers * arch.norms_per_layer + 1) * _norm_size(arch, arch.d_model)


def _n_global_attention_layers(arch: ModelArch) -> int:
    if not (arch.global_head_dim or arch.n_global_kv_heads or arch.global_k_eq_v):
        return 0
    if not arch.sliding_window:
        return arch.attention_layer_count
    return arch.attention_layer_count - arch.n_sliding_layers


def count_params(arch: ModelArch) -> ParamCount:
    """Count all and per-token (active) parameters of *arch*, split by where they sit.

    MoE layers (``arch.moe_layer_count`` of the ``ffn_layer_count`` FFN layers) hold ``n_experts``
    routed experts of width ``d_ff_expert``, ``n_shared_experts`` shared experts of width
    ``d_ff_shared_expert`` (default ``d_ff_expert``) and a router; the other FFN layers are dense with
    ``d_ff``. A token uses the shared experts, ``n_experts_active`` routed experts and the router.
    """
    n_global = _n_global_attention_layers(arch)
    n_local = arch.attention_layer_count - n_global
    attention = n_local * attention_params_per_layer(arch) + n_global * attention_params_per_layer(
        arch, is_global=True
    )

    n_moe = arch.moe_layer_count
    n_dense = arch.ffn_layer_count - n_moe
    dense = n_dense * ffn_params(arch, arch.d_ff)
    if n_moe:
        expert = expert_params(arch)
        shared = arch.n_shared_experts * ffn_params(arch, arch.d_ff_shared_expert or arch.d_ff_expert)
        router = router_params(arch)
        moe_total = n_moe * (arch.n_experts * expert + shared + router)
        moe_active = n_moe * (arch.n_experts_active * expert + shared + router)
    else:
        moe_total = moe_active = 0
    ffn = dense + moe_total
    ffn_active = dense + moe_active

    embedding = embedding_params(arch)
    norm = norm_params(arch)
    other = arch.extra_params + arch.extra_active_params
    total = embedding + attention + ffn + norm + other
    active = embedding + attention + ffn_active + norm + arch.extra_active_params
    return ParamCount(
        total=total,
        active=active,
        embedding=embedding,
        attention=attention,
        ffn=ffn,
        ffn_active=ffn_active,
        norm=norm,
        other=other,
    )
