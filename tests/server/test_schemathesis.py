"""Schemathesis against the ASGI app on SQLite and PostgreSQL at once: every generated case goes to both, neither
answers 5xx, and both answer the same status.

Cases come from the app's own OpenAPI schema (``schemathesis.openapi.from_dict``), valid and invalid, per
operation in both generation modes (positive: what the schema allows; negative: what it does not), with an
admin token. The two databases are seeded alike (an organization, a team, a project,
through the API), so ids line up and a difference in status is a difference in behaviour. Bounded by
``FLOPWISE_SCHEMATHESIS_EXAMPLES`` examples per operation (default 10), about a minute for the whole API.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from pgutil import pg_unreachable_reason, throwaway_database_url

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from flopwise.server import Settings, create_app  # noqa: E402

EXAMPLES = int(os.environ.get("FLOPWISE_SCHEMATHESIS_EXAMPLES", "10"))
#: operations whose answer depends on the moment or on randomness, not on the input alone
UNCOMPARABLE = {("POST", "/api/v1/tokens")}


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    reason = pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from flopwise.server.bootstrap import bootstrap
    from flopwise.store import utcnow

    with (
        throwaway_database_url("sqlite", tmp_path_factory, "st") as lite,
        throwaway_database_url("postgresql", tmp_path_factory, "st") as pg,
    ):
        out = []
        for url in (lite, pg):
            app = create_app(Settings(database_url=url))
            _org, _admin, token = bootstrap(app.state.db, "st-org", "root", utcnow())
            client = TestClient(app, raise_server_exceptions=False)
            client.headers["Authorization"] = f"Bearer {token}"
            team = client.post("/api/v1/teams", json={"name": "research"}).json()
            client.post(f"/api/v1/teams/{team['id']}/projects", json={"name": "llm"})
            out.append((app, client))
        yield [c for _a, c in out]
        for app, client in out:
            client.close()
            app.state.engine.dispose()


def _operations() -> list[Any]:
    app = create_app(Settings(database_url="sqlite://", migrate_on_start=False))
    schema = schemathesis.openapi.from_dict(app.openapi())
    app.state.engine.dispose()
    return [result.ok() for result in schema.get_all_operations()]


OPERATIONS = _operations()


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_no_5xx_and_the_same_status_on_both_databases(clients: list[Any], operation: Any, mode: str) -> None:
    from schemathesis import GenerationMode

    key = (operation.method.upper(), operation.path)

    @given(case=operation.as_strategy(GenerationMode(mode)))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    def check(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        statuses = []
        for client in clients:
            response = client.request(
                kwargs["method"],
                kwargs["url"],
                params=kwargs.get("params"),
                headers={
                    k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"
                },
                json=kwargs.get("json"),
                content=kwargs.get("data") if kwargs.get("json") is None else None,
            )
            assert response.status_code < 500, (key, kwargs, response.text[:300])
            statuses.append(response.status_code)
        if key not in UNCOMPARABLE:
            assert statuses[0] == statuses[1], (key, kwargs, statuses)

    try:
        check()
    except Unsatisfiable:
        assert mode == "negative", key  # an operation without parameters or body has nothing to get wrong
