"""The architecture record of a model. Field names equal the registry file keys."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelArch"]


@dataclass(frozen=True)
class ModelArch:
    """A decoder-only transformer (dense or mixture-of-experts), described well enough to count
    parameters, FLOPs and memory.

    Dimensions are counts (no units). ``ffn_kind`` is ``"gated"`` (SwiGLU/GeGLU: three matrices
    d_model x d_ff) or ``"mlp"`` (two matrices). MoE layers use ``d_ff_expert`` per routed expert,
    ``n_experts`` routed experts of which ``n_experts_active`` are used per token, plus
    ``n_shared_experts`` always-on experts of the same width. ``n_dense_layers`` of the layers
    (the first ones, as DeepSeek-V3 does) or every layer not selected by ``moe_layer_freq`` are
    dense with ``d_ff``.

    Attention: ``attention="gqa"`` covers MHA (n_kv_heads == n_heads), GQA and MQA (n_kv_heads == 1);
    ``attention="mla"`` is DeepSeek's multi-head latent attention with the ``mla_*`` fields.
    ``sliding_window`` with ``n_sliding_layers`` layers using it (the rest global).
    """

    id: str  # canonical slug, e.g. "llama-3.1-8b"
    name: str  # display name, e.g. "Llama 3.1 8B"
    family: str
    hf_id: str  # e.g. "meta-llama/Llama-3.1-8B" ("" if none)
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    max_context: int
    ffn_kind: str = "gated"  # gated | mlp
    tied_embeddings: bool = False
    attention: str = "gqa"  # gqa | mla
    # mixture of experts
    n_experts: int = 0
    n_experts_active: int = 0
    n_shared_experts: int = 0
    d_ff_expert: int = 0
    n_dense_layers: int = 0  # leading dense layers in an MoE model
    moe_layer_freq: int = 1  # every k-th layer is MoE (Llama 4 Maverick interleaves)
    # multi-head latent attention (DeepSeek-V2/V3)
    mla_q_lora_rank: int = 0
    mla_kv_lora_rank: int = 0
    mla_qk_rope_head_dim: int = 0
    mla_qk_nope_head_dim: int = 0
    mla_v_head_dim: int = 0
    # sliding-window attention
    sliding_window: int = 0
    n_sliding_layers: int = 0
    # extras counted in parameters
    has_bias: bool = False  # qkv/out/mlp biases (GPT-2/OPT/BLOOM/StarCoder style)
    extra_params: int = (
        0  # parameters not covered above (e.g. vision tower, learned positions), documented in note
    )
    # per-family details of the parameter count (added; all default to the Llama-style layout)
    norm_kind: str = "rmsnorm"  # rmsnorm (weight only) | layernorm (weight + bias) | layernorm_nobias
    norms_per_layer: int = 2  # 1 for parallel blocks (Falcon-7B, Nemotron-H), 4 for Gemma 2/3
    qk_norm: bool = False  # per-head RMSNorm on queries and keys (Qwen3, Gemma 3)
    has_qkv_bias: bool = False  # biases on q/k/v only (Qwen2, GLM-4); has_bias covers every linear
    has_attention_sinks: bool = False  # one learned sink logit per head and layer (gpt-oss)
    learned_positions: int = 0  # rows of a learned absolute position table (GPT-2/3, OPT, StarCoder)
    d_ff_shared_expert: int = 0  # width of each shared expert when it differs from d_ff_expert
    global_head_dim: int = 0  # head_dim of the global (non-sliding) layers when it differs (Gemma 4)
    n_global_kv_heads: int = 0  # KV heads of the global layers when they differ (Gemma 4)
    global_k_eq_v: bool = False  # global layers share one projection for K and V (Gemma 4)
    n_attention_layers: int = 0  # layers with attention, 0 = all n_layers (hybrids: Nemotron-H)
    n_ffn_layers: int = 0  # layers with an FFN/MoE block, 0 = all n_layers (hybrids: Nemotron-H)
    extra_active_params: int = 0  # parameters outside the modelled blocks used for every token (Mamba mixers)
    # published figures used to check the count
    params_published: int = 0
    active_params_published: int = 0
    training_tokens_published: float = 0.0
    # which parameters the published active count includes: "all" (input embedding too),
    # "no_input_embedding" (gpt-oss: the unembedding but not the embedding table) or "no_embedding"
    active_published_basis: str = "all"
    # features the estimator does not model (named in warnings)
    unmodelled: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    source_url: str = ""
    retrieved: str = ""  # ISO date the figures were entered from the source
    basis: str = ""  # datasheet (config or paper) | measured | derived
    note: str = ""

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def attention_layer_count(self) -> int:
        """Layers that hold attention (and a KV cache); hybrids have fewer than ``n_layers``."""
        return self.n_attention_layers or self.n_layers

    @property
    def ffn_layer_count(self) -> int:
        """Layers that hold a dense FFN or an MoE block."""
        return self.n_ffn_layers or self.n_layers

    @property
    def moe_layer_count(self) -> int:
        """FFN layers that are mixture-of-experts: not among the first ``n_dense_layers`` and, with
        ``moe_layer_freq`` k, every k-th layer (index i with (i + 1) % k == 0, as Llama 4's
        ``interleave_moe_layer_step`` places them)."""
        if not self.is_moe:
            return 0
        freq = max(1, self.moe_layer_freq)
        return sum(1 for i in range(self.n_dense_layers, self.ffn_layer_count) if (i + 1) % freq == 0)
