"""The write path's cost is pinned: request creation and admission decide run a fixed, small number of SQL
statements (counted with a ``before_cursor_execute`` listener on the app's engine), the bearer token is resolved
in one statement and then served from the per-process cache, and the cache never outlives a revocation, a
disabled user or a removed role in the process that made the change."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event
from srvutil import API, auth

#: statements of one request creation with a chosen plan, no quota, one budget covering the project:
#: read: scope+role+quotas+AUP (1), budgets (1), their usage (1 per budget: reservations by state, the rollups'
#: freshness and their sum of metered usage), policies (1);
#: write: insert the request with its decision (1), lock the budgets (1), spent under the lock and the
#: reservation inserted (PostgreSQL, one budget: 1, the audit chain head taken and numbered in the same
#: statement, the insert conditional on the hard cap; SQLite 2), audit: (SQLite only: the head's hash and the
#: largest seq in one, 1), entry+head (1 on PostgreSQL; SQLite 2)
CREATE_STATEMENTS = {"postgresql": 8, "sqlite": 11}
#: admission decide runs the same statements (the job instead of the request)
DECIDE_STATEMENTS = CREATE_STATEMENTS


@contextmanager
def counted(app) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _executemany) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "PRAGMA", "SAVEPOINT", "RELEASE")):
            seen.append(statement)

    event.listen(app.state.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(app.state.engine, "before_cursor_execute", count)


@pytest.fixture(scope="module")
def budgeted(client, seed):
    """A hard budget over the seed project (so a creation locks and reserves), the AUP left unpublished."""
    r = client.post(
        f"{API}/budgets",
        json={"name": f"hot-{uuid.uuid4().hex[:6]}", "scope_kind": "project", "scope_id": seed.project_id,
              "period": "month", "unit": "usd", "amount": "100000000", "is_hard": True},
        headers=seed.headers("admin"),
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def _plan(seed) -> dict:
    return {"project_id": seed.project_id, "workload": "train", "device": "h100-sxm", "device_count": 1,
            "usd_per_device_h": "2.00", "plan": {"duration_h": "1", "flops": 1e18}}  # fmt: skip


def _backend(app) -> str:
    return app.state.engine.dialect.name


def test_request_creation_runs_a_fixed_number_of_statements(app, client, seed, budgeted) -> None:
    headers = seed.headers("member")
    for _ in range(2):  # warm: the token cached, the expiry pass run within the last second
        assert client.post(f"{API}/requests", json=_plan(seed), headers=headers).status_code == 201
    runs = []
    for _ in range(3):
        with counted(app) as seen:
            r = client.post(f"{API}/requests", json=_plan(seed), headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "approved" and len(r.json()["reservations"]) == 1
        runs.append(len(seen))
    # a run may include the once-a-second expiry pass (one UPDATE); the least of three never does
    assert min(runs) == CREATE_STATEMENTS[_backend(app)], runs


def test_admission_decide_runs_a_fixed_number_of_statements(app, client, seed, budgeted) -> None:
    headers = seed.headers("member")
    body = {"engine": "slurm", "project_id": seed.project_id, "device": "h100-sxm", "device_count": 1,
            "max_duration_h": "1", "usd_per_device_h": "2.00"}  # fmt: skip
    assert client.get(f"{API}/me", headers=headers).status_code == 200  # the token cached
    runs = []
    for _ in range(3):
        with counted(app) as seen:
            r = client.post(
                f"{API}/admission/decide", json={**body, "engine_job_id": uuid.uuid4().hex}, headers=headers
            )
        assert r.status_code == 200, r.text
        assert r.json()["admitted"] is True
        runs.append(len(seen))
    assert min(runs) == DECIDE_STATEMENTS[_backend(app)], runs
    # the chain head taken with the budgets' spent read (PostgreSQL) numbers and chains the entries as before
    verify = client.get(f"{API}/audit/verify", headers=seed.headers("admin"))
    assert verify.status_code == 200 and verify.json()["is_ok"], verify.text


def test_a_known_token_is_resolved_in_one_statement_then_from_the_cache(app, client, seed) -> None:
    token = client.post(f"{API}/tokens", json={"name": "once"}, headers=seed.headers("admin")).json()["token"]
    with counted(app) as first:
        assert client.get(f"{API}/me", headers=auth(token)).status_code == 200
    with counted(app) as second:
        assert client.get(f"{API}/me", headers=auth(token)).status_code == 200
    assert len(first) == 1 and "api_tokens" in first[0] and "role_bindings" in first[0]
    assert second == []


def test_a_revoked_token_is_refused_at_once_though_it_was_cached(client, seed) -> None:
    admin = seed.headers("admin")
    created = client.post(f"{API}/tokens", json={"name": "short"}, headers=admin).json()
    headers = auth(created["token"])
    assert client.get(f"{API}/me", headers=headers).status_code == 200  # now cached
    assert client.get(f"{API}/me", headers=headers).status_code == 200
    assert client.delete(f"{API}/tokens/{created['id']}", headers=admin).status_code == 200
    r = client.get(f"{API}/me", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_a_disabled_user_and_a_removed_role_take_effect_at_once(client, seed) -> None:
    admin = seed.headers("admin")
    name = f"temp-{uuid.uuid4().hex[:6]}"
    user = client.post(
        f"{API}/users",
        json={
            "name": name,
            "roles": [{"role": "member", "scope_kind": "project", "scope_id": seed.project_id}],
        },
        headers=admin,
    ).json()
    token = client.post(f"{API}/tokens", json={"user_id": user["id"]}, headers=admin).json()["token"]
    headers = auth(token)
    assert client.get(f"{API}/requests/999999", headers=headers).status_code == 404  # cached, may read
    bindings = client.get(f"{API}/roles", params={"user_id": user["id"]}, headers=admin).json()
    (binding,) = [b for b in bindings if b["user_id"] == user["id"]]
    assert client.delete(f"{API}/roles/{binding['id']}", headers=admin).status_code == 200
    r = client.post(f"{API}/requests", json=_plan(seed), headers=headers)
    assert r.status_code == 403, r.text  # the role is gone at once, not after the cache's TTL
    r = client.patch(f"{API}/users/{user['id']}", json={"is_active": False}, headers=admin)
    assert r.status_code == 200, r.text
    r = client.get(f"{API}/me", headers=headers)
    assert r.status_code == 401 and "disabled" in r.json()["error"]


def test_another_process_revocation_is_seen_within_the_ttl(app, seed) -> None:
    """A change the process cannot see (another worker, the CLI: here a raw connection, outside any session)
    is picked up once the entry is older than the TTL."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from flopwise.server.auth import PrincipalCache, hash_token, principal_for_token
    from flopwise.server.errors import ApiError
    from flopwise.store import read_session

    cache = PrincipalCache(ttl_s=0.2)
    now = datetime.now(UTC)
    token = seed.tokens["viewer"]
    with read_session(app.state.db) as s:
        assert principal_for_token(s, token, now, cache).user_id == seed.user_ids["viewer"]
    prefix = token.split("_")[1]
    with app.state.engine.begin() as conn:  # not a Session: invisible to the cache's invalidation
        conn.execute(text("UPDATE api_tokens SET revoked_at = :t WHERE prefix = :p"), {"t": now, "p": prefix})
    try:
        assert cache.get(hash_token(token)) is not None  # the cache does not know yet
        time.sleep(0.25)
        with read_session(app.state.db) as s, pytest.raises(ApiError) as err:
            principal_for_token(s, token, now, cache)
        assert err.value.status == 401
    finally:
        with app.state.engine.begin() as conn:
            conn.execute(text("UPDATE api_tokens SET revoked_at = NULL WHERE prefix = :p"), {"p": prefix})


def test_listing_requests_runs_the_same_statements_for_a_page_of_one_or_of_many(app, client, seed) -> None:
    headers = seed.headers("admin")
    client.get(f"{API}/me", headers=headers)  # the token cached
    for _ in range(2):
        assert (
            client.post(f"{API}/requests", json=_plan(seed), headers=seed.headers("member")).status_code
            == 201
        )
    with counted(app) as one:
        r = client.get(f"{API}/requests", params={"limit": 1}, headers=headers)
    assert r.status_code == 200 and len(r.json()) == 1
    with counted(app) as many:
        r = client.get(f"{API}/requests", params={"limit": 20}, headers=headers)
    assert r.status_code == 200 and len(r.json()) >= 2
    # the page, then its votes, comments and reservations: four statements whatever the page's length
    assert len(one) == len(many) == 4, (one, many)


def test_the_write_paths_prepared_statements_settle_on_generic_plans(app, client, seed, budgeted) -> None:
    """PostgreSQL plans a prepared statement for its first five executions, then keeps its generic plan unless
    that is estimated dearer than the custom ones: then it plans anew on every execution (the budget lock by
    ``id = ANY($1::INTEGER[])`` did: 0.03-0.07 ms of PostgreSQL's CPU per lock). After a dozen creations and
    decisions, every prepared statement of the connections that served them has been run on a generic plan."""
    if _backend(app) != "postgresql":
        pytest.skip("prepared statements and their plans are PostgreSQL's")
    headers = seed.headers("member")
    job = {"engine": "slurm", "project_id": seed.project_id, "device": "h100-sxm", "device_count": 1,
           "max_duration_h": "1", "usd_per_device_h": "2.00"}  # fmt: skip
    connections: dict[int, object] = {}

    def seen(conn, _cursor, _statement, _params, _context, _executemany) -> None:
        dbapi = conn.connection.dbapi_connection
        connections[id(dbapi)] = dbapi

    event.listen(app.state.engine, "before_cursor_execute", seen)
    try:
        for _ in range(12):
            assert client.post(f"{API}/requests", json=_plan(seed), headers=headers).status_code == 201
            r = client.post(f"{API}/admission/decide", json={**job, "engine_job_id": uuid.uuid4().hex}, headers=headers)
            assert r.status_code == 200, r.text
    finally:
        event.remove(app.state.engine, "before_cursor_execute", seen)
    replanned, checked = [], 0
    for dbapi in connections.values():  # back in the pool, idle: asked directly
        rows = dbapi.execute("SELECT generic_plans, custom_plans, statement FROM pg_prepared_statements").fetchall()
        dbapi.rollback()
        for generic, custom, statement in rows:
            if generic + custom >= 8:
                checked += 1
                if generic == 0:
                    replanned.append(" ".join(statement.split())[:160])
    assert checked >= 8, checked  # the hot path's statements were prepared and run
    assert not replanned, replanned
