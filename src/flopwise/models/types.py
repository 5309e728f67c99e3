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
    extra_params: int = 0  # parameters not covered above (e.g. vision tower, learned positions), documented in note
    # published figures used to check the count
    params_published: int = 0
    active_params_published: int = 0
    training_tokens_published: float = 0.0
    # features the estimator does not model (named in warnings)
    unmodelled: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    source_url: str = ""
    note: str = ""

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0
