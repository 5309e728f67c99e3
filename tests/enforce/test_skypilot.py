"""The SkyPilot admin policy server: in process through FastAPI's TestClient with SkyPilot's wire format, and,
where an interpreter with the skypilot package is named by FLOPWISE_TEST_SKYPILOT_PYTHON, with SkyPilot's own
RestfulAdminPolicy client against a live server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from flopwise.client import FlopwiseClient
from flopwise.enforce.skypilot import ADMISSION_LABEL, create_policy_app, load_config
from flopwise.errors import InputError

CONFIG = load_config({"accelerators": {"H100": {"device": "h100-sxm", "usd_per_h": "2.50"},
                                       "A100": {"device": "a100-sxm4-80gb", "usd_per_h": "1.10"}}})  # fmt: skip


def _request(task: dict, name: str = "launch", cluster: str | None = "c1") -> str:
    """What SkyPilot's UserRequest.encode() sends (and RestfulAdminPolicy posts with json=, so JSON-in-JSON)."""
    body = {"task": yaml.safe_dump(task), "skypilot_config": "{}\n", "request_name": name,
            "request_options": {"cluster_name": cluster, "idle_minutes_to_autostop": None, "down": False,
                                "dryrun": False},
            "at_client_side": False, "user": ""}  # fmt: skip
    return json.dumps(body)


def _task(project: int | None, acc: Any = "H100:4", hours: str | None = "2") -> dict:
    labels = {}
    if project is not None:
        labels["flopwise-project"] = str(project)
    if hours is not None:
        labels["flopwise-max-hours"] = hours
    return {"run": "python train.py", "num_nodes": 1, "resources": {"accelerators": acc, "labels": labels}}


@pytest.fixture(scope="module")
def world(server: Any) -> Iterator[tuple[Any, int, int]]:
    fw = server.client()
    team = fw.call("POST", "/teams", json_body={"name": "sky"})
    project = fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "launches"})
    budget = fw.create_budget({"name": "sky-usd", "scope_kind": "project", "scope_id": project["id"],
                               "period": "month", "unit": "usd", "amount": "30", "is_hard": True})  # fmt: skip
    yield fw, project["id"], budget["id"]
    fw.close()


@pytest.fixture(scope="module")
def policy(server: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_policy_app(server.client, CONFIG)) as client:
        yield client


def test_admits_and_labels_the_task_with_the_admission_id(world: Any, policy: Any) -> None:
    fw, pid, _ = world
    r = policy.post("/skypilot/policy", json=_request(_task(pid)))  # 4 x 2 h x $2.50 = $20 of $30
    assert r.status_code == 200, r.text
    mutated = json.loads(r.json())
    task = yaml.safe_load(mutated["task"])
    job_id = task["resources"]["labels"][ADMISSION_LABEL]
    assert job_id.startswith("c1.") and mutated["skypilot_config"] == "{}\n"
    adm = fw.call("GET", f"/admission/skypilot/{job_id}")
    assert adm["admitted"] and adm["device_count"] == 4 and adm["worst_case_cost_usd"] == "20.000000"


def test_rejects_with_flopwises_reason_when_the_budget_is_spent(world: Any, policy: Any) -> None:
    _, pid, _ = world
    r = policy.post("/skypilot/policy", json=_request(_task(pid, {"H100": 4, "A100": 4})))  # worst: H100, $20
    assert r.status_code == 400
    assert r.text.startswith("flopwise: budget ") and "is hard: the request needs 20.000" in r.text


def test_bad_labels_name_the_label_and_the_fix(world: Any, policy: Any) -> None:
    _, pid, _ = world
    r = policy.post("/skypilot/policy", json=_request(_task(None)))
    assert r.status_code == 400 and "resources.labels.flopwise-project" in r.text
    r = policy.post("/skypilot/policy", json=_request(_task(pid, hours=None)))
    assert r.status_code == 400 and "flopwise-max-hours" in r.text
    r = policy.post("/skypilot/policy", json=_request(_task(pid, "H10:1")))
    assert r.status_code == 400 and "did you mean H100?" in r.text
    r = policy.post("/skypilot/policy", json="not json at all")
    assert r.status_code == 400 and "not a SkyPilot user request" in r.text


def test_other_requests_and_cpu_tasks_pass_through(world: Any, policy: Any) -> None:
    _, pid, _ = world
    for body in (_request(_task(pid), name="exec"), _request(_task(pid, acc=None))):
        r = policy.post("/skypilot/policy", json=body)
        assert r.status_code == 200
        assert json.loads(r.json())["task"] == json.loads(body)["task"]


def test_flopwise_down_fails_closed_with_503() -> None:
    from fastapi.testclient import TestClient

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app = create_policy_app(
        lambda: FlopwiseClient(url="http://127.0.0.1:9", token="fw_x", transport=httpx.MockTransport(refuse)), CONFIG
    )
    with TestClient(app) as client:
        r = client.post("/skypilot/policy", json=_request(_task(1)))
    assert r.status_code == 503 and "fails closed" in r.text


def test_config_errors_name_the_field() -> None:
    with pytest.raises(InputError, match="did you mean accelerators"):
        load_config({"accelerator": {}})
    with pytest.raises(InputError, match="usd_per_h"):
        load_config({"accelerators": {"H100": {"device": "h100-sxm", "usd_per_h": "-3"}}})


SKY_SCRIPT = """
import json, sys
import sky
from sky import admin_policy, exceptions
from sky.server.requests import request_names
url, project, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
task = sky.Task(run='python train.py')
task.set_resources(sky.Resources(accelerators={'H100': count},
                                 labels={'flopwise-project': project, 'flopwise-max-hours': '1'}))
req = admin_policy.UserRequest(task=task, skypilot_config=sky.Config(),
                               request_name=request_names.AdminPolicyRequestName.CLUSTER_LAUNCH,
                               request_options=admin_policy.RequestOptions(cluster_name='fw', idle_minutes_to_autostop=None,
                                                                           down=False, dryrun=False))
try:
    out = admin_policy.RestfulAdminPolicy(url).validate_and_mutate(req)
    print(json.dumps({'labels': list(out.task.resources)[0].labels}))
except exceptions.UserRequestRejectedByPolicy as exc:
    print(json.dumps({'rejected': str(exc)}))
"""


def test_skypilots_own_restful_policy_client(world: Any, server: Any) -> None:
    python = os.environ.get("FLOPWISE_TEST_SKYPILOT_PYTHON")
    if not python:
        pytest.skip("set FLOPWISE_TEST_SKYPILOT_PYTHON to a Python with the skypilot package (460 MB, not a test dependency)")
    import uvicorn

    _, pid, _ = world
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    live = uvicorn.Server(uvicorn.Config(create_policy_app(server.client, CONFIG), host="127.0.0.1", port=port,
                                         log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not live.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/skypilot/policy"

        def sky(count: int) -> dict:
            out = subprocess.run([python, "-c", SKY_SCRIPT, url, str(pid), str(count)], capture_output=True,
                                 text=True, timeout=120, check=True)  # fmt: skip
            return json.loads(out.stdout.strip().splitlines()[-1])

        # $20 of the $30 budget is reserved by the first test when run together; 1 H100 for 1 h is $2.50
        admitted = sky(1)
        assert admitted["labels"][ADMISSION_LABEL].startswith("fw.")
        rejected = sky(6)  # $15 more: over the budget
        assert "rejected by admin policy" in rejected["rejected"] and "flopwise: " in rejected["rejected"]
    finally:
        live.should_exit = True
        thread.join(timeout=10)


def test_cli_serve_starts_the_policy_server(tmp_path: Any) -> None:
    import sys

    config = tmp_path / "sky.yaml"
    config.write_text("accelerators:\n  H100: {device: h100-sxm, usd_per_h: '2.50'}\n")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flopwise", "enforce", "skypilot", "serve", "--config", str(config), "--port",
         str(port), "--url", "http://127.0.0.1:9", "--token", "fw_x"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("the policy server did not start")
        r = httpx.post(f"http://127.0.0.1:{port}/skypilot/policy", json=_request(_task(1)))
        assert r.status_code == 503 and "fails closed" in r.text  # nothing listens on the flopwise URL
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_cli_serve_bad_config_exits_2(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from flopwise.cli.main import app

    config = tmp_path / "sky.yaml"
    config.write_text("accelerators: {H100: {device: h100-sxm}}\n")
    r = CliRunner().invoke(app, ["enforce", "skypilot", "serve", "--config", str(config)])
    assert r.exit_code == 2 and "sky.yaml.accelerators.H100" in r.stderr


def test_slow_flopwise_times_out_and_fails_closed() -> None:
    from fastapi.testclient import TestClient

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    app = create_policy_app(
        lambda: FlopwiseClient(url="http://127.0.0.1:9", token="fw_x", transport=httpx.MockTransport(slow)), CONFIG
    )
    with TestClient(app) as client:
        r = client.post("/skypilot/policy", json=_request(_task(1)))
    assert r.status_code == 503 and "ReadTimeout" in r.text


def _admit(policy: Any, pid: int, cluster: str, gpus: int = 1) -> str:
    r = policy.post("/skypilot/policy", json=_request(_task(pid, f"H100:{gpus}", hours="2"), cluster=cluster))
    assert r.status_code == 200, r.text
    return yaml.safe_load(json.loads(r.json())["task"])["resources"]["labels"][ADMISSION_LABEL]


def _record(name: str, job_id: str, status: str | None, seconds: int, cost: str | None = None) -> dict:
    """A cluster as the cost-report export prints it (the shape SKY_COST_REPORT writes)."""
    return {"name": name, "status": status, "launched_at": 1_796_583_501, "duration_s": seconds, "num_nodes": 1,
            "total_cost": cost, "labels": {ADMISSION_LABEL: job_id, "flopwise-project": "1"}}  # fmt: skip


def test_launches_are_committed_when_up_and_settled_when_torn_down(server: Any) -> None:
    from fastapi.testclient import TestClient

    from flopwise.enforce.skypilot import settle_launches

    fw = server.client()
    team = fw.call("POST", "/teams", json_body={"name": "sky-settle"})
    pid = fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "settled"})["id"]
    with TestClient(create_policy_app(fw, CONFIG)) as policy:
        ran, never = _admit(policy, pid, "ran", 2), _admit(policy, pid, "never")
    up = [_record("ran", ran, "UP", 600), _record("never", never, "INIT", 0)]
    assert settle_launches(fw, up)["committed"] == [ran]
    down = [_record("ran", ran, None, 5400, "13.5"), _record("never", never, None, 0),
            _record("other", "x.0000", None, 60), {"name": "unlabelled", "status": None, "labels": {}}]  # fmt: skip
    report = settle_launches(fw, down)
    assert report["settled"] == [ran] and report["released"] == [never]
    assert report["errors"] == ["other: admission x.0000 is unknown to flopwise"]
    adm = fw.call("GET", f"/admission/skypilot/{ran}")
    assert adm["state"] == "settled"
    assert fw.call("GET", f"/admission/skypilot/{never}")["state"] == "released"
    again = settle_launches(fw, down[:2])  # a repeated pass moves nothing
    assert again == {"committed": [], "settled": [], "released": [], "errors": []}
    fw.close()


SKY_CLUSTER = """
import sys
import sky
from sky import global_user_state
from sky.backends import cloud_vm_ray_backend as backend
name, job_id, action = sys.argv[1], sys.argv[2], sys.argv[3]
if action == 'up':
    res = sky.Resources(accelerators={'H100': 1}, labels={'flopwise-admission': job_id})
    handle = backend.CloudVmRayResourceHandle(cluster_name=name, cluster_name_on_cloud=name + '-1', cluster_yaml=None,
                                              launched_nodes=1, launched_resources=res)
    global_user_state.add_or_update_cluster(name, handle, {res}, ready=True)
else:
    global_user_state.remove_cluster(name, terminate=True)
"""


def test_skypilots_own_cost_report_settles_a_torn_down_cluster(server: Any, tmp_path: Any, monkeypatch: Any) -> None:
    """SkyPilot's state database records a cluster launched with the admission label (as its launch path does,
    through global_user_state) and tears it down; flopwise reads sky.core.cost_report and settles."""
    python = os.environ.get("FLOPWISE_TEST_SKYPILOT_PYTHON")
    if not python:
        pytest.skip("set FLOPWISE_TEST_SKYPILOT_PYTHON to a Python with the skypilot package (460 MB, not a test dependency)")
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from flopwise.cli.main import app
    from flopwise.enforce.skypilot import settle_launches, sky_cost_report

    monkeypatch.setenv("HOME", str(tmp_path))  # SkyPilot keeps its state under ~/.sky
    fw = server.client()
    team = fw.call("POST", "/teams", json_body={"name": "sky-real-settle"})
    pid = fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "real"})["id"]
    with TestClient(create_policy_app(fw, CONFIG)) as policy:
        job_id = _admit(policy, pid, "fwreal")

    def sky(action: str) -> None:
        subprocess.run([python, "-c", SKY_CLUSTER, "fwreal", job_id, action], check=True, capture_output=True,
                       timeout=300)  # fmt: skip

    sky("up")
    records = sky_cost_report(python)
    assert [(r["name"], r["status"], r["labels"][ADMISSION_LABEL]) for r in records] == [("fwreal", "UP", job_id)]
    assert settle_launches(fw, records)["committed"] == [job_id]
    time.sleep(1.5)
    sky("down")
    r = CliRunner().invoke(app, ["enforce", "skypilot", "settle", "--sky-python", python, "--json", "--url",
                                 "http://testserver", "--token", server.admin_token],
                           obj={"transport": server.transport})  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settled"] == [job_id]
    adm = fw.call("GET", f"/admission/skypilot/{job_id}")
    assert adm["state"] == "settled"
    fw.close()


class Switch(httpx.BaseTransport):
    """The flopwise server's transport, or a refused connection while ``down``."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down = inner, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)


def test_flopwise_down_soft_budgets_fail_open_and_are_logged_hard_ones_closed(server: Any, caplog: Any) -> None:
    from fastapi.testclient import TestClient

    from flopwise.enforce._client import SoftBudgets

    switch = Switch(server.transport)
    fw = FlopwiseClient(url="http://testserver", token=server.admin_token, transport=switch)
    admin = server.client()
    team = admin.call("POST", "/teams", json_body={"name": "sky-failopen"})
    hard = admin.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "hard"})["id"]
    soft_p = admin.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "soft"})["id"]
    for pid, is_hard in ((hard, True), (soft_p, False)):
        admin.create_budget({"name": f"fo-{pid}", "scope_kind": "project", "scope_id": pid, "period": "month",
                             "unit": "usd", "amount": "1000", "is_hard": is_hard})  # fmt: skip
    soft = SoftBudgets()
    with TestClient(create_policy_app(fw, CONFIG, soft)) as policy:
        assert policy.post("/skypilot/policy", json=_request(_task(hard, "H100:1"))).status_code == 200
        assert soft.at > 0  # the decide that reached flopwise also read the budgets
        switch.down = True
        r = policy.post("/skypilot/policy", json=_request(_task(hard, "H100:1")))
        assert r.status_code == 503 and "fails closed" in r.text
        with caplog.at_level("WARNING", logger="flopwise.enforce.skypilot"):
            r = policy.post("/skypilot/policy", json=_request(_task(soft_p, "H100:1")))
        assert r.status_code == 200 and ADMISSION_LABEL not in json.loads(r.json())["task"]
        assert "let through unchecked" in caplog.text
        soft.at -= soft.max_age_s + 1  # what flopwise holds is no longer known: soft fails closed too
        assert policy.post("/skypilot/policy", json=_request(_task(soft_p, "H100:1"))).status_code == 503
    fw.close()
    admin.close()
