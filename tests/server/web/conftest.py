"""Dashboard fixtures: the demo organization built (once per module and backend) into the server tests' app,
with the app's clock fixed, and a logged-in browser-like client per demo user."""

from __future__ import annotations

import pytest
from webutil import DEMO_NOW, USERS, login, make_client


@pytest.fixture(scope="module")
def demo(app):
    from flopwise.catalog import load_catalog
    from flopwise.server.demo import build_demo

    app.state.clock = lambda: DEMO_NOW
    return build_demo(app.state.db, load_catalog(), app.state.settings, DEMO_NOW)


@pytest.fixture(scope="module")
def browsers(app, demo) -> dict:
    """user name -> a client logged in as that user (cookies kept per client)."""
    out = {}
    for name in USERS:
        client = make_client(app)
        response = login(client, demo.tokens[name])
        assert response.status_code == 303, response.text
        out[name] = client
    return out


@pytest.fixture(scope="session")
def base_url() -> None:
    """pytest-playwright's base URL (the pytest-base-url plugin's fixture warns under pytest 9): none, every test
    builds its URLs from its live server."""
    return None
