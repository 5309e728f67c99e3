"""Parameter counts against published totals.

Tolerances: totals within 3 % (``TOTAL_RTOL``) because published sizes are rounded to two or three
significant figures and sometimes include small parts the papers do not itemise (position tables,
norms); active counts within 5 % (``ACTIVE_RTOL``) because vendors round them harder ("17B", "37B").
"""

from __future__ import annotations

import math

import pytest

from archs import DEEPSEEK_V3, LLAMA31_8B, LLAMA31_70B, LLAMA31_405B, MIXTRAL_8X7B
from flopwise.models.params import (
    ParamCount,
    attention_params_per_layer,
    count_params,
    ffn_params,
    mla_params_per_layer,
)
from flopwise.models.types import ModelArch

TOTAL_RTOL = 0.03
ACTIVE_RTOL = 0.05


def _close(value: int, published: float, rtol: float) -> bool:
    return math.isclose(value, published, rel_tol=rtol)


@pytest.mark.parametrize(
    ("arch", "published"),
    [
        # Llama 3.1 model card (https://huggingface.co/meta-llama/Llama-3.1-8B): 8.03B, 70.6B, 405B
        (LLAMA31_8B, 8.03e9),
        (LLAMA31_70B, 70.6e9),
        (LLAMA31_405B, 405e9),
        # Mixtral paper (https://arxiv.org/abs/2401.04088): 46.7B total (13B active, 12.9B in the blog)
        (MIXTRAL_8X7B, 46.7e9),
        # DeepSeek-V3 report (https://arxiv.org/abs/2412.19437): 671B total without the 14B MTP module
        (DEEPSEEK_V3, 671e9),
    ],
    ids=lambda v: getattr(v, "id", ""),
)
def test_total_matches_published(arch: ModelArch, published: float) -> None:
    assert _close(count_params(arch).total, published, TOTAL_RTOL)


def test_llama_31_8b_exact() -> None:
    # 8,030,261,248 is the safetensors total of meta-llama/Llama-3.1-8B.
    assert count_params(LLAMA31_8B).total == 8_030_261_248


def test_dense_active_equals_total() -> None:
    c = count_params(LLAMA31_70B)
    assert c.active == c.total
    assert c.ffn == c.ffn_active


@pytest.mark.parametrize(("arch", "active"), [(MIXTRAL_8X7B, 12.9e9), (DEEPSEEK_V3, 37e9)])
def test_moe_active_matches_published(arch: ModelArch, active: float) -> None:
    assert _close(count_params(arch).active, active, ACTIVE_RTOL)


@pytest.mark.parametrize("arch", [LLAMA31_8B, MIXTRAL_8X7B, DEEPSEEK_V3], ids=lambda a: a.id)
def test_parts_sum_to_total(arch: ModelArch) -> None:
    c = count_params(arch)
    assert c.embedding + c.attention + c.ffn + c.norm + c.other == c.total
    assert c.non_embedding_active == c.active - c.embedding
    assert 0 < c.ffn_active <= c.ffn and 0 < c.active <= c.total


def test_gated_vs_plain_mlp() -> None:
    plain = ModelArch(**{**LLAMA31_8B.__dict__, "ffn_kind": "mlp"})
    assert ffn_params(LLAMA31_8B, 100) == 3 * 4096 * 100
    assert ffn_params(plain, 100) == 2 * 4096 * 100


def test_gqa_attention_per_layer() -> None:
    # q and o: 4096 x 4096; k and v: 4096 x (8 x 128)
    assert attention_params_per_layer(LLAMA31_8B) == 2 * 4096 * 4096 + 2 * 4096 * 1024


def test_mla_per_layer_deepseek_v3() -> None:
    expected = (
        7168 * 1536
        + 1536
        + 1536 * 128 * 192  # q down, q norm, q up
        + 7168 * (512 + 64)
        + 512  # kv down + rope key, kv norm
        + 512 * 128 * (128 + 128)  # k and v up
        + 128 * 128 * 7168  # out
    )
    assert mla_params_per_layer(DEEPSEEK_V3) == expected


def test_deepseek_dense_layers_and_shared_expert() -> None:
    c = count_params(DEEPSEEK_V3)
    expert = 3 * 7168 * 2048
    dense = 3 * 7168 * 18432
    assert DEEPSEEK_V3.moe_layer_count == 58
    assert c.ffn == 3 * dense + 58 * (257 * expert + 7168 * 256)
    assert c.ffn_active == 3 * dense + 58 * (9 * expert + 7168 * 256)


def test_tied_embedding_counted_once() -> None:
    tied = ModelArch(**{**LLAMA31_8B.__dict__, "tied_embeddings": True})
    assert count_params(LLAMA31_8B).embedding - count_params(tied).embedding == 128256 * 4096


def test_paramcount_is_frozen() -> None:
    c = count_params(LLAMA31_8B)
    assert isinstance(c, ParamCount)
    with pytest.raises(AttributeError):
        c.total = 0  # type: ignore[misc]
