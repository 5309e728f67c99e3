"""Serving-engine profiles as data: what differs between llama.cpp, Ollama, vLLM, SGLang, TensorRT-LLM, MLC LLM,
ExLlamaV2 and a generic default, each row with its source (``data/engines.csv``).

A user directory given as ``catalog_dir`` may hold an ``engines.csv`` with the same header; a row whose ``id``
equals a built-in one replaces it, new ids add (as catalog rows do). Columns:

* ``device_kinds``, ``vendors``: where the engine runs (``|``-separated; ``*`` = any vendor).
* ``weight_formats``: quantizations it loads (``gguf`` = every llama.cpp GGUF type; ``*`` = any).
* ``kv_dtypes``: KV-cache element types (``*`` = any); the first is the default.
* ``multi_device``: ``tensor`` (tensor parallel: every device works on every layer) or ``layer`` (layers split
  across devices that work one at a time: llama.cpp ``--split-mode layer``, ExLlamaV2 ``gpu_split``).
* ``bandwidth_efficiency_frac``, ``compute_efficiency_frac``, ``layer_overhead_s``: decode bandwidth share,
  prefill/compute-bound share of the dense peak and fixed seconds per layer per step; empty = the device-kind
  default of ``flopwise.estimate.timing`` (fitted to llama.cpp). ``fp16_accumulate``: fp16 GEMMs accumulate in
  fp16 (llama.cpp).
* ``memory_utilization_frac`` with ``memory_basis``: ``total`` = the engine uses that share of all device memory
  (vLLM ``gpu_memory_utilization``); ``free`` = that share of what is left after weights and activations
  (TensorRT-LLM ``free_gpu_memory_fraction``). ``runtime_reserve_gib``: CUDA context, graphs and workspaces.
  Empty = the device-kind defaults of ``flopwise.estimate.memory``.
* ``default_max_seqs``, ``max_seqs_limit``: default and most concurrent sequences (the planner searches batch
  caps up to the limit and to what memory holds). ``kv_block_tokens``: paging block (KV is allocated in whole
  blocks per sequence). ``prefill_chunk_tokens``: tokens per prefill step (chunked prefill / ubatch).
* ``mixed_prefill``: ``yes`` = new prompts are prefilled inside the same steps as the running decode batch
  (vLLM V1 chunked prefill, https://docs.vllm.ai/en/latest/configuration/optimization.html#chunked-prefill;
  TensorRT-LLM in-flight batching of context and generation requests; llama-server's continuous batching adds
  prompt tokens to the decode batch); ``no`` = a prefill runs as its own step and stalls every running decode
  (SGLang without ``--enable-mixed-chunk``, vLLM v0.6 without ``--enable-chunked-prefill``). Decides how queued
  prefills slow the time per output token under load (``flopwise.estimate.serve.online_decode``).

Which engine runs on which device is more than its kind and vendor: CUDA compute capability (vLLM needs 7.0 or
higher), the GPU architectures an engine is built for (TensorRT-LLM, current SGLang: Ampere and later) and the
CPU of the host (an Arm host for AWS G5g's T4G). ``data/engine_devices.csv`` holds those per device, each row
with its source: ``runs`` = ``no`` names a device the engine does not run on and the ``reason`` the planner
reports; ``yes`` records a checked combination and never widens ``device_kinds``/``vendors`` (those are
checked first). A ``catalog_dir`` may hold an ``engine_devices.csv`` with the same header; its rows replace
built-in ones with the same (engine, device_id). A device with no engine left still has its offerings priced;
it is just never planned for serving with an engine that does not run on it.

An engine's compute efficiency can differ by GPU vendor, i.e. by kernel backend (vLLM on CUDA against vLLM on
ROCm): ``data/engine_backends.csv`` holds one row per (engine, vendor) with its own ``compute_efficiency_frac``,
each fitted and sourced; a vendor without a row takes the engine's ``compute_efficiency_frac`` of
``engines.csv``. A ``catalog_dir`` may hold an ``engine_backends.csv`` with the same header; its rows replace
built-in ones with the same (engine, vendor).

The profile is built so that later terms (a power model per engine, CPU thread scaling) are new columns with
empty = not modelled, read the same way. Pure data and validation; the file reading is in ``read_engines``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from flopwise.catalog.loader import BUILTIN_DATA_DIR, _read_rows, _Row
from flopwise.errors import CatalogFileError, InputError, UnsupportedError, suggest

__all__ = [
    "ENGINE_COLUMNS",
    "ENGINE_BACKEND_COLUMNS",
    "ENGINE_DEVICE_COLUMNS",
    "EngineProfile",
    "check_engine_supports",
    "get_engine",
    "load_engines",
    "read_engine_backends",
    "read_engine_devices",
    "read_engines",
]

ENGINE_COLUMNS = (
    "id",
    "aliases",
    "name",
    "family",
    "device_kinds",
    "vendors",
    "weight_formats",
    "kv_dtypes",
    "multi_device",
    "bandwidth_efficiency_frac",
    "compute_efficiency_frac",
    "layer_overhead_s",
    "fp16_accumulate",
    "memory_utilization_frac",
    "memory_basis",
    "runtime_reserve_gib",
    "default_max_seqs",
    "max_seqs_limit",
    "kv_block_tokens",
    "prefill_chunk_tokens",
    "mixed_prefill",
    "source_url",
    "retrieved",
    "basis",
    "note",
)
ENGINE_DEVICE_COLUMNS = ("engine", "device_id", "runs", "reason", "source_url", "retrieved", "basis", "note")
ENGINE_BACKEND_COLUMNS = (
    "engine",
    "vendor",
    "compute_efficiency_frac",
    "source_url",
    "retrieved",
    "basis",
    "note",
)
#: GGUF weight types (llama.cpp family)
GGUF_FORMATS = ("q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0", "q3_k_m", "q2_k")
_DEVICE_KINDS = ("gpu", "tpu", "npu", "soc", "cpu")
_MULTI = ("tensor", "layer")
_BASES = ("total", "free")


@dataclass(frozen=True)
class EngineProfile:
    """One serving engine (a row of ``engines.csv``); see the module docstring for the fields."""

    id: str
    aliases: tuple[str, ...]
    name: str
    family: str
    device_kinds: tuple[str, ...]
    vendors: tuple[str, ...]
    weight_formats: tuple[str, ...]
    kv_dtypes: tuple[str, ...]
    multi_device: str
    bandwidth_efficiency_frac: float | None
    compute_efficiency_frac: float | None
    layer_overhead_s: float | None
    fp16_accumulate: bool
    memory_utilization_frac: float | None
    memory_basis: str
    runtime_reserve_gib: float | None
    default_max_seqs: int
    max_seqs_limit: int
    kv_block_tokens: int
    prefill_chunk_tokens: int
    mixed_prefill: bool = False
    provenance: dict = field(default_factory=dict)
    #: device id -> why the engine does not run there (``engine_devices.csv`` rows with runs = no)
    unsupported_devices: dict = field(default_factory=dict)
    #: device vendor (lower case) -> compute efficiency on that vendor's GPUs (``engine_backends.csv``); a vendor
    #: not in it takes ``compute_efficiency_frac``
    compute_efficiency_by_vendor: dict = field(default_factory=dict)

    def compute_efficiency_for(self, vendor: str) -> float | None:
        """The compute efficiency on *vendor*'s devices: its ``engine_backends.csv`` value, else the engine's."""
        if self.compute_efficiency_by_vendor:
            return self.compute_efficiency_by_vendor.get(vendor.lower(), self.compute_efficiency_frac)
        return self.compute_efficiency_frac

    def with_compute_efficiency(self, value: float) -> EngineProfile:
        """This profile with *value* as its compute efficiency on every vendor (the per-vendor values dropped):
        what the efficiency fits evaluate."""
        return replace(self, compute_efficiency_frac=value, compute_efficiency_by_vendor={})

    def runs_format(self, quant: str) -> bool:
        return "*" in self.weight_formats or quant in self.weight_formats

    def runs_kv(self, kv_dtype: str) -> bool:
        return "*" in self.kv_dtypes or kv_dtype in self.kv_dtypes

    def default_kv_dtype(self, compute_kv: str) -> str:
        """The KV dtype used when none is given: the model's compute dtype where the engine caches it, else the
        engine's first."""
        return compute_kv if self.runs_kv(compute_kv) else self.kv_dtypes[0]


def _split(row: _Row, column: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    items = tuple(p.strip().lower() for p in row.text(column).split("|") if p.strip())
    if allowed is not None:
        for item in items:
            if item != "*" and item not in allowed:
                raise row.fail(column, f"{item!r} is not one of {', '.join(allowed)}")
    return items


def _yes_no(row: _Row, column: str) -> bool:
    value = row.text(column).lower()
    if value not in ("yes", "no"):
        raise row.fail(column, f"{value!r} is not yes or no")
    return value == "yes"


def _engine_from_row(row: _Row) -> EngineProfile:
    from flopwise.estimate.quant import KV_DTYPE_BYTES, QUANT_FORMATS

    engine_id = row.text("id").lower()
    formats: list[str] = []
    for item in _split(row, "weight_formats", (*QUANT_FORMATS, "gguf")):
        formats.extend(GGUF_FORMATS if item == "gguf" else (item,))
    multi = row.text("multi_device")
    if multi not in _MULTI:
        raise row.fail("multi_device", f"{multi!r} is not one of {', '.join(_MULTI)}")
    basis = row.text("memory_basis")
    if basis not in _BASES:
        raise row.fail("memory_basis", f"{basis!r} is not one of {', '.join(_BASES)}")
    acc = row.text("fp16_accumulate").lower()
    if acc not in ("yes", "no"):
        raise row.fail("fp16_accumulate", f"{acc!r} is not yes or no")
    kv = _split(row, "kv_dtypes", tuple(KV_DTYPE_BYTES))
    default_seqs = row.integer("default_max_seqs", 1, 1_000_000)
    limit = row.integer("max_seqs_limit", 1, 1_000_000)
    if limit < default_seqs:
        raise row.fail("max_seqs_limit", f"{limit} is below default_max_seqs {default_seqs}")
    return EngineProfile(
        id=engine_id,
        aliases=tuple(a.lower() for a in row.aliases()),
        name=row.text("name"),
        family=row.text("family").lower(),
        device_kinds=_split(row, "device_kinds", _DEVICE_KINDS),
        vendors=_split(row, "vendors"),
        weight_formats=tuple(formats),
        kv_dtypes=kv,
        multi_device=multi,
        bandwidth_efficiency_frac=row.number(
            "bandwidth_efficiency_frac", 0.0, 1.0, required=False, lo_open=True
        ),
        compute_efficiency_frac=row.number("compute_efficiency_frac", 0.0, 1.0, required=False, lo_open=True),
        layer_overhead_s=row.number("layer_overhead_s", 0.0, 0.01, required=False),
        fp16_accumulate=acc == "yes",
        memory_utilization_frac=row.number("memory_utilization_frac", 0.0, 1.0, lo_open=True, required=False),
        memory_basis=basis,
        runtime_reserve_gib=row.number("runtime_reserve_gib", 0.0, 64.0, required=False),
        default_max_seqs=default_seqs,
        max_seqs_limit=limit,
        kv_block_tokens=row.integer("kv_block_tokens", 1, 65536),
        prefill_chunk_tokens=row.integer("prefill_chunk_tokens", 1, 1_048_576),
        mixed_prefill=_yes_no(row, "mixed_prefill"),
        provenance=row.provenance(),
    )


def read_engines(path: str | os.PathLike[str]) -> dict[str, EngineProfile]:
    """The engine profiles of one ``engines.csv`` by id. Raises CatalogFileError naming the line and field."""
    out: dict[str, EngineProfile] = {}
    for row in _read_rows(Path(path), ENGINE_COLUMNS):
        engine = _engine_from_row(row)
        if engine.id in out:
            raise row.fail("id", f"{engine.id!r} appears twice; ids must be unique")
        out[engine.id] = engine
    return out


#: (engine id, device id) -> (runs, reason, file, line)
EngineDeviceRules = dict[tuple[str, str], tuple[bool, str, str, int]]


def read_engine_devices(path: str | os.PathLike[str]) -> EngineDeviceRules:
    """The rows of one ``engine_devices.csv`` by (engine, device_id). Raises CatalogFileError naming the line and
    field (a repeated pair, a ``runs`` other than yes/no, a ``no`` without its reason)."""
    out: EngineDeviceRules = {}
    for row in _read_rows(Path(path), ENGINE_DEVICE_COLUMNS):
        key = (row.text("engine").lower(), row.text("device_id").lower())
        if not key[0]:
            raise row.fail("engine", "is empty; give an engine id of engines.csv")
        if not key[1]:
            raise row.fail("device_id", "is empty; give a device id of devices/*.csv")
        runs = _yes_no(row, "runs")
        reason = row.text("reason", required=False)
        if not runs and not reason:
            raise row.fail("reason", "is empty; say why the engine does not run on the device")
        if key in out:
            raise row.fail("device_id", f"{key[0]!r} on {key[1]!r} appears twice; give each pair one row")
        row.provenance()  # source_url, retrieved, basis, note are checked as in every catalog file
        out[key] = (runs, reason, row.path, row.line)
    return out


#: (engine id, vendor) -> (compute efficiency, file, line)
EngineBackendRows = dict[tuple[str, str], tuple[float, str, int]]


def read_engine_backends(path: str | os.PathLike[str]) -> EngineBackendRows:
    """The rows of one ``engine_backends.csv`` by (engine, vendor). Raises CatalogFileError naming the line and
    field (an empty engine or vendor, an efficiency outside (0, 1], a repeated pair, a bad provenance)."""
    out: EngineBackendRows = {}
    for row in _read_rows(Path(path), ENGINE_BACKEND_COLUMNS):
        key = (row.text("engine").lower(), row.text("vendor").lower())
        if not key[0]:
            raise row.fail("engine", "is empty; give an engine id of engines.csv")
        if not key[1] or key[1] == "*":
            raise row.fail("vendor", "is empty; give one device vendor (nvidia, amd, ...)")
        value = row.number("compute_efficiency_frac", 0.0, 1.0, lo_open=True)
        assert value is not None  # required=True: an empty cell raised above
        if key in out:
            raise row.fail("vendor", f"{key[0]!r} on {key[1]!r} appears twice; give each pair one row")
        row.provenance()
        out[key] = (value, row.path, row.line)
    return out


def _unknown_engine(
    engine_id: str, engines: dict[str, EngineProfile], where: str, line: int
) -> CatalogFileError:
    """The error for a row of *where* (line *line*) naming an engine id that engines.csv does not have."""
    close = suggest(engine_id, sorted(engines))
    hint = f"did you mean {close[0]!r}? " if close else ""
    return CatalogFileError(
        where,
        line,
        "engine",
        f"{engine_id!r} is not an engine id; {hint}use one of {', '.join(sorted(engines))}",
    )


def _apply_backends(engines: dict[str, EngineProfile], rows: EngineBackendRows) -> dict[str, EngineProfile]:
    """*engines* with each profile's ``compute_efficiency_by_vendor`` filled from *rows*; a row for an engine that
    is not in *engines*, or for a vendor the engine does not run on, is a CatalogFileError naming its line."""
    by: dict[str, dict[str, float]] = {}
    for (engine_id, vendor), (value, where, line) in rows.items():
        if engine_id not in engines:
            raise _unknown_engine(engine_id, engines, where, line)
        vendors = engines[engine_id].vendors
        if "*" not in vendors and vendor not in vendors:
            raise CatalogFileError(
                where,
                line,
                "vendor",
                f"{engine_id!r} does not run on {vendor!r} devices; engines.csv gives it {', '.join(vendors)}",
            )
        by.setdefault(engine_id, {})[vendor] = value
    return {k: replace(e, compute_efficiency_by_vendor=by.get(k, {})) for k, e in engines.items()}


def _apply_device_rules(
    engines: dict[str, EngineProfile], rules: EngineDeviceRules
) -> dict[str, EngineProfile]:
    """*engines* with each profile's ``unsupported_devices`` filled from *rules*; a rule for an engine that is not
    in *engines* is a CatalogFileError naming its line."""
    no: dict[str, dict[str, str]] = {}
    for (engine_id, device_id), (runs, reason, where, line) in rules.items():
        if engine_id not in engines:
            raise _unknown_engine(engine_id, engines, where, line)
        if not runs:
            no.setdefault(engine_id, {})[device_id] = reason
    return {k: replace(e, unsupported_devices=no.get(k, {})) for k, e in engines.items()}


_BUILTIN: list[dict[str, EngineProfile]] = []
_BUILTIN_RULES: list[EngineDeviceRules] = []
_BUILTIN_BACKENDS: list[EngineBackendRows] = []


def load_engines(catalog_dir: str | os.PathLike[str] | None = None) -> dict[str, EngineProfile]:
    """Built-in profiles, replaced and extended by ``<catalog_dir>/engines.csv`` when that file exists, each with
    the devices it does not run on (built-in ``engine_devices.csv``, then ``<catalog_dir>/engine_devices.csv``) and
    its per-vendor compute efficiencies (built-in ``engine_backends.csv``, then ``<catalog_dir>/engine_backends.csv``;
    an engine replaced by ``<catalog_dir>/engines.csv`` keeps only the backend rows of ``<catalog_dir>``)."""
    if not _BUILTIN:
        _BUILTIN_RULES.append(read_engine_devices(BUILTIN_DATA_DIR / "engine_devices.csv"))
        _BUILTIN_BACKENDS.append(read_engine_backends(BUILTIN_DATA_DIR / "engine_backends.csv"))
        _BUILTIN.append(
            _apply_backends(
                _apply_device_rules(read_engines(BUILTIN_DATA_DIR / "engines.csv"), _BUILTIN_RULES[0]),
                _BUILTIN_BACKENDS[0],
            )
        )
    if catalog_dir is None:
        return dict(_BUILTIN[0])
    root = Path(catalog_dir)
    if not root.is_dir():
        raise CatalogFileError(str(catalog_dir), None, None, "is not a directory; check the path")
    user_engines, user_rules = root / "engines.csv", root / "engine_devices.csv"
    user_backends = root / "engine_backends.csv"
    if not user_engines.is_file() and not user_rules.is_file() and not user_backends.is_file():
        return dict(_BUILTIN[0])
    engines = dict(_BUILTIN[0])
    replaced: set[str] = set()
    if user_engines.is_file():
        user = read_engines(user_engines)
        replaced = set(user) & set(engines)
        engines.update(user)
    rules = dict(_BUILTIN_RULES[0])
    if user_rules.is_file():
        rules.update(read_engine_devices(user_rules))
    # a replaced engine's own compute_efficiency_frac holds on every vendor unless the user gives backend rows too
    backends = {k: v for k, v in _BUILTIN_BACKENDS[0].items() if k[0] not in replaced}
    if user_backends.is_file():
        backends.update(read_engine_backends(user_backends))
    return _apply_backends(_apply_device_rules(engines, rules), backends)


def get_engine(
    name: str | EngineProfile | None, engines: dict[str, EngineProfile] | None = None
) -> EngineProfile:
    """The profile called *name* (id or alias, case-insensitive; None = ``generic``). An unknown name is an
    InputError that suggests the closest."""
    if isinstance(name, EngineProfile):
        return name
    if engines is None:
        load_engines()  # fills the built-in cache
        pool = _BUILTIN[0]
    else:
        pool = engines
    key = "generic" if name is None else str(name).strip().lower()
    if key in pool:
        return pool[key]
    for engine in pool.values():
        if key in engine.aliases:
            return engine
    names = sorted(pool) + sorted(a for e in pool.values() for a in e.aliases)
    close = suggest(key, names)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InputError("engine", name, f"{hint}use one of {', '.join(sorted(pool))}")


def check_engine_supports(engine: EngineProfile, device, quant: str, kv_dtype: str | None = None) -> None:
    """Raise UnsupportedError when *engine* cannot run *quant* weights (or *kv_dtype*) on *device*, naming what
    the engine supports."""
    if device.kind not in engine.device_kinds:
        raise UnsupportedError(
            f"engine {engine.id!r} does not run on {device.kind} devices like {device.id!r}; it runs on "
            f"{', '.join(engine.device_kinds)}"
        )
    if "*" not in engine.vendors and device.vendor.lower() not in engine.vendors:
        raise UnsupportedError(
            f"engine {engine.id!r} does not run on {device.vendor} devices like {device.id!r}; it supports "
            f"{', '.join(engine.vendors)}"
        )
    reason = engine.unsupported_devices.get(device.id)
    if reason is not None:
        raise UnsupportedError(
            f"engine {engine.id!r} does not run on {device.id!r}: {reason} (engine_devices.csv)"
        )
    if not engine.runs_format(quant):
        raise UnsupportedError(
            f"engine {engine.id!r} cannot load {quant!r} weights; it supports {', '.join(engine.weight_formats)}"
        )
    if kv_dtype is not None and not engine.runs_kv(kv_dtype):
        raise UnsupportedError(
            f"engine {engine.id!r} has no {kv_dtype!r} KV cache; it supports {', '.join(engine.kv_dtypes)}"
        )
