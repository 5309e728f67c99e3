"""The client commands (`flopwise request|budget|policy|token`) against a real in-process server.

The CLI's ``FlopwiseClient`` sends real HTTP through :class:`AsgiSyncTransport`, an httpx transport that hands
each request to the ASGI app built by ``create_app`` (on a SQLite file and on the local PostgreSQL server), so
the commands, the client, the routes, the decision path and the store all run as in production, minus the
socket. The client library's configuration and error mapping are tested alone with ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from asgi_transport import AsgiSyncTransport
from flopwise.cli.main import app as cli_app
from flopwise.client import (
    DEFAULT_URL,
    AuthenticationError,
    ConflictError,
    FlopwiseClient,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    ServerUnreachableError,
    ServerValidationError,
    default_config_path,
    resolve_connection,
)
from flopwise.errors import FlopwiseError, InputError
from pgutil import BACKENDS, throwaway_database_url

BASE = "http://testserver"

runner = CliRunner()


# --- the server on each backend -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with throwaway_database_url(request.param, tmp_path_factory, "cli") as url:
        yield url


@dataclass(frozen=True)
class World:
    transport: AsgiSyncTransport
    app: Any
    org_id: int
    team_id: int
    project_id: int
    admin_token: str
    member_id: int
    member_token: str
    approver_token: str


def _user_with_token(s: Any, org_id: int, name: str, role: str) -> tuple[int, str]:
    from flopwise.server.auth import mint_token
    from flopwise.store import ApiToken, RoleBinding, User

    user = User(org_id=org_id, name=name, email=f"{name}@example.org")
    s.add(user)
    s.flush()
    s.add(RoleBinding(user_id=user.id, role=role, scope_kind="org", scope_id=org_id))
    token, prefix, token_hash = mint_token()
    s.add(ApiToken(user_id=user.id, name=f"{name}-token", prefix=prefix, token_hash=token_hash))
    return user.id, token


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    """An organization with a team and project, an admin, a member and an approver (each with a token)."""
    from flopwise.server import Settings, create_app
    from flopwise.store import Organization, Project, Team, write_session

    app = create_app(Settings(database_url=database_url))
    with write_session(app.state.db) as s:
        org = Organization(name="acme")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="research")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="llm")
        s.add(project)
        s.flush()
        _, admin_token = _user_with_token(s, org.id, "ada", "admin")
        member_id, member_token = _user_with_token(s, org.id, "alan", "member")
        _, approver_token = _user_with_token(s, org.id, "grace", "approver")
        ids = (org.id, team.id, project.id)
    transport = AsgiSyncTransport(app)
    try:
        yield World(transport, app, *ids, admin_token, member_id, member_token, approver_token)
    finally:
        transport.shutdown()
        app.state.engine.dispose()


def fw(world: World, token: str | None, *args: str) -> Any:
    """Run ``flopwise ARGS --url ... --token ...`` against the in-process server; the click Result."""
    extra = ["--url", BASE] + (["--token", token] if token else [])
    return runner.invoke(
        cli_app,
        [*args, *extra],
        obj={"transport": world.transport},
        env={"FLOPWISE_URL": "", "FLOPWISE_TOKEN": "", "FLOPWISE_CONFIG": "/nonexistent/flopwise.toml"},
    )


def fw_json(world: World, token: str | None, *args: str, code: int = 0) -> Any:
    result = fw(world, token, *args, "--json")
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)


def apply_policy(world: World, tmp_path: Path, yaml_text: str) -> dict[str, Any]:
    """`flopwise policy apply FILE` as the admin."""
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml_text)
    return fw_json(world, world.admin_token, "policy", "apply", str(path))


POLICY = """\
name: {name}
default: allow
rules:
  - id: big-h100-runs
    description: more than 16 H100s need an approver
    when: {{all: [{{field: device_count, gt: 16}}, {{field: project, eq: llm}}]}}
    effect: require_approval
    approvals: 1
    role: approver
  - id: no-restricted-on-spot
    when: {{all: [{{field: data_classification, eq: restricted}}, {{field: pricing, eq: spot}}]}}
    effect: deny
    message: Restricted data may not run on spot capacity.
"""


def _plan(world: World, *more: str) -> list[str]:
    return [
        "request",
        "create",
        "--project",
        str(world.project_id),
        "--workload",
        "fine-tune",
        "--device",
        "h100-sxm",
        "--hours",
        "2",
        *more,
    ]


# --- end to end through the CLI -----------------------------------------------------------------------------


def test_request_approved_exits_0_with_decimal_money(world: World) -> None:
    answer = fw_json(world, world.member_token, *_plan(world, "--count", "2", "--price", "3.25"))
    assert answer["state"] == "approved"
    assert answer["device_count"] == 2
    # money leaves the server as a decimal string and the CLI keeps it one: 2 devices x 2 h x $3.25 = $13
    assert isinstance(answer["estimated_cost_usd"], str)
    assert Decimal(answer["estimated_cost_usd"]) == Decimal("13")
    shown = fw_json(world, world.member_token, "request", "show", str(answer["id"]))
    assert shown["id"] == answer["id"] and shown["state"] == "approved"
    table = fw(world, world.member_token, "request", "show", str(answer["id"]))
    assert table.exit_code == 0 and "approved" in table.stdout


def test_policy_approval_flow_exits_3_then_0(world: World, tmp_path: Path) -> None:
    apply_policy(world, tmp_path, POLICY.format(name="gpu"))
    result = fw(world, world.member_token, *_plan(world, "--count", "32", "--price", "2"), "--json")
    assert result.exit_code == 3, (result.stdout, result.stderr)
    pending = json.loads(result.stdout)
    assert pending["state"] == "pending"
    assert any("big-h100-runs" in r for r in pending["reasons"]), pending["reasons"]
    # nobody approves their own request; a weak role cannot approve
    own = fw(world, world.member_token, "request", "approve", str(pending["id"]))
    assert own.exit_code == 1 and "own" in own.stderr.lower(), own.stderr
    listed = fw_json(world, world.approver_token, "request", "list", "--state", "pending")
    assert pending["id"] in [r["id"] for r in listed]
    approved = fw_json(
        world, world.approver_token, "request", "approve", str(pending["id"]), "--comment", "ok"
    )
    assert approved["state"] == "approved"
    assert [v["verdict"] for v in approved["approvals"]] == ["approve"]


def test_denied_request_exits_3_and_says_why(world: World, tmp_path: Path) -> None:
    apply_policy(world, tmp_path, POLICY.format(name="spot"))
    args = _plan(world, "--pricing", "spot", "--data-classification", "restricted", "--price", "1")
    result = fw(world, world.member_token, *args)
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert "denied" in result.stdout + result.stderr
    assert "Restricted data may not run on spot capacity" in result.stdout + result.stderr


def test_deny_and_cancel(world: World, tmp_path: Path) -> None:
    apply_policy(world, tmp_path, POLICY.format(name="gpu2"))
    first = fw_json(world, world.member_token, *_plan(world, "--count", "64", "--price", "2"), code=3)
    denied = fw_json(
        world, world.approver_token, "request", "deny", str(first["id"]), "--comment", "use spot capacity"
    )
    assert denied["state"] == "denied"
    missing_reason = fw(world, world.approver_token, "request", "deny", str(first["id"]))
    assert missing_reason.exit_code == 2  # --comment is required
    second = fw_json(world, world.member_token, *_plan(world, "--count", "1", "--price", "2"))
    cancelled = fw_json(world, world.member_token, "request", "cancel", str(second["id"]))
    assert cancelled["state"] == "cancelled"
    assert all(r["state"] == "released" for r in cancelled["reservations"])


def test_idempotency_key_returns_the_same_request(world: World) -> None:
    key = uuid.uuid4().hex
    args = _plan(world, "--count", "1", "--price", "1.5", "--idempotency-key", key)
    one = fw_json(world, world.member_token, *args)
    two = fw_json(world, world.member_token, *args)
    assert one["id"] == two["id"] and one["idempotency_key"] == key
    clash = fw(world, world.member_token, *_plan(world, "--count", "3", "--idempotency-key", key))
    assert clash.exit_code == 1 and "different body" in clash.stderr


def test_server_validation_error_exits_2_with_the_field(world: World) -> None:
    result = fw(world, world.member_token, *_plan(world, "--count", "0"))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "device_count" in result.stderr
    assert result.stdout == ""


def test_request_from_file_with_server_estimate(world: World, tmp_path: Path) -> None:
    body = tmp_path / "request.yaml"
    body.write_text(
        f"project_id: {world.project_id}\nworkload: fine-tune\ndevice: h100-sxm\ndevice_count: 8\n"
        "params: {model: llama-3.1-8b, tokens: 1.0e+9, method: lora}\n"
    )
    answer = fw_json(world, world.member_token, "request", "create", "--file", str(body))
    assert answer["state"] == "approved"
    assert answer["estimated_flops"] > 0 and Decimal(answer["estimated_cost_usd"]) > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    result = fw(world, world.member_token, "request", "create", "--file", str(bad))
    assert result.exit_code == 2 and "one object" in result.stderr


def test_tokens_create_use_and_revoke(world: World) -> None:
    created = fw_json(world, world.admin_token, "token", "create", "--name", "ci", "--expires-days", "1")
    secret = created["token"]
    assert secret.startswith("fw_") and created["name"] == "ci"
    assert isinstance(fw_json(world, secret, "request", "list"), list)
    revoked = fw_json(world, world.admin_token, "token", "revoke", str(created["id"]))
    assert revoked["revoked_at"] is not None
    refused = fw(world, secret, "request", "list")
    assert refused.exit_code == 1
    assert "revoked" in refused.stderr and "FLOPWISE_TOKEN" in refused.stderr
    table = fw(world, world.admin_token, "token", "create", "--name", "laptop")
    assert table.exit_code == 0
    assert table.stdout.strip().splitlines()[-1].startswith("fw_")  # the secret, printed once, last on stdout


def test_missing_token_and_unknown_request(world: World) -> None:
    result = fw(world, None, "request", "list")
    assert result.exit_code == 1 and "missing bearer token" in result.stderr
    result = fw(world, world.member_token, "request", "show", "999999")
    assert result.exit_code == 1 and "not found" in result.stderr


def test_budget_commands(world: World) -> None:
    created = fw_json(
        world,
        world.admin_token,
        "budget",
        "create",
        "--name",
        f"q-{uuid.uuid4().hex[:6]}",
        "--scope",
        f"team:{world.team_id}",
        "--amount",
        "2500.50",
        "--period",
        "quarter",
        "--alert",
        "0.8",
    )
    assert Decimal(created["amount"]) == Decimal("2500.50")
    listed = fw_json(world, world.admin_token, "budget", "list")
    rows = listed if isinstance(listed, list) else listed.get("budgets", [])
    assert created["id"] in [b["id"] for b in rows]
    shown = fw_json(world, world.admin_token, "budget", "show", str(created["id"]))
    assert shown["id"] == created["id"]
    member = fw(
        world, world.member_token, "budget", "create", "--name", "x", "--scope", "org:1", "--amount", "1"
    )
    assert member.exit_code in (1, 2)
    bad = fw(
        world, world.admin_token, "budget", "create", "--name", "y", "--scope", "galaxy:1", "--amount", "1"
    )
    assert bad.exit_code == 2 and "--scope" in bad.stderr


def test_admission_commands_find_and_close_a_job_whose_end_was_never_reported(world: World) -> None:
    """`flopwise admission list|show|release|settle`: the jobs the schedulers' adapters decided, the ones still
    holding budget, and closing them by hand (a job id with characters a URL gives a meaning to included)."""
    from flopwise.client import FlopwiseClient

    ran, never = f"cl.{uuid.uuid4().hex[:6]}#1", f"cl.{uuid.uuid4().hex[:6]}?2"
    fw_json(world, world.admin_token, "budget", "create", "--name", f"adm-{uuid.uuid4().hex[:6]}", "--scope",
            f"project:{world.project_id}", "--amount", "100000")  # fmt: skip
    with FlopwiseClient(BASE, world.member_token, transport=world.transport, env={}) as client:
        for job_id in (ran, never):
            job = client.call("POST", "/admission/decide", json_body={
                "engine": "slurm", "engine_job_id": job_id, "project_id": world.project_id, "device": "h100-sxm",
                "device_count": 2, "max_duration_h": "4", "usd_per_device_h": "2.00"})  # fmt: skip
            assert job["admitted"] is True
        assert client.call("POST", f"/admission/slurm/{quote(ran, safe='')}/commit")["state"] == "committed"
    holding = fw_json(world, world.admin_token, "admission", "list", "--state", "holding", "--engine", "slurm")
    assert {j["engine_job_id"] for j in holding} >= {ran, never}
    table = fw(world, world.admin_token, "admission", "list", "--state", "holding")
    assert table.exit_code == 0 and "admission jobs" in table.stdout and "engine_job_id" in table.stdout
    shown = fw(world, world.member_token, "admission", "show", "slurm", ran)
    assert shown.exit_code == 0, shown.stderr
    assert "ends by" in shown.stdout and "committed" in shown.stdout
    released = fw_json(world, world.member_token, "admission", "release", "slurm", never)
    assert released["state"] == "released" and released["reservations"][0]["state"] == "released"
    settled = fw_json(world, world.member_token, "admission", "settle", "slurm", ran, "--hours", "1.5")
    assert settled["state"] == "settled"
    # 2 devices x 1.5 h x $2.00: the worst case (2 x 4 h x $2.00 = $16) prorated by the hours it ran
    assert Decimal(settled["reservations"][0]["amount"]) == Decimal("6")
    gone = fw_json(world, world.admin_token, "admission", "list", "--state", "holding", "--engine", "slurm")
    assert not {j["engine_job_id"] for j in gone} & {ran, never}
    missing = fw(world, world.admin_token, "admission", "show", "slurm", "no-such-job")
    assert missing.exit_code == 1 and "decide" in missing.stderr
    contradictory = fw(world, world.admin_token, "admission", "list", "--overdue", "--state", "released")
    assert contradictory.exit_code == 2 and "overdue" in contradictory.stderr
    bad_hours = fw(world, world.member_token, "admission", "settle", "slurm", ran, "--hours", "soon")
    assert bad_hours.exit_code == 2 and "--hours" in bad_hours.stderr


# --- the client library alone -------------------------------------------------------------------------------


def test_connection_precedence(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('url = "http://config:1"\ntoken = "fw_config"\n')
    env = {"FLOPWISE_URL": "http://env:2/", "FLOPWISE_TOKEN": "fw_env"}
    assert resolve_connection("http://arg:3", "fw_arg", env=env, config_path=config).url == "http://arg:3"
    c = resolve_connection(env=env, config_path=config)
    assert (c.url, c.token, c.url_source) == ("http://env:2", "fw_env", "FLOPWISE_URL")
    c = resolve_connection(env={}, config_path=config)
    assert (c.url, c.token, c.token_source) == ("http://config:1", "fw_config", str(config))
    c = resolve_connection(env={}, config_path=tmp_path / "missing.toml")
    assert (c.url, c.token, c.url_source) == (DEFAULT_URL, None, "default")
    assert resolve_connection("http://h:1/api/v1/", env={}, config_path=config).url == "http://h:1"


def test_config_path_is_xdg_aware(tmp_path: Path) -> None:
    assert default_config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "flopwise" / "config.toml"
    assert default_config_path({}) == Path.home() / ".config" / "flopwise" / "config.toml"
    assert default_config_path({"FLOPWISE_CONFIG": str(tmp_path / "x.toml")}) == tmp_path / "x.toml"


def test_bad_config_and_url_are_input_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("url = http://no-quotes\n")
    with pytest.raises(InputError, match="TOML"):
        resolve_connection(env={}, config_path=config)
    config.write_text("token = 42\n")
    with pytest.raises(InputError, match="string"):
        resolve_connection(env={}, config_path=config)
    with pytest.raises(InputError, match="http"):
        resolve_connection("ftp://x", env={}, config_path=tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, ServerValidationError),
        (400, ServerError),
    ],
)
def test_error_json_maps_to_exceptions(status: int, cls: type[ServerError]) -> None:
    body = {
        "ok": False,
        "status": status,
        "error": "server says no",
        "errors": [{"field": "amount", "message": "bad"}],
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    with (
        FlopwiseClient("http://x", "fw_t", transport=transport, env={}) as client,
        pytest.raises(cls) as info,
    ):
        client.get_budget(1)
    err = info.value
    assert isinstance(err, FlopwiseError)
    assert err.status == status and "server says no" in str(err) and err.errors[0]["field"] == "amount"
    if status == 422:
        assert isinstance(err, InputError) and err.field == "amount"


def test_non_json_error_and_unreachable_server() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with (
        FlopwiseClient("http://x", env={}, transport=transport) as client,
        pytest.raises(ServerError) as info,
    ):
        client.health()
    assert info.value.status == 502 and "Bad Gateway" in str(info.value)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        FlopwiseClient("http://x", env={}, transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(ServerUnreachableError, match="flopwise serve"),
    ):
        client.me()


def test_client_sends_bearer_idempotency_key_and_decimal_strings() -> None:
    seen: list[httpx.Request] = []

    def echo(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201, content=b'{"id": 1, "estimated_cost_usd": "12.10", "estimated_flops": 1.5e21}'
        )

    with FlopwiseClient("http://x", "fw_abc", env={}, transport=httpx.MockTransport(echo)) as client:
        answer = client.create_request({"amount": Decimal("0.10")}, idempotency_key="k1")
    assert seen[0].headers["authorization"] == "Bearer fw_abc"
    assert seen[0].headers["idempotency-key"] == "k1"
    assert seen[0].url.path == "/api/v1/requests"
    assert json.loads(seen[0].content) == {"amount": "0.10"}
    assert answer["estimated_cost_usd"] == "12.10"  # money stays a decimal string, never a binary float
    assert answer["estimated_flops"] == 1.5e21


def test_unreachable_server_from_the_cli_exits_1() -> None:
    result = runner.invoke(
        cli_app,
        ["request", "list", "--url", "http://127.0.0.1:9", "--token", "fw_x"],
        env={"FLOPWISE_CONFIG": "/nonexistent/flopwise.toml"},
    )
    assert result.exit_code == 1 and "cannot reach" in result.stderr


def test_request_create_takes_tokens_with_a_suffix_and_old_spellings(world: World) -> None:
    """``--tokens 2B`` as ``estimate`` takes it; ``fine_tune`` / ``on_demand`` are aliases; typos fail locally."""
    args = ["request", "create", "--project", str(world.project_id), "--device", "h100-sxm", "--count", "8"]
    answer = fw_json(
        world, world.member_token, *args, "--workload", "fine_tune", "--pricing", "on_demand",
        "--model", "llama-3.1-8b", "--tokens", "2B", "--method", "lora",
    )  # fmt: skip
    assert answer["workload"] == "fine-tune"
    one = fw_json(
        world, world.member_token, *args, "--workload", "fine-tune", "--model", "llama-3.1-8b",
        "--tokens", "1e9", "--method", "lora",
    )  # fmt: skip
    assert answer["estimated_flops"] == pytest.approx(2 * one["estimated_flops"], rel=1e-6)
    bad = fw(world, world.member_token, *args, "--workload", "train", "--model", "llama-3.1-8b", "--tokens", "2X")
    assert bad.exit_code == 2 and "--tokens" in bad.stderr
    typo = fw(world, world.member_token, *args, "--workload", "fine-tunning", "--hours", "1")
    assert typo.exit_code == 2 and "did you mean 'fine-tune'" in typo.stderr


def test_request_show_prints_the_reserved_and_the_settled_unit_price() -> None:
    from flopwise.cli.client_cmd import _request_rows

    answer = {
        "state": "approved",
        "reservations": [
            {"budget_id": 3, "unit": "usd", "amount": "11.50", "state": "settled",
             "reserved_usd_per_device_h": "3.00", "price_retrieved": "2026-12-06",
             "settled_usd_per_device_h": "2.875", "price_change_usd_per_device_h": "-0.125"},
            {"budget_id": 4, "unit": "kwh", "amount": "2", "state": "reserved"},
        ],
    }  # fmt: skip
    rows = dict(_request_rows(answer))
    assert rows["budget 3"] == (
        "11.50 usd settled; reserved at 3.00 USD/device-h (catalog 2026-12-06), settled at 2.875 USD/device-h (-0.125)"
    )
    assert rows["budget 4"] == "2.00 kwh reserved"  # no price recorded: nothing claimed
