"""Properties of count_params over random architectures (hypothesis)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from flopwise.models import ModelArch, count_params


@st.composite
def archs(draw: st.DrawFn) -> ModelArch:
    n_kv = draw(st.sampled_from([1, 2, 4, 8]))
    n_heads = n_kv * draw(st.integers(1, 8))
    moe = draw(st.booleans())
    n_layers = draw(st.integers(1, 64))
    n_experts = draw(st.integers(2, 64)) if moe else 0
    return ModelArch(
        id="x",
        name="x",
        family="x",
        hf_id="",
        n_layers=n_layers,
        d_model=draw(st.integers(8, 8192)),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=draw(st.sampled_from([32, 64, 128])),
        d_ff=draw(st.integers(8, 30000)),
        vocab_size=draw(st.integers(100, 300000)),
        max_context=4096,
        ffn_kind=draw(st.sampled_from(["gated", "mlp"])),
        tied_embeddings=draw(st.booleans()),
        has_bias=draw(st.booleans()),
        norm_kind=draw(st.sampled_from(["rmsnorm", "layernorm"])),
        n_experts=n_experts,
        n_experts_active=draw(st.integers(1, n_experts)) if moe else 0,
        n_shared_experts=draw(st.integers(0, 2)) if moe else 0,
        d_ff_expert=draw(st.integers(8, 4096)) if moe else 0,
        n_dense_layers=draw(st.integers(0, n_layers - 1)) if moe else 0,
        moe_layer_freq=draw(st.integers(1, 2)) if moe and n_layers > 1 else 1,
    )


@settings(max_examples=200, deadline=None)
@given(archs())
def test_parts_sum_and_nothing_negative(arch: ModelArch) -> None:
    c = count_params(arch)
    assert c.embedding + c.attention + c.ffn + c.norm + c.other == c.total
    assert min(c.embedding, c.attention, c.ffn, c.ffn_active, c.norm, c.other) >= 0
    assert 0 < c.active <= c.total and c.ffn_active <= c.ffn


@settings(max_examples=100, deadline=None)
@given(archs(), st.integers(1, 8))
def test_more_layers_or_width_means_more_parameters(arch: ModelArch, extra: int) -> None:
    base = count_params(arch)
    deeper = count_params(dataclasses.replace(arch, n_layers=arch.n_layers + extra))
    wider = count_params(dataclasses.replace(arch, d_model=arch.d_model + extra))
    assert deeper.total > base.total and deeper.active > base.active
    assert wider.total > base.total and wider.active > base.active


@settings(max_examples=100, deadline=None)
@given(archs())
def test_more_routed_experts_add_total_not_active(arch: ModelArch) -> None:
    if not arch.is_moe or arch.moe_layer_count == 0:
        return
    more = dataclasses.replace(arch, n_experts=arch.n_experts + 1)
    a, b = count_params(arch), count_params(more)
    assert b.total > a.total
    router_column = arch.d_model + (1 if arch.has_bias else 0)  # one more router output (and bias)
    assert b.active - a.active == arch.moe_layer_count * router_column  # only the router grows per token
