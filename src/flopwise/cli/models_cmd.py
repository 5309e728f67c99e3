"""`flopwise models list|show`: the model registry and Hugging Face configs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from flopwise.cli._common import (
    JsonFlag,
    check_choice,
    fmt_num,
    handle_errors,
    print_json,
    stderr_console,
    stdout_console,
)

app = typer.Typer(help="Browse the model registry or read a Hugging Face config.json.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_models(
    family: Annotated[str | None, typer.Option(help="Only this family, e.g. llama, qwen.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List registry models with their parameter counts."""
    from flopwise.models import count_params, load_models

    reg = load_models()
    family = check_choice("--family", family, (a.family.lower() for a in reg.models.values()))
    archs = [a for a in reg.models.values() if family is None or a.family.lower() == family]
    counts = {a.id: count_params(a) for a in archs}
    if json_out:
        print_json(
            {
                "models": [
                    {
                        "id": a.id,
                        "name": a.name,
                        "family": a.family,
                        "hf_id": a.hf_id,
                        "params": counts[a.id].total,
                        "active_params": counts[a.id].active,
                        "max_context": a.max_context,
                        "is_moe": a.is_moe,
                    }
                    for a in archs
                ]
            }
        )
        return
    from rich.table import Table

    t = Table(title=f"{len(archs)} models")
    for col in ("id", "name", "family", "params", "active", "layers", "context"):
        t.add_column(col, justify="right" if col in ("params", "active", "layers", "context") else "left")
    for a in archs:
        c = counts[a.id]
        t.add_row(
            a.id,
            a.name,
            a.family,
            f"{c.total / 1e9:,.2f}B",
            f"{c.active / 1e9:,.2f}B",
            str(a.n_layers),
            fmt_num(a.max_context),
        )
    stdout_console().print(t)


@app.command("show")
@handle_errors
def show(
    model: Annotated[
        str, typer.Argument(help="A registry name (e.g. 'Llama 3.1 8B') or a path to config.json.")
    ],
    json_out: JsonFlag = False,
) -> None:
    """Show a model's architecture and where its parameters are."""
    from flopwise.models import count_params, load_models, resolve_model

    arch, warnings = resolve_model(model, load_models())
    c = count_params(arch)
    counts = {
        "total": c.total,
        "active": c.active,
        "embedding": c.embedding,
        "attention": c.attention,
        "ffn": c.ffn,
        "ffn_active": c.ffn_active,
        "norm": c.norm,
        "other": c.other,
    }
    if json_out:
        print_json({"model": asdict(arch), "params": counts, "warnings": list(warnings)})
        return
    for w in warnings:
        stderr_console().print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    from rich.table import Table

    t = Table(title=f"{arch.name} ({arch.id})", show_header=False)
    t.add_column("field")
    t.add_column("value", justify="right")
    for key, value in counts.items():
        t.add_row(f"params {key}", f"{value:,} ({value / 1e9:.3f}B)")
    for key, value in asdict(arch).items():
        if key in ("id", "name") or value in (0, "", (), False, 0.0):
            continue
        t.add_row(key, ", ".join(value) if isinstance(value, tuple) else str(value))
    stdout_console().print(t)
