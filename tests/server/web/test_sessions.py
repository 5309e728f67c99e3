"""Dashboard sessions live in the database, on SQLite and PostgreSQL: a login made through one server process is
used through another (two apps on one database, as ``serve --workers 2`` runs them), a logout in one ends it in the
other, only the session id's hash is stored, sessions end when idle or past their maximum age, and the CSRF token
is the same in every process. The real two-process server is in ``test_sessions_two_workers``."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from webutil import DEMO_NOW, csrf_of, login, make_client


@pytest.fixture(scope="module")
def second_app(app_url, app, demo):
    """Another server process on the same database (a second worker)."""
    from flopwise.server import Settings, create_app

    other = create_app(Settings(database_url=app_url))
    other.state.clock = app.state.clock
    yield other
    other.state.engine.dispose()


def test_login_on_one_worker_is_used_on_another_and_logout_ends_it_everywhere(app, second_app, demo) -> None:
    from sqlalchemy import select

    from flopwise.store import read_session
    from flopwise.store.web_sessions import WebSessionRow

    one, two = make_client(app), make_client(second_app)
    response = login(one, demo.tokens["ada"])
    assert response.status_code == 303
    sid = one.cookies["fw_session"]
    two.cookies.set("fw_session", sid)
    page = two.get("/", follow_redirects=False)
    assert page.status_code == 200 and "Overview" in page.text
    assert csrf_of(page.text) == csrf_of(one.get("/").text)  # the same CSRF token in both processes
    with read_session(app.state.db) as s:
        stored = s.scalars(select(WebSessionRow.sid_hash)).all()
    assert hashlib.sha256(sid.encode()).hexdigest() in stored and sid not in stored
    # a form posted to the second worker with the token the first one rendered is accepted: log out there
    out = two.post("/logout", data={"csrf": csrf_of(one.get("/").text)}, follow_redirects=False)
    assert out.status_code == 303
    assert one.get("/", follow_redirects=False).status_code == 303  # ended in the first worker too
    again = make_client(app)
    again.cookies.set("fw_session", sid)
    assert again.get("/", follow_redirects=False).status_code == 303


def test_sessions_end_when_idle_or_too_old(app, demo) -> None:
    from flopwise.server.web.security import SESSION_MAX_AGE_S, SESSION_TTL_S

    client = make_client(app)
    assert login(client, demo.tokens["ben"]).status_code == 303
    try:
        app.state.clock = lambda: DEMO_NOW + timedelta(seconds=SESSION_TTL_S - 60)
        assert client.get("/", follow_redirects=False).status_code == 200  # used: the idle clock restarts
        app.state.clock = lambda: DEMO_NOW + timedelta(seconds=2 * SESSION_TTL_S - 120)
        assert client.get("/", follow_redirects=False).status_code == 200
        app.state.clock = lambda: DEMO_NOW + timedelta(seconds=3 * SESSION_TTL_S)
        assert client.get("/", follow_redirects=False).status_code == 303  # idle too long
        assert login(client, demo.tokens["ben"]).status_code == 303
        app.state.clock = lambda: DEMO_NOW + timedelta(seconds=3 * SESSION_TTL_S + SESSION_MAX_AGE_S)
        assert client.get("/", follow_redirects=False).status_code == 303  # past its maximum age
    finally:
        app.state.clock = lambda: DEMO_NOW


def test_a_forged_or_oversized_session_cookie_is_a_login_page(app, demo) -> None:
    client = make_client(app)
    for forged in ("x", "A" * 5000, "' OR 1=1 --"):
        client.cookies.set("fw_session", forged)
        assert client.get("/", follow_redirects=False).status_code == 303


def test_a_login_holds_across_the_processes_of_serve_workers_2(tmp_path) -> None:
    """A real ``flopwise serve --workers 2`` (two processes on one socket, the kernel picks which one answers):
    one login, then 40 page views and a form post all succeed; with sessions kept per process about half of
    them would land on the process that never saw the login and be sent to the login page."""
    import re

    import httpx

    from served import served

    database_url = f"sqlite:///{tmp_path / 'workers.db'}"
    with served(database_url, tmp_path) as (base, token), httpx.Client(base_url=base, timeout=30) as browser:
        form = browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        assert browser.post("/login", data={"token": token, "csrf": csrf}).status_code in (200, 303)
        statuses = []
        for _ in range(40):
            with httpx.Client(base_url=base, timeout=30, cookies=browser.cookies) as fresh:  # a new connection
                statuses.append(fresh.get("/", follow_redirects=False).status_code)
        assert statuses == [200] * 40, statuses
        page = browser.get("/")
        token_field = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)
        sid = browser.cookies.get("fw_session")
        out = browser.post("/logout", data={"csrf": token_field}, follow_redirects=False)
        assert out.status_code == 303
        for _ in range(10):  # the logged-out session id is refused by both processes
            with httpx.Client(base_url=base, timeout=30, cookies={"fw_session": sid}) as fresh:
                assert fresh.get("/", follow_redirects=False).status_code == 303
