"""Read a Hugging Face ``config.json`` of any decoder-only family into a :class:`ModelArch`.

Each family spells the same quantity differently (``hidden_size`` / ``n_embd`` / ``d_model`` /
``n_embed``; ``num_hidden_layers`` / ``n_layer`` / ``n_layers``; ...); :data:`SPELLINGS` lists the accepted
spellings of each field and a missing one raises :class:`~flopwise.errors.ModelConfigError` naming them.
Multimodal configs (Llama 4, Gemma 3/4, Qwen3-VL) are read from their ``text_config``. Features the
parameter count or the estimator does not model (vision towers, Mamba layers, multi-token prediction
layers, attention sinks, chunked attention, per-layer embeddings) are named in ``HfConfig.warnings``
rather than silently dropped. Rope scaling needs no warning: it changes no parameter and no FLOP.

Field meanings follow the ``configuration_*.py`` files of Hugging Face ``transformers``
(https://github.com/huggingface/transformers/tree/main/src/transformers/models).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flopwise.errors import ModelConfigError
from flopwise.models.registry import ModelRegistry, load_models, normalize_model_name
from flopwise.models.types import ModelArch

__all__ = ["SPELLINGS", "HfConfig", "parse_hf_config", "resolve_model"]

SPELLINGS: dict[str, tuple[str, ...]] = {
    "d_model": ("hidden_size", "n_embd", "d_model", "n_embed", "dim", "model_dim"),
    "n_layers": ("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
    "n_heads": ("num_attention_heads", "n_head", "n_heads", "num_heads"),
    "n_kv_heads": ("num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num", "kv_n_heads"),
    "head_dim": ("head_dim", "attention_head_dim", "kv_channels"),
    "d_ff": ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", "intermediate_dim"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "max_context": (
        "max_position_embeddings",
        "n_positions",
        "max_seq_len",
        "seq_length",
        "max_sequence_length",
        "n_ctx",
    ),
    "n_experts": ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
    "n_experts_active": ("num_experts_per_tok", "experts_per_token", "top_k_experts", "moe_top_k"),
    "d_ff_expert": ("moe_intermediate_size", "expert_intermediate_size"),
}

_GATED = {
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "qwen3_vl",
    "qwen3_vl_text",
    "deepseek_v2",
    "deepseek_v3",
    "kimi_k2",
    "gpt_oss",
    "llama4",
    "llama4_text",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "gemma4",
    "gemma4_text",
    "phi3",
    "glm",
    "glm4",
    "glm4_moe",
    "olmo",
    "olmo2",
    "granite",
    "cohere",
    "internlm2",
    "yi",
    "baichuan",
    "chatglm",
}
_PLAIN = {
    "gpt2",
    "gpt_bigcode",
    "gpt_neox",
    "gptj",
    "bloom",
    "opt",
    "mpt",
    "falcon",
    "refinedweb",
    "refinedwebmodel",
    "nemotron_h",
    "phi",
    "starcoder2",
    "nemotron",
    "gpt_neo",
}
_LAYERNORM = {
    "gpt2",
    "gpt_bigcode",
    "gpt_neox",
    "gptj",
    "bloom",
    "opt",
    "falcon",
    "refinedweb",
    "refinedwebmodel",
    "phi",
    "starcoder2",
    "gpt_neo",
    "nemotron",
}
_BIASED = {"gpt2", "gpt_bigcode", "gpt_neox", "gptj", "bloom", "opt", "phi", "starcoder2", "gpt_neo"}
_TIED_BY_DEFAULT = {
    "gpt2",
    "gpt_bigcode",
    "bloom",
    "opt",
    "mpt",
    "falcon",
    "refinedweb",
    "refinedwebmodel",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "gemma4",
    "gemma4_text",
    "gpt_neo",
    "gptj",
}
_QK_NORM = {
    "qwen3",
    "qwen3_moe",
    "qwen3_vl",
    "qwen3_vl_text",
    "gemma3",
    "gemma3_text",
    "gemma4",
    "gemma4_text",
    "olmo2",
}
_FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_text"}
_FALCON = {"falcon", "refinedweb", "refinedwebmodel"}
_MISSING = object()

# Fields that some published configs omit because they equal the transformers class default
# (google/gemma-3-4b-it's text_config lists only hidden_size, intermediate_size, num_hidden_layers and
# sliding_window). Values from Gemma3TextConfig in transformers/models/gemma3/configuration_gemma3.py.
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262208,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
    },
}


@dataclass(frozen=True)
class HfConfig:
    """The result of :func:`parse_hf_config`."""

    arch: ModelArch
    warnings: tuple[str, ...]
    quantization: str | None  # weight format of a pre-quantized checkpoint: "fp8", "mxfp4", "int4", ...
    kv_cache_quantization: str | None = None  # from hf_quant_config.json (kv_cache_quant_algo)
    model_type: str = ""


class _Reader:
    """Field lookup over a text config with the top-level config as fallback."""

    def __init__(
        self,
        cfg: Mapping[str, Any],
        top: Mapping[str, Any],
        where: str,
        class_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.cfg, self.top, self.where = cfg, top, where
        self.class_defaults = class_defaults or {}
        self.defaulted: dict[str, Any] = {}

    def raw(self, *names: str, default: Any = None) -> Any:
        for source in (self.cfg, self.top):
            for n in names:
                if source.get(n) is not None:
                    return source[n]
        for n in names:
            if n in self.class_defaults:
                self.defaulted[n] = self.class_defaults[n]
                return self.class_defaults[n]
        return default

    def int(self, field: str, *names: str, default: Any = _MISSING) -> int:
        names = names or SPELLINGS[field]
        value = self.raw(*names, default=_MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise ModelConfigError(
                    self.where,
                    f"missing required field {field!r}: none of the accepted spellings "
                    f"({', '.join(names)}) is set; add one of them to the config",
                )
            return int(default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
            raise ModelConfigError(
                self.where, f"field {field!r} ({names[0]}) is {value!r}; expected a non-negative integer"
            )
        return int(value)


def _load(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict[str, Any], str, Path | None]:
    if isinstance(source, Mapping):
        return dict(source), "<config dict>", None
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ModelConfigError(
            str(path), f"cannot read the file ({err.strerror}); give a path to a config.json"
        ) from err
    except UnicodeDecodeError as err:
        raise ModelConfigError(
            str(path), f"not a text file (byte {err.start} is not UTF-8); give a path to a config.json"
        ) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelConfigError(f"{path}:{err.lineno}", f"not valid JSON: {err.msg}") from err
    if not isinstance(data, dict):
        raise ModelConfigError(str(path), "expected a JSON object at the top level")
    return data, str(path), path


def _quant_from_config(q: Mapping[str, Any]) -> str | None:
    method = str(q.get("quant_method", "") or q.get("quant_algo", "")).lower()
    bits = q.get("bits") or q.get("w_bit") or q.get("weight_bits")
    if method in ("gptq", "awq", "aqlm", "hqq", "eetq", "quanto") and bits:
        return f"int{int(bits)}"
    if method == "bitsandbytes":
        if q.get("load_in_4bit"):
            return str(q.get("bnb_4bit_quant_type") or "int4").lower()
        return "int8"
    if method == "compressed-tensors":
        for group in (q.get("config_groups") or {}).values():
            weights = (group or {}).get("weights") or {}
            nb, kind = weights.get("num_bits"), str(weights.get("type", "int"))
            if nb:
                return ("fp" if kind.startswith("float") else "int") + str(int(nb))
    if method == "fbgemm_fp8":
        return "fp8"
    return method or None


def _quant_sidecar(path: Path | None) -> tuple[str | None, str | None]:
    """Read hf_quant_config.json (NVIDIA ModelOpt) next to *path*: ``X.config.json`` -> ``X.hf_quant_config.json``."""
    if path is None or not path.name.endswith("config.json"):
        return None, None
    sidecar = path.with_name(path.name[: -len("config.json")] + "hf_quant_config.json")
    if not sidecar.is_file():
        return None, None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelConfigError(str(sidecar), f"cannot read the quantization config: {err}") from err
    q = data.get("quantization") or {}
    algo = q.get("quant_algo")
    kv = q.get("kv_cache_quant_algo")
    return (str(algo).lower() if algo else None), (str(kv).lower() if kv else None)


def _identity(cfg: Mapping[str, Any], path: Path | None) -> tuple[str, str]:
    """(hf_id, display name) from ``_name_or_path``, an ``ORG--MODEL.config.json`` file name or the folder."""
    name_or_path = str(cfg.get("_name_or_path") or "")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name_or_path):
        return name_or_path, name_or_path.split("/")[1]
    if path is not None:
        stem = path.name[: -len(".config.json")] if path.name.endswith(".config.json") else ""
        if "--" in stem:
            org, _, model = stem.partition("--")
            return f"{org}/{model}", model
        if stem:
            return "", stem
        if path.parent.name:
            return "", path.parent.name
    if name_or_path:
        return "", Path(name_or_path.rstrip("/")).name
    return "", str(cfg.get("model_type") or "model")


def _mamba2_params(r: _Reader, d: int) -> int:
    """One Mamba-2 mixer (Dao & Gu 2024, https://arxiv.org/abs/2405.21060; HF ``modeling_nemotron_h.py``):
    in_proj d x (2·d_inner + 2·groups·d_state + heads), depthwise conv over d_inner + 2·groups·d_state
    channels (kernel + bias), dt_bias, A_log and D per head, a gated RMSNorm over d_inner, out_proj d_inner x d."""
    heads = r.int("mamba_num_heads", "mamba_num_heads", "ssm_num_heads")
    head_dim = r.int("mamba_head_dim", "mamba_head_dim", default=0)
    d_inner = heads * head_dim if head_dim else r.int("expand", "expand", default=2) * d
    groups = r.int("n_groups", "n_groups", default=1)
    d_state = r.int("ssm_state_size", "ssm_state_size", "d_state")
    kernel = r.int("conv_kernel", "conv_kernel", "d_conv", default=4)
    proj_bias = bool(r.raw("mamba_proj_bias", "use_bias", default=False))
    conv_bias = bool(r.raw("use_conv_bias", default=True))
    conv_dim = d_inner + 2 * groups * d_state
    in_proj = d * (2 * d_inner + 2 * groups * d_state + heads) + (
        (2 * d_inner + 2 * groups * d_state + heads) if proj_bias else 0
    )
    conv = conv_dim * kernel + (conv_dim if conv_bias else 0)
    out_proj = d_inner * d + (d if proj_bias else 0)
    return in_proj + conv + 3 * heads + d_inner + out_proj


@dataclass
class _Notes:
    """What parsing found worth saying: warnings, and the features the config has that flopwise does not model."""

    warnings: list[str] = field(default_factory=list)
    unmodelled: list[str] = field(default_factory=list)

    def unmodel(self, feature: str, message: str) -> None:
        self.unmodelled.append(feature)
        self.warnings.append(message)


def _attention_heads(
    r: _Reader, top: Mapping[str, Any], kinds: set[str], d: int, n_heads: int, where: str
) -> tuple[int, int]:
    """(n_kv_heads, head_dim): grouped/multi-query attention in each family's spelling (Falcon, MPT, GQA)."""
    is_falcon = bool(kinds & _FALCON)
    mpt_attn: Mapping[str, Any] = top["attn_config"] if isinstance(top.get("attn_config"), Mapping) else {}
    if _falcon_new(r, kinds):
        n_kv = r.int("n_kv_heads", "num_kv_heads", "n_head_kv", default=n_heads)
    elif is_falcon:
        n_kv = 1 if r.raw("multi_query", default=True) else n_heads
    elif r.raw("multi_query") is True:
        n_kv = 1
    elif mpt_attn.get("kv_n_heads"):
        n_kv = int(mpt_attn["kv_n_heads"])
    else:
        n_kv = r.int("n_kv_heads", default=n_heads)
    if n_kv == 0 or n_heads % n_kv:
        raise ModelConfigError(where, f"field 'n_kv_heads' is {n_kv}; it must divide n_heads ({n_heads})")
    return n_kv, r.int("head_dim", default=d // n_heads)


def _falcon_new(r: _Reader, kinds: set[str]) -> bool:
    return bool(kinds & _FALCON) and bool(r.raw("new_decoder_architecture") or "refinedweb" in kinds)


def _ffn(r: _Reader, kinds: set[str], d: int) -> tuple[int, str]:
    """(d_ff, ffn_kind): the FFN width in each family's spelling, and gated or plain MLP."""
    if "mpt" in kinds:
        d_ff = int(r.raw("expansion_ratio", default=4) * d)
    elif kinds & {"gpt2", "gpt_bigcode", "bloom", "gpt_neo"}:
        d_ff = r.int("d_ff", "n_inner", "intermediate_size", default=4 * d)
    elif kinds & _FALCON:
        d_ff = r.int("d_ff", "ffn_hidden_size", default=4 * d)
    elif kinds & {"llama4", "llama4_text"}:
        d_ff = r.int("d_ff", "intermediate_size_mlp", "intermediate_size")
    else:
        d_ff = r.int("d_ff")
    return d_ff, "mlp" if kinds & _PLAIN else "gated"


def _layout(r: _Reader, kinds: set[str], d: int, notes: _Notes) -> dict[str, Any]:
    """Embeddings, norms and biases: tied embeddings, learned positions, norm kind and count, bias flags."""
    is_falcon = bool(kinds & _FALCON)
    tied_raw = r.raw("tie_word_embeddings")
    tied = bool(tied_raw) if tied_raw is not None else bool(kinds & _TIED_BY_DEFAULT)
    learned_positions = 0
    if kinds & {"gpt2", "gpt_bigcode", "gpt_neo"}:
        learned_positions = r.int("max_context", "n_positions", "max_position_embeddings")
    elif "opt" in kinds:
        learned_positions = r.int("max_context", "max_position_embeddings") + 2  # HF OPT offset of 2
        proj = r.int("word_embed_proj_dim", "word_embed_proj_dim", default=d)
        if proj != d:
            notes.warnings.append(
                f"OPT word_embed_proj_dim {proj} != hidden_size {d}: embeddings counted at hidden_size, "
                "the project_in/out matrices are not counted"
            )
    if "mpt" in kinds:
        norm_kind = "layernorm_nobias" if r.raw("no_bias", default=True) else "layernorm"
    elif kinds & _LAYERNORM:
        norm_kind = "layernorm"
    else:
        norm_kind = "rmsnorm"
    norms_per_layer = 2
    if kinds & _FOUR_NORMS:
        norms_per_layer = 4
    elif is_falcon and not _falcon_new(r, kinds) and r.raw("parallel_attn", default=True):
        norms_per_layer = 1
    if is_falcon:
        has_bias = bool(r.raw("bias", default=False))
    elif "mpt" in kinds:
        has_bias = not r.raw("no_bias", default=True)
    elif kinds & {"gpt_oss"}:
        has_bias = bool(r.raw("attention_bias", default=True))
    elif "opt" in kinds:
        has_bias = bool(r.raw("enable_bias", default=True))
    elif "gpt_neox" in kinds:
        has_bias = bool(r.raw("attention_bias", default=True))
    else:
        has_bias = bool(kinds & _BIASED)
    has_qkv_bias = False
    if not has_bias:
        has_qkv_bias = bool(kinds & {"qwen2", "qwen2_moe"}) or bool(
            r.raw("attention_bias", "add_qkv_bias", "qkv_bias", default=False)
        )
    return {
        "tied_embeddings": tied,
        "learned_positions": learned_positions,
        "norm_kind": norm_kind,
        "norms_per_layer": norms_per_layer,
        "has_bias": has_bias,
        "has_qkv_bias": has_qkv_bias,
        "qk_norm": bool(kinds & _QK_NORM)
        or (bool(r.raw("use_qk_norm")) and not kinds & {"llama4", "llama4_text"}),
    }


def _windows(r: _Reader, kinds: set[str], n_layers: int, head_dim: int) -> dict[str, Any]:
    """Sliding-window layers and the separate shape of global-attention layers (Gemma 3/4 style)."""
    window = r.int("sliding_window", "sliding_window", default=0)
    layer_types = r.raw("layer_types")
    n_sliding = 0
    if window:
        if isinstance(layer_types, list):
            n_sliding = sum(1 for t in layer_types if "sliding" in str(t))
        elif kinds & {"gemma2", "gemma3", "gemma3_text"}:
            pattern = r.int(
                "sliding_window_pattern", "sliding_window_pattern", default=6 if "gemma2" not in kinds else 2
            )
            n_sliding = n_layers - n_layers // pattern
        elif r.raw("use_sliding_window") is False:
            window = 0
        else:
            n_sliding = n_layers
    if not n_sliding:
        window = 0
    global_head_dim = r.int("global_head_dim", "global_head_dim", default=0)
    if global_head_dim == head_dim:
        global_head_dim = 0
    return {
        "sliding_window": window,
        "n_sliding_layers": n_sliding,
        "global_head_dim": global_head_dim,
        "n_global_kv_heads": r.int("n_global_kv_heads", "num_global_key_value_heads", default=0),
        "global_k_eq_v": bool(r.raw("attention_k_eq_v", default=False)),
    }


def _experts(r: _Reader, kinds: set[str], d: int, d_ff: int, notes: _Notes) -> dict[str, Any]:
    """Mixture-of-experts fields of ModelArch (empty for a dense model)."""
    n_experts = r.int("n_experts", default=0)
    if kinds & {"gemma4", "gemma4_text"} and not r.raw("enable_moe_block", default=bool(n_experts)):
        n_experts = 0
    moe: dict[str, Any] = {}
    if not n_experts:
        return moe
    moe["n_experts"] = n_experts
    moe["n_experts_active"] = r.int("n_experts_active")
    moe["d_ff_expert"] = r.int("d_ff_expert", default=r.int("d_ff", "intermediate_size", default=d_ff))
    shared = r.int("n_shared_experts", "n_shared_experts", "num_shared_experts", default=0)
    shared_width = r.int("d_ff_shared_expert", "shared_expert_intermediate_size", default=0)
    if kinds & {"llama4", "llama4_text"}:
        shared = 1
    if kinds & {"gemma4", "gemma4_text"}:
        shared, shared_width = 1, d_ff  # dense MLP beside the experts in every layer
    if shared_width and not shared:
        shared = 1
    moe["n_shared_experts"] = shared
    if shared_width and shared_width != moe["d_ff_expert"]:
        moe["d_ff_shared_expert"] = shared_width
    dense_only = r.raw("mlp_only_layers", default=[]) or []
    moe["n_dense_layers"] = r.int("n_dense_layers", "first_k_dense_replace", default=len(dense_only))
    moe["moe_layer_freq"] = (
        r.int(
            "moe_layer_freq",
            "interleave_moe_layer_step",
            "decoder_sparse_step",
            "moe_layer_freq",
            default=1,
        )
        or 1
    )
    if kinds & {"qwen2_moe"} and shared_width:
        notes.warnings.append("qwen2_moe shared-expert gate (d_model x 1 per layer) not counted")
    return moe


def _latent_attention(r: _Reader) -> dict[str, Any]:
    """Multi-head latent attention fields (DeepSeek-V2/V3 style), empty without ``kv_lora_rank``."""
    if r.raw("kv_lora_rank") is None:
        return {}
    nope = r.int("mla_qk_nope_head_dim", "qk_nope_head_dim")
    rope = r.int("mla_qk_rope_head_dim", "qk_rope_head_dim")
    return {
        "attention": "mla",
        "mla_q_lora_rank": r.int("mla_q_lora_rank", "q_lora_rank", default=0),
        "mla_kv_lora_rank": r.int("mla_kv_lora_rank", "kv_lora_rank"),
        "mla_qk_rope_head_dim": rope,
        "mla_qk_nope_head_dim": nope,
        "mla_v_head_dim": r.int("mla_v_head_dim", "v_head_dim"),
    }


def _hybrid_blocks(r: _Reader, d: int, n_layers: int, notes: _Notes) -> tuple[dict[str, Any], int, int]:
    """Hybrids (Nemotron-H): '*' attention, '-' MLP, 'M' Mamba-2, 'E' MoE in ``hybrid_override_pattern``.

    Returns (the ModelArch layer-count fields, the block count, the Mamba-2 parameters counted as extra); an
    empty dict when the config is not a hybrid."""
    pattern = r.raw("hybrid_override_pattern")
    if not isinstance(pattern, str) or not pattern:
        return {}, n_layers, 0
    n_attn, n_mlp, n_mamba, n_moe = (pattern.count(c) for c in "*-ME")
    if len(pattern) != n_layers:
        notes.warnings.append(f"hybrid_override_pattern has {len(pattern)} blocks but num_hidden_layers is {n_layers}")
        n_layers = len(pattern)
    notes.warnings.append(
        f"hybrid: only {n_attn} of {n_layers} blocks have attention and {n_mlp} an MLP; a KV-cache "
        "estimate must use ModelArch.attention_layer_count, not n_layers"
    )
    extra = 0
    if n_mamba:
        mamba = _mamba2_params(r, d)
        extra = n_mamba * mamba
        notes.unmodel(
            "Mamba-2 layers",
            f"{n_mamba} Mamba-2 layers are not modelled: their {n_mamba * mamba / 1e9:.2f}B parameters are "
            "counted (extra_active_params) but their state and FLOPs beyond 2 per parameter are not",
        )
    if n_moe:
        notes.unmodel("MoE blocks of a hybrid", f"{n_moe} MoE blocks ('E') of the hybrid pattern are not counted")
    if n_attn == 0 or n_mlp == 0:
        notes.warnings.append("hybrid without attention or MLP blocks: layer counts of 0 read as 'all layers'")
    return {"n_attention_layers": n_attn, "n_ffn_layers": n_mlp}, n_layers, extra


def _note_unmodelled(r: _Reader, top: Mapping[str, Any], kinds: set[str], windows: dict[str, Any], notes: _Notes) -> None:
    """Warn about what the config has that flopwise does not model (towers, MTP, sinks, chunked attention ...)."""
    if (
        isinstance(top.get("vision_config"), Mapping)
        or "conditionalgeneration" in str(top.get("architectures")).lower()
    ):
        notes.unmodel(
            "vision tower", "vision tower (vision_config) is not modelled: its parameters are not counted"
        )
    if isinstance(top.get("audio_config"), Mapping):
        notes.unmodel("audio tower", "audio tower (audio_config) is not modelled: its parameters are not counted")
    mtp = r.int("num_nextn_predict_layers", "num_nextn_predict_layers", "num_mtp_layers", default=0)
    if mtp:
        notes.unmodel(
            "multi-token prediction (MTP) layers",
            f"{mtp} multi-token prediction (MTP) layer(s) are not modelled and not counted",
        )
    if "gpt_oss" in kinds:
        notes.unmodel(
            "attention sinks",
            "attention sinks (one learned logit per head and layer) are counted but not "
            "modelled in FLOPs or memory (negligible)",
        )
    chunk = r.raw("attention_chunk_size")
    if chunk:
        notes.unmodel(
            "chunked local attention",
            f"chunked local attention ({chunk}-token chunks) is not modelled: KV cache and attention FLOPs are "
            "estimated as full attention on every layer",
        )
    if r.int("hidden_size_per_layer_input", "hidden_size_per_layer_input", default=0):
        notes.unmodel("per-layer input embeddings", "per-layer input embeddings (Gemma 3n/4 style) are not counted")
    if r.int("num_kv_shared_layers", "num_kv_shared_layers", default=0):
        notes.unmodel("KV sharing across layers", "KV-cache sharing across layers is not modelled")
    if windows["global_head_dim"] or windows["n_global_kv_heads"] or windows["global_k_eq_v"]:
        notes.warnings.append(
            "global-attention layers use their own head_dim / KV heads"
            + (" with K = V" if windows["global_k_eq_v"] else "")
            + ": counted in parameters; a KV-cache estimate using n_kv_heads x head_dim for every layer is approximate"
        )


def parse_hf_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> HfConfig:
    """Parse a Hugging Face ``config.json`` (a path, a folder holding one, or the loaded dict).

    Raises :class:`~flopwise.errors.ModelConfigError` when the file cannot be read or a required field is
    missing (the message names the field and its accepted spellings). Each part of the architecture is read by
    its own function: heads (:func:`_attention_heads`), FFN (:func:`_ffn`), embeddings/norms/biases
    (:func:`_layout`), sliding windows (:func:`_windows`), experts (:func:`_experts`), latent attention
    (:func:`_latent_attention`), hybrid blocks (:func:`_hybrid_blocks`) and unmodelled features
    (:func:`_note_unmodelled`).
    """
    top, where, path = _load(source)
    text_cfg = top.get("text_config") if isinstance(top.get("text_config"), Mapping) else None
    cfg: Mapping[str, Any] = text_cfg or top
    top_type = str(top.get("model_type") or "").lower()
    model_type = str(cfg.get("model_type") or top_type).lower()
    if top_type == "gemma3" and not text_cfg:
        model_type = "gemma3_text"
    r = _Reader(cfg, top, where, CLASS_DEFAULTS.get(model_type))
    kinds = {top_type, model_type}
    notes = _Notes()
    if not kinds & (_GATED | _PLAIN):
        notes.warnings.append(
            f"model_type {model_type or top_type or '(none)'!r} is not one flopwise knows; read as a "
            "Llama-style decoder (gated FFN, RMSNorm, no biases): check the parameter count"
        )

    d = r.int("d_model")
    n_layers = r.int("n_layers")
    n_heads = r.int("n_heads")
    vocab = r.int("vocab_size")
    for name, value in (("d_model", d), ("n_layers", n_layers), ("n_heads", n_heads), ("vocab_size", vocab)):
        if value < 1:
            raise ModelConfigError(where, f"field {name!r} is {value}; a model needs at least 1")
    n_kv, head_dim = _attention_heads(r, top, kinds, d, n_heads, where)
    d_ff, ffn_kind = _ffn(r, kinds, d)
    max_context = r.int("max_context", default=0)
    if max_context == 0:
        notes.warnings.append("no maximum context length in the config (ALiBi or unset); max_context is 0")
    layout = _layout(r, kinds, d, notes)
    extra_active = 2 * d if "bloom" in kinds else 0  # BLOOM's word_embeddings_layernorm
    windows = _windows(r, kinds, n_layers, head_dim)
    moe = _experts(r, kinds, d, d_ff, notes)
    mla = _latent_attention(r)
    if mla:
        head_dim = mla["mla_qk_nope_head_dim"] + mla["mla_qk_rope_head_dim"]
        n_kv = n_heads
    hybrid, n_layers, mamba_params = _hybrid_blocks(r, d, n_layers, notes)
    if hybrid:
        extra_active += mamba_params
        layout["norms_per_layer"] = 1  # one pre-norm per block
        head_dim = r.int("head_dim", "attention_head_dim", "head_dim", default=head_dim)
    _note_unmodelled(r, top, kinds, windows, notes)
    if r.defaulted:
        notes.warnings.append(
            "not in the config, so the transformers class default was used: "
            + ", ".join(f"{k}={v!r}" for k, v in sorted(r.defaulted.items()))
        )

    quantization = None
    if isinstance(top.get("quantization_config"), Mapping):
        quantization = _quant_from_config(top["quantization_config"])
    side_q, kv_q = _quant_sidecar(path)
    quantization = side_q or quantization

    hf_id, display = _identity(top, path)
    if windows["n_global_kv_heads"] == n_kv:
        windows["n_global_kv_heads"] = 0
    arch = ModelArch(
        id=normalize_model_name(display),
        name=display,
        family=model_type or top_type,
        hf_id=hf_id,
        n_layers=n_layers,
        d_model=d,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        d_ff=d_ff,
        vocab_size=vocab,
        max_context=max_context,
        ffn_kind=ffn_kind,
        has_attention_sinks="gpt_oss" in kinds,
        extra_active_params=extra_active,
        unmodelled=tuple(notes.unmodelled),
        source_url=where,
        basis="datasheet",
        note=f"parsed from {Path(where).name} (model_type {model_type or top_type!r})",
        **layout,
        **windows,
        **moe,
        **mla,
        **hybrid,
    )
    return HfConfig(
        arch=arch,
        warnings=tuple(notes.warnings),
        quantization=quantization,
        kv_cache_quantization=kv_q,
        model_type=model_type or top_type,
    )


def _looks_like_path(name: str) -> bool:
    """A .json name, an existing file, or a folder holding a config.json (registry names are neither)."""
    if name.lower().endswith(".json") or os.path.isfile(name):
        return True
    return os.path.isdir(name) and os.path.isfile(os.path.join(name, "config.json"))


def resolve_model(
    name_or_path: str, registry: ModelRegistry | None = None
) -> tuple[ModelArch, tuple[str, ...]]:
    """A model from a path to a ``config.json`` (or its folder) or a registry name, with warnings.

    A path gives the parsed architecture and the parser's warnings (plus the checkpoint's quantization,
    if any); a name gives the registry entry and one warning per feature it lists as not modelled.
    """
    if _looks_like_path(name_or_path):
        parsed = parse_hf_config(name_or_path)
        warnings = list(parsed.warnings)
        if parsed.quantization:
            warnings.append(
                f"checkpoint is pre-quantized ({parsed.quantization}); pass the matching quant option"
            )
        return parsed.arch, tuple(warnings)
    if registry is None:
        registry = load_models()
    arch = registry.resolve(name_or_path)
    return arch, tuple(f"{arch.name}: not modelled: {feature}" for feature in arch.unmodelled)
