"""The `flopwise` command. Sub-commands live in one module per group; heavy imports happen inside commands."""

from __future__ import annotations

from typing import Annotated

import typer

from flopwise.cli import (
    agent_cmd,
    catalog_cmd,
    client_cmd,
    enforce_cmd,
    estimate_cmd,
    ingest_cmd,
    models_cmd,
    plan_cmd,
    report_cmd,
    scope_cmd,
    server_cmd,
    validate_cmd,
)

app = typer.Typer(
    name="flopwise",
    help="Estimate, plan, govern and meter ML compute: memory, FLOPs, time, energy, CO2 and cost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(estimate_cmd.app, name="estimate")
app.add_typer(plan_cmd.app, name="plan")
app.add_typer(catalog_cmd.app, name="catalog")
app.add_typer(models_cmd.app, name="models")
app.command("validate")(validate_cmd.validate)
app.add_typer(ingest_cmd.app, name="ingest")
app.add_typer(report_cmd.app, name="report")
app.add_typer(report_cmd.alerts_app, name="alerts")
app.add_typer(scope_cmd.team_app, name="team")
app.add_typer(scope_cmd.project_app, name="project")
app.add_typer(scope_cmd.user_app, name="user")
app.add_typer(scope_cmd.attribution_app, name="attribution")
app.command("agent")(agent_cmd.agent)
app.command("serve")(server_cmd.serve)
app.command("demo")(server_cmd.demo_cmd)
app.add_typer(server_cmd.admin_app, name="admin")
app.add_typer(server_cmd.audit_app, name="audit")
app.add_typer(client_cmd.request_app, name="request")
app.add_typer(client_cmd.budget_app, name="budget")
app.add_typer(client_cmd.admission_app, name="admission")
app.add_typer(client_cmd.policy_app, name="policy")
app.add_typer(client_cmd.token_app, name="token")
app.add_typer(enforce_cmd.app, name="enforce")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"flopwise {version('flopwise')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Estimate, plan, govern and meter ML compute."""


def run() -> None:
    """Console-script entry point."""
    app()
