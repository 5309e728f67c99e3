"""`flopwise enforce <engine> ...`: make a scheduler obey flopwise's decisions (docs/enforce/).

``flopwise enforce slurm sync|plugin|agent`` (docs/enforce/slurm.md) ``flopwise enforce skypilot serve``
(docs/enforce/skypilot.md), ``flopwise enforce ray gate`` (docs/enforce/ray.md) and ``flopwise enforce kueue
manifests|controller`` (docs/enforce/kueue.md). The logic lives in
:mod:`flopwise.enforce` modules; these commands read the YAML configuration, build the client (--url/--token;
tests pass an httpx transport in ``ctx.obj``) and render the outcome. Exit codes: 0 ok; 1 Slurm or the server
failed (a command exited non-zero, the server is unreachable); 2 a bad option or configuration.
"""

from __future__ import annotations

import logging
import shlex
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from flopwise.cli._common import EXIT_FAILURE, JsonFlag, _fail, handle_errors, print_json, stderr_console
from flopwise.cli.client_cmd import TokenOpt, UrlOpt

__all__ = ["app"]

app = typer.Typer(help="Make schedulers obey flopwise's decisions (docs/enforce/).", no_args_is_help=True)
slurm_app = typer.Typer(
    help="Slurm: sync accounts and limits with sacctmgr, install job_submit.lua, run the agent.",
    no_args_is_help=True,
)
app.add_typer(slurm_app, name="slurm")

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config", help="YAML: cache, state_dir, partition, gpus (docs/enforce/slurm.md).", show_default=False
    ),
]


def _read_yaml_config(path: Path, loader: Any) -> Any:
    """Read a YAML config file and hand it to an engine's ``load_config``; read and parse errors name --config."""
    import yaml

    from flopwise.errors import InputError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError("--config", str(path), f"the file cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError("--config", str(path), f"it is not valid YAML ({exc})") from None
    return loader(data, source=path.name)


def _config(path: Path) -> Any:
    from flopwise.enforce.slurm import load_config

    return _read_yaml_config(path, load_config)


def _agent(ctx: typer.Context, config_path: Path, url: str | None, token: str | None) -> Any:
    from flopwise.client import FlopwiseClient
    from flopwise.enforce.slurm import SlurmAgent, subprocess_runner

    config = _config(config_path)
    obj = ctx.obj if isinstance(ctx.obj, Mapping) else {}
    client = FlopwiseClient(url=url, token=token, transport=obj.get("transport"))
    return SlurmAgent(client, config, subprocess_runner())


def _outside_errors(func: Any) -> Any:
    """Slurm and server failures are not the input's fault: exit 1 with their message."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flopwise.client import ServerError, ServerValidationError
        from flopwise.enforce.slurm import SlurmError

        try:
            return func(*args, **kwargs)
        except ServerValidationError as err:
            _fail(err.message, 2)
        except (ServerError, SlurmError) as err:
            _fail(str(err), EXIT_FAILURE)

    return handle_errors(wrapper)


@slurm_app.command("sync")
@_outside_errors
def sync(
    ctx: typer.Context,
    config: ConfigOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the sacctmgr commands; change nothing.")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Compare Slurm's accounts, limits and QOS with flopwise's teams, projects, quotas and budgets; report the
    drift and apply the sacctmgr commands that remove it (or only print them with --dry-run)."""
    agent = _agent(ctx, config, url, token)
    try:
        drift, cmds = agent.sync(dry_run=dry_run)
    finally:
        agent.client.close()
    if json_out:
        print_json(
            {"dry_run": dry_run, "drift": [d.__dict__ for d in drift], "commands": [shlex.join(c) for c in cmds]}
        )
        return
    from rich.table import Table

    if drift:
        table = Table(title="drift (Slurm vs flopwise)")
        for col in ("account", "field", "slurm", "flopwise"):
            table.add_column(col)
        for d in drift:
            table.add_row(d.account, d.field, d.slurm or "-", d.flopwise or "-")
        stderr_console().print(table)
    else:
        stderr_console().print("no drift: Slurm holds what flopwise wants")
    for c in cmds:
        typer.echo(shlex.join(c))
    if cmds and not dry_run:
        stderr_console().print(f"applied {len(cmds)} command(s)")


@slurm_app.command("plugin")
@handle_errors
def plugin(
    config: ConfigOpt,
    dest: Annotated[
        Path, typer.Option("--dest", help="Where to write job_submit.lua: next to slurm.conf.", show_default=False)
    ],
) -> None:
    """Write job_submit.lua reading this configuration's decision cache, and print the slurm.conf lines it
    needs."""
    from flopwise.enforce.slurm import billing_weights, render_plugin, write_atomically

    cfg = _config(config)
    target = dest / "job_submit.lua" if dest.is_dir() else dest
    write_atomically(target, render_plugin(cfg.cache))
    stderr_console().print(f"wrote {target}; add to slurm.conf, then restart slurmctld:")
    typer.echo("JobSubmitPlugins=lua")
    typer.echo("AccountingStoreFlags=job_comment")
    typer.echo("AccountingStorageEnforce=associations,limits,qos,safe")
    typer.echo(f"AccountingStorageTRES=gres/gpu,{','.join(f'gres/gpu:{t}' for t in cfg.gpus)}")
    typer.echo(f"# on PartitionName={cfg.partition}: TRESBillingWeights={billing_weights(cfg)}")


@slurm_app.command("agent")
@_outside_errors
def agent(
    ctx: typer.Context,
    config: ConfigOpt,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (1 if any job failed).")] = False,
    interval_s: Annotated[
        float, typer.Option("--interval-s", min=0.2, max=300, help="Seconds between passes.")
    ] = 2.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Report started jobs to flopwise, settle ended ones from sacct, cancel what the server denies, and
    rewrite the decision cache, every --interval-s seconds (the plugin trusts the cache for max_age_s)."""
    from flopwise.client import ServerUnreachableError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("flopwise.enforce.slurm")
    the_agent = _agent(ctx, config, url, token)
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    if not once:
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        while True:
            try:
                report = the_agent.step()
            except ServerUnreachableError as err:
                if once:
                    raise
                log.error("%s; the cache ages and hard budgets fail closed after max_age_s", err)
            else:
                if once:
                    if json_out:
                        print_json(report.__dict__)
                    else:
                        for key, jobs in report.__dict__.items():
                            if jobs:
                                stderr_console().print(f"{key}: {', '.join(jobs)}")
                    if report.errors:
                        raise typer.Exit(EXIT_FAILURE)
                    return
            if stop["now"]:
                return
            time.sleep(interval_s)
            if stop["now"]:
                return
    finally:
        the_agent.client.close()


skypilot_app = typer.Typer(
    help="SkyPilot: serve the RESTful admin policy that asks flopwise before each launch; settle launches.",
    no_args_is_help=True,
)
app.add_typer(skypilot_app, name="skypilot")


@skypilot_app.command("serve")
@handle_errors
def skypilot_serve(
    config: ConfigOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (keep it private to SkyPilot).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Serve POST /skypilot/policy: set SkyPilot's admin_policy to http://HOST:PORT/skypilot/policy."""
    from flopwise.client import FlopwiseClient
    from flopwise.enforce.skypilot import create_policy_app, load_config

    cfg = _read_yaml_config(config, load_config)
    fw = FlopwiseClient(url=url, token=token)  # one client, connections kept alive; a bad --url is an error here

    import uvicorn

    try:
        uvicorn.run(create_policy_app(fw, cfg), host=host, port=port)
    finally:
        fw.close()


@skypilot_app.command("settle")
@_outside_errors
def skypilot_settle(
    ctx: typer.Context,
    sky_python: Annotated[
        str, typer.Option("--sky-python", help="A Python with the skypilot package, on the SkyPilot API server's "
                          "host (it reads SkyPilot's state there).", show_default=False),
    ],
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="How far back the cost report looks.")] = 30,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """One settlement pass: commit the admissions of SkyPilot clusters that are up, settle those torn down (their
    up time and SkyPilot's cost estimate), release those torn down before they were up. Run it from a timer;
    repeating a pass changes nothing. Exit 1 if any admission could not be moved."""
    from flopwise.client import FlopwiseClient
    from flopwise.enforce.skypilot import settle_launches, sky_cost_report

    records = sky_cost_report(sky_python, days)
    obj = ctx.obj if isinstance(ctx.obj, Mapping) else {}
    with FlopwiseClient(url=url, token=token, transport=obj.get("transport")) as fw:
        report = settle_launches(fw, records)
    if json_out:
        print_json(report)
    else:
        for key, ids in report.items():
            if ids:
                stderr_console().print(f"{key}: {', '.join(ids)}")
    if report["errors"]:
        raise typer.Exit(EXIT_FAILURE)


ray_app = typer.Typer(help="Ray: a gate in front of the Ray Jobs API that asks flopwise first.", no_args_is_help=True)
app.add_typer(ray_app, name="ray")


@ray_app.command("gate")
@handle_errors
def ray_gate(
    config: ConfigOpt,
    upstream: Annotated[
        str, typer.Option("--upstream", help="The Ray dashboard the gate fronts, e.g. http://127.0.0.1:8265.")
    ],
    host: Annotated[str, typer.Option("--host", help="Address users submit to.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port users submit to.")] = 8266,
    settle_interval_s: Annotated[
        float, typer.Option("--settle-interval-s", min=0.5, max=3600, help="Seconds between settlement passes.")
    ] = 5.0,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="SQLite file of admitted jobs, kept across restarts [default: "
                     "$XDG_STATE_HOME/flopwise/ray-gate.sqlite].", show_default=False),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Serve the Ray Jobs API through flopwise: submissions are decided first (400 with the reason when
    refused); the rest is forwarded; ended jobs are settled every --settle-interval-s, also those that ended
    while the gate was down (its state is in --state)."""
    import threading

    import httpx

    from flopwise.client import FlopwiseClient
    from flopwise.enforce.ray import GateState, RayGate, create_gate_app, load_config
    from flopwise.errors import InputError

    cfg = _read_yaml_config(config, load_config)
    fw = FlopwiseClient(url=url, token=token)  # shared by submissions and settlement, connections kept alive
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import os
    import sqlite3

    if state is None:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        state = base / "flopwise" / "ray-gate.sqlite"
    try:
        gate_state = GateState(state)
    except (OSError, sqlite3.Error) as exc:
        raise InputError("--state", str(state), f"cannot be opened as a SQLite file ({exc})") from None
    gate = RayGate(fw, cfg, httpx.Client(base_url=upstream, timeout=60), gate_state)
    stop = threading.Event()

    def settle_loop() -> None:
        while not stop.wait(settle_interval_s):
            try:
                gate.settle_ended()
            except Exception as exc:  # noqa: BLE001 - a failed pass is logged and retried, never fatal
                logging.getLogger("flopwise.enforce.ray").warning("settlement pass failed: %s", exc)

    threading.Thread(target=settle_loop, daemon=True).start()
    import uvicorn

    try:
        uvicorn.run(create_gate_app(gate), host=host, port=port)
    finally:
        stop.set()
        fw.close()


kueue_app = typer.Typer(
    help="Kubernetes / Kueue: generate queues from flopwise quotas; run the AdmissionCheck controller.",
    no_args_is_help=True,
)
app.add_typer(kueue_app, name="kueue")


def _kueue_config(path: Path) -> Any:
    from flopwise.enforce.kueue import load_config

    return _read_yaml_config(path, load_config)


KueueConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config", help="YAML: flavors (name -> device, usd_per_h, node_labels), retry_s, ... "
        "(docs/enforce/kueue.md).", show_default=False,
    ),
]


@kueue_app.command("manifests")
@_outside_errors
def kueue_manifests(
    ctx: typer.Context,
    config: KueueConfigOpt,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Print ResourceFlavors, the AdmissionCheck, a Cohort per team and a ClusterQueue per project (device
    quotas as nominalQuota), as YAML for `kubectl apply -f -` (or a JSON list with --json)."""
    import yaml

    from flopwise.client import FlopwiseClient
    from flopwise.enforce.kueue import manifests

    cfg = _kueue_config(config)
    obj = ctx.obj if isinstance(ctx.obj, Mapping) else {}
    with FlopwiseClient(url=url, token=token, transport=obj.get("transport")) as fw:
        objs = manifests(fw.call("GET", "/teams"), fw.call("GET", "/projects"), fw.call("GET", "/quotas"), cfg)
    if json_out:
        print_json(objs)
        return
    typer.echo(yaml.safe_dump_all(objs, sort_keys=False, explicit_start=True), nl=False)


@kueue_app.command("controller")
@_outside_errors
def kueue_controller(
    ctx: typer.Context,
    config: KueueConfigOpt,
    kube_url: Annotated[
        str | None,
        typer.Option("--kube-url", help="The Kubernetes API server (default: in-cluster service account)."),
    ] = None,
    kube_token_file: Annotated[
        Path | None, typer.Option("--kube-token-file", help="A bearer token file for --kube-url.")
    ] = None,
    kube_ca: Annotated[
        Path | None, typer.Option("--kube-ca", help="CA bundle for --kube-url (default: the system's).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass over every Workload, then exit.")] = False,
    resync_s: Annotated[
        float, typer.Option("--resync-s", min=1, max=3600, help="Seconds between full re-lists.")
    ] = 30.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Answer flopwise's AdmissionChecks on Kueue Workloads (Ready / Retry with requeueAfterSeconds / Rejected),
    commit admitted Workloads and settle finished ones; watches until SIGTERM (or one pass with --once)."""
    import threading

    from flopwise.client import FlopwiseClient
    from flopwise.enforce.kueue import KubeApi, KubeError, KueueController
    from flopwise.errors import InputError

    cfg = _kueue_config(config)
    if kube_url is None:
        kube = KubeApi.in_cluster()
    else:
        try:
            bearer = kube_token_file.read_text(encoding="utf-8").strip() if kube_token_file else None
        except OSError as exc:
            raise InputError("--kube-token-file", str(kube_token_file), f"cannot be read ({exc.strerror})") from None
        kube = KubeApi(kube_url, token=bearer, verify=str(kube_ca) if kube_ca else True)
    obj = ctx.obj if isinstance(ctx.obj, Mapping) else {}
    fw = FlopwiseClient(url=url, token=token, transport=obj.get("transport"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    controller = KueueController(kube, fw, cfg)
    try:
        if once:
            try:
                done, _ = controller.pass_once()
            except KubeError as err:
                _fail(str(err), EXIT_FAILURE)
            if json_out:
                print_json(done)
            else:
                for key, what in done.items():
                    stderr_console().print(f"{key}: {', '.join(what)}")
            return
        stop = threading.Event()

        def _stop(*_: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        controller.run(stop, resync_s=resync_s)
    finally:
        fw.close()
        kube.close()
