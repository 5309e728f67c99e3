"""`flopwise estimate train|serve`: the physics of one workload on one kind of hardware."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flopwise.cli._common import (
    EXIT_INFEASIBLE,
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
    help="Estimate memory, FLOPs, time, energy, CO2 and cost of training or serving.", no_args_is_help=True
)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Registry name (e.g. 'llama-3.1-8b') or path to a Hugging Face config.json."
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", "-d", help="Device name, e.g. h100-sxm, 'RTX 4090', 'M2 Max'.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(help="CPU threads (llama.cpp -t): uses that many cores of a CPU device; CPUs only."),
]
OwnedOpt = Annotated[
    bool,
    typer.Option(
        "--owned",
        help="The machine you already have: price its energy only (purchase sunk; on-prem profile or the "
        "EIA US residential average).",
    ),
]
PricingOpt = Annotated[
    str | None,
    typer.Option(
        help="on-demand, spot, reserved or onprem (default: the cheapest on-demand offering, else on-prem)."
    ),
]
RegionOpt = Annotated[
    str | None, typer.Option(help="Cloud region or country (grid carbon intensity and PUE).")
]
ProviderOpt = Annotated[
    str | None, typer.Option(help="Only offerings of this provider (aws, gcp, lambda, ...).")
]

TRAIN_ROWS = (
    ("flops", "training compute (FLOP)"),
    ("device_hours", "device-hours"),
    ("wall_clock_hours", "wall-clock hours"),
    ("mfu_frac", "model FLOPs utilization (whole run)"),
    ("steady_state_tokens_per_s_per_device", "steady-state tokens/s per device"),
    ("steady_state_tflop_per_s_per_device", "steady-state model TFLOP/s per device"),
    ("steady_state_mfu_frac", "steady-state MFU"),
    ("goodput_frac", "goodput (steady-state time / whole run)"),
    ("memory_per_device_gb", "memory per device (GB)"),
    ("fits", "fits in device memory"),
    ("power_per_device_w", "power per device (W)"),
    ("energy_kwh", "energy (kWh, facility: device + host, x PUE)"),
    ("device_energy_kwh", "  device (GPU) energy (kWh)"),
    ("node_energy_kwh", "  node energy (kWh, device + host)"),
    ("facility_energy_kwh", "  facility energy (kWh, node x PUE)"),
    ("co2e_kg", "emissions (kg CO2e)"),
    ("cost_usd", "cost (USD)"),
)
SERVE_ROWS = (
    ("memory_gb", "memory per device (GB)"),
    ("fits", "fits in device memory"),
    ("ttft_ms", "time to first token (ms)"),
    ("tpot_ms", "time per output token (ms)"),
    ("arrival_rps", "  under load: requests/s admitted"),
    ("running_batch", "  under load: mean running batch"),
    ("online_ttft_ms", "  under load: prefill + step in progress (ms)"),
    ("is_saturated", "  under load: saturated (requests queue)"),
    ("decode_tokens_per_s", "decode tokens/s (whole batch)"),
    ("prefill_tokens_per_s", "prefill tokens/s"),
    ("output_tokens_per_s", "output tokens/s (prefill included)"),
    ("max_batch", "most concurrent sequences (engine and memory)"),
    ("saturation_tokens_per_s", "output tokens/s at that batch"),
    ("power_per_device_w", "power per device (W)"),
    ("energy_per_1m_tokens_kwh", "energy per 1M tokens (kWh, facility: device + host, x PUE)"),
    ("device_energy_per_1m_tokens_kwh", "  device (GPU) energy per 1M tokens (kWh)"),
    ("node_energy_per_1m_tokens_kwh", "  node energy per 1M tokens (kWh, device + host)"),
    ("facility_energy_per_1m_tokens_kwh", "  facility energy per 1M tokens (kWh, node x PUE)"),
    ("co2e_per_1m_tokens_kg", "kg CO2e per 1M tokens"),
    ("cost_per_hour_usd", "cost per hour (USD)"),
    ("cost_per_1m_tokens_usd", "cost per 1M tokens (USD)"),
)


def _calibrated(data: dict[str, Any], calibrate: bool, database_url: str | None, kind: str) -> dict[str, Any]:
    if not calibrate:
        return data
    from flopwise.api import apply_calibration, load_calibration, workload_kind

    factors = load_calibration(database_url)
    out = apply_calibration(data, factors, data["device"], workload_kind(kind))
    if "calibrated" not in out:
        out.setdefault("warnings", []).append(
            f"no plan-vs-actual calibration yet for {data['device']} / {workload_kind(kind)}; the estimate is "
            "uncorrected"
        )
    return out


def _emit(data: dict[str, Any], json_out: bool, title: str, rows: tuple[tuple[str, str], ...]) -> None:
    """One JSON object for machines, or the tables for people; exit 4 (nothing feasible) when the workload does
    not fit in device memory, in both modes (the output says by how much and what to change)."""
    if json_out:
        print_json(data)
    else:
        _render(title, data, rows)
    if data.get("fits") is False:
        raise typer.Exit(EXIT_INFEASIBLE)


def _render(title: str, data: dict[str, Any], rows: tuple[tuple[str, str], ...]) -> None:
    from rich.table import Table

    err = stderr_console()
    for w in data.get("warnings", []):
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    out = stdout_console()
    out.print(f"[bold]{title}[/bold]", highlight=False)
    t = Table(show_header=False)
    t.add_column("result")
    t.add_column("value", justify="right")
    for key, label in rows:
        if key in data:
            t.add_row(label, fmt_num(data[key]))
    out.print(t)
    calibrated = data.get("calibrated") or {}
    if calibrated:
        c = Table(
            title="calibrated with metered usage (plan vs actual)", title_justify="left", show_header=False
        )
        c.add_column("result")
        c.add_column("value", justify="right")
        for key, factor in calibrated["factors"].items():
            c.add_row(f"factor {key} (actual / estimated)", f"{factor:.3f}")
        for key, label in rows:
            if key in calibrated:
                c.add_row(label, fmt_num(calibrated[key]))
        out.print(c)
    memory = data.get("memory") or {}
    parts = {k: v for k, v in memory.items() if k.endswith("_bytes") and isinstance(v, (int, float)) and v}
    if parts:
        m = Table(title="memory per device", title_justify="left")
        m.add_column("part")
        m.add_column("GB", justify="right")
        for k, v in parts.items():
            m.add_row(k.removesuffix("_bytes"), f"{v / 1e9:,.2f}")
        out.print(m)
    price = data.get("price")
    assumptions = dict(data.get("assumptions") or {})
    if price:
        assumptions["price basis"] = (
            f"{price.get('provider')} {price.get('instance_type') or ''} "
            f"{price.get('pricing')} {price.get('usd_per_device_h') or ''}".strip()
        )
    if data.get("region"):
        assumptions["region"] = f"{data['region']} ({fmt_num(data.get('grid_gco2e_per_kwh'))} gCO2e/kWh)"
        if data.get("region_basis"):
            assumptions["region"] += f", {data['region_basis']}"
    if data.get("pue_source"):
        assumptions["pue_source"] = data["pue_source"]
    age = assumptions.pop("data_age", None)
    if isinstance(age, dict) and age.get("stale"):
        assumptions["STALE"] = age["stale"]
    if assumptions:
        a = Table(title="assumptions", title_justify="left", show_header=False)
        a.add_column("name")
        a.add_column("value")
        for k, v in assumptions.items():
            a.add_row(str(k), fmt_num(v) if not isinstance(v, (dict, list)) else str(v))
        out.print(a)


@app.command("train")
@handle_errors
def train(
    model: ModelOpt,
    tokens: Annotated[str, typer.Option(help="Training tokens, e.g. 2T, 300B, 1.5e12.")],
    device: DeviceOpt,
    count: Annotated[
        int | None,
        typer.Option(help="Number of devices (default: the fewest on which the model fits, said in assumptions)."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="bf16, fp16, fp8 or fp32 (mixed precision compute dtype).")
    ] = "bf16",
    mfu: Annotated[
        float | None,
        typer.Option(
            help="Model FLOPs utilization 0-1 (default: calibrated per device class and model size)."
        ),
    ] = None,
    goodput: Annotated[
        float | None,
        typer.Option(
            help="Share of the run at steady-state speed, 0-1 (e.g. 0.9, Llama 3 405B); default: calibrated "
            "whole-run MFU, implied goodput reported."
        ),
    ] = None,
    method: Annotated[str, typer.Option(help="full, lora or qlora.")] = "full",
    seq_len: Annotated[int, typer.Option(help="Sequence length in tokens.")] = 4096,
    zero_stage: Annotated[
        int | None, typer.Option(help="ZeRO stage 0-3 (default: the smallest that fits).")
    ] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    threads: ThreadsOpt = None,
    owned: OwnedOpt = False,
    pricing: PricingOpt = None,
    region: RegionOpt = None,
    provider: ProviderOpt = None,
    calibrate: CalibrateFlag = False,
    database_url: DatabaseUrlOpt = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """Estimate a training or fine-tuning run: FLOPs, device-hours, memory, energy, CO2 and cost."""
    from flopwise.api import estimate_training
    from flopwise.units import check_positive, parse_count

    n_tokens = parse_count(tokens, "--tokens", max_value=1e16)
    if count is not None:
        check_positive(count, "--count", 1e7)
    report = estimate_training(
        model,
        device,
        tokens=n_tokens,
        device_count=count,
        pricing=pricing,
        region=region,
        provider=provider,
        catalog_dir=catalog_dir,
        threads=threads,
        owned=owned,
        precision=precision,
        method=method,
        mfu_frac=mfu,
        goodput_frac=goodput,
        seq_len=seq_len,
        zero_stage=zero_stage,
        tensor_parallel=tp,
        pipeline_parallel=pp,
    )
    data = _calibrated(report.to_dict(), calibrate, database_url, method)
    _emit(
        data,
        json_out,
        f"train {data['model']} on {data['assumptions']['device_count']} x {data['device']}, "
        f"{n_tokens:.3g} tokens ({method})",
        TRAIN_ROWS,
    )


@app.command("serve")
@handle_errors
def serve(
    model: ModelOpt,
    device: DeviceOpt,
    count: Annotated[int, typer.Option(help="Devices per replica (tensor parallel).")] = 1,
    quant: Annotated[
        str,
        typer.Option(
            help="Weights: bf16, fp16, fp8, int8, int4-awq, int4-gptq, nvfp4, mxfp4 "
            "or a GGUF type as llama.cpp names it (F16, BF16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_K_S, IQ4_XS, Q4_0, Q3_K_M, IQ3_M, Q2_K ...)."
        ),
    ] = "bf16",
    kv_dtype: Annotated[str | None, typer.Option(help="KV cache dtype (default: the compute dtype).")] = None,
    batch: Annotated[int, typer.Option(help="Concurrent sequences.")] = 1,
    input_tokens: Annotated[int, typer.Option(help="Prompt tokens per request.")] = 512,
    output_tokens: Annotated[int, typer.Option(help="Generated tokens per request.")] = 256,
    rps: Annotated[
        float | None,
        typer.Option(
            help="Requests/s arriving (Poisson): the time per output token under continuous batching at that load "
            "(the running batch follows from it; leave --batch at 1)."
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Clients each keeping one request in flight (closed loop, as benchmark --max-concurrency): the "
            "time per output token at that load. Give --rps or --concurrency, not both."
        ),
    ] = None,
    threads: ThreadsOpt = None,
    owned: OwnedOpt = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Serving engine: generic, llama.cpp, ollama, vllm, sglang, trt-llm, mlc, exllama "
            "(engines.csv in --catalog adds or overrides)."
        ),
    ] = None,
    pricing: PricingOpt = None,
    region: RegionOpt = None,
    provider: ProviderOpt = None,
    calibrate: CalibrateFlag = False,
    database_url: DatabaseUrlOpt = None,
    json_out: JsonFlag = False,
    catalog_dir: CatalogDir = None,
) -> None:
    """Estimate serving: memory, time to first token, time per output token, throughput, energy and cost."""
    from flopwise.api import estimate_serving
    from flopwise.errors import InputError

    if rps is not None and concurrency is not None:
        raise InputError("--concurrency", concurrency, "give --rps or --concurrency, not both")
    if (rps is not None or concurrency is not None) and batch != 1:
        raise InputError(
            "--batch", batch, "under load (--rps or --concurrency) the running batch follows from the load; "
            "leave --batch at 1"
        )
    if rps is not None and not rps > 0:
        raise InputError("--rps", rps, "give the requests/s arriving, a number greater than 0")
    if concurrency is not None and concurrency < 1:
        raise InputError("--concurrency", concurrency, "give the number of clients, at least 1")
    load: dict[str, Any] = {}
    if rps is not None:
        load["arrival_rps"] = rps
    if concurrency is not None:
        load["concurrency"] = concurrency
    report = estimate_serving(
        model,
        device,
        device_count=count,
        pricing=pricing,
        region=region,
        provider=provider,
        catalog_dir=catalog_dir,
        threads=threads,
        owned=owned,
        quant=quant,
        kv_dtype=kv_dtype,
        batch=batch,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        engine=engine,
        **load,
    )
    data = _calibrated(report.to_dict(), calibrate, database_url, "serve")
    shape = (
        f"{rps:g} requests/s" if rps is not None
        else f"concurrency {concurrency}" if concurrency is not None
        else f"batch {batch}"
    )
    _emit(
        data,
        json_out,
        f"serve {data['model']} on {count} x {data['device']} with {data['assumptions']['engine']} "
        f"({quant}, {shape}, "
        f"{input_tokens} in / {output_tokens} out)",
        SERVE_ROWS,
    )
