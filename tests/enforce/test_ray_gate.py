"""The Ray Jobs gate against a real ``ray start --head`` on loopback, submitted to with Ray's own
JobSubmissionClient. Ray is not a test dependency (ray[default] is 61 packages, 384 MB): the real-Ray test runs
where FLOPWISE_TEST_RAY_PYTHON names a Python with ``ray[default]`` (.ci/run makes one); the gate's own logic is
tested here without Ray."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from flopwise.enforce.ray import (
    ADMISSION_KEY,
    GateState,
    RayGate,
    admission_body,
    create_gate_app,
    load_config,
)
from flopwise.errors import InputError

CONFIG = load_config({"device": "h100-sxm", "usd_per_h": "2.50"})


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_admission_body_from_metadata() -> None:
    job = {"entrypoint": "python x.py", "metadata": {"flopwise-project": "7", "flopwise-max-hours": "3",
                                                     "flopwise-gpus": "4"}}  # fmt: skip
    assert admission_body(job, CONFIG, "s1") == {
        "engine": "ray", "engine_job_id": "s1", "project_id": 7, "device": "h100-sxm", "device_count": 4,
        "max_duration_h": "3", "usd_per_device_h": "2.50",
    }  # fmt: skip
    assert admission_body({"entrypoint": "x"}, CONFIG, "s2") is None  # no GPUs asked: nothing to admit
    assert admission_body({"entrypoint_num_gpus": 2, "metadata": {"flopwise-project": "1",
                                                                  "flopwise-max-hours": "1"}}, CONFIG, "s")["device_count"] == 2  # fmt: skip
    with pytest.raises(InputError, match="metadata.flopwise-project"):
        admission_body({"entrypoint_num_gpus": 1, "metadata": {}}, CONFIG, "s3")
    with pytest.raises(InputError, match="metadata.flopwise-max-hours"):
        admission_body({"entrypoint_num_gpus": 1, "metadata": {"flopwise-project": "1"}}, CONFIG, "s4")
    with pytest.raises(InputError, match="did you mean usd_per_h"):
        load_config({"device": "h100-sxm", "usd_per_hour": "1"})


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A real Ray head on loopback with its dashboard (the Jobs API); stopped by its process group."""
    python = os.environ.get("FLOPWISE_TEST_RAY_PYTHON")
    if not python:
        pytest.skip("set FLOPWISE_TEST_RAY_PYTHON to a Python with ray[default] (.ci/run makes one)")
    ray = str(Path(python).with_name("ray"))
    dash = _port()
    tmp = tempfile.mkdtemp(prefix="fwray", dir="/tmp")
    proc = subprocess.Popen(
        [ray, "start", "--head", "--block", f"--port={_port()}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2",
         "--num-gpus=0", "--object-store-memory=80000000", "--disable-usage-stats", f"--temp-dir={tmp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "ray start exited"
            time.sleep(0.5)
        else:
            raise AssertionError("the Ray dashboard did not come up in 120 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gate(ray_head: str, server: Any) -> Iterator[tuple[str, RayGate]]:
    import uvicorn

    upstream = httpx.Client(base_url=ray_head, timeout=30)
    the_gate = RayGate(server.client, CONFIG, upstream)
    port = _port()
    live = uvicorn.Server(uvicorn.Config(create_gate_app(the_gate), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not live.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", the_gate
    finally:
        live.should_exit = True
        thread.join(timeout=10)
        upstream.close()


RAY_SUBMIT = """
import json, sys
from ray.job_submission import JobSubmissionClient
url, meta = sys.argv[1], json.loads(sys.argv[2])
try:
    sid = JobSubmissionClient(url).submit_job(entrypoint="python -c 'import time; time.sleep(1)'", metadata=meta)
    print(json.dumps({"submission_id": sid}))
except RuntimeError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _ray_submit(url: str, meta: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([os.environ["FLOPWISE_TEST_RAY_PYTHON"], "-c", RAY_SUBMIT, url, json.dumps(meta)],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ray_job_admitted_tagged_settled_and_rejected_over_budget(
    gate: tuple[str, RayGate], ray_head: str, server: Any
) -> None:
    url, the_gate = gate
    fw = server.client()
    team = fw.call("POST", "/teams", json_body={"name": "rayteam"})
    project = fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "rayjobs"})
    budget = fw.create_budget({"name": "ray-usd", "scope_kind": "project", "scope_id": project["id"],
                               "period": "month", "unit": "usd", "amount": "10", "is_hard": True})  # fmt: skip
    meta = {"flopwise-project": str(project["id"]), "flopwise-max-hours": "1", "flopwise-gpus": "2"}
    ok = _ray_submit(url, meta)  # 2 x 1 h x $2.50 = $5 of $10
    sid = ok["submission_id"]
    info = httpx.get(f"{ray_head}/api/jobs/{sid}").json()
    assert info["metadata"][ADMISSION_KEY] == sid
    assert fw.call("GET", f"/admission/ray/{sid}")["admitted"]
    refused = _ray_submit(url, {**meta, "flopwise-gpus": "4"})  # $10 > $5 left
    assert "flopwise: budget" in refused["error"] and "is hard" in refused["error"]
    deadline = time.monotonic() + 90
    while httpx.get(f"{ray_head}/api/jobs/{sid}").json()["status"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, "the Ray job did not end"
        time.sleep(0.5)
    assert the_gate.settle_ended() == [sid]
    assert fw.call("GET", f"/admission/ray/{sid}")["state"] == "settled"
    used = fw.get_budget(budget["id"])
    assert Decimal(0) < Decimal(used["settled"]) < Decimal("1") and Decimal(used["reserved"]) == 0
    fw.close()


def test_cli_gate_fails_closed_when_flopwise_is_down_and_says_when_ray_is(tmp_path: Path) -> None:
    import sys

    config = tmp_path / "ray.yaml"
    config.write_text("device: h100-sxm\nusd_per_h: '2.50'\n")
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flopwise", "enforce", "ray", "gate", "--config", str(config), "--port", str(port),
         "--upstream", f"http://127.0.0.1:{_port()}", "--url", "http://127.0.0.1:9", "--token", "fw_x",
         "--state", str(tmp_path / "gate.sqlite")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"{base}/api/version")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gate did not start"
                time.sleep(0.2)
        assert r.status_code == 502 and "the Ray dashboard at" in r.text
        job = {"entrypoint": "python x.py", "metadata": {"flopwise-project": "1", "flopwise-max-hours": "1",
                                                         "flopwise-gpus": "1"}}  # fmt: skip
        r = httpx.post(f"{base}/api/jobs/", json=job)
        assert r.status_code == 503 and "fails closed" in r.text
        r = httpx.post(f"{base}/api/jobs/", json={"entrypoint": "x", "metadata": {"flopwise-gpus": "1"}})
        assert r.status_code == 400 and "metadata.flopwise-project" in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class FakeJobs:
    """The Ray Jobs API's job table as the dashboard lists it (``GET /api/jobs/``), and its answer to a
    submission (``POST /api/jobs/``), for the tests that need no real Ray."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.submit_status = 200

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/api/jobs/":
            return httpx.Response(200, json=self.jobs)
        if request.method == "POST" and request.url.path == "/api/jobs/":
            if self.submit_status != 200:
                return httpx.Response(self.submit_status, text="Ray: entrypoint runtime_env failed to validate")
            body = json.loads(request.content)
            return httpx.Response(200, json={"submission_id": body["submission_id"], "job_id": None})
        return httpx.Response(404)


def test_a_restarted_gate_settles_jobs_that_ended_while_it_was_down(server: Any, tmp_path: Path) -> None:
    fw = server.client()
    team = fw.call("POST", "/teams", json_body={"name": "ray-restart"})
    project = fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "restarts"})
    meta = {"flopwise-project": str(project["id"]), "flopwise-max-hours": "2", "flopwise-gpus": "2"}
    ray = FakeJobs()
    upstream = httpx.Client(base_url="http://ray", transport=httpx.MockTransport(ray.handler))
    path = tmp_path / "gate.sqlite"
    first = RayGate(fw, CONFIG, upstream, GateState(path))
    ran = first.decide({"entrypoint": "python train.py", "metadata": meta})[2]["submission_id"]
    lost = first.decide({"entrypoint": "python eval.py", "metadata": meta})[2]["submission_id"]
    ray.jobs = [{"submission_id": ran, "status": "RUNNING", "start_time": 1_767_225_600_000, "end_time": None}]
    assert first.settle_ended() == [lost]  # admitted, but Ray never had it: released
    assert fw.call("GET", f"/admission/ray/{lost}")["state"] == "released"
    assert fw.call("GET", f"/admission/ray/{ran}")["state"] == "committed"
    first.state.close()
    # the gate stops; the job ends 90 minutes after it started; a new gate process reads the same file
    ray.jobs = [{"submission_id": ran, "status": "SUCCEEDED", "start_time": 1_767_225_600_000,
                 "end_time": 1_767_225_600_000 + 90 * 60_000}]  # fmt: skip
    second = RayGate(fw, CONFIG, upstream, GateState(path))
    assert second.settle_ended() == [ran]
    settled = fw.call("GET", f"/admission/ray/{ran}")
    assert settled["state"] == "settled"
    assert second.settle_ended() == []  # nothing twice
    assert second.state.get(ran) == {"gpus": 2, "phase": "settled"}
    second.state.close()
    upstream.close()
    fw.close()


def test_a_submission_ray_refuses_releases_its_admission(server: Any) -> None:
    from fastapi.testclient import TestClient

    fw = server.client()
    team = fw.call("POST", "/teams", json_body={"name": "ray-refused"})
    project = fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "refused"})
    ray = FakeJobs()
    ray.submit_status = 400
    upstream = httpx.Client(base_url="http://ray", transport=httpx.MockTransport(ray.handler))
    gate = RayGate(fw, CONFIG, upstream)
    with TestClient(create_gate_app(gate)) as client:
        r = client.post("/api/jobs/", json={"entrypoint": "x", "submission_id": "raysubmit_refused1", "metadata": {
            "flopwise-project": str(project["id"]), "flopwise-max-hours": "1", "flopwise-gpus": "1"}})  # fmt: skip
    assert r.status_code == 400 and "runtime_env" in r.text
    assert fw.call("GET", "/admission/ray/raysubmit_refused1")["state"] == "released"
    upstream.close()
    fw.close()


def test_flopwise_down_soft_budgets_forward_unchecked_hard_ones_fail_closed(server: Any) -> None:
    from flopwise.client import FlopwiseClient
    from flopwise.enforce._client import SoftBudgets

    admin = server.client()
    team = admin.call("POST", "/teams", json_body={"name": "ray-failopen"})
    pids = {}
    for name, is_hard in (("hard", True), ("soft", False)):
        pids[name] = admin.call("POST", f"/teams/{team['id']}/projects", json_body={"name": name})["id"]
        admin.create_budget({"name": f"ray-fo-{name}", "scope_kind": "project", "scope_id": pids[name],
                             "period": "month", "unit": "usd", "amount": "1000", "is_hard": is_hard})  # fmt: skip
    soft = SoftBudgets()
    soft.refresh(admin)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = FlopwiseClient(url="http://127.0.0.1:9", token="fw_x", transport=httpx.MockTransport(refuse))
    gate = RayGate(down, CONFIG, None, soft=soft)
    meta = {"flopwise-max-hours": "1", "flopwise-gpus": "1"}
    status, message, _ = gate.decide({"entrypoint": "x", "metadata": {**meta, "flopwise-project": str(pids["hard"])}})
    assert status == 503 and "fails closed" in message
    status, _, job = gate.decide({"entrypoint": "x", "metadata": {**meta, "flopwise-project": str(pids["soft"])}})
    assert status == 200 and ADMISSION_KEY not in job["metadata"]
    assert gate.state.pending() == {}  # nothing to settle: it was never admitted
    down.close()
    admin.close()
