"""`flopwise validate`: our estimates against published real-world measurements."""

from __future__ import annotations

from typing import Annotated

import typer

from flopwise.cli._common import (
    EXIT_FAILURE,
    JsonFlag,
    handle_errors,
    print_json,
    stderr_console,
    stdout_console,
)


@handle_errors
def validate(
    category: Annotated[
        str | None, typer.Option(help="Only this category (e.g. train_device_hours).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Estimate every published measurement in the validation set and report the errors.

    Exits 1 when a category's median absolute error is above its bound.
    """
    from flopwise.errors import InputError
    from flopwise.validation import CATEGORIES, MEDIAN_BOUNDS, run_validation

    if category is not None and category not in CATEGORIES:
        raise InputError("--category", category, "accepted: " + ", ".join(CATEGORIES))
    report = run_validation(categories=[category] if category else None)
    data = report.to_dict()
    summaries = [s for s in report.summaries if category is None or s.category == category]
    over = [
        s.category for s in summaries if s.median_abs_rel_error > MEDIAN_BOUNDS.get(s.category, float("inf"))
    ]
    steady_loso = _steady_loso(report, category)
    energy = _energy_section(report, category)
    engine_fit = _engine_fit_section(category)
    cpu = _cpu_section(category)
    if cpu is not None and not cpu["within_targets"]:
        over.append("cpu_threads")
    online_fit = _online_fit_section(report, category)
    if json_out:
        data["steady_state_leave_one_source_out"] = steady_loso
        data["serving_engine_fit"] = engine_fit
        data["online_tpot_fit"] = online_fit
        data["energy"] = energy
        data["cpu_threads"] = cpu
        data["bounds"] = {k: v for k, v in MEDIAN_BOUNDS.items()}
        data["within_bounds"] = not over
        print_json(data)
    else:
        from rich.table import Table

        out = stdout_console()
        cases = Table(title="cases (relative error = estimate / measured - 1)", title_justify="left")
        for col in ("category", "case", "measured", "estimated", "unit", "error"):
            cases.add_column(
                col,
                justify="right" if col in ("measured", "estimated", "error") else "left",
                no_wrap=col == "case",
            )
        for r in report.results:
            if category is None or r.category == category:
                colour = "green" if r.abs_rel_error <= MEDIAN_BOUNDS.get(r.category, 1.0) else "yellow"
                cases.add_row(
                    r.category,
                    r.id,
                    f"{r.measured:,.4g}",
                    f"{r.estimated:,.4g}",
                    r.unit,
                    f"[{colour}]{r.rel_error:+.1%}[/{colour}]",
                )
        out.print(cases)
        t = Table(title="per category", title_justify="left")
        for col in ("category", "n", "median |error|", "p90 |error|", "median error (bias)", "bound", "ok"):
            t.add_column(col, justify="left" if col == "category" else "right", no_wrap=col == "category")
        for s in summaries:
            bound = MEDIAN_BOUNDS.get(s.category)
            t.add_row(
                s.category,
                str(s.n),
                f"{s.median_abs_rel_error:.1%}",
                f"{s.p90_abs_rel_error:.1%}",
                f"{s.median_rel_error:+.1%}",
                f"{bound:.0%}" if bound is not None else "-",
                "no" if s.category in over else "yes",
            )
        out.print(t)
        e = Table(title="per category and engine (serving)", title_justify="left")
        for col in ("category", "engine", "n", "median |error|", "median error (bias)"):
            e.add_column(col, justify="left" if col in ("category", "engine") else "right")
        for row in report.by_engine():
            if category is None or row["category"] == category:
                e.add_row(
                    row["category"],
                    row["engine"],
                    str(row["n"]),
                    f"{row['median_abs_rel_error']:.1%}",
                    f"{row['median_rel_error']:+.1%}",
                )
        out.print(e)
        if steady_loso:
            lo = Table(
                title="train_tflops_per_device, leave one source out (constants refitted without it)",
                title_justify="left",
            )
            for col in ("held-out source", "n", "median |error|", "median error (bias)"):
                lo.add_column(col, justify="left" if col == "held-out source" else "right")
            for row in steady_loso:
                lo.add_row(
                    row["source"], str(row["n"]), f"{row['median_abs_rel_error']:.1%}", f"{row['median_rel_error']:+.1%}"
                )
            out.print(lo)
        if engine_fit:
            _print_engine_fit(out, engine_fit)
        if online_fit:
            _print_online_fit(out, online_fit)
        if energy:
            _print_energy(out, energy)
        if cpu is not None:
            _print_cpu(out, cpu)
        err = stderr_console()
        for s in report.skipped:
            err.print(f"[yellow]skipped[/yellow] {s.id}: {s.reason}", highlight=False)
        for f in report.failed:
            err.print(f"[red]failed[/red] {f.id}: {f.error}", highlight=False)
    if over:
        raise typer.Exit(EXIT_FAILURE)


#: the CPU issue's targets: decode tokens/s median |error| and thread scaling (4 vs 8 vs all cores), each within 15%
CPU_DECODE_MEDIAN_BOUND = 0.15
CPU_SCALING_BOUND = 0.15


def _cpu_section(category: str | None) -> dict | None:
    """CPU and phone runs with their thread counts (flopwise.validation.cpu): per-case errors, thread scaling vs
    the fewest threads, and the issue's targets; None when *category* leaves them out."""
    from flopwise.validation.cpu import CATEGORIES as CPU_CATEGORIES
    from flopwise.validation.cpu import run_cpu_validation

    if category is not None and category not in CPU_CATEGORIES:
        return None
    data = run_cpu_validation().to_dict()
    data["targets"] = {"decode_median_abs_rel_error": CPU_DECODE_MEDIAN_BOUND, "thread_scaling": CPU_SCALING_BOUND}
    data["within_targets"] = (
        data["median_abs_rel_error"] <= CPU_DECODE_MEDIAN_BOUND
        and data["scaling_max_abs_rel_error"] <= CPU_SCALING_BOUND
    )
    return data


def _print_cpu(out, cpu: dict) -> None:
    from rich.table import Table

    t = Table(
        title="CPU and phone runs with thread counts (the part of the CPU the threads use)", title_justify="left"
    )
    for col in ("case", "device", "threads", "measured", "estimated", "error", "bandwidth basis"):
        t.add_column(col, justify="right" if col in ("threads", "measured", "estimated", "error") else "left")
    for r in cpu["cases"]:
        t.add_row(
            r["id"], r["device"], str(r["threads"]), f"{r['measured']:,.4g}", f"{r['estimated']:,.4g}",
            f"{r['rel_error']:+.1%}", r["bandwidth_basis"],
        )  # fmt: skip
    out.print(t)
    s = Table(title="CPU thread scaling: rate(threads) / rate(fewest threads)", title_justify="left")
    for col in ("phase", "device", "model", "threads", "vs", "measured ratio", "estimated ratio", "error"):
        s.add_column(col, justify="left" if col in ("phase", "device", "model") else "right")
    for phase, rows in (("decode", cpu["thread_scaling"]), ("prefill", cpu["prefill_thread_scaling"])):
        for r in rows:
            s.add_row(
                phase, r["device"], r["model"], str(r["threads"]), str(r["vs_threads"]),
                f"{r['measured_ratio']:.3f}", f"{r['estimated_ratio']:.3f}", f"{r['rel_error']:+.1%}",
            )  # fmt: skip
    out.print(s)
    pre = cpu["prefill_median_abs_rel_error"]
    out.print(
        f"CPU decode median |error| {cpu['median_abs_rel_error']:.1%} (leave one source out "
        f"{cpu['leave_one_source_out_median_abs_rel_error']:.1%}: nothing is fitted to these runs); decode thread "
        f"scaling median "
        f"{cpu['scaling_median_abs_rel_error']:.1%}, max {cpu['scaling_max_abs_rel_error']:.1%}; targets "
        f"{cpu['targets']['decode_median_abs_rel_error']:.0%} / {cpu['targets']['thread_scaling']:.0%}: "
        + ("met" if cpu["within_targets"] else "not met")
        + ("" if pre is None else f"; prefill median |error| {pre:.1%}"),
        highlight=False,
    )


def _engine_fit_section(category: str | None) -> list[dict]:
    """Per (category, engine) of the datacenter serving cases: the fitted compute efficiency and the in-sample and
    leave-one-source-out median errors (flopwise.validation.engine_fit)."""
    from flopwise.validation.engine_fit import FIT_CATEGORIES, fit_engines, summary_rows

    if category is not None and category not in FIT_CATEGORIES:
        return []
    from flopwise.validation import load_cases

    rows = summary_rows(fit_engines(load_cases()))
    return [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        for r in rows
        if category is None or r["category"] == category
    ]


def _print_engine_fit(out, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(
        title="serving engines: compute efficiency fitted per engine (per vendor backend where measured on "
        "several), in-sample and leave one source out",
        title_justify="left",
    )
    for col in ("category", "engine", "n", "compute efficiency", "in-sample median", "LOSO median"):
        t.add_column(col, justify="left" if col in ("category", "engine") else "right")
    for r in rows:
        eff = r["compute_efficiency_frac"]
        t.add_row(
            r["category"],
            r["engine"],
            str(r["n"]),
            "-" if eff is None else f"{eff:.3f}",
            f"{r['median_abs_rel_error_in_sample']:.1%}",
            f"{r['median_abs_rel_error_loso']:.1%}",
        )
    out.print(t)


def _online_fit_section(report, category: str | None) -> list[dict]:
    """Per (engine, source) of the online-serving cases (tpot_ms): the per-layer online step overhead refitted
    without the source, and the in-sample and leave-one-source-out median errors
    (flopwise.validation.online_fit)."""
    if category not in (None, "tpot_ms") or not report.results_for("tpot_ms"):
        return []
    from flopwise.validation import load_cases
    from flopwise.validation.online_fit import fit_online, summary_rows

    return summary_rows(fit_online(load_cases()))


def _print_online_fit(out, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(
        title="tpot_ms: online per-layer step overhead (one value, fitted), in-sample and leave one source out",
        title_justify="left",
    )
    for col in ("engine", "source", "n", "overhead (us/layer)", "in-sample median", "LOSO median"):
        t.add_column(col, justify="left" if col in ("engine", "source") else "right")
    for r in rows:
        t.add_row(
            r["engine"],
            r["source"],
            str(r["n"]),
            f"{r['layer_overhead_s'] * 1e6:.1f}",
            f"{r['median_abs_rel_error_in_sample']:.1%}",
            f"{r['median_abs_rel_error_loso']:.1%}",
        )
    out.print(t)


def _steady_loso(report, category: str | None) -> list[dict]:
    """Leave-one-source-out errors of the steady-state training constants (flopwise.validation.steady)."""
    import statistics

    if category not in (None, "train_tflops_per_device") or not report.results_for("train_tflops_per_device"):
        return []
    from flopwise.catalog import load_catalog
    from flopwise.validation import load_cases
    from flopwise.validation.steady import leave_one_source_out

    rows = []
    for source, errs in leave_one_source_out(load_cases(), load_catalog()).items():
        values = [e for _, e in errs]
        rows.append(
            {
                "source": source,
                "n": len(values),
                "median_abs_rel_error": statistics.median(abs(v) for v in values),
                "median_rel_error": statistics.median(values),
            }
        )
    return rows


def _energy_section(report, category: str | None) -> dict:
    """The energy section: the load-power fit (pooled and per generation) and, per case, average power per device
    in-sample, leave-one-case-out and leave-one-source-out; GPU energy per output token with the throughput the
    measured energy implies at the estimated power (flopwise.validation.energy)."""
    cats = ("avg_power_w_per_device", "energy_j_per_output_token")
    if category not in (None, *cats) or not any(report.results_for(c) for c in cats):
        return {}
    from flopwise.validation.energy import power_fit_report

    rep = power_fit_report()
    cols = (
        "in_sample", "pooled_fit", "leave_one_case_out", "leave_one_model_out", "leave_one_source_out",
        "fixed_share_model",
    )  # fmt: skip
    summary = []
    for gen in [None, *sorted({r["generation"] for r in rep.rows})]:
        rows = [r for r in rep.rows if gen is None or r["generation"] == gen]
        w_mem, w_compute = rep.rates if gen is None else rep.generation_rates.get(gen, rep.rates)
        summary.append(
            {
                "generation": gen or "all",
                "devices": sorted({r["device"] for r in rows}),
                "engines": sorted({r["engine"] for r in rows}),
                "n": len(rows),
                "sources": len({r["source_url"] for r in rows}),
                "w_mem_w_per_tb_s": w_mem,
                "w_compute_w_per_tflop_s": w_compute,
                **{f"median_abs_{col}": rep.median(col, gen) for col in cols},
            }
        )
    j_summary = [
        {
            "generation": gen,
            "devices": sorted({r["device"] for r in rep.j_rows if r["generation"] == gen}),
            "n": sum(1 for r in rep.j_rows if r["generation"] == gen),
            "median_abs_in_sample": rep.j_median("in_sample", gen),
            "median_abs_leave_generation_out": rep.j_median("leave_generation_out", gen),
        }
        for gen in sorted({r["generation"] for r in rep.j_rows})
    ]
    return {
        "metric": "average device (GPU) power while serving, W per device; GPU (device-boundary) energy per "
        "output token, J",
        "power_model": "idle + w_mem x TB/s moved + w_compute x TFLOP/s (16-bit-peak equivalent), clipped at TDP; "
        "one fit per generation with at least 3 measured cases, the pooled fit for the others "
        "(estimate.energy.DYNAMIC_POWER_W_PER_RATE); a generation whose cases agree with it (within 25%) also "
        "fits an anchor that is no grading source: a compute-bound prefill draws the datasheet TDP",
        "anchors": [
            {"generation": an.generation, "device": an.device, "power_w": an.power_w, "basis": an.basis}
            for an in rep.anchors
        ],
        "anchor_gap": rep.anchor_gap,
        "leave_one_source_out": "refit without every case of the held-out case's source, by the committed rule: "
        "the generation's cases from the other sources (plus its anchor) where at least 3 remain, else the fit "
        "pooled over the other sources",
        "j_per_output_token": "estimated power x devices / estimated throughput. Where the source gives throughput "
        "too, power_error and throughput_error split the miss by measurement; elsewhere implied_tokens_per_s = the "
        "throughput at which the estimated power gives the measured energy (throughput_ratio > 1: the estimate's "
        "throughput is too high)",
        "decode_step_error": "where the source also gives the median inter-token latency (ITL): 1 + throughput_error "
        "= (ITL / estimated TPOT) x (1 + overhead_error); decode_step_error = ITL / TPOT - 1, overhead_error = the "
        "rest (time per generated token of a sequence over the decode step: prefill, steps that carry prompt "
        "chunks, the tail), measured / estimated - 1 (flopwise.validation.energy.throughput_split)",
        "summary": summary,
        "cases": list(rep.rows),
        "j_summary": j_summary,
        "j_cases": list(rep.j_rows),
    }


def _print_energy(out, energy: dict) -> None:
    from rich.table import Table

    t = Table(
        title="energy: average power per device (in-sample / leave one case out / leave one source out)",
        title_justify="left",
    )
    for col in ("case", "engine", "measured W", "in-sample", "LOO", "leave model out", "LOSO", "fixed shares",
                "LOSO basis"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("case", "engine", "LOSO basis") else "right")
    for r in energy["cases"]:
        t.add_row(
            r["id"], r["engine"], f"{r['measured_w']:.0f}", f"{r['in_sample']:+.1%}",
            f"{r['leave_one_case_out']:+.1%}", f"{r['leave_one_model_out']:+.1%}",
            f"{r['leave_one_source_out']:+.1%}", f"{r['fixed_share_model']:+.1%}", r["loso_basis"],
        )  # fmt: skip
    out.print(t)
    s = Table(title="energy: average power per generation (median |error|)", title_justify="left")
    for col in ("generation", "devices", "n", "sources", "W per TB/s", "W per TFLOP/s", "in-sample", "pooled fit",
                "LOO", "leave model out", "LOSO", "fixed shares"):  # fmt: skip
        s.add_column(col, justify="left" if col in ("generation", "devices") else "right")
    for g in energy["summary"]:
        s.add_row(
            g["generation"], ", ".join(g["devices"]), str(g["n"]), str(g["sources"]),
            f"{g['w_mem_w_per_tb_s']:.1f}", f"{g['w_compute_w_per_tflop_s']:.2f}",
            f"{g['median_abs_in_sample']:.1%}", f"{g['median_abs_pooled_fit']:.1%}",
            f"{g['median_abs_leave_one_case_out']:.1%}", f"{g['median_abs_leave_one_model_out']:.1%}",
            f"{g['median_abs_leave_one_source_out']:.1%}", f"{g['median_abs_fixed_share_model']:.1%}",
        )  # fmt: skip
    out.print(s)
    if energy["j_cases"]:
        j = Table(
            title="energy: GPU energy per output token (error = estimate / measured - 1 = (1 + power error) / "
            "(1 + throughput error) - 1)",
            title_justify="left",
        )
        for col in ("case", "measured J", "estimated J", "error", "held-out power", "power W", "tokens/s",
                    "implied tokens/s", "power error", "throughput error", "of which decode step",
                    "of which rest"):  # fmt: skip
            j.add_column(col, justify="left" if col == "case" else "right")
        for r in energy["j_cases"]:
            measured = r.get("measured_power_w") is not None
            itl = r.get("measured_median_itl_ms") is not None
            j.add_row(
                r["id"], f"{r['measured_j']:.3f}", f"{r['estimated_j']:.3f}", f"{r['in_sample']:+.1%}",
                f"{r['leave_generation_out']:+.1%}", f"{r['estimated_power_w']:.0f}",
                f"{r['estimated_tokens_per_s']:,.0f}", f"{r['implied_tokens_per_s']:,.0f}",
                f"{r['power_error']:+.1%}" if measured else "-",
                f"{r['throughput_error']:+.1%}" if measured else f"{r['throughput_ratio'] - 1:+.1%} (implied)",
                f"{r['decode_step_error']:+.1%}" if itl else "-",
                f"{r['overhead_error']:+.1%}" if itl else "-",
            )  # fmt: skip
        out.print(j)
