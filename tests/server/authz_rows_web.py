"""Authorization matrix rows for the web dashboard and the budget update (issue 12's routes).

The dashboard authenticates with its session cookie only: a bearer token, valid or not, opens no page. Every
page and form therefore answers a bearer-only caller with a redirect to the login page (followed here: 200,
the login form), and ``POST /login`` without its form's CSRF token is refused (401, the form again). What each
role sees once logged in is tested in ``tests/server/web/test_pages.py``.
"""

from __future__ import annotations

from typing import Any

from authz_table import API, PRINCIPALS, admins_only

_LOGIN_PAGE = dict.fromkeys(PRINCIPALS, 200)

EXPECTED: dict[tuple[str, str], dict[str, int]] = {
    ("PATCH", f"{API}/budgets/{{budget_id}}"): admins_only(200, other_org=404),
    ("GET", "/login"): _LOGIN_PAGE,
    ("POST", "/login"): dict.fromkeys(PRINCIPALS, 401),
    **{
        (method, path): _LOGIN_PAGE
        for method, path in [
            ("GET", "/"), ("GET", "/usage"), ("GET", "/budgets"), ("GET", "/budgets/{budget_id}"),
            ("GET", "/requests"), ("GET", "/requests/{request_id}"), ("GET", "/jobs"), ("GET", "/estimate"),
            ("GET", "/plan"),
            ("GET", "/efficiency"), ("GET", "/catalog"), ("GET", "/quotas"), ("GET", "/sources"), ("GET", "/audit"),
            ("POST", "/logout"), ("POST", "/budgets"), ("POST", "/budgets/{budget_id}/edit"), ("POST", "/requests"),
            ("POST", "/requests/{request_id}/approve"), ("POST", "/requests/{request_id}/deny"),
            ("POST", "/requests/{request_id}/comment"),
        ]
    },
}  # fmt: skip
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", f"{API}/budgets/{{budget_id}}"): lambda ctx: {"amount": "12345.5", "alert_thresholds": ["0.9"]},
}
