"""`flopwise agent`: meter this machine's GPUs through NVML and push the usage to a flopwise server.

The loop lives in :mod:`flopwise.meter.agent`; this command only builds its parts (sampler, HTTP client,
configuration, logging to stderr, SIGINT/SIGTERM handling) and renders the outcome. httpx, pynvml and the
catalog are imported inside the command, so ``flopwise --help`` stays fast.

Exit codes: 0 everything sampled was acknowledged by the server (or, for a long-running agent, it was stopped
cleanly); 1 no NVIDIA driver (or nvidia-ml-py missing), the server refused the token, another agent holds the
spool, or (with ``--once`` / ``--replay``) batches remain spooled because the server could not be reached;
2 a bad option.

Tests hand the command an ``httpx.Client`` (``obj={"client": ...}``, e.g. FastAPI's TestClient over an
in-process server) or an httpx transport (``obj={"transport": ...}``) through Click's context object.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from flopwise.cli._common import (
    EXIT_FAILURE,
    CatalogDir,
    JsonFlag,
    _fail,
    handle_errors,
    print_json,
    stderr_console,
)

__all__ = ["agent"]


@contextlib.contextmanager
def _stop_on_signals(stop: Any) -> Iterator[None]:
    """SIGINT and SIGTERM ask the agent to stop (it closes its intervals and flushes); restored afterwards."""
    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop())
    except ValueError:  # not the main thread: the caller stops the agent itself
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _log_to_stderr(verbose: bool) -> Iterator[None]:
    from rich.logging import RichHandler

    logger = logging.getLogger("flopwise.agent")
    handler = RichHandler(console=stderr_console(), show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@handle_errors
def agent(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server", help="Server URL (else $FLOPWISE_URL or the config file).", show_default=False
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="API token fw_... of a member of the organization (else $FLOPWISE_TOKEN or the config file).",
            show_default=False,
        ),
    ] = None,
    interval_s: Annotated[float, typer.Option("--interval-s", help="Seconds between two samples.")] = 10.0,
    push_interval_s: Annotated[
        float,
        typer.Option("--push-interval-s", help="Seconds per usage record and push (aligned to the clock)."),
    ] = 60.0,
    spool_dir: Annotated[
        Path | None,
        typer.Option(
            "--spool-dir",
            help="Where batches wait while the server is unreachable (default: the per-user state directory).",
            show_default=False,
        ),
    ] = None,
    max_spool_mb: Annotated[
        float,
        typer.Option(
            "--max-spool-mb", help="Bound of the spool in MB; past it the oldest batches are dropped."
        ),
    ] = 100.0,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            help="Replay a recorded sample CSV (the columns of write_samples_csv) instead of NVML, at full speed.",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Sample for one push interval, push, and exit (cron, smoke tests).")
    ] = False,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            help="Catalog region of this machine (e.g. country:NL, aws:us-east-1) for the CO2e of its usage.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every push and spool on stderr.")
    ] = False,
    catalog_dir: CatalogDir = None,
    json_out: JsonFlag = False,
) -> None:
    """Meter this machine's GPUs (NVML) and push usage records to a flopwise server, spooling on disk while it
    is unreachable."""
    import httpx

    from flopwise.catalog import load_catalog
    from flopwise.client import resolve_connection
    from flopwise.errors import FlopwiseError, InputError
    from flopwise.meter.agent import Agent, AgentConfig, default_spool_dir, open_sampler
    from flopwise.meter.record import RejectedRow

    conn = resolve_connection(server, token)
    if not conn.token:
        raise InputError(
            "--token", None, "give the API token of a member of the organization (or FLOPWISE_TOKEN)"
        )
    if not max_spool_mb > 0:
        raise InputError("--max-spool-mb", max_spool_mb, "give a positive number of megabytes")
    catalog = load_catalog(catalog_dir)
    if region is not None:
        region = catalog.region(region).id  # UnknownRegionError with suggestions -> exit 2
    config = AgentConfig(
        server_url=conn.url,
        token=conn.token,
        spool_dir=spool_dir or default_spool_dir(conn.url),
        interval_s=interval_s,
        push_interval_s=push_interval_s,
        max_spool_bytes=int(max_spool_mb * 1_000_000),
        region_id=region,
    )
    obj = ctx.obj if isinstance(ctx.obj, Mapping) else {}
    rejected: list[RejectedRow] = []
    try:
        sampler = open_sampler(replay, rejected=rejected)
    except FlopwiseError as err:
        if replay is None:  # no NVIDIA driver, nvidia-ml-py missing, NVML refused
            _fail(str(err), EXIT_FAILURE)
        raise
    client = obj.get("client") or httpx.Client(
        transport=obj.get("transport"), timeout=config.request_timeout_s
    )
    runner = Agent(
        sampler, client, config, time_from_samples=replay is not None, catalog=catalog, rejected=rejected
    )
    err_console = stderr_console()
    if not json_out:
        err_console.print(
            f"agent: sampling {'the replay ' + str(replay) if replay else 'NVML'} every {interval_s:g} s, "
            f"pushing every {push_interval_s:g} s to {config.url} (spool {config.spool_dir})",
            highlight=False,
            soft_wrap=True,
        )
    try:
        with sampler, _log_to_stderr(verbose), _stop_on_signals(runner.stop):
            stats = runner.run(once=once)
    except FlopwiseError as err:  # token refused, spool locked, a replay file that cannot be read
        _fail(str(err), EXIT_FAILURE)
    finally:
        if "client" not in obj:
            client.close()
    waiting = len(runner.spool)
    if json_out:
        print_json(
            {
                **stats.to_dict(),
                "batches_waiting": waiting,
                "spool_dir": str(config.spool_dir),
                "samples_rejected_first": [{"line": r.line, "reason": r.reason} for r in rejected[:10]],
            }
        )
    else:
        for r in rejected[:5]:
            err_console.print(
                f"agent: sample line {r.line} skipped: {r.reason}", highlight=False, soft_wrap=True
            )
        err_console.print(
            f"agent: {stats.ticks} ticks, {stats.samples} samples, {stats.records} records; "
            f"{stats.records_inserted} inserted, {stats.records_duplicate} already there, "
            f"{stats.records_dropped} dropped, {waiting} batches waiting in the spool",
            highlight=False,
            soft_wrap=True,
        )
    if waiting and (once or replay is not None):
        _fail(
            f"{waiting} batches could not be delivered and wait in {config.spool_dir}; the next run sends them",
            EXIT_FAILURE,
        )
