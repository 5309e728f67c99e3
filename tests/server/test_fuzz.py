"""Fuzz every operation of the server's OpenAPI spec with Hypothesis: no input, valid or not, gives a 500.

For each operation (method + path, read from ``/api/v1/openapi.json`` of the real app), Hypothesis draws path
and query parameters and a JSON body from the operation's own schemas, and with some probability replaces any
value with something the schema does not allow (wrong types, huge integers beyond 64 bits, negative ids, empty
and non-ASCII strings, NaN-like strings, deep nesting) or sends a body that is not JSON at all. Requests go with
an admin token (most of them, to reach the route code), no token or a malformed one. Every answer must be below
500, and every error answer must be the server's one JSON error shape. Runs on a SQLite file and on the local
PostgreSQL server (where integer overflow and text encoding are checked by the database itself).

The number of examples per operation is bounded so the whole module stays well under a minute: about
``FUZZ_REQUESTS_PER_BACKEND`` requests per backend, spread over the operations (at least ``MIN_EXAMPLES`` each).
"""

from __future__ import annotations

import json
import os
import re
import string
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgutil import BACKENDS, throwaway_database_url

fastapi_testclient = pytest.importorskip("fastapi.testclient")

from flopwise.server import Settings, create_app  # noqa: E402

FUZZ_REQUESTS_PER_BACKEND = int(os.environ.get("FLOPWISE_FUZZ_REQUESTS", "700"))
MIN_EXAMPLES = 6
METHODS = ("get", "post", "put", "patch", "delete")


def _spec() -> dict[str, Any]:
    """The OpenAPI document of the real app (no database touched: migrations off, engine never connected)."""
    app = create_app(Settings(database_url="sqlite://", migrate_on_start=False))
    return app.openapi()


SPEC = _spec()
OPERATIONS = sorted(
    (method, path)
    for path, item in SPEC.get("paths", {}).items()
    for method in item
    if method in METHODS and not path.endswith("/openapi.json")
)
EXAMPLES = max(MIN_EXAMPLES, FUZZ_REQUESTS_PER_BACKEND // max(1, len(OPERATIONS)))


# --- databases: a SQLite file and a fresh PostgreSQL schema per module (tests/pgutil.py) ---------------------


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with throwaway_database_url(request.param, tmp_path_factory, "fuzz") as url:
        yield url


def seed_org(app: Any) -> int:
    """An organization with a team and a project and an admin user (through the store); the admin's user id."""
    from flopwise.store import Organization, Project, Team, User, write_session

    with write_session(app.state.db) as s:
        org = Organization(name=f"fuzz-{uuid.uuid4().hex[:8]}")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="research")
        user = User(org_id=org.id, name="root", email="root@example.org")
        s.add_all([team, user])
        s.flush()
        s.add(Project(team_id=team.id, name="llm"))
        return user.id


def fresh_admin_token(app: Any, user_id: int) -> str:
    """A new token for the admin, who is made active and admin of their organization again.

    Each operation is fuzzed with its own token, so an earlier operation that revoked the token, removed the
    admin's role or deactivated the user (all legitimate fuzz inputs) does not turn later ones into 401/403s.
    """
    from sqlalchemy import select

    from flopwise.server.auth import mint_token
    from flopwise.store import ApiToken, RoleBinding, User, write_session

    token, prefix, token_hash = mint_token()
    with write_session(app.state.db) as s:
        user = s.get(User, user_id)
        user.is_active = True
        binding = s.scalar(
            select(RoleBinding).where(
                RoleBinding.user_id == user_id,
                RoleBinding.role == "admin",
                RoleBinding.scope_kind == "org",
                RoleBinding.scope_id == user.org_id,
            )
        )
        if binding is None:
            s.add(RoleBinding(user_id=user_id, role="admin", scope_kind="org", scope_id=user.org_id))
        s.add(ApiToken(user_id=user_id, name="fuzz", prefix=prefix, token_hash=token_hash))
    return token


@pytest.fixture(scope="module")
def server_app(database_url: str) -> Iterator[tuple[Any, Any, int]]:
    from fastapi.testclient import TestClient

    app = create_app(Settings(database_url=database_url))
    admin_id = seed_org(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app, admin_id
    app.state.engine.dispose()


@pytest.fixture
def server(server_app: tuple[Any, Any, int]) -> tuple[Any, str]:
    client, app, admin_id = server_app
    return client, fresh_admin_token(app, admin_id)


# --- strategies from JSON schema ----------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_NASTY_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1",
        "0",
        "9" * 40,
        "1e-999",
        "null",
        "true",
        "2026-13-45T99:99:99",
        "1970-01-01T00:00:00",
        "9999-12-31T23:59:59+14:00",
        "x" * 300,
        "\u0000",
        "é\u202e",
        "'; DROP TABLE budgets; --",
        "{{7*7}}",
        "../../etc/passwd",
    ]
)
_HUGE_INTS = st.sampled_from(
    [-1, 0, 2**31, 2**31 - 1, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 10**40, 10**400]
)
_ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _HUGE_INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
    _NASTY_STRINGS,
)
ANY_JSON = st.recursive(
    _ANY_SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 20:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = SPEC.get("components", {}).get("schemas", {}).get(name, {})
        seen += 1
    return schema


def _string_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    fmt = schema.get("format")
    options: list[st.SearchStrategy[Any]] = [_TEXT.filter(lambda s: len(s) <= schema.get("maxLength", 10**6))]
    if fmt == "date-time":
        options.append(st.datetimes().map(lambda d: d.isoformat() + "Z"))
    elif fmt == "date":
        options.append(st.dates().map(lambda d: d.isoformat()))
    if schema.get("pattern"):
        # Decimal fields come as patterned strings ("^(?!^[-+.]*$)[+-]?0*\d*\.?\d*$"): draw real decimals too.
        options.append(st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str))
        options.append(st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) < 60))
    return st.one_of(options)


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that mostly follow *schema* (an OpenAPI 3.1 / JSON Schema fragment); deep nesting falls back to any JSON."""
    schema = _resolve(schema)
    if depth > 6:
        return ANY_JSON
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, depth + 1) for s in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, depth + 1) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.one_of(st.integers(min_value=lo, max_value=hi), st.integers(min_value=0, max_value=6))
    if kind == "number":
        return st.one_of(
            st.floats(
                min_value=schema.get("minimum"),
                max_value=schema.get("maximum"),
                allow_nan=False,
                allow_infinity=False,
            ),
            st.integers(min_value=0, max_value=10**6),
        )
    if kind == "string":
        return _string_for(schema)
    if kind == "array":
        items = from_schema(schema.get("items", {}), depth + 1)
        return st.lists(items, max_size=4)
    if kind == "object" or "properties" in schema:
        props: dict[str, Any] = schema.get("properties", {})
        required = [k for k in schema.get("required", []) if k in props]
        optional = [k for k in props if k not in required]
        extra = schema.get("additionalProperties")
        extra_values = from_schema(extra, depth + 1) if isinstance(extra, dict) else ANY_JSON
        return st.fixed_dictionaries(
            {k: from_schema(props[k], depth + 1) for k in required},
            optional={k: from_schema(props[k], depth + 1) for k in optional},
        ).flatmap(
            lambda d: (
                st.dictionaries(st.text(max_size=8), extra_values, max_size=2).map(lambda more: {**more, **d})
                if extra
                else st.just(d)
            )
        )
    return ANY_JSON


def maybe_broken(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly *strategy*'s values, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, ANY_JSON)


def _param_value(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """A path or query value as text: mostly small ids or schema values, sometimes overflowing or junk."""
    schema = _resolve(schema)
    typed = from_schema(schema).map(lambda v: v if isinstance(v, str) else json.dumps(v))
    return st.one_of(
        st.integers(min_value=1, max_value=5).map(str),
        typed,
        _HUGE_INTS.map(str),
        _NASTY_STRINGS,
        _TEXT,
    )


@st.composite
def http_request(draw: st.DrawFn, method: str, path: str) -> dict[str, Any]:
    operation = SPEC["paths"][path][method]
    parameters = list(SPEC["paths"][path].get("parameters", [])) + list(operation.get("parameters", []))
    url = path
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    for param in parameters:
        where, name = param.get("in"), param["name"]
        value = draw(_param_value(param.get("schema", {})))
        if where == "path":
            url = url.replace("{" + name + "}", quote(value, safe="") or "0")
        elif where == "query" and (param.get("required") or draw(st.booleans())):
            query[name] = value
        elif where == "header" and draw(st.booleans()):
            headers[name] = "".join(c for c in value if c in string.printable and c not in "\r\n")[:100]
    url = re.sub(r"\{[^}]+\}", "1", url)
    content: bytes | None = None
    body_schema = (
        operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    )
    if body_schema is not None or method in ("post", "put", "patch"):
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice == 0:
            content = draw(
                st.sampled_from([b"", b"{", b"not json", b"\xff\xfe", b"[]", b"null", b'{"a":1e999}'])
            )
        else:
            body = draw(maybe_broken(from_schema(body_schema or {"type": "object"})))
            content = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    auth = draw(st.sampled_from(["admin"] * 6 + ["none", "junk"]))
    return {
        "method": method.upper(),
        "url": url,
        "query": query,
        "headers": headers,
        "content": content,
        "auth": auth,
    }


def _send(client: Any, token: str, req: dict[str, Any]) -> Any:
    headers = dict(req["headers"])
    if req["auth"] == "admin":
        headers["Authorization"] = f"Bearer {token}"
    elif req["auth"] == "junk":
        headers["Authorization"] = "Bearer fw_000000000000_" + "x" * 20
    return client.request(
        req["method"], req["url"], params=req["query"], headers=headers, content=req["content"]
    )


def assert_error_shape(response: Any, where: str) -> None:
    """The server's one error shape: ``{"ok": false, "status", "error", "errors": [{"field", "message"}]}``."""
    what = f"{where} -> {response.status_code} {response.text[:300]}"
    body = response.json()
    assert isinstance(body, dict) and set(body) >= {"ok", "status", "error", "errors"}, what
    assert body["ok"] is False and body["status"] == response.status_code, what
    assert isinstance(body["error"], str) and body["error"], what
    assert isinstance(body["errors"], list), what
    for err in body["errors"]:
        assert isinstance(err, dict) and set(err) >= {"field", "message"}, what


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_no_input_gives_a_500(server: tuple[Any, str], method: str, path: str) -> None:
    client, token = server

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(req=http_request(method, path))
    def run(req: dict[str, Any]) -> None:
        response = _send(client, token, req)
        where = f"{req['method']} {req['url']} query={req['query']} body={req['content']!r:.300}"
        assert response.status_code < 500, f"{response.status_code} for {where}: {response.text[:300]}"
        if response.status_code >= 400:
            assert_error_shape(response, where)

    run()


def test_every_operation_is_fuzzed() -> None:
    """The spec lists the API's routes (health and identity at least), so a route cannot slip past the fuzzer."""
    assert ("get", "/api/v1/health") in OPERATIONS
    assert ("get", "/api/v1/me") in OPERATIONS
    assert all(p.startswith("/api/v1/") for _m, p in OPERATIONS)


def test_validation_errors_are_field_level(server: tuple[Any, str]) -> None:
    """A malformed body on a route with a JSON body is a 422 naming each bad field, not a 500 or a bare message."""
    client, token = server
    posts = [
        (m, p)
        for m, p in OPERATIONS
        if m == "post"
        and "{" not in p
        and SPEC["paths"][p][m].get("requestBody", {}).get("content", {}).get("application/json")
    ]
    if not posts:
        pytest.skip("no POST route with a JSON body is registered yet")
    for _method, path in posts:
        response = client.post(
            path,
            json={"__not_a_field__": 1, "amount": [], "name": {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code in (404, 422), (path, response.status_code, response.text[:300])
        if response.status_code == 422:
            assert_error_shape(response, f"POST {path}")
            body = response.json()
            assert body["errors"], (path, body)
            assert all(e["field"] and e["message"] for e in body["errors"]), (path, body)
