"""Helpers of the dashboard tests (fixtures are in conftest.py): the demo's fixed clock, a client, login."""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime

#: the demo's "now": a Friday in the middle of a quarter, so month and quarter windows both hold usage
DEMO_NOW = datetime(2026, 2, 20, 15, 30, tzinfo=UTC)
USERS = ("ada", "ben", "cho", "dee", "eve")


def make_client(app):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    return TestClient(app)


def login(client, token: str, next_url: str = "/"):
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"token": token, "csrf": csrf, "next": next_url}, follow_redirects=False)


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
