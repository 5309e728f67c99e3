"""Server fixtures: real HTTP in-process (FastAPI's TestClient) against a SQLite file and the local PostgreSQL.

* ``app_url``: a fresh, empty database per test module and backend (``sqlite`` file in tmp_path;
  ``postgresql``: a new schema on ``$FLOPWISE_TEST_POSTGRES_URL`` or
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``, dropped afterwards; skipped with the reason if the
  server is unreachable). ``create_app`` migrates it with Alembic, as in production.
* ``app`` / ``client``: the app and a ``TestClient`` over it (module scope; ``app.state.clock`` may be
  replaced by a test and is restored after it by ``clock``).
* ``seed``: :func:`seed_org` run once per module: an organization bootstrapped as in ``flopwise admin
  bootstrap``, one team and project, one user per role (viewer, member, approver, admin) on the organization,
  each with a token; an expired and a revoked admin token; and a second organization with its own admin
  (for isolation tests).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from srvutil import API, ROLES, Seed, auth, seed_org  # noqa: F401 - re-exported names the fixtures use

from pgutil import BACKENDS, throwaway_database_url


@pytest.fixture(scope="module", params=BACKENDS)
def app_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an empty database on each backend (one per test module)."""
    with throwaway_database_url(request.param, tmp_path_factory, "srv") as url:
        yield url


@pytest.fixture(scope="module")
def app(app_url: str):
    from flopwise.server import Settings, create_app

    app = create_app(Settings(database_url=app_url))
    yield app
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def client(app):
    with warnings.catch_warnings():
        # Starlette asks for the httpx2 package; the httpx client its TestClient wraps works the same
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    with TestClient(app) as client:
        yield client


@pytest.fixture
def clock(app) -> Iterator[Callable[[datetime], None]]:
    """``clock(t)`` makes the app's now() return *t*; the real clock is restored after the test."""
    original = app.state.clock

    def set_now(t: datetime) -> None:
        app.state.clock = lambda: t

    yield set_now
    app.state.clock = original


@pytest.fixture(scope="module")
def seed(app, client) -> Seed:
    return seed_org(app, client)
