"""`flopwise plan serve|train|fleet|size`: search the catalog for the cheapest, fastest or greenest way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from flopwise.cli._common import (
    EXIT_INFEASIBLE,
    EXIT_OK,
    CalibrateFlag,
    CatalogDir,
    DatabaseUrlOpt,
    JsonFlag,
    fmt_num,
    handle_errors,
    print_json,
    stderr_console,
    stdout_console,
)

app = typer.Typer(
    help="Search the whole catalog for the cheapest, fastest or greenest deployment.", no_args_is_help=True
)

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Registry name or path to a Hugging Face config.json.")
]
PricingOpt = Annotated[
    list[str] | None,
    typer.Option(help="Price bases to consider, repeatable: on-demand, spot, reserved, onprem."),
]
ProvidersOpt = Annotated[
    list[str] | None, typer.Option("--providers", help="Only these providers (repeatable).")
]
RegionsOpt = Annotated[list[str] | None, typer.Option("--regions", help="Only these regions (repeatable).")]
TopOpt = Annotated[int, typer.Option("--top", help="How many options to show.")]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Price with the catalog as it was on this date (YYYY-MM-DD): the newest refreshed snapshot "
        "on or before it.",
        show_default=False,
    ),
]


def _as_of(value: str | None):
    """The --as-of date, or None. A malformed date is bad input naming the field."""
    if value is None:
        return None
    from datetime import date

    from flopwise.errors import InputError

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError("--as-of", value, "write a date as YYYY-MM-DD, e.g. 2026-03-15") from None


def _split(values: Sequence[str] | None) -> list[str] | None:
    """Accept both repeated flags and comma-separated lists."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


_LEFT = (
    "device",
    "quant",
    "pricing",
    "provider",
    "region",
    "why",
    "parallelism",
    "option",
    "where",
    "plan",
    "change",
    "what",
    "caveat",
)


def _table(
    title: str, rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]], caption: str | None = None
) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for _, label in columns:
        t.add_column(
            label,
            justify="left" if label in _LEFT else "right",
            no_wrap=label not in _LEFT or label == "device",
            overflow="fold",
        )
    for row in rows:
        t.add_row(*[_cell(row.get(key)) for key, _ in columns])
    stdout_console().print(t)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return fmt_num(value)


def _stale_caption(data: dict[str, Any]) -> str | None:
    """The stale-data sentence of a plan's assumptions, shown under its table."""
    note = ((data.get("assumptions") or {}).get("data_age") or {}).get("stale")
    return f"[yellow]{note}[/yellow]" if note else None


def _messages(data: dict[str, Any]) -> None:
    err = stderr_console()
    for w in data.get("warnings", []) or []:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    summary = data.get("summary")
    if isinstance(summary, str) and summary:
        err.print(summary + "\n", highlight=False, soft_wrap=True)


SERVE_COLUMNS = (
    ("rank", "#"),
    ("option", "option"),
    ("where", "where"),
    ("cost_per_hour_usd", "$/h"),
    ("cost_per_1m_tokens_usd", "$/1M tok"),
    ("latency", "TTFT/TPOT p95 ms"),
    ("utilization", "util"),
    ("co2e_per_1m_tokens_kg", "kgCO2e/1M"),
)


def _where(o: dict[str, Any]) -> str:
    provider, pricing = o.get("provider"), o.get("pricing")
    return str(pricing) if provider == pricing else f"{provider} {pricing}"


def _serve_row(o: dict[str, Any]) -> dict[str, Any]:
    """One compact row per option: what runs, where, and what it costs."""
    replicas = o.get("replicas", 1)
    option = (
        f"{replicas} x {o.get('tensor_parallel', 1)} {o.get('device')} {o.get('quant')} b{o.get('batch')}"
    )
    if o.get("engine") not in (None, "generic"):
        option += f" {o['engine']}" + (f" kv {o['kv_dtype']}" if o.get("kv_dtype") == "fp8" else "")
    where = _where(o)
    latency = f"{fmt_num(o.get('ttft_p95_ms'))} / {fmt_num(o.get('tpot_p95_ms'))}"
    return {**o, "option": option, "where": where, "latency": latency}


REJECT_COLUMNS = (
    ("device", "device"),
    ("count", "n"),
    ("quant", "quant"),
    ("pricing", "pricing"),
    ("reason", "why"),
)


@app.command("serve")
@handle_errors
def serve(
    model: ModelOpt,
    rps: Annotated[float, typer.Option(help="Requests per second to serve.")],
    input_tokens: Annotated[int, typer.Option(help="Prompt tokens per request.")] = 512,
    output_tokens: Annotated[int, typer.Option(help="Generated tokens per request.")] = 256,
    ttft_p95_ms: Annotated[float | None, typer.Option(help="SLO: time to first token, p95, ms.")] = None,
    tpot_p95_ms: Annotated[float | None, typer.Option(help="SLO: time per output token, p95, ms.")] = None,
    objective: Annotated[str, typer.Option(help="cost, energy, co2 or latency.")] = "cost",
    pricing: PricingOpt = None,
    providers: ProvidersOpt = None,
    regions: RegionsOpt = None,
    min_precision: Annotated[
        str, typer.Option(help="Lowest weight precision allowed: bf16, fp8, int8 or int4.")
    ] = "int4",
    max_devices: Annotated[int, typer.Option(help="Most devices per replica (tensor parallel).")] = 8,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Serving engines to search, comma-separated, or 'all': generic (default), llama.cpp, ollama, "
            "vllm, sglang, trt-llm, mlc, exllama (engines.csv in --catalog adds or overrides)."
        ),
    ] = None,
    owned: Annotated[
        list[str] | None,
        typer.Option(
            "--owned",
            help="A machine you already have, DEVICE[:N] (repeatable): ranked beside the rentals at its energy "
            "cost only (purchase sunk).",
        ),
    ] = None,
    top: TopOpt = 10,
    what_if: Annotated[
        bool, typer.Option("--what-if", help="Also price changes to the best option (quantize, spot, ...).")
    ] = False,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
    as_of: AsOfOpt = None,
) -> None:
    """Rank every device, count, quantization and price basis that serves the traffic within the SLO."""
    from flopwise.catalog import load_catalog
    from flopwise.models import load_models, resolve_model
    from flopwise.plan.candidates import ServeWorkload
    from flopwise.plan.serve import plan_serve

    arch, model_warnings = resolve_model(model, load_models())
    workload = ServeWorkload(
        model=arch,
        rps=rps,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        ttft_p95_ms=ttft_p95_ms,
        tpot_p95_ms=tpot_p95_ms,
    )
    catalog = load_catalog(catalog_dir, as_of=_as_of(as_of))
    from flopwise.api import owned_devices

    plan = plan_serve(
        workload,
        catalog,
        objective=objective,
        pricing=tuple(_split(pricing) or ("on-demand",)),
        providers=_split(providers),
        regions=_split(regions),
        min_precision=min_precision,
        max_devices=max_devices,
        top_k=top,
        engines=_split([engine] if engine else None),
        catalog_dir=catalog_dir,
        owned=owned_devices(owned, catalog),
    )
    data = plan.to_dict()
    data["warnings"] = [*model_warnings, *(data.get("warnings") or [])]
    if what_if and data["options"]:
        from flopwise.plan.whatif import what_ifs

        data["what_ifs"] = [w.to_dict() for w in what_ifs(data["options"][0], workload, catalog)]
    if json_out:
        print_json(data)
        raise typer.Exit(EXIT_OK if data["options"] else EXIT_INFEASIBLE)
    _messages(data)
    _table(
        f"plan serve {arch.id}: {rps:g} req/s, {input_tokens} in / {output_tokens} out, best by {objective}",
        [_serve_row(o) for o in data["options"]],
        SERVE_COLUMNS,
        caption=_stale_caption(data),
    )
    if data.get("rejected"):
        _table("strongest rejected alternatives", data["rejected"][:top], REJECT_COLUMNS)
    if not data["options"]:
        raise typer.Exit(EXIT_INFEASIBLE)
    if data.get("what_ifs"):
        rows = [
            {**w, "saving": "-" if w["saving_frac"] is None else f"{w['saving_frac']:+.0%}"}
            for w in data["what_ifs"]
        ]
        _table(
            "what if, for the best option (saving per hour; negative costs more)",
            rows,
            (
                ("name", "change"),
                ("description", "what"),
                ("saving_usd_per_h", "$/h saved"),
                ("saving", "saving"),
                ("caveat", "caveat"),
            ),
        )


TRAIN_COLUMNS = (
    ("option", "option"),
    ("where", "where"),
    ("wall_clock_hours", "hours"),
    ("cost_usd", "USD"),
    ("energy_kwh", "kWh"),
    ("co2e_kg", "kg CO2e"),
    ("ok", "deadline/budget"),
)


def _train_row(o: dict[str, Any]) -> dict[str, Any]:
    par = o.get("parallelism") or {}
    layout = " ".join(f"{k}{par[k]}" for k in ("tp", "pp", "dp") if k in par)
    if "zero_stage" in par:
        layout += f" zero{par['zero_stage']}"
    reasons = o.get("reasons") or []
    return {
        **o,
        "option": f"{o.get('count')} x {o.get('device')} {layout}".strip(),
        "where": _where(o),
        "ok": f"{fmt_num(o.get('meets_deadline'))}/{fmt_num(o.get('within_budget'))}",
        "reason": "; ".join(r.get("message", "") for r in reasons) if reasons else o.get("reason"),
    }


#: the option field each training objective ranks by
_OBJECTIVE_FIELD = {"cost": "cost_usd", "time": "wall_clock_hours", "energy": "energy_kwh", "co2": "co2e_kg"}


def _calibrate_options(
    options: list[dict[str, Any]], objective: str, method: str, database_url: str | None
) -> list[dict[str, Any]]:
    """Correct each option with its device's plan-vs-actual factors and re-rank by the corrected objective."""
    from decimal import Decimal

    from flopwise.api import apply_calibration, load_calibration, workload_kind

    factors = load_calibration(database_url)
    out = [apply_calibration(o, factors, o["device"], workload_kind(method)) for o in options]
    key = _OBJECTIVE_FIELD.get(objective, "cost_usd")

    def ranked(o: dict[str, Any]) -> Decimal:
        value = (o.get("calibrated") or {}).get(key, o.get(key))
        return Decimal(str(value)) if value is not None else Decimal("Infinity")

    return sorted(out, key=ranked)


@app.command("train")
@handle_errors
def train(
    model: ModelOpt,
    tokens: Annotated[str, typer.Option(help="Training tokens, e.g. 2T, 300B.")],
    method: Annotated[str, typer.Option(help="full, lora or qlora.")] = "full",
    deadline: Annotated[str | None, typer.Option(help="Wall-clock deadline, e.g. 30d, 72h.")] = None,
    budget_usd: Annotated[str | None, typer.Option(help="Budget in USD.")] = None,
    objective: Annotated[str, typer.Option(help="cost, time, energy or co2.")] = "cost",
    spot_ok: Annotated[
        bool, typer.Option("--spot-ok", help="Consider spot capacity (with preemption overhead).")
    ] = False,
    pricing: PricingOpt = None,
    providers: ProvidersOpt = None,
    regions: RegionsOpt = None,
    max_devices: Annotated[int, typer.Option(help="Most devices to consider.")] = 16384,
    top: TopOpt = 10,
    calibrate: CalibrateFlag = False,
    database_url: DatabaseUrlOpt = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
    as_of: AsOfOpt = None,
) -> None:
    """Device type, count and parallelism that fit, with time, cost, energy and CO2; cloud vs on-prem."""
    from decimal import Decimal, InvalidOperation

    from flopwise.catalog import load_catalog
    from flopwise.errors import InputError
    from flopwise.models import load_models, resolve_model
    from flopwise.plan.train import plan_train
    from flopwise.units import parse_count, parse_duration_s

    arch, model_warnings = resolve_model(model, load_models())
    n_tokens = parse_count(tokens, "--tokens", max_value=1e16)
    deadline_s = parse_duration_s(deadline, "--deadline", require_unit=True) if deadline else None
    budget = None
    if budget_usd is not None:
        try:
            budget = Decimal(budget_usd)
        except InvalidOperation:
            raise InputError("--budget-usd", budget_usd, "give an amount in USD such as 250000") from None
        if not budget.is_finite() or budget <= 0:
            raise InputError("--budget-usd", budget_usd, "must be a positive amount")
    kinds = _split(pricing)
    if spot_ok and kinds is not None and "spot" not in kinds:
        kinds.append("spot")
    plan = plan_train(
        arch,
        n_tokens,
        load_catalog(catalog_dir, as_of=_as_of(as_of)),
        method=method,
        deadline_s=deadline_s,
        budget_usd=budget,
        objective=objective,
        spot_ok=spot_ok,
        pricing=kinds,
        providers=_split(providers),
        regions=_split(regions),
        max_devices=max_devices,
    )
    data = plan.to_dict()
    data["warnings"] = [*model_warnings, *(data.get("warnings") or [])]
    if calibrate:
        data["options"] = _calibrate_options(data["options"], objective, method, database_url)
    if json_out:
        print_json(data)
        raise typer.Exit(EXIT_OK if data["options"] else EXIT_INFEASIBLE)
    _messages(data)
    _table(
        f"plan train {arch.id}: {n_tokens:.3g} tokens ({method}), best by {objective}",
        [_train_row(o) for o in data["options"][:top]],
        TRAIN_COLUMNS,
        caption=_stale_caption(data),
    )
    if data.get("rejected"):
        _table(
            "strongest rejected alternatives",
            [_train_row(o) for o in data["rejected"][:top]],
            (("option", "option"), ("where", "where"), ("reason", "why")),
        )
    if not data["options"]:
        raise typer.Exit(EXIT_INFEASIBLE)


@app.command("fleet")
@handle_errors
def fleet(
    spec_file: Annotated[
        Path,
        typer.Argument(
            help="Fleet YAML: services (model, rps, tokens, SLOs) and an optional on-prem inventory."
        ),
    ],
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Serving engines to search, comma-separated, or 'all': generic (default), llama.cpp, ollama, "
            "vllm, sglang, trt-llm, mlc, exllama (engines.csv in --catalog adds or overrides)."
        ),
    ] = None,
) -> None:
    """The cheapest mix of hardware for several services, solved as an integer program (HiGHS)."""
    import yaml

    from flopwise.catalog import load_catalog
    from flopwise.errors import InputError
    from flopwise.plan.fleet import parse_fleet_spec, plan_fleet

    try:
        raw = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError("FILE", str(spec_file), f"cannot read it ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise InputError(
            "FILE", str(spec_file), f"is not a text file (byte {err.start} is not UTF-8); give a fleet YAML"
        ) from None
    except yaml.YAMLError as err:
        raise InputError("FILE", str(spec_file), f"is not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise InputError("FILE", str(spec_file), "must be a YAML mapping with a 'services' list")
    plan = plan_fleet(
        parse_fleet_spec(raw), load_catalog(catalog_dir), engines=_split([engine] if engine else None), catalog_dir=catalog_dir
    )
    data = plan.to_dict()
    if json_out:
        print_json(data)
        raise typer.Exit(EXIT_OK if data.get("is_feasible", True) else EXIT_INFEASIBLE)
    if not data.get("is_feasible", True):
        stderr_console().print(
            f"[red]no feasible fleet:[/red] {data.get('reason')}", highlight=False, soft_wrap=True
        )
    _messages(data)
    hardware = [
        {
            **h,
            "what": f"{h['units']} x {h.get('instance_type') or h['device']} ({h['devices_per_unit']} x "
            f"{h['device']})",
            "where": _where(h),
        }
        for h in data.get("hardware") or []
    ]
    _table(
        "hardware mix",
        hardware,
        (
            ("what", "option"),
            ("where", "where"),
            ("cost_per_unit_hour_usd", "$/h each"),
            ("cost_per_hour_usd", "$/h"),
            ("cost_per_month_usd", "$/month"),
        ),
    )
    services = []
    for svc in data.get("services") or []:
        runs = "; ".join(
            f"{a['replicas']} x {a['devices'] // max(a['replicas'], 1)} {a['device']} {a['quant']} "
            f"({fmt_num(a['rps'])} req/s)"
            for a in svc.get("assignment", [])
        )
        services.append({**svc, "runs": runs or "-"})
    _table(
        "services",
        services,
        (
            ("name", "plan"),
            ("model", "what"),
            ("rps", "req/s"),
            ("runs", "option"),
            ("utilization_frac", "util"),
        ),
    )
    base = data.get("baseline") or {}
    out = stdout_console()
    out.print(
        f"total: ${fmt_num(data.get('cost_per_hour_usd'))}/h, ${fmt_num(data.get('cost_per_month_usd'))}/month",
        highlight=False,
    )
    if base:
        out.print(
            f"best single type: {base.get('units')} x {base.get('device')} ({_where(base)}) "
            f"${fmt_num(base.get('cost_per_hour_usd'))}/h; the mix saves "
            f"{(data.get('saving_frac') or 0):.1%} (${fmt_num(data.get('saving_usd_per_month'))}/month)",
            highlight=False,
        )
    if not data.get("is_feasible", True):
        raise typer.Exit(EXIT_INFEASIBLE)


@app.command("size")
@handle_errors
def size(
    budget_flops: Annotated[
        str | None, typer.Option(help="Training compute budget in FLOP, e.g. 5.76e23.")
    ] = None,
    budget_usd: Annotated[str | None, typer.Option(help="Training budget in USD (needs --device).")] = None,
    device: Annotated[str | None, typer.Option(help="Device that turns a USD budget into FLOPs.")] = None,
    inference_tokens: Annotated[str | None, typer.Option(help="Lifetime inference tokens, e.g. 2T.")] = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """Compute-optimal parameters and tokens (Hoffmann et al. 2022), inference-aware (Sardana et al. 2023)."""
    from decimal import Decimal, InvalidOperation

    from flopwise.errors import InputError
    from flopwise.plan.size import plan_size
    from flopwise.units import parse_count

    if (budget_flops is None) == (budget_usd is None):
        raise InputError("--budget-flops/--budget-usd", None, "give exactly one of them")
    kwargs: dict[str, Any] = {}
    if budget_flops is not None:
        kwargs["budget_flops"] = parse_count(budget_flops, "--budget-flops", max_value=1e32)
    else:
        if device is None:
            raise InputError("--device", None, "a USD budget needs --device to convert it to FLOPs")
        try:
            kwargs["budget_usd"] = Decimal(budget_usd)
        except InvalidOperation:
            raise InputError("--budget-usd", budget_usd, "give an amount in USD such as 1000000") from None
        from flopwise.catalog import load_catalog
        from flopwise.catalog.pricing import quote_price

        cat = load_catalog(catalog_dir)
        dev = cat.device(device)
        quote = quote_price(
            cat.offerings, cat.onprem.get(dev.id), dev.id, "on-demand", regions=dict(cat.regions)
        )
        kwargs.update(device=dev, usd_per_device_h=quote.usd_per_device_h)
    if inference_tokens is not None:
        kwargs["inference_tokens"] = parse_count(inference_tokens, "--inference-tokens", max_value=1e20)
    data = plan_size(**kwargs).to_dict()
    if json_out:
        print_json(data)
        return
    rows = [dict(v, name=k) for k, v in data.items() if isinstance(v, dict) and "params" in v]
    _table(
        "compute-optimal model size",
        rows,
        (
            ("name", "plan"),
            ("params", "parameters"),
            ("tokens", "tokens"),
            ("tokens_per_param", "tokens/param"),
            ("loss", "loss"),
            ("train_flops", "train FLOP"),
            ("total_flops", "total FLOP"),
        ),
    )
