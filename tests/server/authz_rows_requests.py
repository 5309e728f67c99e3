"""Authorization matrix rows for budgets, quotas, policies, compute requests and admission (S2's routes).

``authz_table`` merges :data:`EXPECTED`, :data:`BODIES` and :data:`PATH_PARAMS` into its own tables, so
``test_authz_matrix.py`` walks these routes too. The role principals hold their role on the organization.

Requests and admission jobs under test are made by the organization's bootstrap admin (``root``), who first
accepts the current acceptable-use policy, so that they are pending (a policy gates ``data_classification:
matrix-approval``) or admitted; approving, denying, cancelling, committing, releasing or settling them then
answers by role, never by state.
"""

from __future__ import annotations

from typing import Any

from authz_table import API, Ctx, admins_only, authed, everyone, viewers

GATE_POLICY = """
name: matrix-gate
rules:
  - id: needs-approval
    when: {field: data_classification, eq: matrix-approval}
    effect: require_approval
    approvals: 1
    role: approver
"""

#: requests may use up to $1 each; budgets the matrix creates are far larger, so nothing is denied for money
_BIG = "1000000"
_APPROVERS = authed(viewer=403, member=403, approver=200, admin=200, other_org=404)
_JOB_ACTORS = authed(viewer=403, member=200, approver=200, admin=200, other_org=404)


def _accept_current_aup(ctx: Ctx) -> None:
    current = ctx.client.get(f"{API}/aup/current", headers=ctx.root)
    version = current.json().get("version") if current.status_code == 200 else None
    if version and ctx.cache.get("root-accepted-aup") != version:  # other rows publish new versions
        ctx.client.post(f"{API}/aup/{version}/accept", json={}, headers=ctx.root)
        ctx.cache["root-accepted-aup"] = version


def _request_body(ctx: Ctx, classification: str = "internal") -> dict[str, Any]:
    return {
        "project_id": ctx.seed.project_id,
        "workload": "train",
        "device": "h100-sxm",
        "device_count": 1,
        "usd_per_device_h": "1.00",
        "data_classification": classification,
        "plan": {"duration_h": "1", "flops": 1e18},
    }


def _pending_request(ctx: Ctx) -> int:
    if "matrix-gate" not in ctx.cache:
        ctx.cache["matrix-gate"] = ctx.create("/policies", {"yaml": GATE_POLICY})
    _accept_current_aup(ctx)
    request = ctx.create("/requests", _request_body(ctx, "matrix-approval"))
    assert request["state"] == "pending", request
    return request["id"]


def _admitted_job(ctx: Ctx) -> str:
    _accept_current_aup(ctx)
    job_id = ctx.unique("matrix-job")
    job = ctx.create("/admission/decide", _job_body(ctx, job_id), status=200)
    assert job["state"] == "admitted", job
    return job_id


def _job_body(ctx: Ctx, job_id: str) -> dict[str, Any]:
    return {
        "engine": "slurm",
        "engine_job_id": job_id,
        "project_id": ctx.seed.project_id,
        "device": "h100-sxm",
        "device_count": 1,
        "max_duration_h": "1",
        "usd_per_device_h": "1.00",
    }


def _budget_body(ctx: Ctx) -> dict[str, Any]:
    return {"name": ctx.unique("matrix-budget"), "scope_kind": "project", "scope_id": ctx.seed.project_id,
            "period": "month", "unit": "usd", "amount": _BIG}  # fmt: skip


def _quota_body(ctx: Ctx) -> dict[str, Any]:
    return {"scope_kind": "project", "scope_id": ctx.seed.project_id, "match_on": "device_type",
            "device": ctx.unique("matrix-device"), "max_concurrent_devices": "1"}  # fmt: skip


def _policy_body(ctx: Ctx) -> dict[str, Any]:
    return {"yaml": f"name: {ctx.unique('matrix-policy')}\ndefault: allow\nrules: []\n"}


EXPECTED: dict[tuple[str, str], dict[str, int]] = {
    ("POST", f"{API}/budgets"): admins_only(201, other_org=404),
    ("GET", f"{API}/budgets"): everyone(200),
    ("GET", f"{API}/budgets/{{budget_id}}"): viewers(),
    ("POST", f"{API}/quotas"): admins_only(201, other_org=404),
    ("GET", f"{API}/quotas"): everyone(200),
    ("DELETE", f"{API}/quotas/{{quota_id}}"): admins_only(204, other_org=404),
    ("POST", f"{API}/policies"): admins_only(201, other_org=201),  # to the caller's own organization
    ("GET", f"{API}/policies"): everyone(200),
    ("GET", f"{API}/policies/{{policy_name}}"): viewers(),
    ("POST", f"{API}/requests"): authed(viewer=403, member=201, approver=201, admin=201, other_org=404),
    ("GET", f"{API}/requests"): everyone(200),
    ("GET", f"{API}/requests/{{request_id}}"): viewers(),
    ("POST", f"{API}/requests/{{request_id}}/approve"): _APPROVERS,
    ("POST", f"{API}/requests/{{request_id}}/deny"): _APPROVERS,
    # the requester (root here) or an admin may cancel
    ("POST", f"{API}/requests/{{request_id}}/cancel"): admins_only(200, other_org=404),
    ("POST", f"{API}/requests/{{request_id}}/comments"): viewers(ok=201),
    ("POST", f"{API}/admission/decide"): _JOB_ACTORS,
    ("GET", f"{API}/admission"): everyone(200),
    ("GET", f"{API}/admission/{{engine}}/{{job_id}}"): viewers(),
    ("POST", f"{API}/admission/{{engine}}/{{job_id}}/commit"): _JOB_ACTORS,
    ("POST", f"{API}/admission/{{engine}}/{{job_id}}/release"): _JOB_ACTORS,
    ("POST", f"{API}/admission/{{engine}}/{{job_id}}/settle"): _JOB_ACTORS,
}

BODIES: dict[tuple[str, str], Any] = {
    ("POST", f"{API}/budgets"): _budget_body,
    ("POST", f"{API}/quotas"): _quota_body,
    ("POST", f"{API}/policies"): _policy_body,
    ("POST", f"{API}/requests"): _request_body,
    ("POST", f"{API}/requests/{{request_id}}/approve"): lambda ctx: {"comment": "ok"},
    ("POST", f"{API}/requests/{{request_id}}/deny"): lambda ctx: {"comment": "not now"},
    ("POST", f"{API}/requests/{{request_id}}/comments"): lambda ctx: {"body": "a comment"},
    ("POST", f"{API}/admission/decide"): lambda ctx: _job_body(ctx, ctx.unique("matrix-decide")),
    ("POST", f"{API}/admission/{{engine}}/{{job_id}}/settle"): lambda ctx: {"actual_duration_h": "0.5"},
}

PATH_PARAMS: dict[str, Any] = {
    "budget_id": lambda ctx: ctx.create("/budgets", _budget_body(ctx))["id"],
    "quota_id": lambda ctx: ctx.create("/quotas", _quota_body(ctx))["id"],
    "policy_name": lambda ctx: ctx.create("/policies", _policy_body(ctx))["name"],
    "request_id": _pending_request,
    "engine": lambda ctx: "slurm",
    "job_id": _admitted_job,
}
