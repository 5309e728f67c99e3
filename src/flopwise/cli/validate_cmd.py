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
    if json_out:
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
        err = stderr_console()
        for s in report.skipped:
            err.print(f"[yellow]skipped[/yellow] {s.id}: {s.reason}", highlight=False)
        for f in report.failed:
            err.print(f"[red]failed[/red] {f.id}: {f.error}", highlight=False)
    if over:
        raise typer.Exit(EXIT_FAILURE)
