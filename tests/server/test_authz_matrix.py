"""The authorization matrix: every route in ``app.routes``, called as every principal, answers the status in
``authz_table.EXPECTED``; a route missing from the table fails with what to add. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from authz_table import BODIES, EXPECTED, PATH_PARAMS, PRINCIPALS, QUERIES, Ctx
from srvutil import API


def iter_routes(routes: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every route, descending into included routers (FastAPI >= 0.16x keeps an
    included router as one entry of ``app.routes`` whose ``original_router`` holds its routes)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from iter_routes(original.routes, prefix + route.include_context.prefix)
            continue
        sub = getattr(route, "routes", None)
        if sub is not None and not getattr(route, "methods", None):  # a Mount
            yield from iter_routes(sub, prefix + getattr(route, "path", ""))
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                yield method, prefix + route.path


def all_routes(app) -> list[tuple[str, str]]:
    """The walked routes plus every operation of the OpenAPI schema (so nothing the walk misses escapes)."""
    found = set(iter_routes(app.routes))
    for path, operations in app.openapi()["paths"].items():
        found.update((method.upper(), path) for method in operations if method != "parameters")
    return sorted(found)


def headers_for(seed, principal: str) -> dict[str, str]:
    tokens = {
        "anonymous": None,
        "malformed": "not-a-token",
        "expired": seed.expired_token,
        "revoked": seed.revoked_token,
        "other_org": seed.other_admin_token,
        **{role: seed.tokens[role] for role in ("viewer", "member", "approver", "admin")},
    }
    token = tokens[principal]
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def ctx(client, seed) -> Ctx:
    ctx = Ctx(client, seed)
    for version in range(5):  # more versions than the other organization will ever have in this test
        ctx.create("/aup", {"text": f"Acceptable use, version {version + 1}."})
    other = {"Authorization": f"Bearer {seed.other_admin_token}"}
    assert client.post(f"{API}/aup", json={"text": "Other rules."}, headers=other).status_code == 201
    return ctx


def test_every_route_has_a_row(app):
    missing = [route for route in all_routes(app) if route not in EXPECTED]
    assert not missing, (
        "routes without a row in tests/server/authz_table.py EXPECTED (add one per route, with the status "
        "for each principal, and a body/resolver if the route needs one):\n"
        + "\n".join(f'    ("{m}", "{p}"): ...,' for m, p in missing)
    )
    stale = sorted(set(EXPECTED) - set(all_routes(app)))
    assert not stale, f"rows in authz_table.EXPECTED for routes that no longer exist: {stale}"
    for key, row in EXPECTED.items():
        assert set(row) == set(PRINCIPALS), f"{key}: give a status for each of {PRINCIPALS}"


def test_authorization_matrix(app, client, ctx):
    mismatches = []
    for method, template in all_routes(app):
        expected = EXPECTED.get((method, template))
        if expected is None:
            continue  # reported by test_every_route_has_a_row
        for principal in PRINCIPALS:
            path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(PATH_PARAMS[m.group(1)](ctx)), template)
            body = BODIES.get((method, template))
            query = QUERIES.get((method, template))
            response = client.request(
                method,
                path,
                headers=headers_for(ctx.seed, principal),
                json=body(ctx) if body else None,
                params=query(ctx) if query else None,
            )
            if response.status_code != expected[principal]:
                mismatches.append(
                    f"{method} {template} as {principal}: got {response.status_code}, expected "
                    f"{expected[principal]}: {response.text[:200]}"
                )
            elif response.status_code >= 400 and template.startswith(API):
                payload = response.json()
                assert payload["ok"] is False and payload["status"] == response.status_code, payload
    assert not mismatches, "\n".join(mismatches)
