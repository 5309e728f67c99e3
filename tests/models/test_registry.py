"""The built-in registry: schema, provenance, name resolution and counts against published sizes.

Tolerances (see test_params.py for the reasoning): totals within ``TOTAL_RTOL`` = 3 %, active counts of
MoE models within ``ACTIVE_RTOL`` = 5 %, read on the basis each publisher uses (``active_published_basis``).
``NAME_ROUNDED`` lists the models whose only published size is the rounded size in their name; their
checkpoints hold more or less than that, so they get ``NAME_ROUNDED_RTOL`` = 5 % and a stated reason.
"""

from __future__ import annotations

import math
import tomllib

import pytest

from flopwise.errors import CatalogFileError, UnknownModelError
from flopwise.models import BUILTIN_MODELS_PATH, ModelArch, count_params, load_models, resolve_model

TOTAL_RTOL = 0.03
ACTIVE_RTOL = 0.05
NAME_ROUNDED_RTOL = 0.05
NAME_ROUNDED = {
    "llama-2-7b": "Llama 2 paper Table 1 says 7B; the checkpoint holds 6.74B (-3.7 %)",
    "falcon-40b": "model card says 40B; the checkpoint holds 41.3B (+3.3 %)",
    "phi-4": "Phi-4 report says 14B; the checkpoint holds 14.66B (+4.7 %)",
}

REGISTRY = load_models()
MODELS = list(REGISTRY)

REQUIRED_IDS = [
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "llama-3.3-70b",
    "llama-4-scout",
    "llama-4-maverick",
    "qwen3-0.6b",
    "qwen3-1.7b",
    "qwen3-4b",
    "qwen3-8b",
    "qwen3-14b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "mistral-7b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "deepseek-v3",
    "deepseek-r1",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "gemma-3-1b",
    "gemma-3-4b",
    "gemma-3-12b",
    "gemma-3-27b",
    "gemma-4-26b-a4b",
    "phi-4",
    "kimi-k2",
    "glm-4.5",
    "gpt-3-125m",
    "gpt-3-350m",
    "gpt-3-1.3b",
    "gpt-3-2.7b",
    "gpt-3-6.7b",
    "gpt-3-13b",
    "gpt-3-175b",
    "chinchilla-70b",
    "gopher-280b",
    "llama-1-7b",
    "llama-1-13b",
    "llama-1-33b",
    "llama-1-65b",
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "bloom-176b",
    "opt-175b",
    "opt-66b",
    "falcon-7b",
    "falcon-40b",
    "falcon-180b",
    "mpt-7b",
    "mpt-30b",
    "pythia-1.4b",
    "pythia-6.9b",
    "pythia-12b",
    "starcoder-15.5b",
    "tinyllama-1.1b",
    "smollm2-135m",
    "smollm2-360m",
    "smollm2-1.7b",
]


def test_registry_has_the_required_models() -> None:
    assert len(REGISTRY) >= 35
    missing = [i for i in REQUIRED_IDS if i not in REGISTRY.models]
    assert not missing


def test_every_row_has_provenance() -> None:
    for arch in MODELS:
        assert arch.source_url.startswith("https://"), arch.id
        assert arch.retrieved and arch.basis in ("datasheet", "derived", "measured"), arch.id
        assert arch.note, arch.id
        assert arch.params_published > 0, arch.id
        if arch.is_moe:
            assert arch.active_params_published > 0, arch.id


def test_raw_file_has_unique_ids_and_no_unknown_keys() -> None:
    with BUILTIN_MODELS_PATH.open("rb") as fh:
        rows = tomllib.load(fh)["model"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("arch", MODELS, ids=lambda a: a.id)
def test_architecture_is_consistent(arch: ModelArch) -> None:
    assert arch.n_heads % arch.n_kv_heads == 0
    assert arch.n_sliding_layers <= arch.n_layers
    assert (arch.sliding_window == 0) == (arch.n_sliding_layers == 0)
    if arch.attention == "mla":
        assert arch.head_dim == arch.mla_qk_nope_head_dim + arch.mla_qk_rope_head_dim
    if arch.is_moe:
        assert 0 < arch.n_experts_active <= arch.n_experts
        assert arch.moe_layer_count > 0


@pytest.mark.parametrize("arch", MODELS, ids=lambda a: a.id)
def test_total_within_tolerance_of_published(arch: ModelArch) -> None:
    rtol = NAME_ROUNDED_RTOL if arch.id in NAME_ROUNDED else TOTAL_RTOL
    total = count_params(arch).total
    assert math.isclose(total, arch.params_published, rel_tol=rtol), (
        f"{arch.id}: counted {total / 1e9:.3f}B vs published {arch.params_published / 1e9:.3f}B"
    )


def _active_on_published_basis(arch: ModelArch) -> int:
    c = count_params(arch)
    if arch.active_published_basis == "no_input_embedding":
        return c.active - arch.vocab_size * arch.d_model
    if arch.active_published_basis == "no_embedding":
        return c.active - c.embedding
    return c.active


@pytest.mark.parametrize("arch", [a for a in MODELS if a.is_moe], ids=lambda a: a.id)
def test_moe_active_within_tolerance_of_published(arch: ModelArch) -> None:
    active = _active_on_published_basis(arch)
    assert math.isclose(active, arch.active_params_published, rel_tol=ACTIVE_RTOL), (
        f"{arch.id}: counted {active / 1e9:.3f}B active vs published {arch.active_params_published / 1e9:.3f}B"
    )


@pytest.mark.parametrize("arch", MODELS, ids=lambda a: a.id)
def test_parts_sum_and_active_not_above_total(arch: ModelArch) -> None:
    c = count_params(arch)
    assert c.embedding + c.attention + c.ffn + c.norm + c.other == c.total
    assert 0 < c.active <= c.total
    assert (c.active < c.total) == (arch.is_moe or arch.extra_params > 0)


def test_exact_counts_where_the_paper_gives_exact_figures() -> None:
    # BLOOM model card: 176,247,271,424; Pythia paper Table 1 (https://arxiv.org/abs/2304.01373).
    for model_id in ("bloom-176b", "pythia-70m", "pythia-1.4b", "pythia-6.9b", "pythia-12b"):
        arch = REGISTRY.models[model_id]
        assert count_params(arch).total == arch.params_published, model_id


def test_family_specific_terms() -> None:
    gpt3 = REGISTRY.resolve("gpt-3-175b")
    c = count_params(gpt3)
    assert c.embedding == (50257 + 2048) * 12288  # tied head, learned positions
    falcon = REGISTRY.resolve("falcon-7b")
    assert count_params(falcon).attention == 32 * (4544 * 4544 * 2 + 2 * 4544 * 64)  # MQA: one KV head of 64
    maverick = REGISTRY.resolve("llama-4-maverick")
    assert maverick.moe_layer_count == 24  # interleaved: every second layer
    scout = REGISTRY.resolve("llama-4-scout")
    assert scout.moe_layer_count == 48


@pytest.mark.parametrize(
    "name",
    [
        "meta-llama/Llama-3.1-8B",
        "Llama 3.1 8B",
        "llama-3.1-8b",
        "Meta-Llama-3.1-8B",
        "LLAMA_3.1_8B",
        "llama3.1-8b",
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Meta-Llama-3.1-8B",
    ],
)
def test_forgiving_names_resolve_to_the_same_model(name: str) -> None:
    assert REGISTRY.resolve(name).id == "llama-3.1-8b"


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("GPT-3 1.3B", "gpt-3-1.3b"),
        ("gpt-3-13b", "gpt-3-13b"),
        ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
        ("qwen3 30b a3b", "qwen3-30b-a3b"),
        ("DeepSeek V3", "deepseek-v3"),
        ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
        ("Chinchilla", "chinchilla-70b"),
        ("google/gemma-3-27b-it", "gemma-3-27b"),
        ("pythia-1.4b", "pythia-1.4b"),
        ("EleutherAI/pythia-12b", "pythia-12b"),
        ("bigcode/starcoder", "starcoder-15.5b"),
    ],
)
def test_names_that_differ_only_by_a_dot_stay_apart(name: str, model_id: str) -> None:
    assert REGISTRY.resolve(name).id == model_id


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError) as err:
        REGISTRY.resolve("llama 3.1 9b")
    assert "llama-3.1-8b" in [s.lower().replace(" ", "-") for s in err.value.suggestions]
    assert "flopwise models list" in str(err.value)


def test_resolve_model_by_name_returns_unmodelled_warnings() -> None:
    arch, warnings = resolve_model("DeepSeek-V3", REGISTRY)
    assert arch.id == "deepseek-v3"
    assert any("multi-token prediction" in w for w in warnings)
    assert resolve_model("llama-3.1-8b")[1] == ()


def test_load_models_is_cached() -> None:
    assert load_models() is load_models()


def test_bad_registry_file_names_the_field(tmp_path) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text('[[model]]\nid = "x"\nname = "X"\nfamily = "f"\nhf_id = ""\nn_layer = 2\n')
    with pytest.raises(CatalogFileError) as err:
        load_models(bad)
    assert "n_layer" in str(err.value)
    bad.write_text('[[model]]\nid = "x"\nname = "X"\nfamily = "f"\nhf_id = ""\n')
    with pytest.raises(CatalogFileError, match="n_layers"):
        load_models(bad)
