"""Dashboard pages. Each route authenticates the browser session, calls the store queries or the API's route
functions (the same authorization and business rules as ``/api/v1``), builds chart specs with :mod:`.charts`
and renders a template. Every filter lives in the URL (GET forms), every chart has its table and a CSV link.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from flopwise import errors as fe
from flopwise import money
from flopwise.server.auth import (
    ROLE_RANK,
    Principal,
    principal_for_token,
    principal_for_token_id,
    scope_chain,
)
from flopwise.server.errors import ApiError
from flopwise.server.web import TEMPLATE_DIR, charts
from flopwise.server.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    csrf_ok,
    security_headers,
)

__all__ = ["install_handlers", "router"]

router = APIRouter(include_in_schema=False)

MEASURES: dict[str, tuple[str, str, str | None]] = {
    # name -> (label, unit, idle share column)
    "cost_usd": ("cost (flopwise)", "USD", "idle_cost_usd"),
    "billed_cost": ("billed cost", "USD", None),
    "effective_cost": ("effective cost", "USD", None),
    "device_hours": ("GPU-hours", "device-hours", "idle_device_hours"),
    "energy_kwh": ("energy", "kWh", None),
    "co2e_kg": ("CO2e", "kg", None),
}
#: where a click on a group row goes next (drill-down)
DRILL = {
    "org": "team", "team": "project", "project": "user", "user": "device", "provider": "region",
    "region": "device", "device": "user", "service": "device", "source": "project",
}  # fmt: skip
UNIT_MEASURE = {"usd": "cost_usd", "device_hours": "device_hours", "kwh": "energy_kwh", "co2e_kg": "co2e_kg"}
NAV = (
    ("overview", "/", "Overview", "viewer"),
    ("usage", "/usage", "Usage", "org"),
    ("budgets", "/budgets", "Budgets", "viewer"),
    ("requests", "/requests", "Requests", "viewer"),
    ("jobs", "/jobs", "Jobs", "viewer"),
    ("estimate", "/estimate", "Estimate & plan", "viewer"),
    ("efficiency", "/efficiency", "Efficiency", "org"),
    ("catalog", "/catalog", "Catalog", "viewer"),
    ("quotas", "/quotas", "Quotas", "viewer"),
    ("sources", "/sources", "Sources", "org"),
    ("audit", "/audit", "Audit", "admin"),
)
MAX_WINDOW_DAYS = 3 * 366

_templates: Any = None


def templates() -> Any:
    global _templates
    if _templates is None:
        from fastapi.templating import Jinja2Templates

        _templates = Jinja2Templates(directory=str(TEMPLATE_DIR))
        env = _templates.env
        env.filters.update(money=fmt_money, num=fmt_num, pct=fmt_pct, when=fmt_when, day=fmt_day)
        env.globals.update(spec_json=spec_json, qs=qs)
    return _templates


# ---------------------------------------------------------------------------------------------- formatting


def fmt_money(value: Any, places: int = 2) -> str:
    """``$1,234.56`` (money is Decimal; rounding to cents for display only)."""
    if value is None or value == "":
        return "-"
    d = Decimal(str(value))
    return f"-${abs(d):,.{places}f}" if d < 0 else f"${d:,.{places}f}"


def fmt_num(value: Any, places: int = 2) -> str:
    if value is None or value == "":
        return "-"
    return f"{float(value):,.{places}f}"


def fmt_pct(value: Any, places: int = 0) -> str:
    if value is None:
        return "-"
    return f"{float(value) * 100:.{places}f}%"


def fmt_when(value: Any) -> str:
    """A time as ``YYYY-MM-DD HH:MM UTC``."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_day(value: Any) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def spec_json(spec: Mapping[str, Any]) -> str:
    """A chart spec as JSON for a ``<script type="application/json">`` block (``</`` escaped)."""
    return json.dumps(spec, default=_json_default, separators=(",", ":")).replace("</", "<\\/")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def qs(params: Mapping[str, Any], **changes: Any) -> str:
    """``?a=1&b=2`` from *params* with *changes* applied (None removes a key)."""
    merged = {k: v for k, v in params.items() if v not in (None, "")}
    for k, v in changes.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return "?" + urlencode(merged) if merged else "?"


# ---------------------------------------------------------------------------------------------- sessions


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@dataclass(frozen=True)
class Viewer:
    """The logged-in user of a page: principal, strongest role (on the organization, and anywhere), CSRF."""

    principal: Principal
    org_role: str | None
    top_role: str
    csrf: str
    org_name: str

    @property
    def is_admin(self) -> bool:
        return self.org_role == "admin"

    def can_see(self, min_role: str) -> bool:
        return ROLE_RANK[self.top_role] >= ROLE_RANK[min_role]


def _db(request: Request) -> Any:
    return request.app.state.db


def _now(request: Request) -> datetime:
    return request.app.state.clock()


def current_viewer(request: Request) -> Viewer:
    """The session's user, or :class:`LoginRequired` (redirect to the login page)."""
    from flopwise.store import Organization, read_session

    store = request.app.state.web_sessions
    sid = request.cookies.get(SESSION_COOKIE)
    web = store.get(sid)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if web is None:
        raise LoginRequired(target)
    with read_session(_db(request)) as s:
        try:
            principal = principal_for_token_id(s, web.token_id, _now(request))
        except ApiError:
            store.drop(sid)
            raise LoginRequired(target) from None
        org = s.get(Organization, principal.org_id)
        org_name = org.name if org else ""
    held = [r for r, _, _ in principal.bindings]
    top = max(held, key=ROLE_RANK.__getitem__) if held else "viewer"
    return Viewer(principal, principal.best_role([("org", principal.org_id)]), top, web.csrf, org_name)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def _check_csrf(request: Request, v: Viewer, given: str | None) -> None:
    if not csrf_ok(v.csrf, given or request.headers.get(CSRF_HEADER)):
        raise ApiError(403, "the form's security token is missing or stale: reload the page and submit it again")


def render(request: Request, v: Viewer | None, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    from flopwise.store import read_session
    from flopwise.store.explore import data_freshness

    freshness = None
    if v is not None and ctx.pop("with_freshness", True):
        with read_session(_db(request)) as s:
            freshness = data_freshness(s, v.principal.org_id)
    nav = [(key, href, label) for key, href, label, role in NAV if v is None or _nav_ok(v, role)]
    return templates().TemplateResponse(
        request,
        template,
        {"v": v, "nav": nav, "freshness": freshness, "now": _now(request), "csrf_field": CSRF_FIELD,
         "params": dict(request.query_params), **ctx},
        status_code=status,
        headers=security_headers(),
    )  # fmt: skip


def _nav_ok(v: Viewer, role: str) -> bool:
    """Admin pages for organization admins, organization-wide pages for a role on the organization."""
    if role == "admin":
        return v.is_admin
    return v.org_role is not None if role == "org" else True


def html_errors(page: Callable[..., Any]) -> Callable[..., Any]:
    """A refused or invalid request renders the error page (status kept) with the message, never a traceback."""

    @functools.wraps(page)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs["request"]
        v: Viewer | None = kwargs.get("v")
        try:
            return page(*args, **kwargs)
        except ApiError as err:
            status, message, details = err.status, err.message, err.errors
        except fe.FlopwiseError as err:
            status, message, details = 422, str(err), []
        except ValidationError as err:
            details = [
                {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                for e in err.errors()
            ]
            status = 422
            message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        return render(request, v, "error.html", status=status, message=message, details=details,
                      active="", with_freshness=False)  # fmt: skip

    return wrapper


def install_handlers(app: Any) -> None:
    """Redirect to the login page when a session is missing; security headers on every non-API response."""

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        url = "/login?" + urlencode({"next": exc.next_url})
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": url, **security_headers()})
        return RedirectResponse(url, status_code=303, headers=security_headers())

    app.add_middleware(_SecurityHeaders)


class _SecurityHeaders:
    """Pure ASGI middleware: :func:`security_headers` on every response outside ``/api/`` (a header the response
    set itself is kept; static files are cacheable for a day). API calls pass straight through: no
    ``BaseHTTPMiddleware`` task and stream per request on the hot path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        extra = security_headers()
        if path.startswith("/static/"):
            extra["Cache-Control"] = "public, max-age=86400"

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _value in headers}
                for name, value in extra.items():
                    if name.lower().encode("latin-1") not in present:
                        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _safe_next(target: str | None) -> str:
    """Only a local path (no scheme, no host, no '//' or backslash trick) may be a redirect target."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# ---------------------------------------------------------------------------------------------- login


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", error: str | None = None) -> Response:
    import secrets

    token = secrets.token_urlsafe(24)
    response = templates().TemplateResponse(
        request,
        "login.html",
        {"v": None, "nav": [], "next": _safe_next(next), "error": error, "login_csrf": token,
         "freshness": None, "now": _now(request), "csrf_field": CSRF_FIELD, "params": {}},
        status_code=401 if error else 200,
        headers=security_headers(),
    )  # fmt: skip
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=request.url.scheme == "https")  # fmt: skip
    return response


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    from flopwise.store import read_session

    if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        return login_page(request, next, "The login form expired: submit it again.")
    with read_session(_db(request)) as s:
        try:
            principal = principal_for_token(s, token.strip(), _now(request))
        except ApiError as err:
            return login_page(request, next, f"Login refused: {err.message}.")
    sid, _web = request.app.state.web_sessions.create(principal.token_id)
    response = RedirectResponse(_safe_next(next), status_code=303, headers=security_headers())
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
@html_errors
def logout(request: Request, v: ViewerDep, csrf: Annotated[str, Form()] = "") -> Response:
    _check_csrf(request, v, csrf)
    request.app.state.web_sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303, headers=security_headers())
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---------------------------------------------------------------------------------------------- inputs


def _day(name: str, text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(422, f"{name}: {text[:40]!r} is not a date; give YYYY-MM-DD (UTC), e.g. 2026-01-31",
                       [{"field": name, "message": "give YYYY-MM-DD"}]) from None  # fmt: skip


def _window(request: Request, default_days: int) -> tuple[datetime, datetime, date, date]:
    """``[from, to]`` in UTC days from the ``from`` and ``to`` query parameters (``to`` inclusive)."""
    params = request.query_params
    today = _now(request).astimezone(UTC).date()
    to_day = _day("to", params.get("to")) or today
    from_day = _day("from", params.get("from")) or (to_day - timedelta(days=default_days - 1))
    if from_day > to_day:
        raise ApiError(422, f"from ({from_day}) is after to ({to_day}): give an earlier from",
                       [{"field": "from", "message": "after to"}])  # fmt: skip
    if (to_day - from_day).days > MAX_WINDOW_DAYS:
        raise ApiError(422, f"the window is {(to_day - from_day).days} days; give at most {MAX_WINDOW_DAYS}",
                       [{"field": "from", "message": "window too long"}])  # fmt: skip
    start = datetime(from_day.year, from_day.month, from_day.day, tzinfo=UTC)
    end = datetime(to_day.year, to_day.month, to_day.day, tzinfo=UTC) + timedelta(days=1)
    return start, end, from_day, to_day


def _choice(name: str, value: str | None, allowed: Iterable[str], default: str | None) -> str | None:
    if value in (None, ""):
        return default
    allowed = tuple(allowed)
    if value not in allowed:
        import difflib

        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ApiError(422, f"{name}: {value[:40]!r} is not one of {', '.join(allowed)}{hint}",
                       [{"field": name, "message": "unknown value"}])  # fmt: skip
    return value


def _int(name: str, value: str | None, default: int | None = None, lo: int = 1, hi: int = 2**31 - 1) -> int | None:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not lo <= number <= hi:
        raise ApiError(422, f"{name}: {value[:40]!r} is not a whole number from {lo} to {hi}",
                       [{"field": name, "message": "give a whole number"}])  # fmt: skip
    return number


def csv_response(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _csv_value(row.get(c)) for c in columns])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **security_headers()},
    )


def _csv_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _plain(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """ORM rows as dicts of their columns, read while the session is open (templates render after it closes)."""
    out = []
    for row in rows:
        out.append({c.key: getattr(row, c.key) for c in row.__table__.columns})
    return out


def _require_org_viewer(s: Any, v: Viewer) -> None:
    from flopwise.server.auth import authorize

    authorize(s, v.principal, "viewer", "org", v.principal.org_id)


def _names(s: Any, org_id: int) -> dict[str, dict[int, str]]:
    """Team and project names of the organization (for scope labels and filter menus)."""
    from sqlalchemy import select

    from flopwise.store import Project, Team

    teams = dict(s.execute(select(Team.id, Team.name).where(Team.org_id == org_id).order_by(Team.name)).all())
    projects = dict(
        s.execute(
            select(Project.id, Project.name).join(Team, Team.id == Project.team_id).where(Team.org_id == org_id)
            .order_by(Project.name)
        ).all()
    )  # fmt: skip
    return {"team": teams, "project": projects}


def _scope_label(kind: str, scope_id: int, names: Mapping[str, Mapping[int, str]], org_name: str) -> str:
    if kind == "org":
        return f"org {org_name}"
    return f"{kind} {names.get(kind, {}).get(scope_id, scope_id)}"


# ---------------------------------------------------------------------------------------------- overview


def _period_bounds(now: datetime, period: str) -> tuple[datetime, datetime]:
    now = now.astimezone(UTC)
    if period == "quarter":
        first = (now.month - 1) // 3 * 3 + 1
        start = datetime(now.year, first, 1, tzinfo=UTC)
        months = 3
    else:
        start = datetime(now.year, now.month, 1, tzinfo=UTC)
        months = 1
    index = start.year * 12 + start.month - 1 + months
    return start, datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _waiting_for(s: Any, v: Viewer, pending: Sequence[Any]) -> list[Any]:
    """The pending requests this user may approve: not their own, not voted on yet, role strong enough."""
    out = []
    for r in pending:
        if r.requester_id == v.principal.user_id or any(a.approver_id == v.principal.user_id for a in r.approvals):
            continue
        role = v.principal.best_role(scope_chain(s, "project", r.project_id)[1])
        needed = r.approver_role or "approver"
        if role and ROLE_RANK[role] >= max(ROLE_RANK["approver"], ROLE_RANK.get(needed, 2)):
            out.append(r)
    return out


@router.get("/", response_class=HTMLResponse)
@html_errors
def overview(request: Request, v: ViewerDep) -> Response:
    from flopwise.server.api.budgets import list_budgets
    from flopwise.server.api.requests import list_requests
    from flopwise.store import read_session
    from flopwise.store.explore import usage_explore

    period = _choice("period", request.query_params.get("period"), ("month", "quarter"), "month")
    now = _now(request)
    start, end = _period_bounds(now, period)
    db, clock = _db(request), request.app.state.clock
    budgets = list_budgets(v.principal, db, clock)
    pending = list_requests(v.principal, db, clock, state="pending", project_id=None, limit=200, offset=0)
    with read_session(db) as s:
        waiting = _waiting_for(s, v, pending)
        names = _names(s, v.principal.org_id)
        can_see_usage = v.org_role is not None
        ex = usage_explore(s, v.principal.org_id, start, end, step="day", group_by=("team",)) if can_see_usage \
            else None  # fmt: skip
    org_budgets = {b.unit: b for b in budgets if b.scope_kind == "org" and b.current_window_start is not None}
    kpis = []
    if ex is not None:
        for unit, measure, label in (("usd", "cost_usd", "Spend"), ("device_hours", "device_hours", "GPU-hours"),
                                     ("kwh", "energy_kwh", "Energy (kWh)"), ("co2e_kg", "co2e_kg", "CO2e (kg)")):
            b = org_budgets.get(unit)
            value = ex["total"][measure]
            kpis.append({"label": label, "unit": unit, "value": value, "budget": b,
                         "frac": (Decimal(str(value)) / b.amount) if b is not None and b.amount > 0 else None})  # fmt: skip
    spend_spec = None
    if ex is not None:
        usd = org_budgets.get("usd")
        per_day = None
        if usd is not None and usd.current_window_end and usd.current_window_start:
            days = (usd.current_window_end - usd.current_window_start).total_seconds() / 86400
            per_day = float(usd.amount) / days if days > 0 else None
        spend_spec = charts.stacked_over_time(
            ex["series"], measure="cost_usd", unit="USD", title=f"Spend per day by team, this {period}",
            groups_by_size=[g["group"] for g in ex["groups"]], idle_measure="idle_cost_usd",
            limit_line=per_day, limit_label="org budget per day",
        )  # fmt: skip
    near = sorted((b for b in budgets if b.used_frac is not None and b.used_frac >= Decimal("0.75")),
                  key=lambda b: -b.used_frac)  # fmt: skip
    if request.query_params.get("format") == "csv" and ex is not None:
        return csv_response(_explore_rows(ex, "cost_usd", True), EXPLORE_CSV, f"spend-{period}.csv")
    return render(request, v, "overview.html", active="overview", period=period, start=start, end=end, ex=ex,
                  kpis=kpis, spend_spec=spend_spec, near=near, waiting=waiting, names=names,
                  pending_count=len(pending))  # fmt: skip


# ---------------------------------------------------------------------------------------------- usage


EXPLORE_CSV = ("period", "group", "records", "cost_usd", "idle_cost_usd", "billed_cost", "effective_cost",
               "device_hours", "idle_device_hours", "energy_kwh", "co2e_kg")  # fmt: skip


def _explore_rows(ex: Mapping[str, Any], measure: str, show_idle: bool) -> list[dict[str, Any]]:
    return [{k: s[k] for k in EXPLORE_CSV} for s in ex["series"]]


@router.get("/usage", response_class=HTMLResponse)
@html_errors
def usage(request: Request, v: ViewerDep) -> Response:
    from flopwise.store import read_session
    from flopwise.store.explore import DIMENSIONS, STEPS, usage_explore

    params = request.query_params
    start, end, from_day, to_day = _window(request, 30)
    step = _choice("step", params.get("step"), STEPS, "day")
    g1 = _choice("g1", params.get("g1"), DIMENSIONS, "team")
    g2 = _choice("g2", params.get("g2"), DIMENSIONS, None)
    if g2 == g1:
        g2 = None
    measure = _choice("measure", params.get("measure"), MEASURES, "cost_usd")
    show_idle = _choice("idle", params.get("idle"), ("show", "hide"), "show") == "show"
    filters = {d: params[f"f_{d}"] for d in DIMENSIONS if params.get(f"f_{d}")}
    unknown = [k for k in params if k.startswith("f_") and k[2:] not in DIMENSIONS]
    if unknown:
        _choice("filter", unknown[0][2:], DIMENSIONS, None)
    group_by = tuple(g for g in (g1, g2) if g)
    with read_session(_db(request)) as s:
        _require_org_viewer(s, v)
        ex = usage_explore(s, v.principal.org_id, start, end, step=step, group_by=group_by, filters=filters)
        names = _names(s, v.principal.org_id)
    if params.get("format") == "csv":
        return csv_response(_explore_rows(ex, measure, show_idle), EXPLORE_CSV, "usage.csv")
    label, unit, idle_col = MEASURES[measure]
    spec = charts.stacked_over_time(
        ex["series"], measure=measure, unit=unit, title=f"{label.capitalize()} per {step} by {' / '.join(group_by)}",
        groups_by_size=[g["group"] for g in ex["groups"]], idle_measure=idle_col, show_idle=show_idle,
    )  # fmt: skip
    crumbs = _breadcrumb(dict(params), filters, names, v.org_name)
    rows = []
    for g in ex["groups"]:
        first = g["keys"][0] if g["keys"] else None
        drill = None
        if first is not None:
            key = first["key"] if first["key"] is not None else ("unattributed" if first["dim"] in ("org", "team", "project") else "unknown")
            nxt = DRILL.get(first["dim"])
            drill = qs(dict(params), **{f"f_{first['dim']}": key, "g1": nxt or first["dim"], "g2": None})
        value = g[measure] - (g[idle_col] if idle_col and show_idle else 0)
        rows.append({**g, "drill": drill, "shown": value})
    return render(request, v, "usage.html", active="usage", ex=ex, spec=spec, rows=rows, measure=measure,
                  measures=MEASURES, label=label, unit=unit, idle_col=idle_col, show_idle=show_idle, step=step,
                  steps=STEPS, g1=g1, g2=g2, dims=DIMENSIONS, filters=filters, names=names, crumbs=crumbs,
                  from_day=from_day, to_day=to_day)  # fmt: skip


def _breadcrumb(params: dict[str, str], filters: Mapping[str, str], names: Mapping[str, Mapping[int, str]],
                org_name: str) -> list[tuple[str, str]]:  # fmt: skip
    """(label, link) from all usage down to each filter in turn; the link drops the filters after it."""
    base = {k: v for k, v in params.items() if not k.startswith("f_")}
    crumbs = [("All usage", qs(base))]
    kept: dict[str, str] = {}
    for dim, value in filters.items():
        kept[f"f_{dim}"] = value
        label = value
        if dim in ("team", "project") and value.isdigit():
            label = names.get(dim, {}).get(int(value), value)
        elif dim == "org" and value.isdigit():
            label = org_name
        crumbs.append((f"{dim}: {label}", qs({**base, **kept})))
    return crumbs


# ---------------------------------------------------------------------------------------------- budgets


@router.get("/budgets", response_class=HTMLResponse)
@html_errors
def budgets_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.server.api.budgets import list_budgets
    from flopwise.store import read_session

    budgets = list_budgets(v.principal, _db(request), request.app.state.clock)
    with read_session(_db(request)) as s:
        names = _names(s, v.principal.org_id)
    rows = [b.model_dump() for b in budgets]
    if request.query_params.get("format") == "csv":
        return csv_response(rows, BUDGET_CSV, "budgets.csv")
    spec = charts.budget_bullets(rows) if rows else None
    for r in rows:
        r["scope"] = _scope_label(r["scope_kind"], r["scope_id"], names, v.org_name)
    return render(request, v, "budgets.html", active="budgets", budgets=rows, spec=spec, names=names,
                  message=request.query_params.get("message"))  # fmt: skip


BUDGET_CSV = ("id", "name", "scope_kind", "scope_id", "period", "unit", "amount", "is_hard", "reserved",
              "committed", "settled", "used", "remaining", "used_frac", "current_window_start",
              "current_window_end")  # fmt: skip


def _budget_form(
    name: str, scope: str, period: str, unit: str, amount: str, is_hard: str, alerts: str
) -> dict[str, Any]:
    kind, _, sid = scope.partition(":")
    try:
        thresholds = [Decimal(a.strip()) for a in alerts.split(",") if a.strip()]
    except InvalidOperation:
        raise ApiError(422, f"alert_thresholds: {alerts[:60]!r} is not a list of fractions; give e.g. 0.5, 0.8, 1",
                       [{"field": "alert_thresholds", "message": "not numbers"}]) from None  # fmt: skip
    return {"name": name, "scope_kind": kind, "scope_id": sid or "0", "period": period, "unit": unit,
            "amount": amount, "is_hard": is_hard == "on", "alert_thresholds": thresholds}  # fmt: skip


@router.post("/budgets")
@html_errors
def budget_create(
    request: Request, v: ViewerDep, csrf: Annotated[str, Form()] = "", name: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = "", period: Annotated[str, Form()] = "month",
    unit: Annotated[str, Form()] = "usd", amount: Annotated[str, Form()] = "",
    is_hard: Annotated[str, Form()] = "", alerts: Annotated[str, Form()] = "0.5, 0.8, 1.0",
) -> Response:  # fmt: skip
    from flopwise.server.api.budgets import BudgetCreate, create_budget

    _check_csrf(request, v, csrf)
    body = BudgetCreate.model_validate(_budget_form(name, scope, period, unit, amount, is_hard, alerts))
    created = create_budget(body, v.principal, _db(request), request.app.state.clock)
    return RedirectResponse(f"/budgets/{created.id}", status_code=303)


@router.post("/budgets/{budget_id}/edit")
@html_errors
def budget_edit(
    request: Request, v: ViewerDep, budget_id: int, csrf: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "", amount: Annotated[str, Form()] = "", is_hard: Annotated[str, Form()] = "",
    alerts: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    from flopwise.server.api.budgets import BudgetUpdate, update_budget

    _check_csrf(request, v, csrf)
    form = _budget_form(name, "org:1", "month", "usd", amount, is_hard, alerts)
    body = BudgetUpdate.model_validate(
        {"name": name or None, "amount": amount or None, "is_hard": form["is_hard"],
         "alert_thresholds": form["alert_thresholds"] or None}
    )  # fmt: skip
    update_budget(_check_id(budget_id), body, v.principal, _db(request), request.app.state.clock)
    return RedirectResponse(f"/budgets/{budget_id}", status_code=303)


def _check_id(value: int) -> int:
    if not 1 <= value <= 2**31 - 1:
        raise ApiError(404, f"{value} not found")
    return value


@router.get("/budgets/{budget_id}", response_class=HTMLResponse)
@html_errors
def budget_page(request: Request, v: ViewerDep, budget_id: int) -> Response:
    from sqlalchemy import select

    from flopwise.govern.budget import forecast_budget
    from flopwise.meter.burn import budget_used, governed_budget
    from flopwise.server.api.budgets import show_budget
    from flopwise.store import Budget, read_session
    from flopwise.store.explore import usage_explore
    from flopwise.store.ledger import BudgetAlert

    now = _now(request)
    pub = show_budget(_check_id(budget_id), v.principal, _db(request), request.app.state.clock)
    with read_session(_db(request)) as s:
        row = s.get(Budget, budget_id)
        forecast = forecast_budget(governed_budget(row), budget_used(s, row, now), now)
        start, end = forecast.window_start, forecast.window_end
        # up to the end of today (UTC): whole days, so the daily rollups answer
        today_end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        ex = usage_explore(s, v.principal.org_id, start, min(end, today_end), step="day",
                           filters={row.scope_kind: str(row.scope_id)})  # fmt: skip
        alerts = _plain(s.scalars(select(BudgetAlert).where(BudgetAlert.budget_id == budget_id)
                                  .order_by(BudgetAlert.crossed_at.desc()).limit(100)))  # fmt: skip
        names = _names(s, v.principal.org_id)
    measure = UNIT_MEASURE[pub.unit]
    cumulative, total = [], Decimal(0) if measure in ("cost_usd",) else 0.0
    for cell in ex["series"]:
        total += cell[measure]
        cumulative.append({"day": cell["period"], "cumulative": total})
    metered = total
    reserved_share = forecast.used - Decimal(str(metered)) if forecast.used > Decimal(str(metered)) else Decimal(0)
    actual = [{"day": c["day"], "cumulative": Decimal(str(c["cumulative"])) + reserved_share} for c in cumulative]
    fc = []
    if actual and forecast.projected_at_end is not None:
        fc = [{"day": actual[-1]["day"], "cumulative": forecast.used},
              {"day": (end - timedelta(seconds=1)).date().isoformat(), "cumulative": forecast.projected_at_end}]  # fmt: skip
    exceed = forecast.runs_out_at.date().isoformat() if forecast.runs_out_at else None
    spec = charts.budget_burn(actual, fc, limit=float(pub.amount), unit=pub.unit, name=pub.name, exceed_on=exceed)
    if request.query_params.get("format") == "csv":
        return csv_response(
            [{"day": a["day"], "series": "actual", "cumulative": a["cumulative"]} for a in actual]
            + [{"day": f["day"], "series": "forecast", "cumulative": f["cumulative"]} for f in fc],
            ("day", "series", "cumulative"), f"budget-{budget_id}.csv",
        )  # fmt: skip
    return render(request, v, "budget.html", active="budgets", b=pub, forecast=forecast, exceed=exceed,
                  spec=spec, actual=actual, fc=fc, alerts=alerts,
                  scope=_scope_label(pub.scope_kind, pub.scope_id, names, v.org_name),
                  can_edit=_is_admin_on(request, v, pub.scope_kind, pub.scope_id))  # fmt: skip


def _is_admin_on(request: Request, v: Viewer, kind: str, scope_id: int) -> bool:
    from flopwise.store import read_session

    with read_session(_db(request)) as s:
        return v.principal.best_role(scope_chain(s, kind, scope_id)[1]) == "admin"


# ---------------------------------------------------------------------------------------------- requests


REQUEST_STATES = ("pending", "approved", "denied", "cancelled", "expired")
REQUEST_CSV = ("id", "state", "project_id", "requester_id", "workload", "device_type", "device_count",
               "duration_h", "estimated_cost_usd", "estimated_device_hours", "estimated_kwh",
               "estimated_co2e_kg", "outcome", "created_at", "decided_at", "expires_at")  # fmt: skip


@router.get("/requests", response_class=HTMLResponse)
@html_errors
def requests_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.server.api.requests import list_requests
    from flopwise.store import User, read_session

    params = request.query_params
    state = _choice("state", params.get("state"), REQUEST_STATES, None)
    project_id = _int("project_id", params.get("project_id"))
    page = _int("page", params.get("page"), 1, 1, 100_000) or 1
    rows = list_requests(v.principal, _db(request), request.app.state.clock, state=state, project_id=project_id,
                         limit=50, offset=(page - 1) * 50)  # fmt: skip
    if params.get("format") == "csv":
        return csv_response([r.model_dump() for r in rows], REQUEST_CSV, "requests.csv")
    with read_session(_db(request)) as s:
        names = _names(s, v.principal.org_id)
        users = {u.id: u.name for u in s.query(User).filter(User.org_id == v.principal.org_id)}
        waiting = {r.id for r in _waiting_for(s, v, [r for r in rows if r.state == "pending"])}
    return render(request, v, "requests.html", active="requests", rows=rows, names=names, users=users,
                  state=state, states=REQUEST_STATES, project_id=project_id, page=page, waiting=waiting)  # fmt: skip


JOB_CSV = ("id", "engine", "engine_job_id", "state", "project_id", "device_type", "device_count", "max_duration_h",
           "worst_case_cost_usd", "created_at", "committed_at", "ends_by", "ended_at")  # fmt: skip


@router.get("/jobs", response_class=HTMLResponse)
@html_errors
def jobs_page(request: Request, v: ViewerDep) -> Response:
    """The schedulers' admission jobs the user may see (the admission list), newest first; the committed ones
    past their time limit that were never reported ended (overdue) flagged, with what they still hold."""
    from flopwise.server.api.admission import JOB_STATE_FILTERS, list_jobs
    from flopwise.store import read_session

    params = request.query_params
    state = _choice("state", params.get("state"), JOB_STATE_FILTERS, None)
    overdue = _choice("overdue", params.get("overdue"), ("1",), None) == "1"
    before_id = _int("before", params.get("before"))
    clock = request.app.state.clock
    rows = list_jobs(v.principal, _db(request), clock, state=state, engine=None, project_id=None,
                     overdue=overdue, limit=50, before_id=before_id)  # fmt: skip
    if params.get("format") == "csv":
        return csv_response([r.model_dump() for r in rows], JOB_CSV, "jobs.csv")
    now = _now(request)
    late = {r.id for r in rows if r.ends_by is not None and r.ends_by <= now}
    held = {r.id: sum((x.amount for x in r.reservations if x.unit == "usd" and x.state in ("reserved", "committed")),
                      Decimal(0)) for r in rows}  # fmt: skip
    with read_session(_db(request)) as s:
        names = _names(s, v.principal.org_id)
    return render(request, v, "jobs.html", active="jobs", rows=rows, names=names, state=state,
                  states=tuple(JOB_STATE_FILTERS), overdue=overdue, late=late, held=held, with_freshness=False)  # fmt: skip


@router.get("/requests/{request_id}", response_class=HTMLResponse)
@html_errors
def request_page(request: Request, v: ViewerDep, request_id: int, error: str | None = None) -> Response:
    from sqlalchemy import select

    from flopwise.server.api.budgets import show_budget
    from flopwise.server.api.requests import show_request
    from flopwise.store import AuditLog, User, read_session

    r = show_request(_check_id(request_id), v.principal, _db(request), request.app.state.clock)
    with read_session(_db(request)) as s:
        names = _names(s, v.principal.org_id)
        users = {u.id: u.name for u in s.query(User).filter(User.org_id == v.principal.org_id)}
        role = v.principal.best_role(scope_chain(s, "project", r.project_id)[1])
        may_vote = bool(_waiting_for(s, v, [r])) if r.state == "pending" else False
        entries = []
        if v.is_admin:
            stmt = (select(AuditLog).where(AuditLog.org_id == v.principal.org_id, AuditLog.action.startswith("request."))
                    .order_by(AuditLog.seq.desc()).limit(5000))  # fmt: skip
            entries = _plain(e for e in s.scalars(stmt) if (e.payload or {}).get("request_id") == r.id)[::-1]
    impact = []
    for res in r.reservations:
        try:
            b = show_budget(res.budget_id, v.principal, _db(request), request.app.state.clock)
        except ApiError:
            continue
        impact.append({"reservation": res, "budget": b,
                       "frac": (res.amount / b.amount) if b.amount > 0 else None})  # fmt: skip
    est = r.estimate or {}
    breakdown = _estimate_breakdown(est, r)
    trace = (r.decision_trace or {}).get("trace") or {}
    return render(request, v, "request.html", active="requests", r=r, names=names, users=users, role=role,
                  may_vote=may_vote, entries=entries, impact=impact, breakdown=breakdown, trace=trace,
                  trace_json=json.dumps(r.decision_trace or {}, indent=2, default=str),
                  error=error, is_own=r.requester_id == v.principal.user_id)  # fmt: skip


def _estimate_breakdown(est: Mapping[str, Any], r: Any) -> list[tuple[str, str]]:
    """(what, value) rows: memory, time, energy and cost of the request's estimate."""
    rows: list[tuple[str, str]] = []
    memory = est.get("memory") or {}
    for key in ("weights_bytes", "kv_cache_bytes", "activations_bytes", "gradients_bytes", "optimizer_bytes",
                "overhead_bytes", "total_bytes", "capacity_bytes"):  # fmt: skip
        if memory.get(key):
            rows.append((f"memory: {key.removesuffix('_bytes').replace('_', ' ')}", f"{float(memory[key]) / 1e9:,.2f} GB"))
    rows.append(("time", f"{fmt_num(r.duration_h)} h on {r.device_count} x {r.device_type}"))
    rows.append(("device-hours", fmt_num(r.estimated_device_hours)))
    rows.append(("energy", f"{fmt_num(r.estimated_kwh)} kWh"))
    rows.append(("CO2e", f"{fmt_num(r.estimated_co2e_kg)} kg"))
    rows.append(("cost", fmt_money(r.estimated_cost_usd)))
    if r.estimated_flops:
        rows.append(("FLOPs", f"{float(r.estimated_flops):.3g}"))
    return rows


@router.post("/requests/{request_id}/approve")
@html_errors
def request_approve(
    request: Request, v: ViewerDep, request_id: int, csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    from flopwise.server.api.requests import VerdictIn, approve_request

    _check_csrf(request, v, csrf)
    if not reason.strip():
        raise ApiError(422, "reason: say why you approve (it goes into the audit log)",
                       [{"field": "reason", "message": "required"}])  # fmt: skip
    approve_request(_check_id(request_id), v.principal, _db(request), request.app.state.clock,
                    VerdictIn(comment=reason.strip()))  # fmt: skip
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


@router.post("/requests/{request_id}/deny")
@html_errors
def request_deny(
    request: Request, v: ViewerDep, request_id: int, csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    from flopwise.server.api.requests import DenyIn, deny_request

    _check_csrf(request, v, csrf)
    if not reason.strip():
        raise ApiError(422, "reason: say why you deny the request (the requester sees it)",
                       [{"field": "reason", "message": "required"}])  # fmt: skip
    deny_request(_check_id(request_id), DenyIn(comment=reason.strip()), v.principal, _db(request),
                 request.app.state.clock)  # fmt: skip
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


@router.post("/requests/{request_id}/comment")
@html_errors
def request_comment(
    request: Request, v: ViewerDep, request_id: int, csrf: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    from flopwise.server.api.requests import CommentIn, comment_request

    _check_csrf(request, v, csrf)
    comment_request(_check_id(request_id), CommentIn(body=body), v.principal, _db(request), request.app.state.clock)
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


@router.post("/requests")
@html_errors
def request_create(
    request: Request, v: ViewerDep, csrf: Annotated[str, Form()] = "",
    project_id: Annotated[str, Form()] = "", workload: Annotated[str, Form()] = "serve",
    device: Annotated[str, Form()] = "", device_count: Annotated[str, Form()] = "1",
    pricing: Annotated[str, Form()] = "on-demand", provider: Annotated[str, Form()] = "",
    region: Annotated[str, Form()] = "", duration_h: Annotated[str, Form()] = "",
    cost_per_hour_usd: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    """File a compute request from a chosen plan option (the "request this" button of the plan page)."""

    from flopwise.server.api.requests import RequestCreate, new_request
    from flopwise.server.deps import get_catalog

    _check_csrf(request, v, csrf)
    hours = _decimal("duration_h", duration_h)
    plan: dict[str, Any] = {"duration_h": hours}
    if cost_per_hour_usd:
        plan["cost_usd"] = money.quantize(_decimal("cost_per_hour_usd", cost_per_hour_usd) * hours)
    body = RequestCreate.model_validate(
        {"project_id": _int("project_id", project_id), "workload": workload, "device": device,
         "device_count": _int("device_count", device_count), "pricing": pricing,
         "provider": provider or None, "region": region or None, "plan": plan}
    )  # fmt: skip
    created, _status = new_request(body, request, v.principal, _db(request), request.app.state.clock,
                                   get_catalog(request), request.app.state.settings, None)  # fmt: skip
    return RedirectResponse(f"/requests/{created.id}", status_code=303)


def _decimal(name: str, text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        value = None
    if value is None or not value.is_finite() or value <= 0 or value > Decimal(10) ** 9:
        raise ApiError(422, f"{name}: {str(text)[:40]!r} is not a positive number",
                       [{"field": name, "message": "give a positive number"}])  # fmt: skip
    return value


# ---------------------------------------------------------------------------------------------- estimate, plan


@router.get("/estimate", response_class=HTMLResponse)
@html_errors
def estimate_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.api import estimate_serving, estimate_training

    p = request.query_params
    kind = _choice("kind", p.get("kind"), ("serve", "train"), "serve")
    form = {
        "kind": kind, "model": p.get("model", "llama-3.1-8b"), "device": p.get("device", "L4"),
        "count": p.get("count", "1"), "quant": p.get("quant", "Q4_K_M" if kind == "serve" else ""),
        "batch": p.get("batch", "8"), "input_tokens": p.get("input_tokens", "1000"),
        "output_tokens": p.get("output_tokens", "200"), "tokens": p.get("tokens", "1e9"),
        "method": p.get("method", "full"),
    }  # fmt: skip
    result, spec = None, None
    if p.get("model"):
        count = _int("count", form["count"], 1, 1, 100_000) or 1
        settings = request.app.state.settings
        if kind == "serve":
            opts: dict[str, Any] = {"batch": _int("batch", form["batch"], 1, 1, 100_000),
                                    "input_tokens": _int("input_tokens", form["input_tokens"], 512, 1, 10_000_000),
                                    "output_tokens": _int("output_tokens", form["output_tokens"], 256, 1, 10_000_000)}  # fmt: skip
            if form["quant"]:
                opts["quant"] = form["quant"]
            report = estimate_serving(form["model"], form["device"], device_count=count,
                                      catalog_dir=settings.catalog_dir, **opts)  # fmt: skip
        else:
            tokens = _decimal("tokens", form["tokens"])
            report = estimate_training(form["model"], form["device"], tokens=float(tokens), device_count=count,
                                       method=_choice("method", form["method"], ("full", "lora", "qlora"), "full"),
                                       catalog_dir=settings.catalog_dir)  # fmt: skip
        result = report.to_dict()
        memory = result.get("memory") or {}
        parts = {k.removesuffix("_bytes").replace("_", " "): float(memory.get(k) or 0) / 1e9
                 for k in ("weights_bytes", "kv_cache_bytes", "activations_bytes", "gradients_bytes",
                           "optimizer_bytes", "overhead_bytes")}  # fmt: skip
        spec = charts.memory_stack(parts, device_gb=float(memory.get("capacity_bytes") or 0) / 1e9,
                                   device=str(result.get("device")))  # fmt: skip
        result["parts"] = parts
    return render(request, v, "estimate.html", active="estimate", form=form, result=result, spec=spec,
                  with_freshness=False)  # fmt: skip


@router.get("/plan", response_class=HTMLResponse)
@html_errors
def plan_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.models import load_models, resolve_model
    from flopwise.plan.candidates import ServeWorkload
    from flopwise.plan.serve import plan_serve
    from flopwise.server.deps import get_catalog
    from flopwise.store import read_session

    p = request.query_params
    form = {
        "model": p.get("model", "llama-3.1-8b"), "rps": p.get("rps", "20"),
        "input_tokens": p.get("input_tokens", "1000"), "output_tokens": p.get("output_tokens", "200"),
        "ttft_p95_ms": p.get("ttft_p95_ms", "1000"), "tpot_p95_ms": p.get("tpot_p95_ms", "100"),
        "objective": p.get("objective", "cost"),
    }  # fmt: skip
    plan, spec = None, None
    if p.get("model"):
        arch, warnings = resolve_model(form["model"], load_models())
        workload = ServeWorkload(
            model=arch, rps=float(_decimal("rps", form["rps"])),
            input_tokens=_int("input_tokens", form["input_tokens"], 1, 1, 10_000_000),
            output_tokens=_int("output_tokens", form["output_tokens"], 1, 1, 10_000_000),
            ttft_p95_ms=float(_decimal("ttft_p95_ms", form["ttft_p95_ms"])) if form["ttft_p95_ms"] else None,
            tpot_p95_ms=float(_decimal("tpot_p95_ms", form["tpot_p95_ms"])) if form["tpot_p95_ms"] else None,
        )  # fmt: skip
        objective = _choice("objective", form["objective"], ("cost", "latency", "energy", "co2"), "cost")
        result = plan_serve(workload, get_catalog(request), objective=objective, top_k=15)
        plan = {"options": list(result.options), "rejected": list(result.rejected), "summary": result.summary,
                "warnings": list(warnings)}  # fmt: skip
        spec = {}
        for y, slo in (("ttft_p95_ms", workload.ttft_p95_ms), ("tpot_p95_ms", workload.tpot_p95_ms)):
            front = next((f for f in result.pareto if f.get("y") == y), None)
            spec[y] = charts.plan_scatter(plan["options"], front["points"] if front else [], slo_ms=slo, y=y)
    with read_session(_db(request)) as s:
        names = _names(s, v.principal.org_id)
    return render(request, v, "plan.html", active="estimate", form=form, plan=plan, spec=spec, names=names,
                  with_freshness=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------- efficiency


@router.get("/efficiency", response_class=HTMLResponse)
@html_errors
def efficiency_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.meter.calibration import plan_vs_actual
    from flopwise.server.deps import get_catalog
    from flopwise.store import read_session
    from flopwise.store.explore import usage_explore, utilization_histogram

    start, end, from_day, to_day = _window(request, 30)
    with read_session(_db(request)) as s:
        _require_org_viewer(s, v)
        org = v.principal.org_id
        hist = utilization_histogram(s, org, start, end)
        by_team = usage_explore(s, org, start, end, step="month", group_by=("team",))
        by_region = usage_explore(s, org, start, end, step="week", group_by=("region",))
        pva = plan_vs_actual(s, org_id=org)
    teams = [{"team": g["group"], "idle_device_hours": g["idle_device_hours"], "device_hours": g["device_hours"],
              "idle_cost_usd": g["idle_cost_usd"]} for g in by_team["groups"]]  # fmt: skip
    catalog = get_catalog(request)
    regions = []
    for g in by_region["groups"]:
        if not g["energy_kwh"] and not g["co2e_kg"]:
            continue  # a region with cost but no energy (a cloud bill's storage, networking...)
        grid = _grid_of(catalog, g["keys"][0]["key"] if g["keys"] else None)
        regions.append({"region": g["group"], "energy_kwh": g["energy_kwh"], "co2e_kg": g["co2e_kg"],
                        "grid_gco2e_per_kwh": grid,
                        "measured_gco2e_per_kwh": g["co2e_kg"] * 1000 / g["energy_kwh"] if g["energy_kwh"] else None})  # fmt: skip
    which = request.query_params.get("csv")
    if which == "histogram":
        return csv_response(hist, ("lo_frac", "hi_frac", "device_hours", "records"), "utilization.csv")
    if which == "idle":
        return csv_response(teams, ("team", "device_hours", "idle_device_hours", "idle_cost_usd"), "idle.csv")
    if which == "energy":
        return csv_response(_explore_rows(by_region, "energy_kwh", False), EXPLORE_CSV, "energy.csv")
    if which == "calibration":
        return csv_response(pva, PVA_CSV, "plan-vs-actual.csv")
    specs = {
        "histogram": charts.histogram(hist, title="GPU utilization (device-hours per bin)"),
        "idle": charts.bar_chart(teams, label="team", measure="idle_device_hours", unit="idle GPU-hours",
                                 title="Idle GPU-hours by team", color=charts.IDLE_COLOR),
        "energy": charts.stacked_over_time(by_region["series"], measure="energy_kwh", unit="kWh",
                                           title="Energy per week by region",
                                           groups_by_size=[g["group"] for g in by_region["groups"]]),
        "calibration": charts.calibration_scatter(pva),
    }  # fmt: skip
    return render(request, v, "efficiency.html", active="efficiency", hist=hist, teams=teams, regions=regions,
                  pva=pva, specs=specs, by_region=by_region, from_day=from_day, to_day=to_day,
                  regions_without_energy=len(by_region["groups"]) - len(regions))  # fmt: skip


PVA_CSV = ("request_id", "device_type", "workload", "estimated_device_hours", "actual_device_hours",
           "estimated_cost_usd", "actual_cost_usd", "device_hours_error_frac", "cost_error_frac")  # fmt: skip


def _grid_of(catalog: Any, region_id: str | None) -> float | None:
    if not region_id:
        return None
    try:
        return catalog.region(region_id).grid_gco2e_per_kwh
    except fe.FlopwiseError:
        return None


# ---------------------------------------------------------------------------------------------- catalog, audit, quotas, sources


@router.get("/catalog", response_class=HTMLResponse)
@html_errors
def catalog_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.server.deps import get_catalog

    catalog = get_catalog(request)
    p = request.query_params
    kinds = sorted({d.kind for d in catalog.devices.values()})
    providers = sorted({o.provider for o in catalog.offerings})
    kind = _choice("kind", p.get("kind"), kinds, None)
    provider = _choice("provider", p.get("provider"), providers, None)
    device = (p.get("device") or "").strip().lower()
    devices = sorted((d for d in catalog.devices.values() if kind is None or d.kind == kind),
                     key=lambda d: (d.vendor, d.name))  # fmt: skip
    today = _now(request).astimezone(UTC).date()
    offers = []
    for o in catalog.offerings:
        if (provider and o.provider != provider) or (device and device not in o.device_id.lower()):
            continue
        age = None
        if o.retrieved:
            try:
                age = (today - date.fromisoformat(o.retrieved[:10])).days
            except ValueError:
                age = None
        offers.append({"o": o, "age_days": age})
    shown = offers[:300]
    return render(request, v, "catalog.html", active="catalog", devices=devices, offers=shown,
                  offers_total=len(offers), kinds=kinds, providers=providers, kind=kind, provider=provider,
                  device=device, with_freshness=False)  # fmt: skip


@router.get("/audit", response_class=HTMLResponse)
@html_errors
def audit_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.server.api.audit import list_audit, verify_audit

    p = request.query_params
    after = _int("after_seq", p.get("after_seq"), 0, 0, 2**62) or 0
    action = (p.get("action") or "").strip() or None
    page = list_audit(_db(request), v.principal, after_seq=after, limit=100, action=action)
    verified = verify_audit(_db(request), v.principal)
    return render(request, v, "audit.html", active="audit", page=page, verified=verified, action=action,
                  after=after, with_freshness=False)  # fmt: skip


@router.get("/quotas", response_class=HTMLResponse)
@html_errors
def quotas_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.server.api.quotas import list_quotas
    from flopwise.store import read_session

    rows = list_quotas(v.principal, _db(request))
    with read_session(_db(request)) as s:
        names = _names(s, v.principal.org_id)
    return render(request, v, "quotas.html", active="quotas", rows=rows,
                  scopes={q.id: _scope_label(q.scope_kind, q.scope_id, names, v.org_name) for q in rows},
                  with_freshness=False)  # fmt: skip


@router.get("/sources", response_class=HTMLResponse)
@html_errors
def sources_page(request: Request, v: ViewerDep) -> Response:
    from flopwise.store import read_session
    from flopwise.store.explore import ingest_rejects, ingest_runs

    run_id = _int("run", request.query_params.get("run"))
    with read_session(_db(request)) as s:
        _require_org_viewer(s, v)
        runs = _plain(ingest_runs(s, v.principal.org_id))
        rejects = []
        if run_id is not None:
            if run_id not in {r["id"] for r in runs}:
                raise ApiError(404, f"ingest run {run_id} not found")
            rejects = _plain(ingest_rejects(s, run_id))
    return render(request, v, "sources.html", active="sources", runs=runs, run_id=run_id, rejects=rejects)
