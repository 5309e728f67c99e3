"""The built-in model registry (``data/models.toml``) and forgiving name resolution.

``load_models()`` reads the TOML file once (cached) into a :class:`ModelRegistry`. ``resolve`` accepts a
registry id, a display name, a Hugging Face id (with or without the organisation) or an alias, written
with any case, spaces, dashes or underscores: "meta-llama/Llama-3.1-8B", "Llama 3.1 8B", "llama-3.1-8b"
and "Meta-Llama-3.1-8B" all give the same model. Instruction-tuned variants ("...-Instruct", "-it",
"-chat", "-hf", "-base") resolve to their base architecture. Unknown names raise
:class:`~flopwise.errors.UnknownModelError` with close matches.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flopwise.errors import CatalogFileError, UnknownModelError, suggest
from flopwise.models.types import ModelArch

__all__ = ["BUILTIN_MODELS_PATH", "ModelRegistry", "load_models", "normalize_model_name"]

BUILTIN_MODELS_PATH = Path(__file__).parent / "data" / "models.toml"

_FIELDS = {f.name: f for f in dataclasses.fields(ModelArch)}
_REQUIRED = [f.name for f in dataclasses.fields(ModelArch) if f.default is dataclasses.MISSING]
_ENUMS = {
    "ffn_kind": ("gated", "mlp"),
    "attention": ("gqa", "mla"),
    "norm_kind": ("rmsnorm", "layernorm", "layernorm_nobias"),
    "active_published_basis": ("all", "no_input_embedding", "no_embedding"),
    "basis": ("datasheet", "measured", "derived"),
}
_VARIANT_SUFFIXES = ("instruct", "it", "chat", "hf", "base", "pt")


def normalize_model_name(name: str) -> str:
    """Canonical lookup key: lowercase, separators (space, ``_``, ``-``) unified to ``-``, a ``-`` at every
    letter-to-digit boundary ("llama3.1" -> "llama-3.1"); dots kept so "1.3b" and "13b" differ."""
    text = name.strip().lower()
    text = re.sub(r"[\s_\-]+", "-", text)
    text = re.sub(r"(?<=[a-z])(?=\d)", "-", text)
    text = re.sub(r"-+", "-", text)
    return text.strip("-")


def _compact(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key)


def _strip_org(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _strip_variant(key: str) -> str:
    parts = key.split("-")
    while len(parts) > 1 and parts[-1] in _VARIANT_SUFFIXES:
        parts.pop()
    return "-".join(parts)


class ModelRegistry:
    """Registry models by id, with forgiving lookup."""

    def __init__(self, models: Mapping[str, ModelArch]) -> None:
        self.models: Mapping[str, ModelArch] = MappingProxyType(dict(models))
        self._keys: dict[str, str] = {}
        compact: dict[str, set[str]] = {}
        for arch in self.models.values():
            for name in (arch.id, arch.name, arch.hf_id, _strip_org(arch.hf_id), *arch.aliases):
                if not name:
                    continue
                for key in {normalize_model_name(name), normalize_model_name(_strip_org(name))}:
                    self._keys.setdefault(key, arch.id)
                    compact.setdefault(_compact(key), set()).add(arch.id)
        # a compact key ("llama318b") is used only when it names exactly one model ("gpt313b" does not)
        self._compact = {k: next(iter(v)) for k, v in compact.items() if len(v) == 1}

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self) -> Iterator[ModelArch]:
        return iter(self.models.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def _find(self, name: str) -> str | None:
        for candidate in (name, _strip_org(name)):
            key = normalize_model_name(candidate)
            for k in (key, _strip_variant(key)):
                if k in self._keys:
                    return self._keys[k]
                if _compact(k) in self._compact:
                    return self._compact[_compact(k)]
        return None

    def resolve(self, name: str) -> ModelArch:
        """The model *name* refers to (id, display name, HF id, alias; case and punctuation forgiven)."""
        found = self._find(name)
        if found is None:
            choices = [a.id for a in self.models.values()] + [a.name for a in self.models.values()]
            raise UnknownModelError(
                name, suggest(name, choices) or suggest(normalize_model_name(name), choices)
            )
        return self.models[found]

    def get(self, name: str) -> ModelArch | None:
        found = self._find(name)
        return None if found is None else self.models[found]


def _build(row: dict[str, Any], path: str, index: int) -> ModelArch:
    where = f"model #{index + 1} ({row.get('id', '?')!r})"
    for key in row:
        if key not in _FIELDS:
            raise CatalogFileError(
                path, None, key, f"{where}: unknown key; accepted keys are ModelArch fields"
            )
    for key in _REQUIRED:
        if key not in row:
            raise CatalogFileError(path, None, key, f"{where}: missing required key")
    values: dict[str, Any] = {}
    for key, value in row.items():
        default = _FIELDS[key].default
        if isinstance(value, list):
            value = tuple(str(v) for v in value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif key in ("params_published", "active_params_published", "extra_params") and isinstance(
            value, float
        ):
            value = int(value)
        values[key] = value
    for key, accepted in _ENUMS.items():
        if key in values and values[key] not in accepted:
            raise CatalogFileError(path, None, key, f"{where}: {values[key]!r} is not one of {accepted}")
    for key in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab_size"):
        if not isinstance(values[key], int) or values[key] <= 0:
            raise CatalogFileError(path, None, key, f"{where}: {values[key]!r} must be a positive integer")
    arch = ModelArch(**values)
    if arch.is_moe and not (0 < arch.n_experts_active <= arch.n_experts and arch.d_ff_expert > 0):
        raise CatalogFileError(
            path,
            None,
            "n_experts_active",
            f"{where}: MoE needs 0 < n_experts_active <= n_experts and d_ff_expert",
        )
    if arch.n_sliding_layers > arch.n_layers:
        raise CatalogFileError(path, None, "n_sliding_layers", f"{where}: more sliding layers than layers")
    return arch


def _read(path: Path) -> ModelRegistry:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise CatalogFileError(str(path), None, None, f"not valid TOML: {err}") from err
    rows = data.get("model")
    if not isinstance(rows, list):
        raise CatalogFileError(str(path), None, "model", "expected one or more [[model]] tables")
    models: dict[str, ModelArch] = {}
    for i, row in enumerate(rows):
        arch = _build(row, str(path), i)
        if arch.id in models:
            raise CatalogFileError(str(path), None, "id", f"duplicate model id {arch.id!r}")
        models[arch.id] = arch
    return ModelRegistry(models)


@functools.lru_cache(maxsize=1)
def _builtin() -> ModelRegistry:
    return _read(BUILTIN_MODELS_PATH)


def load_models(path: str | Path | None = None) -> ModelRegistry:
    """The built-in registry (cached), or the registry in the TOML file *path* (same schema)."""
    if path is None:
        return _builtin()
    return _read(Path(path))
