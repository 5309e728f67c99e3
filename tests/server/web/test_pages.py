"""Every dashboard page for every demo role, in-process: status, key content, role-aware actions, CSRF, sessions,
security headers, and no server error over generated filter combinations (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import itertools
import random
import re
from decimal import Decimal

import pytest
from webutil import DEMO_NOW, csrf_of, login, make_client

# page -> expected status per user (ada admin, ben approver on org, cho member of research, dee viewer on org,
# eve member of applied); team members hold no role on the organization, so org-wide usage is not theirs
ORG = {"ada": 200, "ben": 200, "cho": 403, "dee": 200, "eve": 403}
ALL = dict.fromkeys(ORG, 200)
ADMIN = {"ada": 200, "ben": 403, "cho": 403, "dee": 403, "eve": 403}
PAGES = {
    "/": (ALL, "Requests waiting for me"),
    "/?period=quarter": (ALL, "this quarter"),
    "/usage": (ORG, "Usage explorer"),
    "/usage?g1=project&g2=device&measure=device_hours&step=week": (ORG, "project / device"),
    "/budgets": (ALL, "Budgets"),
    "/budgets/1": (ORG, "acme monthly spend"),
    "/budgets/2": ({"ada": 200, "ben": 200, "cho": 200, "dee": 200, "eve": 403}, "research monthly spend"),
    "/requests": (ALL, "Requests and approvals"),
    "/requests?state=pending": (ALL, "Requests and approvals"),
    "/jobs": (ALL, "Scheduler jobs"),
    "/jobs?state=holding&overdue=1": (ALL, "Scheduler jobs"),
    "/estimate": (ALL, "Estimate"),
    "/estimate?model=llama-3.1-8b&device=L4&quant=Q4_K_M": (ALL, "cost per 1M generated tokens"),
    "/estimate?kind=train&model=llama-3.1-8b&device=h100&count=8&tokens=1e9": (ALL, "wall clock"),
    "/plan": (ALL, "Plan a service"),
    "/efficiency": (ORG, "Idle GPU-hours by team"),
    "/catalog": (ALL, "Offerings"),
    "/catalog?kind=gpu&provider=aws": (ALL, "Devices"),
    # the demo's quota is on team research: eve (team applied) may not read it one by one, so not in the list
    "/quotas": ({"ada": 200, "ben": 200, "cho": 200, "dee": 200}, "h100-sxm"),
    "/sources": (ORG, "demo: hb-jobinfo"),
    "/audit": (ADMIN, "chain verified"),
}


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_for_every_role(browsers, path: str) -> None:
    expected, content = PAGES[path]
    for user, status in expected.items():
        response = browsers[user].get(path)
        assert response.status_code == status, f"{user} {path}: {response.status_code} {response.text[:300]}"
        assert "text/html" in response.headers["content-type"]
        if status == 200:
            assert content in response.text, f"{user} {path}"
        else:
            assert "needs role" in response.text  # the refusal says why
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
        # no inline script can run under that policy: every <script> is a file or a JSON data block
        for tag in re.findall(r"<script\b[^>]*>", response.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, tag


def test_quotas_page_lists_only_what_the_user_may_read(browsers) -> None:
    page = browsers["eve"].get("/quotas")
    assert page.status_code == 200 and "h100-sxm" not in page.text


def test_nav_is_role_aware(browsers) -> None:
    nav = {user: re.findall(r'<nav class="main"[^>]*>(.*?)</nav>', browsers[user].get("/").text, re.S)[0]
           for user in ("ada", "dee", "cho")}  # fmt: skip
    assert 'href="/audit"' in nav["ada"] and 'href="/audit"' not in nav["dee"]
    assert 'href="/usage"' in nav["dee"] and 'href="/efficiency"' in nav["dee"]
    for page in ("/usage", "/efficiency", "/sources", "/audit"):  # team members: no organization-wide pages
        assert f'href="{page}"' not in nav["cho"]
    assert 'href="/requests"' in nav["cho"] and 'href="/budgets"' in nav["cho"]


def test_request_pages_follow_project_roles(browsers, demo, app) -> None:
    from flopwise.store import ComputeRequest, Project, read_session

    with read_session(app.state.db) as s:
        rows = [(r.id, r.state, s.get(Project, r.project_id).name) for r in s.query(ComputeRequest)]
    research = {"llm-pretrain", "eval"}
    for rid, _state, project in rows:
        for user in ("ada", "ben", "dee"):
            assert browsers[user].get(f"/requests/{rid}").status_code == 200
        assert browsers["cho"].get(f"/requests/{rid}").status_code == (200 if project in research else 403)
        assert browsers["eve"].get(f"/requests/{rid}").status_code == (403 if project in research else 200)
    assert browsers["ada"].get("/requests/999999").status_code == 404
    assert browsers["ada"].get("/requests/0").status_code == 404


def test_jobs_page_shows_the_jobs_each_role_may_see_and_flags_the_overdue(browsers, app) -> None:
    """``/jobs``: the admission list for the page's user (a role on the job's project, team or organization),
    a started job past its time limit that was never reported ended flagged overdue, with what it holds."""
    from datetime import timedelta

    from flopwise.store import AdmissionJob, Project, Team, write_session

    tag = "jobs-page"
    with write_session(app.state.db) as s:
        projects = {p.name: p for p in s.query(Project)}
        research = projects["llm-pretrain"]
        applied = next(p for name, p in projects.items() if name not in {"llm-pretrain", "eval"})  # team applied
        org_id = s.get(Team, research.team_id).org_id
        rows = [
            ("late", research.id, "committed", DEMO_NOW - timedelta(hours=10)),
            ("running", applied.id, "committed", DEMO_NOW - timedelta(hours=1)),
            ("done", research.id, "settled", DEMO_NOW - timedelta(hours=30)),
        ]
        for name, project_id, state, started in rows:
            s.add(AdmissionJob(org_id=org_id, engine="slurm", engine_job_id=f"{tag}-{name}", project_id=project_id,
                               device_type="h100-sxm", device_count=8, max_duration_h=Decimal(4),
                               worst_case_cost_usd=Decimal("80.00"), state=state, created_at=started,
                               committed_at=started, decision_trace={"outcome": "allow"}))  # fmt: skip
    try:
        def listed(user: str, query: str = "") -> dict[str, str]:
            page = browsers[user].get(f"/jobs{query}")
            assert page.status_code == 200, page.text[:300]
            rows = re.findall(r"<tr( class=\"overdue\")?><td>slurm/jobs-page-(\w+)</td>", page.text)
            return {name: ("overdue" if flag else "") for flag, name in rows}

        assert listed("ada") == {"late": "overdue", "running": "", "done": ""}
        assert listed("cho") == {"late": "overdue", "done": ""}  # research member
        assert listed("eve") == {"running": ""}  # applied member: research's jobs are not hers to see
        assert listed("ada", "?overdue=1") == {"late": "overdue"}
        assert listed("ada", "?state=holding") == {"late": "overdue", "running": ""}
        csv_rows = list(csv.DictReader(io.StringIO(browsers["ada"].get("/jobs?format=csv").text)))
        late = next(r for r in csv_rows if r["engine_job_id"] == f"{tag}-late")
        assert late["state"] == "committed" and late["ends_by"].startswith("2026-02-20T09:30")
        assert browsers["ada"].get("/jobs?state=running").status_code == 422
        contradictory = browsers["ada"].get("/jobs?state=settled&overdue=1")  # said, not silently widened
        assert contradictory.status_code == 422 and "overdue" in contradictory.text
    finally:
        with write_session(app.state.db) as s:
            s.query(AdmissionJob).filter(AdmissionJob.engine_job_id.like(f"{tag}-%")).delete()


def _pending(app, project_names: set[str] | None = None) -> list[int]:
    from flopwise.store import ComputeRequest, Project, read_session

    with read_session(app.state.db) as s:
        return [
            r.id
            for r in s.query(ComputeRequest).filter(ComputeRequest.state == "pending").order_by(ComputeRequest.id)
            if project_names is None or s.get(Project, r.project_id).name in project_names
        ]


def test_approve_buttons_are_role_aware(browsers, app) -> None:
    pending = _pending(app)
    assert pending, "the demo has pending requests"
    rid = pending[0]
    page = browsers["ben"].get(f"/requests/{rid}").text
    assert 'id="approve-button"' in page and 'id="deny-button"' in page
    for member in ("cho", "eve", "dee"):
        response = browsers[member].get(f"/requests/{rid}")
        assert 'id="approve-button"' not in response.text
    overview = browsers["ben"].get("/").text
    assert f'href="/requests/{rid}"' in overview  # waiting for the approver
    assert f'href="/requests/{rid}"' not in browsers["dee"].get("/").text


def test_member_is_refused_when_posting_an_approval(browsers, app) -> None:
    rid = _pending(app, {"llm-pretrain", "eval"})[0]
    client = browsers["cho"]  # member of research: may see it, may not approve it
    token = csrf_of(client.get(f"/requests/{rid}").text)
    response = client.post(f"/requests/{rid}/approve", data={"csrf": token, "reason": "looks fine"})
    assert response.status_code == 403 and "own request" in response.text  # cho filed the research requests
    viewer = browsers["dee"]  # sees every request of the organization, approves none
    token = csrf_of(viewer.get(f"/requests/{rid}").text)
    response = viewer.post(f"/requests/{rid}/approve", data={"csrf": token, "reason": "looks fine"})
    assert response.status_code == 403 and "needs a approver or higher" in response.text
    assert _pending(app).count(rid) == 1


def test_csrf_is_required_on_every_form(browsers, app) -> None:
    rid = _pending(app)[0]
    client = browsers["ben"]
    posts = [
        (f"/requests/{rid}/approve", {"reason": "ok"}),
        (f"/requests/{rid}/deny", {"reason": "no"}),
        (f"/requests/{rid}/comment", {"body": "hi"}),
        ("/budgets", {"name": "x", "scope": "org:1", "amount": "1"}),
        ("/budgets/1/edit", {"amount": "1"}),
        ("/requests", {"project_id": "1", "device": "l4", "duration_h": "1"}),
        ("/logout", {}),
    ]
    for path, data in posts:
        for csrf in (None, "", "forged-token"):
            body = dict(data) if csrf is None else {**data, "csrf": csrf}
            response = client.post(path, data=body, follow_redirects=False)
            assert response.status_code == 403, (path, csrf, response.status_code)
            assert "security token" in response.text
    assert rid in _pending(app)
    assert client.get("/").status_code == 200  # still logged in: the forged logout did nothing


def test_approve_with_reason_then_deny_needs_reason(browsers, app, demo) -> None:
    client = browsers["ben"]
    rid = _pending(app)[0]
    token = csrf_of(client.get(f"/requests/{rid}").text)
    empty = client.post(f"/requests/{rid}/approve", data={"csrf": token, "reason": "  "})
    assert empty.status_code == 422 and "reason" in empty.text
    done = client.post(f"/requests/{rid}/approve", data={"csrf": token, "reason": "fits the plan"},
                       follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == f"/requests/{rid}"
    page = client.get(f"/requests/{rid}").text
    assert "approved" in page and "fits the plan" in page and 'id="approve-button"' not in page
    again = client.post(f"/requests/{rid}/approve", data={"csrf": token, "reason": "twice"})
    assert again.status_code in (403, 409)


def test_nobody_approves_their_own_request_filed_from_the_plan_page(browsers, app) -> None:
    client = browsers["ada"]
    token = csrf_of(client.get("/plan").text)
    from flopwise.store import Project, read_session

    with read_session(app.state.db) as s:
        project_id = s.query(Project).filter(Project.name == "inference").one().id
    filed = client.post(
        "/requests",
        data={"csrf": token, "project_id": str(project_id), "workload": "serve", "device": "h100-sxm",
              "device_count": "2", "pricing": "on-demand", "duration_h": "720", "cost_per_hour_usd": "5.90"},
        follow_redirects=False,
    )  # fmt: skip
    assert filed.status_code == 303, filed.text
    page = client.get(filed.headers["location"]).text
    assert "pending" in page and "nobody approves their own request" in page
    assert 'id="approve-button"' not in page
    rid = int(filed.headers["location"].rsplit("/", 1)[1])
    refused = client.post(f"/requests/{rid}/approve", data={"csrf": token, "reason": "mine"})
    assert refused.status_code == 403


def test_budget_create_and_edit_for_admins_only(browsers, app) -> None:
    ada, dee = browsers["ada"], browsers["dee"]
    token = csrf_of(ada.get("/budgets").text)
    assert 'id="budget-create"' in ada.get("/budgets").text and 'id="budget-create"' not in dee.get("/budgets").text
    form = {"csrf": token, "name": "gpu quarter", "scope": "org:1", "period": "quarter", "unit": "device_hours",
            "amount": "5000", "is_hard": "on", "alerts": "0.5, 0.9"}  # fmt: skip
    created = ada.post("/budgets", data=form, follow_redirects=False)
    assert created.status_code == 303
    location = created.headers["location"]
    page = ada.get(location).text
    assert "gpu quarter" in page and 'id="budget-edit"' in page
    edited = ada.post(f"{location}/edit", data={"csrf": token, "name": "gpu quarter", "amount": "6000.5",
                                                "alerts": "0.8"}, follow_redirects=False)  # fmt: skip
    assert edited.status_code == 303
    page = ada.get(location).text
    assert "6,000.50" in page and "soft" in page  # the unchecked box made it soft
    bad = ada.post("/budgets", data={**form, "name": "b2", "amount": "lots"})
    assert bad.status_code == 422 and "amount" in bad.text
    dee_token = csrf_of(dee.get("/budgets").text)
    assert dee.post("/budgets", data={**form, "csrf": dee_token, "name": "b3"}).status_code == 403
    assert dee.post(f"{location}/edit", data={"csrf": dee_token, "amount": "1"}).status_code == 403
    audit = ada.get("/audit?action=budget.").text
    assert "budget.update" in audit


def test_login_sessions_and_logout(app, demo) -> None:
    client = make_client(app)
    first = client.get("/usage?g1=device", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?next=")
    bad = login(client, "fw_000000000000_nope")
    assert bad.status_code == 401 and "Login refused" in bad.text
    ok = login(client, demo.tokens["dee"], "/usage?g1=device")
    assert ok.status_code == 303 and ok.headers["location"] == "/usage?g1=device"
    cookie = ok.headers["set-cookie"]
    assert "fw_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert demo.tokens["dee"] not in cookie  # the token stays on the server
    assert client.get("/usage").status_code == 200
    token = csrf_of(client.get("/").text)
    out = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303
    # the login form's own CSRF check, and no open redirect after login
    stale = client.post("/login", data={"token": demo.tokens["dee"], "csrf": "x", "next": "/"})
    assert stale.status_code == 401
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert login(client, demo.tokens["dee"], target).headers["location"] == "/"
    # htmx requests without a session get an HX-Redirect, not a login page inside the swap
    anonymous = make_client(app)
    htmx = anonymous.get("/usage", headers={"HX-Request": "true"})
    assert htmx.headers["hx-redirect"].startswith("/login")


def test_revoked_token_ends_the_session(app, demo) -> None:
    from flopwise.server.api.tokens import TokenCreate, create_token
    from flopwise.server.auth import principal_for_token
    from flopwise.store import ApiToken, read_session, write_session

    with read_session(app.state.db) as s:
        dee = principal_for_token(s, demo.tokens["dee"], DEMO_NOW)
    extra = create_token(TokenCreate(name="web"), app.state.db, app.state.clock, app.state.settings, dee)
    client = make_client(app)
    assert login(client, extra.token).status_code == 303
    assert client.get("/").status_code == 200
    with write_session(app.state.db) as s:
        s.get(ApiToken, extra.id).revoked_at = DEMO_NOW
    assert client.get("/", follow_redirects=False).status_code == 303


def test_usage_table_chart_and_csv_agree(browsers) -> None:
    client = browsers["ada"]
    path = "/usage?g1=team&measure=cost_usd&idle=show&from=2025-11-22&to=2026-02-20"
    html = client.get(path).text
    spec = _spec(html, "usage-chart")
    chart: dict[str, Decimal] = {}
    for v in spec["data"]["values"]:
        chart[v["group"]] = chart.get(v["group"], Decimal(0)) + Decimal(str(v["value"]))
    rows = dict(re.findall(r'<tr data-group="([^"]+)" data-value="([^"]+)">', html))
    assert rows and set(rows) | {"idle"} == set(chart)
    for group, value in rows.items():
        assert abs(Decimal(value) - chart[group]) <= Decimal("0.01") * max(1, len(spec["data"]["values"]))
    exported = list(csv.DictReader(io.StringIO(client.get(path + "&format=csv").text)))
    by_group: dict[str, Decimal] = {}
    for row in exported:
        by_group[row["group"]] = by_group.get(row["group"], Decimal(0)) + Decimal(row["cost_usd"]) - Decimal(
            row["idle_cost_usd"]
        )
    for group, value in rows.items():
        assert abs(by_group[group] - Decimal(value)) <= Decimal("0.01")


def _spec(html: str, chart_id: str) -> dict:
    import json

    block = re.search(rf'<script type="application/json" id="{chart_id}-spec">(.*?)</script>', html, re.S)
    return json.loads(block.group(1))


def test_drill_down_and_breadcrumb(browsers) -> None:
    client = browsers["ada"]
    html = client.get("/usage?g1=team").text
    link = re.search(r'<a href="(/usage\?[^"]*f_team=\d+[^"]*)">research</a>', html).group(1).replace("&amp;", "&")
    assert "g1=project" in link
    drilled = client.get(link).text
    groups = re.findall(r'<tr data-group="([^"]+)"', drilled)
    assert "team: research" in drilled and set(groups) <= {"llm-pretrain", "eval"} and groups
    crumb = re.search(r'<nav class="crumbs"[^>]*>(.*?)</nav>', drilled, re.S).group(1)
    assert "All usage" in crumb and "f_team" not in re.search(r'href="([^"]*)">All usage', crumb).group(1)


def test_empty_states_say_why(browsers) -> None:
    html = browsers["ada"].get("/usage?from=2020-01-01&to=2020-01-31").text
    assert "No usage matches" in html and "2020-01-01" in html
    assert "No usage matches" in browsers["ada"].get("/usage?f_device=no-such-gpu").text


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/usage?from=yesterday", "from"),
        ("/usage?from=2026-02-10&to=2026-01-01", "from"),
        ("/usage?g1=tem", "team"),
        ("/usage?step=hour", "step"),
        ("/usage?f_team=abc", "team"),
        ("/usage?f_colour=red", "filter"),
        ("/usage?measure=dollars", "measure"),
        ("/requests?state=open", "state"),
        ("/requests?project_id=-1", "project_id"),
        ("/estimate?model=no-such-model-xyz&device=L4", "no-such-model-xyz"),
        ("/estimate?model=llama-3.1-8b&device=H1OO", "H1OO"),
        ("/plan?model=llama-3.1-8b&rps=fast", "rps"),
        ("/catalog?provider=awz", "aws"),
        ("/audit?after_seq=x", "after_seq"),
        ("/sources?run=999999", "999999"),
        ("/efficiency?to=2026-13-01", "to"),
    ],
)
def test_bad_input_is_one_clear_error(browsers, path: str, field: str) -> None:
    response = browsers["ada"].get(path)
    assert response.status_code in (404, 422), response.text[:300]
    assert field in response.text and "Traceback" not in response.text


def test_generated_filter_combinations_never_fail(browsers, app) -> None:
    from flopwise.store import Project, Team, read_session
    from flopwise.store.explore import DIMENSIONS

    with read_session(app.state.db) as s:
        team = str(s.query(Team).first().id)
        project = str(s.query(Project).first().id)
    rng = random.Random(7)
    filters = [{}, {"f_team": team}, {"f_project": project}, {"f_team": "unattributed"}, {"f_device": "a100-sxm4-80gb"},
               {"f_provider": "AWS", "f_service": "Compute"}, {"f_user": "unknown"}, {"f_source": "slurm"},
               {"f_region": "unknown", "f_team": team}]  # fmt: skip
    combos = list(itertools.product(("day", "week", "month"), DIMENSIONS, (None, *DIMENSIONS),
                                    ("cost_usd", "billed_cost", "device_hours", "co2e_kg"), ("show", "hide"),
                                    range(len(filters))))  # fmt: skip
    client = browsers["ada"]
    for step, g1, g2, measure, idle, f in rng.sample(combos, 60):
        params = {"step": step, "g1": g1, "measure": measure, "idle": idle, "from": "2025-12-01", **filters[f]}
        if g2:
            params["g2"] = g2
        response = client.get("/usage", params=params)
        assert response.status_code == 200, (params, response.text[:400])
        totals = re.search(r"<tfoot><tr><td>total</td><td class=\"n\">([^<]+)</td>", response.text)
        if totals:
            shown = [Decimal(v) for v in re.findall(r'data-value="([^"]+)"', response.text)]
            total = Decimal(totals.group(1).replace(",", ""))
            assert abs(sum(shown) - total) <= Decimal("0.01") * (len(shown) + 1), params


def test_overview_page_weight_under_one_megabyte(browsers) -> None:
    client = browsers["ada"]
    html = client.get("/")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html.text)
    assert any("vega-lite" in a for a in assets) and any("htmx" in a for a in assets)
    total = len(html.content) + sum(len(client.get(a).content) for a in assets)
    assert total < 1_000_000, total


def test_static_files_and_vendor_checksums() -> None:
    import hashlib

    from flopwise.server.web import STATIC_DIR

    table = (STATIC_DIR / "vendor" / "VENDOR.md").read_text()
    found = re.findall(r"\| `([^`]+\.js)` \|.*\| `([0-9a-f]{64})` \|", table)
    assert len(found) == 5
    for name, digest in found:
        assert hashlib.sha256((STATIC_DIR / "vendor" / name).read_bytes()).hexdigest() == digest, name
        assert f"/static/vendor/{name}" in (STATIC_DIR.parent / "templates" / "base.html").read_text()
