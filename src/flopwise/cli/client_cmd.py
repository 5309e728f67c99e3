"""`flopwise request|budget|policy|token ...`: client commands that talk to a running `flopwise serve`.

Each command builds a :class:`flopwise.client.FlopwiseClient` (URL and token from ``--url`` / ``--token``, else
``FLOPWISE_URL`` / ``FLOPWISE_TOKEN``, else ``~/.config/flopwise/config.toml``), calls one API operation and
renders the answer, or prints it whole with ``--json``. httpx is imported inside the commands, so
``flopwise --help`` stays fast.

Exit codes: 0 ok; 1 the server refused (401, 403, 404, 409) or cannot be reached; 2 bad input (a 422 from the
server, a bad option or file); 3 the request was not approved: denied, or waiting for approval (scripts branch
on it, e.g. ``flopwise request create ... || notify-approvers``).

Tests hand an httpx transport to the commands through Click's context object (``obj={"transport": ...}``), so
the same code runs against an in-process server.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from flopwise.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_POLICY,
    JsonFlag,
    _fail,
    fmt_num,
    handle_errors,
    print_json,
    stderr_console,
    stdout_console,
)

__all__ = ["admission_app", "budget_app", "policy_app", "request_app", "token_app"]

request_app = typer.Typer(
    help="Compute requests: create (estimated and decided by the server), list, approve.",
    no_args_is_help=True,
)
budget_app = typer.Typer(
    help="Budgets: caps on spending per scope and period, enforced at admission.", no_args_is_help=True
)
policy_app = typer.Typer(help="Policies: declarative YAML rules over request fields.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: create (shown once) and revoke.", no_args_is_help=True)
admission_app = typer.Typer(
    help="Admission jobs (what the scheduler adapters decided): list the ones holding budget, find jobs whose "
    "end was never reported, release or settle them by hand.",
    no_args_is_help=True,
)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Server URL (else $FLOPWISE_URL, the config file, http://127.0.0.1:8000).",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", help="Bearer token fw_... (else $FLOPWISE_TOKEN or the config file).", show_default=False
    ),
]

RequestIdArg = Annotated[int, typer.Argument(help="Request id.")]

#: request states and decision effects that mean "not approved (yet)": the command exits 3
NOT_APPROVED = frozenset({"denied", "deny", "pending", "require_approval", "expired", "rejected"})


# --- plumbing -----------------------------------------------------------------------------------------------


def _client(ctx: typer.Context, url: str | None, token: str | None) -> Any:
    from flopwise.client import FlopwiseClient

    obj = ctx.obj if isinstance(ctx.obj, Mapping) else {}
    return FlopwiseClient(url=url, token=token, transport=obj.get("transport"))


def server_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Server answers become one red line and an exit code: 422 -> 2, other refusals and no answer -> 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flopwise.client import ServerError, ServerValidationError

        try:
            return func(*args, **kwargs)
        except ServerValidationError as err:
            _fail(err.message, EXIT_BAD_INPUT)
        except ServerError as err:
            _fail(str(err), EXIT_FAILURE)

    return handle_errors(wrapper)


def _read_body_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML file holding one object (the request body)."""
    from flopwise.errors import InputError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError("--file", str(path), f"the file cannot be read ({exc.strerror})") from None
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError and its scanner errors
        raise InputError("--file", str(path), f"give JSON or YAML holding one object ({exc})") from None
    if not isinstance(data, dict):
        raise InputError("--file", str(path), "give JSON or YAML holding one object (a mapping of fields)")
    return data


def _parse_scope(scope: str) -> tuple[str, int]:
    from flopwise.errors import InputError

    kind, _, ident = scope.partition(":")
    if kind not in ("org", "team", "project") or not ident.isdigit():
        raise InputError("--scope", scope, "give org:ID, team:ID or project:ID (e.g. team:2)")
    return kind, int(ident)


def _flatten(data: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """(dotted key, scalar) pairs of a nested answer; lists of scalars are joined, long lists summarised."""
    out: list[tuple[str, Any]] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key), depth + 1))
    elif isinstance(data, list):
        if all(not isinstance(v, (Mapping, list)) for v in data):
            out.append((prefix, ", ".join(fmt_num(v) for v in data) or "-"))
        elif depth > 3:
            out.append((prefix, f"[{len(data)} items]"))
        else:
            for i, value in enumerate(data):
                out.extend(_flatten(value, f"{prefix}[{i}]", depth + 1))
    else:
        out.append((prefix, data))
    return out


def _print_fields(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column table (field, value) without a header."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    stdout_console().print(table)


def _render_one(title: str, data: Any, skip: tuple[str, ...] = ()) -> None:
    _print_fields(
        title,
        [(key, fmt_num(value)) for key, value in _flatten(data) if not key.startswith(skip) or not skip],
    )


def _render_many(title: str, rows: list[Mapping[str, Any]], columns: tuple[str, ...]) -> None:
    from rich.table import Table

    table = Table(title=f"{title} ({len(rows)})", title_justify="left")
    present = [c for c in columns if any(c in r for r in rows)] or sorted({k for r in rows for k in r})[:8]
    for col in present:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(
            *(fmt_num(row.get(c)) if not isinstance(row.get(c), (Mapping, list)) else "…" for c in present)
        )
    stdout_console().print(table)


def _items(answer: Any, key: str) -> list[Mapping[str, Any]]:
    if isinstance(answer, list):
        return [r for r in answer if isinstance(r, Mapping)]
    if isinstance(answer, Mapping):
        for k in (key, "items", "data"):
            if isinstance(answer.get(k), list):
                return [r for r in answer[k] if isinstance(r, Mapping)]
    return []


def _outcome(answer: Any) -> str | None:
    """The request's state or decision effect in an answer (``approved``, ``pending``, ``denied``...)."""
    if not isinstance(answer, Mapping):
        return None
    for key in ("state", "effect", "outcome"):
        if isinstance(answer.get(key), str):
            return answer[key]
    decision = answer.get("decision")
    if isinstance(decision, Mapping):
        return _outcome(decision)
    if isinstance(decision, str):
        return decision
    return None


def _request_rows(answer: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The rows people read in a request: what it asks for, what it is estimated to use, what was decided and why."""
    rows: list[tuple[str, str]] = [
        ("state", f"{answer.get('state')} (policy outcome: {answer.get('outcome') or '-'})"),
        ("workload", str(answer.get("workload", "-"))),
        ("devices", f"{answer.get('device_count', '-')} x {answer.get('device_type') or '-'}"),
        ("duration h", fmt_num(answer.get("duration_h"))),
        ("FLOPs", fmt_num(answer.get("estimated_flops"))),
        ("cost USD", fmt_num(answer.get("estimated_cost_usd"))),
        ("device-hours", fmt_num(answer.get("estimated_device_hours"))),
        ("energy kWh", fmt_num(answer.get("estimated_kwh"))),
        ("CO2e kg", fmt_num(answer.get("estimated_co2e_kg"))),
    ]
    if answer.get("approvals_required"):
        votes = answer.get("approvals") or []
        approved = sum(1 for v in votes if isinstance(v, Mapping) and v.get("verdict") == "approve")
        rows.append(
            (
                "approvals",
                f"{approved} of {answer['approvals_required']} ({answer.get('approver_role') or 'any'})",
            )
        )
    for res in answer.get("reservations") or []:
        if isinstance(res, Mapping):
            rows.append(
                (
                    f"budget {res.get('budget_id')}",
                    f"{fmt_num(res.get('amount'))} {res.get('unit')} {res.get('state')}" + _price_text(res),
                )
            )
    for key, label in (("reasons", "why"), ("warnings", "warning"), ("threshold_flags", "threshold")):
        rows.extend((label, str(item)) for item in answer.get(key) or [])
    if answer.get("expires_at") and answer.get("state") == "pending":
        rows.append(("expires", str(answer["expires_at"])))
    return rows


def _price_text(res: Mapping[str, Any]) -> str:
    """The unit price a reservation was made at (and its catalog date) and, once settled, the metered one."""
    reserved, settled = res.get("reserved_usd_per_device_h"), res.get("settled_usd_per_device_h")
    if reserved is None and settled is None:
        return ""
    # prices are exact decimal strings: printed as they are, never rounded
    text = f"; reserved at {reserved} USD/device-h" if reserved is not None else "; reserved price unknown"
    if res.get("price_retrieved"):
        text += f" (catalog {res['price_retrieved']})"
    if settled is not None:
        text += f", settled at {settled} USD/device-h"
        change = res.get("price_change_usd_per_device_h")
        if change is not None:
            text += f" ({'+' if Decimal(str(change)) >= 0 else ''}{change})"
    return text


def _render_request(answer: Any) -> None:
    if not isinstance(answer, Mapping) or "state" not in answer:
        _render_one("request", answer)
        return
    _print_fields(f"request {answer.get('id', '')}", _request_rows(answer))


def _render_list(title: str, key: str, columns: tuple[str, ...]) -> Callable[[Any], None]:
    """A renderer for a list answer: a table of *columns* over the rows under *key*."""
    return lambda answer: _render_many(title, _items(answer, key), columns)


@dataclass(frozen=True)
class _Server:
    """The server a command talks to (--url, --token; tests pass an httpx transport in ``ctx.obj``) and how the
    answer is printed (--json: whole, else rendered)."""

    ctx: typer.Context
    url: str | None
    token: str | None
    json_out: bool

    def run(
        self, call: Callable[[Any], Any], render: Callable[[Any], None], *, decides: bool = False
    ) -> None:
        """``call(client)`` and print its answer: whole with --json, else through *render*. With *decides* (the
        answer decides a request) exit 3 when the request is not approved (denied, pending approval, expired).
        Server errors become exit codes in :func:`server_errors`."""
        with _client(self.ctx, self.url, self.token) as fw:
            answer = call(fw)
        if self.json_out:
            print_json(answer)
        else:
            render(answer)
        if not decides:
            return
        outcome = _outcome(answer)
        if outcome in NOT_APPROVED:
            if not self.json_out:
                stderr_console().print(f"request is {outcome}", highlight=False)
            raise typer.Exit(EXIT_POLICY)


# --- flopwise request ---------------------------------------------------------------------------------------


@request_app.command("create")
@server_errors
def request_create(
    ctx: typer.Context,
    project: Annotated[
        int | None, typer.Option("--project", help="Project id the compute is charged to.")
    ] = None,
    workload: Annotated[
        str | None, typer.Option("--workload", help="train, fine-tune, serve or batch-inference.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="Catalog device, e.g. h100-sxm.")] = None,
    count: Annotated[int | None, typer.Option("--count", help="Number of devices.")] = None,
    hours: Annotated[
        str | None,
        typer.Option(
            "--hours", help="Duration in hours: the chosen plan's, or the serving time with --model."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model for the server to estimate from (e.g. llama-3.1-8b)."),
    ] = None,
    tokens: Annotated[
        str | None, typer.Option("--tokens", help="Training tokens with --model, e.g. 2T, 300B, 1.5e12.")
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Fine-tuning method with --model: full, lora or qlora.")
    ] = None,
    pricing: Annotated[
        str | None, typer.Option("--pricing", help="on-demand, spot, reserved or onprem.")
    ] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="Cloud provider, e.g. aws.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Region, e.g. us-east-1.")] = None,
    price: Annotated[
        str | None, typer.Option("--price", help="USD per device-hour (else the catalog's price).")
    ] = None,
    data_classification: Annotated[
        str | None, typer.Option("--data-classification", help="e.g. public, internal, confidential.")
    ] = None,
    body_file: Annotated[
        Path | None,
        typer.Option("--file", help="JSON or YAML file with the request body; options override it."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Retry-safe key: the same key returns the same request."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Ask for compute: the server estimates it, checks policies, budgets and quotas, and decides (exit 3 unless approved).

    Give --hours alone for a chosen plan (the server prices devices x hours), or --model (with --tokens to
    train, --hours to serve) for the server to estimate the run itself.
    """
    from flopwise.units import parse_count
    from flopwise.vocab import pricing_kind, workload_kind

    # checked here as `estimate` checks them: "2B" tokens, and one spelling of workload and pricing kinds
    n_tokens = None if tokens is None else parse_count(tokens, "--tokens", max_value=1e16)
    workload = None if workload is None else workload_kind(workload, "--workload")
    pricing = None if pricing is None else pricing_kind(pricing, "--pricing")
    body = build_request_body(
        _read_body_file(body_file) if body_file else {},
        project_id=project,
        workload=workload,
        device=device,
        device_count=count,
        hours=hours,
        model=model,
        tokens=n_tokens,
        method=method,
        pricing=pricing,
        provider=provider,
        region=region,
        usd_per_device_h=price,
        data_classification=data_classification,
    )
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.create_request(body, idempotency_key=idempotency_key), _render_request, decides=True
    )


def build_request_body(base: Mapping[str, Any], **options: Any) -> dict[str, Any]:
    """The request body: *base* (from --file) with the given options laid over it.

    ``hours`` goes to ``plan.duration_h`` (a chosen plan) unless a model is named, when it goes to
    ``params.duration_h`` (serving hours) next to ``params.model``, ``tokens`` and ``method``.
    """
    body = dict(base)
    hours, model = options.pop("hours"), options.pop("model")
    tokens, method = options.pop("tokens"), options.pop("method")
    body.update({k: v for k, v in options.items() if v is not None})
    if model is not None or "params" in body:
        params = dict(body.get("params") or {})
        extra = {"model": model, "tokens": tokens, "method": method, "duration_h": hours}
        params.update({k: v for k, v in extra.items() if v is not None})
        body["params"] = params
        if model is not None:
            body.pop("plan", None)
    elif hours is not None:
        plan = dict(body.get("plan") or {})
        plan["duration_h"] = hours
        body["plan"] = plan
    return body


@request_app.command("list")
@server_errors
def request_list(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option("--state", help="Only pending, approved, denied, cancelled or expired.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """List compute requests you may see, newest first."""
    columns = ("id", "state", "workload", "project_id", "device_type", "device_count", "estimated_cost_usd")
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.list_requests(state=state), _render_list("requests", "requests", columns)
    )


@request_app.command("show")
@server_errors
def request_show(
    ctx: typer.Context,
    request_id: RequestIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Show one request: its estimate, state, approvals and the decision trace."""
    _Server(ctx, url, token, json_out).run(lambda fw: fw.get_request(request_id), _render_request)


@request_app.command("approve")
@server_errors
def request_approve(
    ctx: typer.Context,
    request_id: RequestIdArg,
    comment: Annotated[str | None, typer.Option("--comment", help="Why (kept in the audit log).")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Approve a pending request (not your own); exit 3 while it still needs more approvals."""
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.approve_request(request_id, comment or ""), _render_request, decides=True
    )


@request_app.command("deny")
@server_errors
def request_deny(
    ctx: typer.Context,
    request_id: RequestIdArg,
    comment: Annotated[
        str, typer.Option("--comment", help="Why it is denied (required; kept in the audit log).")
    ],
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Deny a pending request; exits 0 when the denial is recorded."""
    _Server(ctx, url, token, json_out).run(lambda fw: fw.deny_request(request_id, comment), _render_request)


@request_app.command("cancel")
@server_errors
def request_cancel(
    ctx: typer.Context,
    request_id: RequestIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Cancel a request; its budget reservations are released."""
    _Server(ctx, url, token, json_out).run(lambda fw: fw.cancel_request(request_id), _render_request)


# --- flopwise budget ----------------------------------------------------------------------------------------


@budget_app.command("create")
@server_errors
def budget_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Unique name within the organization.")],
    scope: Annotated[str, typer.Option("--scope", help="org:ID, team:ID or project:ID.")],
    amount: Annotated[str, typer.Option("--amount", help="Cap as a decimal (e.g. 5000.00).")],
    unit: Annotated[str, typer.Option("--unit", help="usd, device_hours, kwh or co2e_kg.")] = "usd",
    period: Annotated[str, typer.Option("--period", help="month, quarter, year or custom.")] = "month",
    soft: Annotated[
        bool, typer.Option("--soft", help="Warn instead of refusing when exceeded (fail open).")
    ] = False,
    alert: Annotated[
        list[str] | None,
        typer.Option("--alert", help="Alert threshold as a fraction, repeatable (e.g. 0.8)."),
    ] = None,
    window_start: Annotated[
        str | None, typer.Option("--window-start", help="Start of a custom window (ISO 8601, UTC).")
    ] = None,
    window_end: Annotated[
        str | None, typer.Option("--window-end", help="End of a custom window (ISO 8601, UTC).")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a budget over a scope and period (hard by default: requests beyond it are refused)."""
    from decimal import Decimal, InvalidOperation

    from flopwise.errors import InputError

    try:
        if not Decimal(amount).is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise InputError("--amount", amount, "give a decimal number such as 5000.00") from None
    scope_kind, scope_id = _parse_scope(scope)
    body: dict[str, Any] = {
        "name": name,
        "scope_kind": scope_kind,
        "scope_id": scope_id,
        "period": period,
        "unit": unit,
        "amount": amount,
        "is_hard": not soft,
    }
    if alert:
        body["alert_thresholds"] = list(alert)
    if window_start:
        body["window_start"] = window_start
    if window_end:
        body["window_end"] = window_end
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.create_budget(body),
        lambda answer: _render_one(f"budget {answer.get('id', '')}".strip(), answer),
    )


@budget_app.command("list")
@server_errors
def budget_list(
    ctx: typer.Context,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """List budgets with what is spent and what remains in the current period."""
    columns = (
        "id",
        "name",
        "scope_kind",
        "scope_id",
        "period",
        "unit",
        "amount",
        "spent",
        "remaining",
        "is_hard",
    )
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.list_budgets(), _render_list("budgets", "budgets", columns)
    )


@budget_app.command("show")
@server_errors
def budget_show(
    ctx: typer.Context,
    budget_id: Annotated[int, typer.Argument(help="Budget id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Show one budget: cap, period window, spent, reserved and remaining."""
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.get_budget(budget_id), functools.partial(_render_one, f"budget {budget_id}")
    )


# --- flopwise admission -------------------------------------------------------------------------------------

EngineArg = Annotated[str, typer.Argument(help="Scheduler engine as the adapter reported it (slurm, kueue, ray, skypilot).")]
JobIdArg = Annotated[str, typer.Argument(help="The engine's job id (Slurm: <cluster>.<jobid>).")]


def _render_job(answer: Any) -> None:
    if not isinstance(answer, Mapping) or "state" not in answer:
        _render_one("admission job", answer)
        return
    rows: list[tuple[str, str]] = [
        ("state", f"{answer.get('state')} (policy outcome: {answer.get('outcome') or '-'})"),
        ("project", fmt_num(answer.get("project_id"))),
        ("devices", f"{answer.get('device_count', '-')} x {answer.get('device_type') or '-'}"),
        ("max duration h", fmt_num(answer.get("max_duration_h"))),
        ("worst case USD", fmt_num(answer.get("worst_case_cost_usd"))),
        ("admitted at", str(answer.get("created_at") or "-")),
        ("started at", str(answer.get("committed_at") or "-")),
        ("ends by", str(answer.get("ends_by") or "-")),
        ("ended at", str(answer.get("ended_at") or "-")),
    ]
    for res in answer.get("reservations") or []:
        if isinstance(res, Mapping):
            rows.append(
                (f"budget {res.get('budget_id')}", f"{fmt_num(res.get('amount'))} {res.get('unit')} {res.get('state')}")
            )
    rows.extend(("why", str(reason)) for reason in answer.get("reasons") or [])
    _print_fields(f"admission job {answer.get('engine')}/{answer.get('engine_job_id')}", rows)


@admission_app.command("list")
@server_errors
def admission_list(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Only holding (admitted or committed: their reservations count now), admitted, rejected, "
            "committed, released or settled.",
        ),
    ] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="Only this engine's jobs.")] = None,
    project_id: Annotated[int | None, typer.Option("--project-id", help="Only this project's jobs.")] = None,
    overdue: Annotated[
        bool,
        typer.Option(
            "--overdue",
            help="Only committed jobs past their start plus maximum duration that were never settled or released "
            "(their reservation still counts in full).",
        ),
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many jobs.")] = 100,
    before_id: Annotated[
        int | None, typer.Option("--before-id", help="The next page: jobs with a smaller id than this one.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """List admission jobs you may see, newest first."""
    columns = ("id", "engine", "engine_job_id", "state", "project_id", "device_type", "device_count",
               "worst_case_cost_usd", "ends_by")  # fmt: skip
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.list_admission(
            state=state, engine=engine, project_id=project_id, overdue=overdue or None, limit=limit,
            before_id=before_id,
        ),
        _render_list("admission jobs", "jobs", columns),
    )  # fmt: skip


@admission_app.command("show")
@server_errors
def admission_show(
    ctx: typer.Context,
    engine: EngineArg,
    job_id: JobIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Show one admission job: its decision, times and reservations."""
    _Server(ctx, url, token, json_out).run(lambda fw: fw.get_admission(engine, job_id), _render_job)


@admission_app.command("release")
@server_errors
def admission_release(
    ctx: typer.Context,
    engine: EngineArg,
    job_id: JobIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """The job never ran: release its reservation (audited; repeating it is harmless)."""
    _Server(ctx, url, token, json_out).run(lambda fw: fw.release_admission(engine, job_id), _render_job)


@admission_app.command("settle")
@server_errors
def admission_settle(
    ctx: typer.Context,
    engine: EngineArg,
    job_id: JobIdArg,
    hours: Annotated[
        Decimal, typer.Option("--hours", help="Hours the job ran (from the scheduler's accounting).", min=0)
    ],
    cost_usd: Annotated[
        Decimal | None,
        typer.Option("--cost-usd", help="What it cost; else the worst case prorated by hours.", min=0),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """The job ended but its end was never reported: replace its reservation by what it used (audited)."""
    body: dict[str, Any] = {"actual_duration_h": str(hours)}
    if cost_usd is not None:
        body["cost_usd"] = str(cost_usd)
    _Server(ctx, url, token, json_out).run(lambda fw: fw.settle_admission(engine, job_id, body), _render_job)


# --- flopwise policy ----------------------------------------------------------------------------------------


@policy_app.command("apply")
@server_errors
def policy_apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Policy YAML file (its 'name:' key names the policy).")],
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Store this version switched off (kept, not evaluated).")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Apply a policy file: the server validates it and stores it as the policy's next version."""
    from flopwise.errors import InputError

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("FILE", str(file), f"the policy file cannot be read ({exc})") from None
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.apply_policy(text, is_enabled=not disabled),
        lambda answer: _render_one(
            f"policy {answer.get('name', '')} v{answer.get('version', '')}", answer, skip=("yaml",)
        ),
    )


# --- flopwise token -----------------------------------------------------------------------------------------


def _render_new_token(answer: Any) -> None:
    """The token's fields, then its secret alone on stdout (for scripts), announced on stderr."""
    secret = answer.get("token") if isinstance(answer, Mapping) else None
    _render_one("token", {k: v for k, v in answer.items() if k != "token"})
    if secret:
        stderr_console().print("the token (shown once, store it now):", highlight=False)
        typer.echo(secret)


@token_app.command("create")
@server_errors
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="What the token is for (e.g. ci, laptop).")] = "cli",
    user: Annotated[
        int | None, typer.Option("--user", help="User id (admins only; default: yourself).")
    ] = None,
    expires_days: Annotated[
        float | None, typer.Option("--expires-days", help="Lifetime in days (default: the server's).")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an API token. The secret is printed once: store it now."""
    body: dict[str, Any] = {"name": name}
    if user is not None:
        body["user_id"] = user
    if expires_days is not None:
        body["expires_in_days"] = expires_days
    _Server(ctx, url, token, json_out).run(lambda fw: fw.create_token(body), _render_new_token)


@token_app.command("revoke")
@server_errors
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(help="Token id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Revoke a token; it stops working at once."""
    _Server(ctx, url, token, json_out).run(
        lambda fw: fw.revoke_token(token_id),
        lambda answer: _render_one(f"token {token_id}", answer or {"revoked": True}),
    )
