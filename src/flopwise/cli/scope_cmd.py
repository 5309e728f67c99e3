"""``flopwise team|project|user|attribution ...``: organize a ledger and attribute its usage on the database directly.

These talk to the store (``--database-url`` / ``FLOPWISE_DATABASE_URL``, default the per-user SQLite file the
server uses) like ``flopwise admin`` and ``flopwise ingest`` do, so a local ledger needs no server and no curl.
``--org`` names the organization (name or id); it may be left out while the database has exactly one. Every
change is audited (actor ``cli:<OS user>``). Exit codes: 0 ok, 2 bad input (an unknown name comes with the
closest names), 1 the database cannot be reached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer

from flopwise.cli._common import EXIT_FAILURE, JsonFlag, _fail, handle_errors, print_json

__all__ = ["attribution_app", "project_app", "team_app", "user_app"]

team_app = typer.Typer(help="Teams of an organization (on the database directly).", no_args_is_help=True)
project_app = typer.Typer(help="Projects of a team (on the database directly).", no_args_is_help=True)
user_app = typer.Typer(
    help="Users of an organization and their roles (on the database directly).", no_args_is_help=True
)
attribution_app = typer.Typer(
    help="Rules that attribute metered usage to teams and projects (on the database directly).",
    no_args_is_help=True,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FLOPWISE_DATABASE_URL",
        help="The store (default: the per-user SQLite file the server uses).",
        show_default=False,
    ),
]
OrgOpt = Annotated[
    str | None,
    typer.Option(
        "--org",
        envvar="FLOPWISE_ORG",
        help="Organization name or id (default: the only one in the database).",
        show_default=False,
    ),
]


def _database_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import sqlite3

        from sqlalchemy.exc import SQLAlchemyError

        errors: tuple[type[BaseException], ...] = (SQLAlchemyError, sqlite3.Error)
        try:
            import psycopg  # the bulk writer talks to the driver directly: its errors arrive unwrapped

            errors = (*errors, psycopg.Error)
        except ImportError:  # pragma: no cover - psycopg is a dependency
            pass
        try:
            return func(*args, **kwargs)
        except errors as err:
            first = str(getattr(err, "orig", None) or err).strip().splitlines()
            _fail(
                f"database error: {first[0] if first else type(err).__name__}. Check --database-url "
                "(or FLOPWISE_DATABASE_URL) and that the database server is running.",
                EXIT_FAILURE,
            )

    return wrapper


def actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (KeyError, OSError):
        return "cli"


def default_org(session: Any, org: str | None) -> Any:
    """The organization *org* names, or the only one in the database."""
    from sqlalchemy import select

    from flopwise.errors import InputError
    from flopwise.store import Organization
    from flopwise.store.directory import resolve_org

    if org is not None:
        return resolve_org(session, org)
    orgs = list(session.scalars(select(Organization).order_by(Organization.id).limit(3)))
    if len(orgs) == 1:
        return orgs[0]
    if not orgs:
        raise InputError(
            "--org", None, "the database has no organization; create one with `flopwise admin bootstrap`"
        )
    raise InputError("--org", None, "the database has several organizations; name one with --org NAME")


class _store:  # noqa: N801 - a context manager, named like one
    """A write session on the store (migrated first), disposed afterwards."""

    def __init__(self, database_url: str | None) -> None:
        self._url = database_url

    def __enter__(self) -> Any:
        from flopwise.store import make_engine, make_session_factory, upgrade, write_session

        self._engine = make_engine(self._url)
        upgrade(self._engine)
        self._cm = write_session(make_session_factory(self._engine))
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._cm.__exit__(*exc)
        finally:
            self._engine.dispose()


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.table import Table

    from flopwise.cli._common import stdout_console

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("-" if r.get(c) is None else str(r.get(c)) for c in columns))
    stdout_console().print(table)


def _created(kind: str, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
    else:
        from flopwise.cli._common import stderr_console

        stderr_console().print(f"{kind} {data['id']}: {data['name']!r}", highlight=False)


def _list(
    database_url: str | None,
    org: str | None,
    as_json: bool,
    lister: str,
    title: str,
    columns: list[str],
    shown: Any = None,
) -> None:
    """One list command: the organization's rows from ``store.directory.<lister>``, as JSON or a table (*shown*
    turns a row into its table cells where a field is not plain text)."""
    from flopwise.store import directory

    with _store(database_url) as s:
        o = default_org(s, org)
        rows = getattr(directory, lister)(s, o)
    if as_json:
        print_json(rows)
    else:
        _table(f"{title} of {o.name}", [shown(r) for r in rows] if shown else rows, columns)


# --- teams ---------------------------------------------------------------------------------------------------


@team_app.command("create")
@handle_errors
@_database_errors
def team_create(
    name: Annotated[
        str, typer.Argument(help="The team's name (unique in its organization).", show_default=False)
    ],
    org: OrgOpt = None,
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a team in an organization."""
    from flopwise.store.directory import create_team

    with _store(database_url) as s:
        o = default_org(s, org)
        team = create_team(s, o, name, actor())
        data = {"id": team.id, "name": team.name, "org_id": o.id, "org": o.name}
    _created("team", data, as_json)


@team_app.command("list")
@handle_errors
@_database_errors
def team_list(org: OrgOpt = None, database_url: DatabaseUrl = None, as_json: JsonFlag = False) -> None:
    """List an organization's teams."""
    _list(database_url, org, as_json, "list_teams", "teams", ["id", "name"])


# --- projects ------------------------------------------------------------------------------------------------


@project_app.command("create")
@handle_errors
@_database_errors
def project_create(
    name: Annotated[str, typer.Argument(help="The project's name (unique in its team).", show_default=False)],
    team: Annotated[
        str, typer.Option("--team", help="The team (name or id) it belongs to.", show_default=False)
    ],
    org: OrgOpt = None,
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a project in a team."""
    from flopwise.store.directory import create_project, resolve_team

    with _store(database_url) as s:
        o = default_org(s, org)
        t = resolve_team(s, o, team)
        project = create_project(s, t, name, actor())
        data = {"id": project.id, "name": project.name, "team_id": t.id, "team": t.name}
    _created("project", data, as_json)


@project_app.command("list")
@handle_errors
@_database_errors
def project_list(org: OrgOpt = None, database_url: DatabaseUrl = None, as_json: JsonFlag = False) -> None:
    """List an organization's projects with their teams."""
    _list(database_url, org, as_json, "list_projects", "projects", ["id", "name", "team"])


# --- users ---------------------------------------------------------------------------------------------------


@user_app.command("create")
@handle_errors
@_database_errors
def user_create(
    name: Annotated[
        str, typer.Argument(help="The user's name (unique in the organization).", show_default=False)
    ],
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            help="ROLE or ROLE@team:NAME or ROLE@project:NAME (roles: admin, approver, member, viewer); "
            "repeatable. ROLE alone is on the organization.",
            show_default=False,
        ),
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="The user's email address.", show_default=False)
    ] = None,
    org: OrgOpt = None,
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a user with role bindings (give them a token through the server's POST /api/v1/tokens)."""
    from flopwise.errors import InputError
    from flopwise.store.directory import create_user, resolve_project, resolve_team

    with _store(database_url) as s:
        o = default_org(s, org)
        grants = []
        for text in role or []:
            role_name, _, scope = text.partition("@")
            if not scope:
                grants.append((role_name, "org", o.id))
                continue
            kind, _, ref = scope.partition(":")
            if kind == "team" and ref:
                grants.append((role_name, "team", resolve_team(s, o, ref).id))
            elif kind == "project" and ref:
                grants.append((role_name, "project", resolve_project(s, o, ref).id))
            else:
                raise InputError("--role", text, "write ROLE, ROLE@team:NAME or ROLE@project:NAME")
        user = create_user(s, o, name, actor(), email=email, roles=grants)
        data = {
            "id": user.id,
            "name": user.name,
            "org": o.name,
            "roles": [f"{r}@{k}:{i}" for r, k, i in grants],
        }
    _created("user", data, as_json)


@user_app.command("list")
@handle_errors
@_database_errors
def user_list(org: OrgOpt = None, database_url: DatabaseUrl = None, as_json: JsonFlag = False) -> None:
    """List an organization's users and their roles."""
    _list(database_url, org, as_json, "list_users", "users", ["id", "name", "email", "roles"],
          shown=lambda r: {**r, "roles": ", ".join(r["roles"])})  # fmt: skip


# --- attribution rules ---------------------------------------------------------------------------------------


def _parse_match(items: list[str]) -> dict[str, Any]:
    """``key=value`` items as a rule's match; ``tag=K=V`` / ``label=K=V`` become ``{"tag": {"K": "V"}}``."""
    from flopwise.errors import InputError
    from flopwise.govern.match import MATCH_KEYS

    match: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value:
            raise InputError("--match", item, "write KEY=VALUE, e.g. account=physics or tag=team=nlp")
        if key not in MATCH_KEYS:
            import difflib

            close = difflib.get_close_matches(key, MATCH_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError("--match", item, f"use the keys {', '.join(MATCH_KEYS)}{hint}")
        if key in ("tag", "label", "tags", "labels"):
            k, sep2, v = value.partition("=")
            if not sep2:
                raise InputError("--match", item, f"write {key}=KEY=VALUE (VALUE may be a glob)")
            match.setdefault("tag" if key in ("tag", "tags") else "label", {})[k] = v
        elif key in match:
            existing = match[key]
            match[key] = [*(existing if isinstance(existing, list) else [existing]), value]
        else:
            match[key] = value
    return match


def _rule_target(s: Any, o: Any, project: str | None, team: str | None) -> tuple[Any, Any]:
    from flopwise.store.directory import resolve_project, resolve_team

    t = resolve_team(s, o, team) if team is not None else None
    p = resolve_project(s, o, project, t) if project is not None else None
    return t, p


ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project", help="The project (name, TEAM/NAME or id) the usage belongs to.", show_default=False
    ),
]
TeamOpt = Annotated[
    str | None,
    typer.Option(
        "--team", help="The team (name or id); alone, the usage belongs to the team.", show_default=False
    ),
]


@attribution_app.command("add")
@handle_errors
@_database_errors
def attribution_add(
    match: Annotated[
        list[str],
        typer.Option(
            "--match",
            help="KEY=VALUE condition (all must hold; VALUE may be a glob): source, account, partition, user, "
            "namespace, resource_id, tag=KEY=VALUE, label=KEY=VALUE. Repeatable.",
            show_default=False,
        ),
    ],
    project: ProjectOpt = None,
    team: TeamOpt = None,
    priority: Annotated[int, typer.Option("--priority", help="Lower is tried first.")] = 100,
    org: OrgOpt = None,
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a rule: usage matching every --match belongs to --project (or --team). Ingest applies it to
    unattributed usage; `flopwise attribution apply` applies it to the ledger now."""
    from flopwise.store.directory import add_rule

    with _store(database_url) as s:
        o = default_org(s, org)
        t, p = _rule_target(s, o, project, team)
        rule = add_rule(s, o, _parse_match(match), actor(), team=t, project=p, priority=priority)
        data = {"id": rule.id, "name": f"{rule.match}", "priority": rule.priority, "team_id": rule.team_id,
                "project_id": rule.project_id}  # fmt: skip
    _created("rule", data, as_json)


@attribution_app.command("default")
@handle_errors
@_database_errors
def attribution_default(
    source: Annotated[
        str,
        typer.Argument(
            help="The ingest source (slurm, focus, dcgm, ...) whose usage it covers.", show_default=False
        ),
    ],
    project: ProjectOpt = None,
    team: TeamOpt = None,
    org: OrgOpt = None,
    database_url: DatabaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Set a source's default scope: its usage that no other rule matches belongs to --project (or --team)."""
    from flopwise.store.directory import DEFAULT_SCOPE_PRIORITY, add_rule

    with _store(database_url) as s:
        o = default_org(s, org)
        t, p = _rule_target(s, o, project, team)
        rule = add_rule(s, o, {"source": source}, actor(), team=t, project=p, priority=DEFAULT_SCOPE_PRIORITY)
        data = {"id": rule.id, "name": f"default scope of {source}", "priority": rule.priority,
                "team_id": rule.team_id, "project_id": rule.project_id}  # fmt: skip
    _created("rule", data, as_json)


@attribution_app.command("list")
@handle_errors
@_database_errors
def attribution_list(org: OrgOpt = None, database_url: DatabaseUrl = None, as_json: JsonFlag = False) -> None:
    """List an organization's attribution rules in the order they are tried."""
    import json

    _list(database_url, org, as_json, "list_rules", "attribution rules", ["id", "priority", "match", "team", "project"],
          shown=lambda r: {**r, "match": json.dumps(r["match"], sort_keys=True)})  # fmt: skip


@attribution_app.command("remove")
@handle_errors
@_database_errors
def attribution_remove(
    rule: Annotated[
        int, typer.Argument(help="The rule id (see `flopwise attribution list`).", show_default=False)
    ],
    org: OrgOpt = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a rule (usage it attributed keeps its scope)."""
    from flopwise.store.directory import remove_rule

    with _store(database_url) as s:
        o = default_org(s, org)
        remove_rule(s, o, rule, actor())


@attribution_app.command("apply")
@handle_errors
@_database_errors
def attribution_apply(
    org: OrgOpt = None, database_url: DatabaseUrl = None, as_json: JsonFlag = False
) -> None:
    """Attribute the ledger's unattributed usage by the rules now, and report what stays unattributed."""
    from flopwise.meter.burn import apply_attribution
    from flopwise.store.reports import unattributed_usage
    from flopwise.store.rollups import refresh_rollups

    with _store(database_url) as s:
        o = default_org(s, org) if org is not None else None
        summary = apply_attribution(s, o.id if o is not None else None)
        refresh_rollups(s)  # the hours whose usage moved to a team or project
        left = unattributed_usage(s, org_id=o.id if o is not None else None)
    data = {
        "examined": summary.examined,
        "by_request": summary.by_request,
        "by_rule": summary.by_rule,
        "unattributed": left,
    }
    if as_json:
        print_json(data)
        return
    from flopwise.cli._common import stderr_console

    stderr_console().print(
        f"{summary.examined} records examined: {summary.by_rule} attributed by rule, {summary.by_request} by request",
        highlight=False,
    )
    warn_unattributed(left, "in the ledger")


def warn_unattributed(left: dict[str, Any], where: str) -> None:
    """One loud line on stderr when usage belongs to no project (with its records, cost and device-hours)."""
    if not left["records"]:
        return
    from flopwise.cli._common import fmt_num, stderr_console

    stderr_console().print(
        f"[yellow]warning:[/yellow] {left['records']:,} records {where} belong to no project "
        f"({left['no_org']:,} to no organization): ${fmt_num(left['cost_usd'])}, "
        f"{fmt_num(left['device_hours'])} device-hours. Add rules with `flopwise attribution add` (or a "
        "source's default with `flopwise attribution default`), or ingest with --org.",
        highlight=False,
        soft_wrap=True,
    )
