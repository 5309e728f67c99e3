"""The Python API that the CLI (and later the server) calls: resolve names, pick a price and a grid, estimate.

This is the thin imperative layer over the pure estimator: it loads the catalog and the model registry,
turns forgiving names into records, chooses the price basis and the region, and hands numbers to
``flopwise.estimate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flopwise.catalog.types import Device, OnPremProfile, Region
from flopwise.models.types import ModelArch

if TYPE_CHECKING:  # annotations only: the estimator (numpy) loads when an estimate is made
    from flopwise.catalog.pricing import PriceQuote
    from flopwise.estimate.serve import ServeEstimate
    from flopwise.estimate.train import TrainEstimate

__all__ = [
    "ServeReport",
    "TrainReport",
    "apply_calibration",
    "estimate_serving",
    "estimate_training",
    "load_calibration",
    "workload_kind",
]

#: the grid used when neither a region nor an offering says where the work runs
DEFAULT_COUNTRY_REGION = "country:US"


@dataclass(frozen=True)
class _Context:
    model: ModelArch
    device: Device
    price: PriceQuote | None
    region: Region | None
    warnings: tuple[str, ...] = field(default=())
    region_basis: str = ""  # how the region was chosen: given, the offering's, or the default (named)
    cpu: dict[str, Any] | None = None  # how a CPU socket was cut to the threads asked for (assumptions)

    def data_age(self) -> dict[str, Any]:
        """How old the price and grid intensity behind this estimate are (see catalog.staleness)."""
        from flopwise.catalog.staleness import stale_days_setting, stale_note

        offering = self.price.offering if self.price is not None else None
        onprem = self.price.onprem if self.price is not None else None
        items = []
        if offering is not None:
            items.append((f"the {offering.id} price", offering.retrieved))
        elif onprem is not None:
            items.append((f"the on-prem {onprem.device_id} purchase price", onprem.retrieved))
        if self.region is not None:
            items.append((f"the {self.region.id} grid intensity", self.region.retrieved))
        days = stale_days_setting()
        return {
            "stale_days": days,
            "price_retrieved": items[0][1] if items and (offering or onprem) else None,
            "grid_retrieved": self.region.retrieved if self.region is not None else None,
            "stale": stale_note(items, stale_days=days),
        }

    def header(self) -> dict[str, Any]:
        pue_source = None
        if self.price is not None and self.price.onprem is not None:
            pue_source = f"on-prem profile {self.price.onprem.device_id}"
        elif self.region is not None:
            pue_source = (
                f"PUE {self.region.pue:g} of region {self.region.id} ({self.region_basis}; catalog regions.csv, "
                "whose note gives the PUE's source)"
            )
        return {
            "model": self.model.id,
            "device": self.device.id,
            "price": self.price.to_dict() if self.price else None,
            "region": self.region.id if self.region else None,
            "region_basis": self.region_basis or None,
            "grid_gco2e_per_kwh": self.region.grid_gco2e_per_kwh if self.region else None,
            "pue_source": pue_source,
        }

    def assumptions(self, body: dict[str, Any]) -> dict[str, Any]:
        extra = {"data_age": self.data_age()}
        if self.cpu is not None:
            extra["cpu"] = self.cpu
        return {**body.get("assumptions", {}), **extra}


@dataclass(frozen=True)
class TrainReport:
    """A training estimate with the records and price basis that produced it."""

    context: _Context
    estimate: TrainEstimate
    layout_note: str | None = None  # set when the parallel layout was chosen automatically
    count_note: str | None = None  # set when the device count was chosen automatically

    def to_dict(self) -> dict[str, Any]:
        body = self.estimate.to_dict()
        out = {**self.context.header(), "flops": body.get("train_flops"), **body}
        out["warnings"] = list(self.context.warnings) + list(body.get("warnings", []))
        if self.layout_note:
            out["assumptions"] = {**out.get("assumptions", {}), "layout": self.layout_note}
        out["assumptions"] = self.context.assumptions(out)
        if self.count_note:
            out["assumptions"] = {**out.get("assumptions", {}), "device_count_choice": self.count_note}
        return out


@dataclass(frozen=True)
class ServeReport:
    """A serving estimate with the records and price basis that produced it."""

    context: _Context
    estimate: ServeEstimate

    def to_dict(self) -> dict[str, Any]:
        body = self.estimate.to_dict()
        out = {**self.context.header(), **body}
        out["warnings"] = list(self.context.warnings) + list(body.get("warnings", []))
        out["assumptions"] = self.context.assumptions(out)
        return out


def _context(
    model: str | ModelArch,
    device: str | Device,
    pricing: str | None,
    region: str | None,
    provider: str | None,
    catalog_dir: str | None,
    threads: int | None = None,
    owned: bool = False,
) -> _Context:
    from flopwise.catalog import load_catalog
    from flopwise.catalog.pricing import quote_price
    from flopwise.errors import UnsupportedError
    from flopwise.models import load_models, resolve_model

    cat = load_catalog(catalog_dir)
    warnings: list[str] = []
    if isinstance(model, ModelArch):
        arch = model
    else:
        arch, model_warnings = resolve_model(model, load_models())
        warnings.extend(model_warnings)
    dev = device if isinstance(device, Device) else cat.device(device)
    provider = _known_provider(cat, provider)
    reg = cat.region(region) if region else None
    regions = dict(cat.regions)
    offerings = cat.offerings
    cpu = None
    need_vcpus = None
    if threads is not None:
        from flopwise.catalog.cpu import cpu_topology, slice_for_threads

        part = slice_for_threads(dev, threads)
        topo = cpu_topology(dev.id)
        assert topo is not None
        need_vcpus = part.cores * topo.cloud_vcpus_per_core
        # a cloud price is the price of a VM that holds the cores: the cheapest one with enough vCPUs
        cpu = {**part.assumptions(), "cloud_vcpus_needed": need_vcpus}
        warnings.extend(part.warnings)
        if threads > topo.cores:
            warnings.append(
                f"{threads} threads on {topo.cores} cores: {threads - topo.cores} run on SMT siblings, "
                "which add no matmul throughput"
            )
    quote = None
    kinds = [pricing] if pricing else ["on-demand", "onprem"]
    if owned:
        from flopwise.catalog.pricing import PriceQuote
        from flopwise.errors import InputError
        from flopwise.vocab import pricing_kind

        if pricing and pricing_kind(pricing) != "onprem":
            raise InputError(
                "owned",
                True,
                f"the machine you already have is priced at its energy, not {pricing}; drop --pricing",
            )
        quote = PriceQuote("onprem", None, None, owned_profile(cat.onprem.get(dev.id), dev.id), reg)
        kinds = []
    for kind in kinds:
        try:
            quote = quote_price(
                offerings,
                cat.onprem.get(dev.id),
                dev.id,
                kind,
                regions=regions,
                region_id=reg.id if reg else None,
                provider=provider,
                min_vcpus=need_vcpus,
            )
            break
        except UnsupportedError:
            if pricing:  # the user asked for this kind explicitly
                raise
    if quote is None:
        warnings.append(
            f"no price in the catalog for {dev.id!r}; cost is not estimated (pass --pricing and a "
            "--catalog with a price to get one)"
        )
    basis = "given" if reg is not None else ""
    if reg is None and quote is not None and quote.region is not None:
        reg = quote.region
        basis = "the offering's region"
    if reg is None:
        reg = regions.get(DEFAULT_COUNTRY_REGION)
        if reg is not None:
            basis = f"no region given: default {DEFAULT_COUNTRY_REGION}"
            warnings.append(
                f"no region given: grid intensity of {reg.id} ({reg.grid_gco2e_per_kwh:g} gCO2e/kWh) and its "
                f"PUE {reg.pue:g}"
            )
    if threads is not None:
        dev = part.device
    return _Context(arch, dev, quote, reg, tuple(warnings), region_basis=basis, cpu=cpu)


def _known_provider(cat: Any, provider: str | None) -> str | None:
    """*provider* as the catalog spells it; a misspelled provider is an error with suggestions, never a silent
    fall back to on-prem prices."""
    from flopwise.errors import InputError, suggest

    if provider is None:
        return None
    known = sorted({o.provider for o in cat.offerings})
    folded = {p.casefold(): p for p in known}
    if provider.strip().casefold() in folded:
        return folded[provider.strip().casefold()]
    close = suggest(provider, known)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise InputError("--provider", provider, f"{hint}known providers: {', '.join(known)}")


#: electricity for a machine you already own when the catalog has no on-prem profile for it: EIA 2024 US
#: residential average (as in onprem.csv), PUE 1.0 (no data-centre cooling at home or in an office)
OWNED_ELECTRICITY_USD_PER_KWH = "0.165"
OWNED_ELECTRICITY_SOURCE = "https://www.eia.gov/electricity/monthly/"


def owned_profile(profile: OnPremProfile | None, device_id: str) -> OnPremProfile:
    """ "The machine you already have": its on-prem profile with the purchase sunk (energy only), or, without a
    profile, energy at OWNED_ELECTRICITY_USD_PER_KWH and PUE 1.0."""
    from dataclasses import replace
    from decimal import Decimal

    if profile is not None:
        return replace(
            profile,
            purchase_usd=Decimal(0),
            server_overhead_frac=0.0,
            note="owned: purchase sunk, energy only; " + profile.note,
        )
    return OnPremProfile(
        device_id=device_id,
        purchase_usd=Decimal(0),
        server_overhead_frac=0.0,
        lifetime_years=1.0,
        electricity_usd_per_kwh=Decimal(OWNED_ELECTRICITY_USD_PER_KWH),
        pue=1.0,
        source_url=OWNED_ELECTRICITY_SOURCE,
        retrieved="2026-11-21",
        basis="derived",
        note="owned: purchase sunk, energy only at the EIA 2024 US residential average, PUE 1.0",
    )


def owned_devices(specs: Sequence[str] | None, catalog: Any) -> list[Any]:
    """``DEVICE[:N]`` strings (``plan serve --owned``) -> ``plan.serve.OwnedDevice`` records priced at their
    energy only (:func:`owned_profile`); a misspelled device is an error with suggestions."""
    from flopwise.errors import InputError
    from flopwise.plan.serve import OwnedDevice

    out: list[OwnedDevice] = []
    for spec in specs or ():
        name, sep, n = str(spec).strip().rpartition(":")
        if not sep:
            name, n = str(spec).strip(), "1"
        if not name:
            raise InputError("--owned", spec, "give DEVICE or DEVICE:N, e.g. core-i9-13900k or rtx-4090:2")
        try:
            count = int(n)
        except ValueError:
            raise InputError(
                "--owned", spec, "the count after ':' must be a whole number, e.g. rtx-4090:2"
            ) from None
        if not 1 <= count <= 64:
            raise InputError("--owned", spec, "give 1 to 64 owned devices")
        dev = catalog.device(name)
        if any(o.device.id == dev.id for o in out):
            raise InputError("--owned", spec, f"{dev.id} is given twice; give it once with its count")
        out.append(OwnedDevice(dev, count, owned_profile(catalog.onprem.get(dev.id), dev.id)))
    return out


def _price_kwargs(ctx: _Context) -> dict[str, Any]:
    q = ctx.price
    kwargs: dict[str, Any] = {}
    if q is not None:
        if q.onprem is not None:
            kwargs["onprem"] = q.onprem
        else:
            kwargs["price_usd_per_device_h"] = q.usd_per_device_h
    if ctx.region is not None:
        kwargs["grid_gco2e_per_kwh"] = ctx.region.grid_gco2e_per_kwh
        if q is None or q.onprem is None:
            kwargs["pue"] = ctx.region.pue
    return kwargs


def estimate_training(
    model: str | ModelArch,
    device: str | Device,
    *,
    tokens: float,
    device_count: int | None = None,
    pricing: str | None = None,
    region: str | None = None,
    provider: str | None = None,
    catalog_dir: str | None = None,
    threads: int | None = None,
    owned: bool = False,
    **options: Any,
) -> TrainReport:
    """Estimate a training or fine-tuning run of *model* on *device_count* x *device*.

    With *device_count* None the fewest devices (1, 2, 4, 8, 16, ... up to AUTO_MAX_DEVICES) on which some
    layout fits in memory are used, and ``assumptions['device_count_choice']`` says so. With no ZeRO stage and
    no tensor/pipeline parallelism given, the layout is chosen too (see ``_fastest_fitting_layout``).
    *options* go to :func:`flopwise.estimate.estimate_train` (precision, method, mfu_frac, seq_len, ...).
    """
    from flopwise.estimate import estimate_train

    ctx = _context(model, device, pricing, region, provider, catalog_dir, threads, owned)
    _check_heads_divisible(ctx.model, int(options.get("tensor_parallel") or 1), "--tp")
    kwargs = {**_price_kwargs(ctx), **options}
    auto_layout = (
        kwargs.get("zero_stage") is None
        and kwargs.get("tensor_parallel", 1) == 1
        and (kwargs.get("pipeline_parallel", 1) == 1)
    )
    if device_count is None:
        return _smallest_fitting_count(ctx, tokens, kwargs, auto_layout)
    if auto_layout:
        est, chosen = _fastest_fitting_layout(ctx, tokens, device_count, kwargs)
        return TrainReport(ctx, est, layout_note=chosen)
    est = estimate_train(ctx.model, ctx.device, tokens=tokens, device_count=device_count, **kwargs)
    return TrainReport(ctx, est)


#: tensor-parallel degrees tried when the caller leaves the layout open (within one 8-device node)
AUTO_TENSOR_PARALLEL = (1, 2, 4, 8)
#: recompute policies tried, fastest first, when the caller leaves recompute open: selective recomputation is the
#: Megatron-LM default (Korthikanti et al. 2022, arXiv:2205.05198); full recomputation is used only when nothing
#: with selective fits, and the answer says so
AUTO_RECOMPUTE = ("selective", "full")
#: largest device count tried when the caller gives none (powers of two from 1)
AUTO_MAX_DEVICES = 16384


def _smallest_fitting_count(
    ctx: _Context, tokens: float, kwargs: dict[str, Any], auto_layout: bool
) -> TrainReport:
    """The estimate on the fewest devices (powers of two) on which a layout fits; the largest tried when none."""
    from flopwise.estimate import estimate_train

    tp_pp = int(kwargs.get("tensor_parallel", 1)) * int(kwargs.get("pipeline_parallel", 1))
    count = 1
    while count < tp_pp:
        count *= 2
    if ctx.device.interconnect_gb_per_s <= 0:
        counts = [1]
    else:
        counts = []
        while count <= AUTO_MAX_DEVICES:
            counts.append(count)
            count *= 2
    preferred = kwargs.get("recompute") or AUTO_RECOMPUTE[0]
    report = first_fit = None
    for n in counts:
        if n % tp_pp:
            continue
        if auto_layout:
            est, note = _fastest_fitting_layout(ctx, tokens, n, kwargs)
        else:
            est = estimate_train(ctx.model, ctx.device, tokens=tokens, device_count=n, **kwargs)
            note = None
        report = (est, note, n)
        if bool(est.fits) and first_fit is None:
            first_fit = report
        if bool(est.fits) and est.assumptions["recompute"] == preferred:
            break
    else:  # nothing fits with the preferred recompute: the fewest devices with any fitting layout
        report = first_fit or report
    assert report is not None  # counts always holds 1 or a multiple of tp * pp
    est, note, n = report
    fits = bool(est.fits)
    choice = (
        f"no device count given: {n} x {ctx.device.id}, the fewest (powers of two) on which the model fits "
        f"with {est.assumptions['recompute']} recomputation; pass --count to choose"
        if fits
        else f"no device count given and nothing fits on up to {n} x {ctx.device.id}; the estimate is for {n}"
    )
    return TrainReport(ctx, est, layout_note=note, count_note=choice)


def _fastest_fitting_layout(
    ctx: _Context, tokens: float, device_count: int, kwargs: dict[str, Any]
) -> tuple[TrainEstimate, str]:
    """Try ZeRO stage 0-3 x tensor parallel 1-8 x recompute (AUTO_RECOMPUTE, or the one the caller gave) and keep
    the layout that fits in memory with the fewest device-hours (the estimator charges exposed communication and
    recompute FLOPs). When nothing fits, the layout with the least memory per device is returned (its estimate
    says it does not fit). A slower recompute than selective is named in the note, never chosen silently.
    """
    from flopwise.estimate import estimate_train

    given = kwargs.get("recompute")
    recomputes = (given,) if given is not None else AUTO_RECOMPUTE
    layouts = [
        (zero, tp, recompute)
        for tp in AUTO_TENSOR_PARALLEL
        if tp <= device_count
        and device_count % tp == 0
        and (tp == 1 or ctx.device.interconnect_gb_per_s > 0)
        and (not ctx.model.n_heads or ctx.model.n_heads % tp == 0)  # whole heads per device
        for recompute in recomputes
        for zero in (0, 1, 2, 3)
        if not (zero and device_count // tp == 1)
    ]
    rest = {
        k: v
        for k, v in kwargs.items()
        if k not in ("zero_stage", "tensor_parallel", "pipeline_parallel", "recompute")
    }
    if not layouts:
        from flopwise.errors import InputError

        raise InputError("device_count", device_count, "give a whole number of devices, 1 or more")
    best: tuple[TrainEstimate, tuple[int, int, str], int] | None = None
    smallest: tuple[TrainEstimate, tuple[int, int, str], int] | None = None
    for zero, tp, recompute in layouts:
        est = estimate_train(
            ctx.model,
            ctx.device,
            tokens=tokens,
            device_count=device_count,
            zero_stage=zero,
            tensor_parallel=tp,
            recompute=recompute,
            **rest,
        )
        rank = AUTO_RECOMPUTE.index(recompute) if recompute in AUTO_RECOMPUTE else 0
        if est.fits and (best is None or (rank, est.device_hours) < (best[2], best[0].device_hours)):
            best = (est, (zero, tp, recompute), rank)
        if smallest is None or est.memory.total_bytes < smallest[0].memory.total_bytes:
            smallest = (est, (zero, tp, recompute), rank)
    chosen = best or smallest
    assert chosen is not None  # tp = 1, zero = 0 is always a layout
    est, (zero, tp, recompute), _ = chosen
    verdict = "the fastest layout that fits" if best else "nothing fits; the layout with the least memory"
    note = (
        f"layout chosen automatically ({verdict}): ZeRO stage {zero}, tensor parallel {tp}, "
        f"recompute {recompute}; pass --zero-stage/--tp/--pp to fix it"
    )
    if given is None and recompute != AUTO_RECOMPUTE[0]:
        ratio = float(est.assumptions.get("recompute_time_ratio", 1.0))
        note += (
            f"; full recomputation because no layout with selective recomputation fits on {device_count} "
            f"devices (x{ratio:.2f} compute time); more devices would avoid it"
        )
    return est, note


def estimate_serving(
    model: str | ModelArch,
    device: str | Device,
    *,
    device_count: int = 1,
    pricing: str | None = None,
    region: str | None = None,
    provider: str | None = None,
    catalog_dir: str | None = None,
    threads: int | None = None,
    owned: bool = False,
    **options: Any,
) -> ServeReport:
    """Estimate serving *model* on *device_count* x *device*.

    *options* go to :func:`flopwise.estimate.estimate_serve` (quant, batch, input_tokens, output_tokens, engine,
    ...); ``engine`` is a name from the engine profiles (``catalog_dir``'s ``engines.csv`` included).
    """
    from flopwise.catalog.engines import get_engine, load_engines
    from flopwise.estimate import estimate_serve

    ctx = _context(model, device, pricing, region, provider, catalog_dir, threads, owned)
    _check_serving_shape(ctx.model, device_count, options)
    options = {**options, "engine": get_engine(options.get("engine"), load_engines(catalog_dir))}
    price = _price_kwargs(ctx)
    est = estimate_serve(ctx.model, ctx.device, device_count=device_count, **price, **options)
    batch = int(options.get("batch", 1))
    if not est.fits and batch > 1:
        _refuse_batch(ctx, device_count, batch, price, options)
    _check_engine_batch(options["engine"], batch)  # after memory: the tighter limit is named first
    return ServeReport(ctx, est)


def _check_serving_shape(arch: ModelArch, device_count: int, options: dict[str, Any]) -> None:
    """Refuse what an engine refuses: tensor parallelism that does not divide the attention heads (vLLM and
    TensorRT-LLM shard whole heads), and a prompt plus output longer than the model's context window."""
    from flopwise.errors import InputError

    _check_heads_divisible(arch, device_count, "--count")
    tokens = int(options.get("input_tokens", 512)) + int(options.get("output_tokens", 256))
    if arch.max_context and tokens > arch.max_context:
        raise InputError(
            "--input-tokens/--output-tokens",
            tokens,
            f"prompt + output exceed {arch.id}'s context window of {arch.max_context:,} tokens",
        )


def _check_heads_divisible(arch: ModelArch, tensor_parallel: int, field: str) -> None:
    """Tensor parallelism shards whole attention heads (Megatron-LM, vLLM, TensorRT-LLM): it must divide them."""
    from flopwise.errors import InputError

    if arch.n_heads and tensor_parallel > 1 and arch.n_heads % tensor_parallel:
        divisors = [d for d in (1, 2, 4, 8, 16, 32, 64) if arch.n_heads % d == 0]
        raise InputError(
            field,
            tensor_parallel,
            f"tensor parallelism must divide {arch.id}'s {arch.n_heads} attention heads; "
            f"use one of {', '.join(map(str, divisors))}",
        )


def _check_engine_batch(engine: Any, batch: Any) -> None:
    """A batch beyond the engine's concurrent-sequence limit is an error, not a warning beside a throughput no
    server of that engine delivers (the vectorized estimator only warns, for grids)."""
    from flopwise.errors import InputError

    limit = int(engine.max_seqs_limit)
    if int(batch) > limit:
        raise InputError(
            "--batch",
            batch,
            f"engine {engine.id!r} runs at most {limit} concurrent sequences; lower --batch to {limit} or less, "
            "or pick another --engine",
        )


def _refuse_batch(
    ctx: _Context, device_count: int, batch: int, price: dict[str, Any], options: dict[str, Any]
) -> None:
    """A batch that does not fit in memory is an error naming the largest batch that does (bisection over the
    same estimator), not a warning beside a cheaper cost per token that no server could deliver."""
    from flopwise.errors import InputError
    from flopwise.estimate import estimate_serve

    def fits(b: int) -> bool:
        opts = {**options, "batch": b}
        return estimate_serve(ctx.model, ctx.device, device_count=device_count, **price, **opts).fits

    if not fits(1):
        return  # nothing fits, whatever the batch: the estimate says so (fits: no) with what to change
    lo, hi = 1, batch  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    raise InputError(
        "--batch",
        batch,
        f"at most {lo} concurrent sequences of this length fit in {device_count} x {ctx.device.id} memory; "
        f"lower --batch to {lo} or less, or use --kv-dtype fp8, a smaller --quant or more devices",
    )


# --------------------------------------------------------------------------------------------- calibration
#: which estimate fields each calibrated metric corrects (actual / estimated, from metered usage)
CALIBRATED_FIELDS = {
    "device_hours": ("device_hours", "wall_clock_hours"),
    "cost_usd": ("cost_usd",),
    "energy_kwh": ("energy_kwh", "co2e_kg"),
    "power_w": ("power_per_device_w", "device_energy_kwh"),
}
#: serving: more device-hours than estimated means proportionally fewer tokens per second and dearer tokens
SERVE_CALIBRATED_FIELDS = {
    "device_hours": (
        ("decode_tokens_per_s", -1),
        ("prefill_tokens_per_s", -1),
        ("tpot_ms", 1),
        ("ttft_ms", 1),
    ),
    "cost_usd": (("cost_per_1m_tokens_usd", 1),),
    "energy_kwh": (("energy_per_1m_tokens_kwh", 1), ("co2e_per_1m_tokens_kg", 1)),
    "power_w": (("power_per_device_w", 1), ("device_energy_per_1m_tokens_kwh", 1)),
}


def workload_kind(method_or_workload: str) -> str:
    """The ledger's workload kind of an estimate: full training 'train', LoRA/QLoRA 'fine-tune', else the
    canonical spelling of the workload kind given (``flopwise.vocab``)."""
    from flopwise.vocab import workload_kind as canonical_workload

    methods = {"full": "train", "lora": "fine-tune", "qlora": "fine-tune"}
    if method_or_workload in methods:
        return methods[method_or_workload]
    return canonical_workload(method_or_workload)


def load_calibration(database_url: str | None = None) -> dict[str, dict[tuple[str, str], float]]:
    """Correction factors per metric and (device, workload kind) from the store's plan-vs-actual samples
    (``meter.calibration.calibration_factors``: shrunk medians of actual / estimated)."""
    from flopwise.meter.calibration import calibration_factors, load_calibration_points
    from flopwise.store import make_engine, make_session_factory, read_session, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with read_session(make_session_factory(engine)) as session:
            points = load_calibration_points(session)
    finally:
        engine.dispose()
    return {metric: calibration_factors(points, metric=metric) for metric in CALIBRATED_FIELDS}


def apply_calibration(
    data: dict[str, Any],
    factors: dict[str, dict[tuple[str, str], float]],
    device_id: str,
    kind: str,
) -> dict[str, Any]:
    """*data* (an estimate's or a plan option's dict) with a ``calibrated`` block: the fields each metric corrects,
    times that metric's factor for (device, kind). The raw estimate stays as it was; no factor, no block."""
    from decimal import Decimal

    from flopwise import money

    used = {m: f[(device_id, kind)] for m, f in factors.items() if (device_id, kind) in f}
    if not used:
        return data
    block: dict[str, Any] = {"factors": used, "device": device_id, "workload_kind": kind}
    is_serve = "decode_tokens_per_s" in data
    for metric, factor in used.items():
        fields = SERVE_CALIBRATED_FIELDS[metric] if is_serve else ((f, 1) for f in CALIBRATED_FIELDS[metric])
        for field_name, power in fields:
            value = data.get(field_name)
            if value is None:
                continue
            scale = factor**power
            if isinstance(value, str):  # money as a decimal string
                block[field_name] = str(money.quantize(Decimal(value) * Decimal(repr(scale))))
            elif isinstance(value, (int, float)):
                block[field_name] = value * scale
    return {**data, "calibrated": block}
