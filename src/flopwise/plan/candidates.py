"""The search space of ``plan serve``: every way to run one replica of a model, from a loaded catalog.

A :class:`ServeCandidate` is one device type, a tensor-parallel degree, a quantization and one price basis
(a cloud offering with its pricing kind, or an on-prem purchase profile). Combinations that cannot work are not
dropped silently: :func:`enumerate_serve_space` returns them as :class:`SkippedCandidate` records with the reason,
so the planner can show them among the rejected alternatives.

Pure: takes a catalog object and records, returns frozen dataclasses; no file, network, environment or clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flopwise.catalog.cpu import offering_slice
from flopwise.catalog.types import Device, Offering, OnPremProfile, Region
from flopwise.errors import InputError, UnsupportedError
from flopwise.estimate.quant import get_quant, resolve_serving_quant
from flopwise.models.types import ModelArch
from flopwise.units import check_positive
from flopwise.vocab import PRICING_KINDS, pricing_kind

__all__ = [
    "MIN_PRECISIONS",
    "PRICING_KINDS",
    "PRECISION_QUANTS",
    "CandidateRows",
    "CandidateSpace",
    "ServeCandidate",
    "ServeWorkload",
    "SkippedCandidate",
    "enumerate_serve_candidates",
    "enumerate_serve_space",
    "quant_for_precision",
]

#: precisions from the most to the least precise; ``min_precision`` allows it and every one before it
MIN_PRECISIONS = ("bf16", "fp8", "int8", "int4")
#: the quantization format a precision level is served in, per device family. GPUs/TPUs/NPUs use the formats of
#: vLLM/TensorRT-LLM (W8A8 fp8/int8, AWQ 4-bit); CPUs and Apple/edge SoCs use llama.cpp's GGUF Q8_0 and Q4_K_M.
PRECISION_QUANTS = {
    "accelerator": {"bf16": "bf16", "fp8": "fp8", "int8": "int8", "int4": "int4-awq"},
    "cpu": {"bf16": "bf16", "fp8": "fp8", "int8": "q8_0", "int4": "q4_k_m"},
}
_TP_DEGREES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class ServeWorkload:
    """A service to plan: a model, its traffic (Poisson arrivals at ``rps`` requests/s) and its request shape,
    with optional p95 latency targets (``ttft_p95_ms``: time to first token; ``tpot_p95_ms``: time per output
    token after the first, per request)."""

    model: ModelArch
    rps: float
    input_tokens: int
    output_tokens: int
    ttft_p95_ms: float | None = None
    tpot_p95_ms: float | None = None

    def __post_init__(self) -> None:
        check_positive(self.rps, "rps", 1e7)
        for name in ("input_tokens", "output_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 10_000_000:
                raise InputError(name, value, "give a whole number of tokens from 1 to 10,000,000")
        for name in ("ttft_p95_ms", "tpot_p95_ms"):
            value = getattr(self, name)
            if value is not None:
                check_positive(value, name, 1e9)


@dataclass(frozen=True)
class ServeCandidate:
    """One way to run one replica: ``device_count`` x ``device`` in tensor parallel, weights in ``quant``, paid
    as ``pricing`` (on-demand | spot | reserved | onprem).

    Cloud candidates carry their ``offering`` and ``usd_per_device_h`` (instance price / devices per instance);
    on-prem candidates carry the ``onprem`` profile and ``usd_per_device_h=None`` (the hourly cost follows from
    the profile and the power drawn). ``region`` is the offering's region, or for on-prem the region the user
    named (None: the planner's default grid intensity).
    """

    device: Device
    device_count: int
    quant: str
    pricing: str
    provider: str
    region: Region | None
    offering: Offering | None
    onprem: OnPremProfile | None
    usd_per_device_h: Decimal | None
    engine: Any = "generic"  # serving engine: profile id or EngineProfile (flopwise.catalog.engines)
    kv_dtype: str | None = None  # KV-cache dtype; None = the engine's default for the quant

    @property
    def engine_id(self) -> str:
        return str(getattr(self.engine, "id", self.engine))

    @property
    def label(self) -> str:
        where = self.offering.instance_type if self.offering is not None else "on-prem"
        region = self.region.id if self.region is not None else "-"
        return (
            f"{self.device_count}x {self.device.id} {self.quant} {self.pricing} {where} {region}"
            + ("" if self.engine_id == "generic" else f" {self.engine_id}")
            + (f" kv {self.kv_dtype}" if self.kv_dtype else "")
        )


@dataclass(frozen=True)
class SkippedCandidate:
    """A device (or device x quant x TP x region) left out of the search, and why.

    ``kind`` is one of ``unsupported_quant``, ``no_interconnect``, ``not_sold_in_region``, ``no_price``,
    ``tp_does_not_divide_heads``, ``unsupported_engine``.
    """

    device_id: str
    device_count: int | None
    quant: str | None
    pricing: str | None
    kind: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device_id,
            "count": self.device_count,
            "tensor_parallel": self.device_count,
            "quant": self.quant,
            "pricing": self.pricing,
            "kind": self.kind,
            "reason": self.reason,
        }


class CandidateRows(Sequence):
    """Candidates as columns: row *i* is base candidate ``base[rows[i]]`` run as variant ``pair[i]``
    (``variants[pair[i]]`` = (quant, engine, KV dtype), the physics configuration ``configs[pair_config[pair[i]]]``
    = (device, quant, TP, engine, KV dtype)). The engine x KV dtype expansion of a space is one row per offering x
    engine x KV dtype; a :class:`ServeCandidate` is built only when a row is read, so the planner prices, filters
    and ranks hundreds of thousands of rows with numpy and builds objects for the few it returns."""

    __slots__ = ("base", "rows", "pair", "variants", "pair_config", "configs")
    base: tuple[ServeCandidate, ...]
    rows: Any
    pair: Any
    variants: tuple[tuple, ...]
    pair_config: Any
    configs: tuple[tuple, ...]

    def __init__(self, base, rows, pair, variants, pair_config, configs) -> None:
        self.base = tuple(base)
        self.rows = rows
        self.pair = pair
        self.variants = tuple(variants)
        self.pair_config = pair_config
        self.configs = tuple(configs)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        c = self.base[int(self.rows[i])]
        quant, engine, kv = self.variants[int(self.pair[i])]
        return ServeCandidate(
            c.device, c.device_count, quant, c.pricing, c.provider, c.region, c.offering, c.onprem,
            c.usd_per_device_h, engine, kv,
        )  # fmt: skip

    def __iter__(self):
        for i in range(len(self.rows)):
            yield self[i]


@dataclass(frozen=True)
class CandidateSpace:
    """The candidates to evaluate and the combinations skipped before evaluation (a tuple, or
    :class:`CandidateRows` after the engine expansion)."""

    candidates: Sequence[ServeCandidate]
    skipped: tuple[SkippedCandidate, ...]


def quant_for_precision(device: Device, precision: str) -> str:
    """The quantization format *precision* (one of MIN_PRECISIONS) is served in on *device* (PRECISION_QUANTS)."""
    family = "cpu" if device.kind in ("cpu", "soc") else "accelerator"
    return PRECISION_QUANTS[family][precision]


def _check_choices(values: Iterable[str], field: str, allowed: Sequence[str]) -> tuple[str, ...]:
    out = []
    for v in values:
        key = v.strip().lower() if isinstance(v, str) else v
        if key not in allowed:
            raise InputError(field, v, "use one of " + ", ".join(repr(a) for a in allowed))
        out.append(key)
    if not out:
        raise InputError(field, list(values), "give at least one of " + ", ".join(allowed))
    return tuple(dict.fromkeys(out))


def _tp_degrees(model: ModelArch, max_devices: int) -> tuple[int, ...]:
    return tuple(t for t in _TP_DEGREES if t <= max_devices)


def enumerate_serve_space(
    catalog: Any,
    model: ModelArch,
    *,
    pricing: Sequence[str] = ("on-demand",),
    providers: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    min_precision: str = "int4",
    max_devices: int = 8,
) -> CandidateSpace:
    """Every device x tensor-parallel degree x quantization x price basis in *catalog* for serving *model*.

    * Precisions: every one of MIN_PRECISIONS down to *min_precision*; fp8 only where the device has native fp8
      (an fp8 checkpoint elsewhere runs as W8A16, which int8 already covers).
    * Tensor parallel: powers of two up to *max_devices*, dividing the model's attention heads, within one cloud
      instance (TP does not span instances), and above 1 only on devices with an interconnect.
    * Prices: one candidate per offering that has a price of each requested kind; ``"onprem"`` gives one
      candidate per device with an on-prem profile (and per requested region, for its grid intensity).
    * *providers* keeps offerings of those providers (``"onprem"`` counts as a provider); *regions* (ids or names
      the catalog resolves) keeps offerings in those regions. A device sold only elsewhere is skipped with
      ``not_sold_in_region``.
    """
    kinds = _check_choices([pricing_kind(p) for p in pricing], "pricing", PRICING_KINDS)
    if min_precision not in MIN_PRECISIONS:
        raise InputError("min_precision", min_precision, "use one of " + ", ".join(MIN_PRECISIONS))
    if isinstance(max_devices, bool) or not isinstance(max_devices, int) or not 1 <= max_devices <= 64:
        raise InputError("max_devices", max_devices, "give a whole number of devices from 1 to 64")
    precisions = MIN_PRECISIONS[: MIN_PRECISIONS.index(min_precision) + 1]
    provider_set = None if providers is None else {p.strip().lower() for p in providers}
    if provider_set is not None and not provider_set:
        raise InputError("providers", list(providers or []), "give at least one provider, or leave it out")
    region_recs: tuple[Region, ...] | None = None
    if regions is not None:
        region_recs = tuple(dict.fromkeys(catalog.region(r) for r in regions))
        if not region_recs:
            raise InputError("regions", list(regions), "give at least one region, or leave it out")
    region_ids = None if region_recs is None else {r.id for r in region_recs}
    tps = _tp_degrees(model, max_devices)

    skipped: list[SkippedCandidate] = []
    out: list[ServeCandidate] = []
    # a CPU VM smaller than one socket is its own device: the cores its vCPUs hold (flopwise.catalog.cpu)
    groups: dict[str, tuple[Device, list[Offering]]] = {d.id: (d, []) for d in catalog.devices.values()}
    for o in catalog.offerings:
        whole = catalog.devices.get(o.device_id)
        if whole is None:
            continue
        part = offering_slice(whole, o)
        dev = whole if part is None else part.device
        groups.setdefault(dev.id, (dev, []))[1].append(o)

    for device_id in sorted(groups):
        device, sold = groups[device_id]
        # price bases for this device, before quant/TP expansion: (pricing, provider, region, offering, onprem, usd)
        bases: list[
            tuple[str, str, Region | None, Offering | None, OnPremProfile | None, Decimal | None]
        ] = []
        for kind in kinds:
            if kind == "onprem":
                profile = catalog.onprem.get(device.id)
                if profile is None:
                    continue
                if provider_set is not None and "onprem" not in provider_set:
                    continue
                for region in region_recs if region_recs else (None,):
                    bases.append(("onprem", "onprem", region, None, profile, None))
                continue
            in_scope = [
                o
                for o in sold
                if (provider_set is None or o.provider in provider_set)
                and (region_ids is None or o.region in region_ids)
            ]
            priced = [o for o in in_scope if _instance_price(o, kind) is not None]
            if sold and not in_scope and region_ids is not None:
                elsewhere = sorted(
                    {o.region for o in sold if provider_set is None or o.provider in provider_set}
                )
                if elsewhere:
                    skipped.append(
                        SkippedCandidate(
                            device.id,
                            None,
                            None,
                            kind,
                            "not_sold_in_region",
                            f"not sold in {', '.join(sorted(region_ids))}; offered in "
                            f"{', '.join(elsewhere[:6])}{' ...' if len(elsewhere) > 6 else ''}",
                        )
                    )
            elif in_scope and not priced:
                skipped.append(
                    SkippedCandidate(
                        device.id,
                        None,
                        None,
                        kind,
                        "no_price",
                        f"no {kind} price in the catalog for its offerings in scope",
                    )
                )
            for o in priced:
                usd = _instance_price(o, kind)
                assert usd is not None
                region = catalog.regions.get(o.region)
                bases.append((kind, o.provider, region, o, None, (usd / o.device_count)))
        if not bases:
            continue

        quants: list[str] = []
        for precision in precisions:
            quant = quant_for_precision(device, precision)
            if quant in quants:
                continue
            q = get_quant(quant)
            if (
                precision == "fp8"
                and q.native_dtype is not None
                and not device.peak_tflop_per_s(q.native_dtype)
            ):
                skipped.append(
                    SkippedCandidate(
                        device.id,
                        None,
                        quant,
                        None,
                        "unsupported_quant",
                        f"{device.id} has no native fp8; an fp8 checkpoint would run weight-only "
                        "(the int8 candidates cover that)",
                    )
                )
                continue
            try:
                resolve_serving_quant(q, device)
            except UnsupportedError as err:
                skipped.append(SkippedCandidate(device.id, None, quant, None, "unsupported_quant", str(err)))
                continue
            quants.append(quant)

        for tp in tps:
            if tp > 1 and device.interconnect_gb_per_s <= 0:
                skipped.append(
                    SkippedCandidate(
                        device.id,
                        tp,
                        None,
                        None,
                        "no_interconnect",
                        f"{device.id} has no interconnect in the catalog; tensor parallel over {tp} devices "
                        "is not modelled",
                    )
                )
                break
            if model.n_heads % tp or (
                model.attention != "mla" and model.n_kv_heads % tp and tp % model.n_kv_heads
            ):
                skipped.append(
                    SkippedCandidate(
                        device.id,
                        tp,
                        None,
                        None,
                        "tp_does_not_divide_heads",
                        f"tensor parallel {tp} does not divide {model.id}'s {model.n_heads} attention heads "
                        f"/ {model.n_kv_heads} KV heads",
                    )
                )
                continue
            for kind, provider, region, offering, profile, usd in bases:
                if offering is not None and tp > offering.device_count:
                    continue
                for quant in quants:
                    out.append(
                        ServeCandidate(device, tp, quant, kind, provider, region, offering, profile, usd)
                    )
    return CandidateSpace(tuple(out), tuple(skipped))


def enumerate_serve_candidates(
    catalog: Any,
    model: ModelArch,
    *,
    pricing: Sequence[str] = ("on-demand",),
    providers: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    min_precision: str = "int4",
    max_devices: int = 8,
) -> list[ServeCandidate]:
    """The candidates of :func:`enumerate_serve_space` (its ``skipped`` records say what was left out and why)."""
    space = enumerate_serve_space(
        catalog,
        model,
        pricing=pricing,
        providers=providers,
        regions=regions,
        min_precision=min_precision,
        max_devices=max_devices,
    )
    return list(space.candidates)


def _instance_price(offering: Offering, kind: str) -> Decimal | None:
    return {
        "on-demand": offering.on_demand_usd_per_h,
        "spot": offering.spot_usd_per_h,
        "reserved": offering.reserved_usd_per_h,
    }[kind]
