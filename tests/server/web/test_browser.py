"""The dashboard in a real browser: Debian's Chromium driven by pytest-playwright against a live server on the demo.

Log in, filter the usage explorer (an htmx swap) and check the chart's data and the table agree, approve a
request as an approver, be refused as a member, export CSV, run axe-core's accessibility rules on every page,
and check every chart has a text alternative. ``playwright install`` cannot download browsers here, so the
system Chromium is launched (``$FLOPWISE_CHROMIUM`` or ``/usr/bin/chromium``, from ``apt-get install chromium``);
without it the suite is skipped, except under ``CI=true`` where a missing browser fails.

With ``FLOPWISE_SCREENSHOTS=DIR`` set, the page test saves a full-page screenshot of each page into DIR (how
``docs/screenshots/`` is made).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from webutil import DEMO_NOW

HERE = Path(__file__).parent
AXE = HERE / "vendor" / "axe-core-4.14.1.min.js"
PAGES = {
    "overview": "/?period=quarter",
    "usage": "/usage?g1=team&g2=device&from=2026-01-01&to=2026-02-20",
    "budgets": "/budgets",
    "budget": "/budgets/2",
    "requests": "/requests",
    "request": "/requests/6",
    "jobs": "/jobs",
    "estimate": "/estimate?model=llama-3.1-8b&device=L4&quant=Q4_K_M&batch=8",
    "plan": "/plan?model=llama-3.1-8b&rps=20&input_tokens=1000&output_tokens=200&ttft_p95_ms=1000&tpot_p95_ms=100",
    "efficiency": "/efficiency?from=2025-11-22&to=2026-02-20",
    "catalog": "/catalog?kind=gpu&provider=aws",
    "quotas": "/quotas",
    "sources": "/sources",
    "audit": "/audit",
}


def chromium_path() -> str:
    path = os.environ.get("FLOPWISE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        message = "Chromium is not installed (apt-get install -y chromium, or set FLOPWISE_CHROMIUM)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must run the browser suite")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": chromium_path(), "args": ["--no-sandbox"]}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    """(base URL, demo result) of a uvicorn server in a thread, on the demo database with its clock fixed."""
    import uvicorn

    from flopwise.catalog import load_catalog
    from flopwise.server import Settings, create_app
    from flopwise.server.demo import build_demo

    chromium_path()
    db = tmp_path_factory.mktemp("browser") / "demo.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}"))
    app.state.clock = lambda: DEMO_NOW
    demo = build_demo(app.state.db, load_catalog(), app.state.settings, DEMO_NOW)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the live server did not start"
    yield f"http://127.0.0.1:{port}", demo
    server.should_exit = True
    thread.join(10)
    app.state.engine.dispose()


def _login(page, base: str, token: str, target: str = "/") -> list[str]:
    """Log in through the form; returns the list the page's console errors and CSP violations go to."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(base + target)
    assert "/login" in page.url
    page.fill("#token", token)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_load_state("networkidle")
    return problems


def _charts_ready(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].every(e => e.dataset.ready || e.dataset.error)",
        timeout=20_000,
    )
    assert page.eval_on_selector_all(".chart[data-error]", "els => els.map(e => e.textContent)") == []


def test_login_overview_and_csp(page, live) -> None:
    base, demo = live
    problems = _login(page, base, demo.tokens["ada"], "/?period=quarter")
    assert page.url.endswith("/?period=quarter")
    _charts_ready(page)
    assert page.locator("#spend-chart svg").count() == 1
    assert "Spend" in page.locator(".kpi").first.inner_text()
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["fw_session"]["httpOnly"] and cookies["fw_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("fw_session") == -1  # not readable by scripts
    assert problems == []  # no script error and no content-security-policy violation


def _chart_totals(page, chart_id: str) -> dict[str, float]:
    """Per group, the sum of what the chart drew (read back from the Vega view's data)."""
    return page.evaluate(
        """(id) => {
            const view = document.getElementById(id).flopwiseView;
            const rows = view.data('source_0');
            const out = {};
            for (const r of rows) out[r.group] = (out[r.group] || 0) + r.value;
            return out;
        }""",
        chart_id,
    )


def test_usage_explorer_filter_chart_and_table_agree(page, live) -> None:
    base, demo = live
    problems = _login(page, base, demo.tokens["ada"], "/usage?from=2026-01-01&to=2026-02-20")
    _charts_ready(page)
    page.select_option("select[name=g1]", "device")
    page.select_option("select[name=measure]", "device_hours")
    page.click("#usage-filters button[type=submit]")
    page.wait_for_url("**g1=device**")  # the filters are in the URL (hx-push-url)
    assert "measure=device_hours" in page.url
    page.wait_for_selector("#usage-chart[data-ready]")
    drawn = _chart_totals(page, "usage-chart")
    rows = page.eval_on_selector_all(
        "#usage-table tbody tr", "trs => trs.map(t => [t.dataset.group, parseFloat(t.dataset.value)])"
    )
    assert rows and {g for g, _ in rows} | {"idle"} >= set(drawn) - {"other"}
    for group, value in rows:
        assert abs(drawn[group] - value) < 0.01 * (len(rows) + 30), (group, drawn[group], value)
    # drill down into the first device, then back up with the breadcrumb
    first = rows[0][0]
    page.click("#usage-table tbody tr:first-child a")
    page.wait_for_load_state("networkidle")
    assert "f_device=" in page.url and f"device: {first}" in page.locator(".crumbs").inner_text()
    page.click(".crumbs a:first-child")
    page.wait_for_load_state("networkidle")
    assert "f_device" not in page.url
    assert problems == []


def test_export_csv(page, live) -> None:
    base, demo = live
    _login(page, base, demo.tokens["dee"], "/usage?g1=team&from=2026-01-01&to=2026-02-20")
    with page.expect_download() as info:
        page.click("#usage-chart ~ figcaption a[download], figure a[download]")
    path = info.value.path()
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"))))
    assert rows and set(rows[0]) >= {"period", "group", "cost_usd", "device_hours", "billed_cost", "effective_cost"}
    total = sum(float(r["cost_usd"]) for r in rows)
    footer = page.locator("#usage-table tfoot td").nth(3).inner_text()  # cost (flopwise) total
    assert abs(total - float(footer.replace("$", "").replace(",", ""))) < 0.01


def _pending_ids(base: str, demo) -> list[int]:
    import re

    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {demo.tokens['ada']}"}) as api:
        listed = api.get("/api/v1/requests", params={"state": "pending"}).json()
    assert all(re.fullmatch(r"\d+", str(r["id"])) for r in listed)
    return [r["id"] for r in listed]


def test_approve_as_approver(page, live) -> None:
    base, demo = live
    rid = _pending_ids(base, demo)[-1]
    _login(page, base, demo.tokens["ben"])
    page.click(f"a[href='/requests/{rid}']")  # from "Requests waiting for me"
    page.wait_for_load_state("networkidle")
    page.fill("#approve-form textarea[name=reason]", "Within the research plan for this quarter.")
    page.click("#approve-button")
    page.wait_for_load_state("networkidle")
    assert page.locator("h1 .badge").inner_text() == "approved"
    assert "Within the research plan" in page.content()
    assert rid not in _pending_ids(base, demo)


def test_refused_as_member(page, live) -> None:
    base, demo = live
    pending = _pending_ids(base, demo)
    assert pending
    rid = pending[0]
    _login(page, base, demo.tokens["dee"], f"/requests/{rid}")
    assert page.locator("#approve-button").count() == 0
    assert "Approving needs the approver role" in page.locator("#no-vote").inner_text()
    # posting the form anyway (with a valid CSRF token) is refused by the server
    token = page.get_attribute("meta[name=csrf-token]", "content")
    response = page.request.post(f"{base}/requests/{rid}/approve", form={"csrf": token, "reason": "me too"})
    assert response.status == 403
    assert rid in _pending_ids(base, demo)


def test_every_page_passes_axe_and_every_chart_has_a_text_alternative(browser, live) -> None:
    base, demo = live
    out_dir = os.environ.get("FLOPWISE_SCREENSHOTS")
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})  # to inject axe
    page = context.new_page()
    _login(page, base, demo.tokens["ada"])
    failures = []
    for name, path in PAGES.items():
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        _charts_ready(page)
        charts = page.eval_on_selector_all(
            ".chart",
            """els => els.map(e => ({id: e.id, role: e.getAttribute('role'), label: e.getAttribute('aria-label'),
                caption: e.closest('figure')?.querySelector('figcaption')?.innerText || '',
                svg: !!e.querySelector('svg')}))""",
        )
        for c in charts:
            assert c["role"] in ("img", "graphics-document") and len(c["label"] or "") > 40 and len(c["caption"]) > 40, (name, c)
            assert c["svg"], (name, c["id"])
        page.add_script_tag(path=str(AXE))
        result = page.evaluate(
            "async () => await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})"
        )
        for v in result["violations"]:
            targets = [n['target'] for n in v['nodes'][:3]]
            failures.append(f"{name}: {v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])} {targets}")
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(out_dir) / f"{name}.png"), full_page=name not in ("catalog", "audit"))
    context.close()
    assert failures == [], "\n".join(failures)
