"""Model architectures: the built-in registry, Hugging Face config parsing and parameter counting.

Stdlib only, so the CLI can import it without numpy::

    from flopwise.models import load_models, count_params, parse_hf_config, resolve_model
    arch = load_models().resolve("Llama 3.1 8B")
    count_params(arch).total                    # 8_030_261_248
    parse_hf_config("path/to/config.json").arch
"""

from __future__ import annotations

from flopwise.models.hf import SPELLINGS, HfConfig, parse_hf_config, resolve_model
from flopwise.models.params import ParamCount, count_params
from flopwise.models.registry import BUILTIN_MODELS_PATH, ModelRegistry, load_models, normalize_model_name
from flopwise.models.types import ModelArch

__all__ = [
    "BUILTIN_MODELS_PATH",
    "SPELLINGS",
    "HfConfig",
    "ModelArch",
    "ModelRegistry",
    "ParamCount",
    "count_params",
    "load_models",
    "normalize_model_name",
    "parse_hf_config",
    "resolve_model",
]
