"""The Kueue AdmissionCheck controller and the manifest generator, against a Kubernetes API emulator on loopback
(tests/enforce/kubeapi.py: CRUD, list + watch with resourceVersion, /status merge patches, 404/409/410/415/422)
that validates every object written against Kueue's v1beta2 schemas. Kueue's own part (reserving quota, adding
the Pending check, evicting on Retry and re-queueing after ``requeueAfterSeconds``, marking Admitted and
Finished) is played by :class:`Kueue` below with the API calls Kueue makes; flopwise runs in process on SQLite
with a clock the test moves."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubeapi import SCHEMA_FILES, SCHEMAS, WORKLOAD_STATUS_FILE, KubeEmulator, load_schemas, validate  # noqa: E402

from conftest import AsgiSyncTransport  # noqa: E402
from flopwise.client import FlopwiseClient  # noqa: E402
from flopwise.enforce.kueue import (  # noqa: E402
    ADMISSION_ANN,
    PHASE_ANN,
    REQUEST_ANN,
    KubeApi,
    KubeError,
    KueueController,
    load_config,
    manifests,
)
from flopwise.errors import InputError  # noqa: E402

GPU = "nvidia.com/gpu"
CONFIG = load_config({"flavors": {"h100": {"device": "h100-sxm", "usd_per_h": "2.50",
                                           "node_labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
                                  "a100": {"device": "a100-sxm-80gb", "usd_per_h": "1.10"}},
                      "retry_s": 30, "approval_poll_s": 45})  # fmt: skip


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class World:
    """flopwise (own SQLite file, own clock), the emulator, the controller, and Kueue's part."""

    def __init__(self, tmp: Path) -> None:
        from flopwise.server import Settings, create_app
        from flopwise.server.auth import mint_token
        from flopwise.store import ApiToken, Organization, RoleBinding, User, write_session

        self.clock = Clock(datetime(2026, 12, 31, 23, 59, 0, tzinfo=UTC))
        self.app = create_app(Settings(database_url=f"sqlite:///{tmp / 'fw.db'}"))
        self.app.state.clock = self.clock
        tokens = []
        with write_session(self.app.state.db) as s:
            org = Organization(name="kube")
            s.add(org)
            s.flush()
            for name, role in (("ada", "admin"), ("grace", "approver")):
                user = User(org_id=org.id, name=name, email=f"{name}@example.org")
                s.add(user)
                s.flush()
                s.add(RoleBinding(user_id=user.id, role=role, scope_kind="org", scope_id=org.id))
                token, prefix, token_hash = mint_token()
                s.add(ApiToken(user_id=user.id, name=f"{name}-kueue", prefix=prefix, token_hash=token_hash))
                tokens.append(token)
        self.admin_token, self.approver_token = tokens
        self.transport = AsgiSyncTransport(self.app)
        self.fw = self.client()
        self.kube = KubeEmulator()
        self.url = self.kube.start()
        self.api = KubeApi(self.url)
        self.controller = KueueController(self.api, self.fw, CONFIG, clock=self.clock)

    def client(self, token: str | None = None) -> FlopwiseClient:
        return FlopwiseClient(url="http://testserver", token=token or self.admin_token, transport=self.transport)

    def close(self) -> None:
        self.api.close()
        self.kube.stop()
        self.fw.close()
        self.transport.shutdown()
        self.app.state.engine.dispose()

    def project(self, name: str, usd: str | None, *, hard: bool = True) -> tuple[int, str]:
        team = self.fw.call("POST", "/teams", json_body={"name": f"t-{name}"})
        project = self.fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": name})
        if usd is not None:
            self.fw.create_budget({"name": f"{name}-usd", "scope_kind": "project", "scope_id": project["id"],
                                   "period": "month", "unit": "usd", "amount": usd, "is_hard": hard})  # fmt: skip
        return project["id"], f"fw-t-{name}-{name}"

    def install(self) -> None:
        """The generated manifests, created through the API (each validated by the emulator)."""
        teams, projects = self.fw.call("GET", "/teams"), self.fw.call("GET", "/projects")
        quotas = self.fw.call("GET", "/quotas")
        plural = {"ResourceFlavor": "resourceflavors", "AdmissionCheck": "admissionchecks", "Cohort": "cohorts",
                  "ClusterQueue": "clusterqueues"}  # fmt: skip
        for obj in manifests(teams, projects, quotas, CONFIG):
            name = obj["metadata"]["name"]
            if self.kube.get(plural[obj["kind"]], name) is None:
                code, body = self.kube.create(plural[obj["kind"]], obj)
                assert code == 201, body


class Kueue:
    """What Kueue does to a Workload, through the same API (merge patches on /status)."""

    def __init__(self, world: World) -> None:
        self.w = world

    def submit(self, name: str, queue: str, gpus: int, *, pods: int = 1, hours: str | None = "1",
               labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        ann = dict(annotations or {})
        if hours is not None:
            ann["flopwise.io/max-hours"] = hours
        wl = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
              "metadata": {"name": name, "namespace": "research", "labels": labels or {}, "annotations": ann},
              "spec": {"queueName": queue, "podSets": [{"name": "main", "count": pods, "template": {"spec": {
                  "containers": [{"name": "train", "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
                                  "resources": {"requests": {GPU: str(gpus), "cpu": "8"},
                                                "limits": {GPU: str(gpus)}}}]}}}]}}  # fmt: skip
        code, body = self.w.kube.create("workloads", wl, "research")
        assert code == 201, body
        self._cq = queue
        return body

    def _status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        code, body = self.w.kube.patch("workloads", name, "research", {"status": status}, sub="status")
        assert code == 200, body
        return body

    def _now(self) -> str:
        return self.w.clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")

    def reserve(self, name: str, queue: str, flavor: str = "h100") -> dict[str, Any]:
        wl = self.w.kube.get("workloads", name, "research")
        assert wl is not None
        conds = [c for c in (wl.get("status") or {}).get("conditions", []) if c["type"] != "QuotaReserved"]
        pods = wl["spec"]["podSets"][0]["count"]
        return self._status(name, {
            "admission": {"clusterQueue": queue, "podSetAssignments": [
                {"name": "main", "count": pods, "flavors": {GPU: flavor, "cpu": "default"}}]},
            "conditions": [*conds, {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved",
                                    "message": f"Quota reserved in ClusterQueue {queue}",
                                    "lastTransitionTime": self._now()}],
            "admissionChecks": [{"name": "flopwise", "state": "Pending", "message": "",
                                 "lastTransitionTime": self._now()}],
        })  # fmt: skip

    def check(self, name: str) -> dict[str, Any]:
        wl = self.w.kube.get("workloads", name, "research")
        assert wl is not None
        return next(c for c in wl["status"]["admissionChecks"] if c["name"] == "flopwise")

    def evict_for_retry(self, name: str) -> None:
        """Kueue evicts a Workload whose check is Retry and releases its quota (the check stays until the delay
        has passed)."""
        wl = self.w.kube.get("workloads", name, "research")
        assert wl is not None
        conds = [c for c in wl["status"].get("conditions", []) if c["type"] not in ("QuotaReserved", "Evicted")]
        self._status(name, {**wl["status"], "admission": None, "conditions": [
            *conds, {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": "evicted",
                     "lastTransitionTime": self._now()},
            {"type": "Evicted", "status": "True", "reason": "AdmissionCheck", "message": "flopwise: Retry",
             "lastTransitionTime": self._now()}]})  # fmt: skip

    def admit(self, name: str) -> None:
        wl = self.w.kube.get("workloads", name, "research")
        assert wl is not None
        self._status(name, {**wl["status"], "conditions": [*wl["status"]["conditions"], {
            "type": "Admitted", "status": "True", "reason": "Admitted", "message": "admitted",
            "lastTransitionTime": self._now()}]})  # fmt: skip

    def finish(self, name: str) -> None:
        wl = self.w.kube.get("workloads", name, "research")
        assert wl is not None
        self._status(name, {**wl["status"], "conditions": [*wl["status"]["conditions"], {
            "type": "Finished", "status": "True", "reason": "Succeeded", "message": "Job finished successfully",
            "lastTransitionTime": self._now()}]})  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def _step(world: World) -> dict[str, list[str]]:
    out, _ = world.controller.pass_once()
    return out


def test_a_workload_waits_with_retry_until_the_budget_window_resets(world: World) -> None:
    """Done-when of the issue: a spent hard budget -> Retry with requeueAfterSeconds up to the window's end;
    Kueue re-queues it then; the next month's budget admits it (Ready), and it is committed and settled."""
    kueue = Kueue(world)
    pid, queue = world.project("llm", "10")
    world.install()
    kueue.submit("first", queue, 2)  # 2 GPUs x 1 h x $2.50 = $5 of $10 in December
    kueue.reserve("first", queue)
    kueue.submit("second", queue, 4)  # $10: more than the $5 left
    kueue.reserve("second", queue)
    _step(world)
    first, second = kueue.check("first"), kueue.check("second")
    assert first["state"] == "Ready" and first["message"].startswith("flopwise: admitted as kueue/")
    assert second["state"] == "Retry", second
    # 23:59:00 -> midnight: the month's window ends in 60 s; the check asks Kueue to wait that long (+1 s)
    assert second["requeueAfterSeconds"] == 61
    assert "is hard: the request needs 10.000 but only 5.000000" in second["message"] and "retrying in 61 s" in second["message"]
    uid = world.kube.get("workloads", "second", "research")["metadata"]["uid"]
    assert not world.fw.call("GET", f"/admission/kueue/{uid}")["admitted"]
    # Kueue evicts it and waits; nothing happens while it waits
    kueue.evict_for_retry("second")
    assert _step(world).get("research/second") is None
    assert kueue.check("second")["state"] == "Retry"
    # the delay passes: the window has reset; Kueue re-queues (check Pending) and reserves quota again
    world.clock.now += timedelta(seconds=61)
    kueue.reserve("second", queue)
    assert _step(world)["research/second"] == ["flopwise=Ready"]
    wl = world.kube.get("workloads", "second", "research")
    assert wl["metadata"]["annotations"][ADMISSION_ANN] == f"{uid}.1"
    assert world.fw.call("GET", f"/admission/kueue/{uid}.1")["admitted"]
    # Kueue admits it; it runs 30 minutes and finishes: committed, then settled on its real run time
    kueue.admit("second")
    assert _step(world)["research/second"] == ["committed"]
    world.clock.now += timedelta(minutes=30)
    kueue.finish("second")
    assert _step(world)["research/second"] == ["settled"]
    adm = world.fw.call("GET", f"/admission/kueue/{uid}.1")
    assert adm["state"] == "settled"
    wl = world.kube.get("workloads", "second", "research")
    assert wl["metadata"]["annotations"][PHASE_ANN] == "settled"
    budget = world.fw.list_budgets()[0]
    assert Decimal(budget["settled"]) == Decimal("5.000000")  # 4 GPUs x 0.5 h x $2.50
    assert Decimal(budget["reserved"]) == 0
    # every object flopwise wrote passed the emulator's schema validation; re-validate the final state
    for (_, _, _), obj in world.kube.objects.items():
        assert validate(world.kube.validators, obj) == []


def test_larger_than_the_whole_budget_and_policy_denials_are_rejected(world: World) -> None:
    kueue = Kueue(world)
    _, queue = world.project("small", "10")
    world.install()
    kueue.submit("huge", queue, 8, hours="1")  # $20 > the $10 budget: no window will ever fit it
    kueue.reserve("huge", queue)
    kueue.submit("nolimit", queue, 1, hours=None)  # no max hours, no maximumExecutionTimeSeconds, no default
    kueue.reserve("nolimit", queue)
    _step(world)
    huge = kueue.check("huge")
    assert huge["state"] == "Rejected" and "larger than the whole budget" in huge["message"]
    assert "requeueAfterSeconds" not in huge
    nolimit = kueue.check("nolimit")
    assert nolimit["state"] == "Rejected" and "flopwise.io/max-hours" in nolimit["message"]
    world.fw.apply_policy("name: no-a100\ndefault: allow\nrules:\n  - id: a100\n"
                          "    when: {field: device_type, eq: a100-sxm-80gb}\n    effect: deny\n    message: no A100s here\n")  # fmt: skip
    kueue.submit("old-gpu", queue, 1)
    kueue.reserve("old-gpu", queue, flavor="a100")
    _step(world)
    denied = kueue.check("old-gpu")
    assert denied["state"] == "Rejected" and "policy" in denied["message"], denied


def test_approval_required_retries_until_the_linked_request_is_approved(world: World) -> None:
    kueue = Kueue(world)
    pid, queue = world.project("big", "1000")
    world.install()
    world.fw.apply_policy("name: big-kueue-jobs\ndefault: allow\nrules:\n  - id: eight\n"
                          "    when: {field: device_count, gte: 8}\n    effect: require_approval\n"
                          "    approvals: 1\n")  # fmt: skip
    kueue.submit("unlinked", queue, 8)
    kueue.reserve("unlinked", queue)
    _step(world)
    waiting = kueue.check("unlinked")
    assert waiting["state"] == "Retry" and waiting["requeueAfterSeconds"] == 45
    assert f"annotate the Workload {REQUEST_ANN}=<request id>" in waiting["message"]
    body = {"project_id": pid, "workload": "train", "device": "h100-sxm", "device_count": 8,
            "usd_per_device_h": "2.50", "plan": {"duration_h": "1"}}  # fmt: skip
    req = world.fw.create_request(body)
    kueue.submit("linked", queue, 8, annotations={REQUEST_ANN: str(req["id"])})
    kueue.reserve("linked", queue)
    _step(world)
    linked = kueue.check("linked")
    assert linked["state"] == "Retry" and f"waiting for request {req['id']}" in linked["message"]
    world.client(world.approver_token).approve_request(req["id"], "ok")
    kueue.evict_for_retry("linked")
    kueue.reserve("linked", queue)
    _step(world)
    assert kueue.check("linked")["state"] == "Ready"
    req2 = world.fw.create_request(body)
    kueue.submit("refused", queue, 8, annotations={REQUEST_ANN: str(req2["id"])})
    world.client(world.approver_token).deny_request(req2["id"], "not this week")
    kueue.reserve("refused", queue)
    _step(world)
    refused = kueue.check("refused")
    assert refused["state"] == "Rejected" and f"request {req2['id']} is denied" in refused["message"]


def test_flopwise_down_or_slow_fails_closed_and_soft_budgets_fail_open(world: World) -> None:
    kueue = Kueue(world)
    _, hard_queue = world.project("hardp", "100")
    _, soft_queue = world.project("softp", "100", hard=False)
    world.install()
    world.controller.refresh_budgets()  # the last good read, used while flopwise is away

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for name, handler in (("down", refuse), ("slow", slow)):
        world.controller.client = FlopwiseClient(url="http://127.0.0.1:9", token="fw_x",
                                                 transport=httpx.MockTransport(handler))  # fmt: skip
        for queue, suffix in ((hard_queue, "hard"), (soft_queue, "soft")):
            kueue.submit(f"{name}-{suffix}", queue, 1)
            kueue.reserve(f"{name}-{suffix}", queue)
        _step(world)
        hard, soft = kueue.check(f"{name}-hard"), kueue.check(f"{name}-soft")
        assert hard["state"] == "Retry" and "fails closed" in hard["message"] and hard["requeueAfterSeconds"] == 30
        assert soft["state"] == "Ready" and "let through unchecked" in soft["message"], soft
    # the cache ages out: soft budgets fail closed too (flopwise's state is unknown)
    world.controller.soft.at -= CONFIG.max_cache_age_s + 1
    kueue.submit("stale-soft", soft_queue, 1)
    kueue.reserve("stale-soft", soft_queue)
    _step(world)
    assert kueue.check("stale-soft")["state"] == "Retry"
    # flopwise is back: the waiting hard Workload is decided on its next pass
    world.controller.client = world.fw
    kueue.evict_for_retry("down-hard")
    kueue.reserve("down-hard", hard_queue)
    _step(world)
    assert kueue.check("down-hard")["state"] == "Ready"


def test_a_restarted_controller_settles_what_ended_while_it_was_down(world: World) -> None:
    kueue = Kueue(world)
    _, queue = world.project("restart", "100")
    world.install()
    for name in ("ran", "gone", "never"):
        kueue.submit(name, queue, 2)
        kueue.reserve(name, queue)
    _step(world)
    kueue.admit("ran")
    kueue.admit("gone")
    _step(world)
    ids = {n: world.kube.get("workloads", n, "research")["metadata"]["annotations"][ADMISSION_ANN]
           for n in ("ran", "gone", "never")}  # fmt: skip
    # the controller goes away; "ran" finishes after an hour, "never" finishes without being admitted
    world.clock.now += timedelta(hours=1)
    kueue.finish("ran")
    kueue.finish("never")
    restarted = KueueController(KubeApi(world.url), world.fw, CONFIG, clock=world.clock)
    out, _ = restarted.pass_once()
    assert out["research/ran"] == ["settled"] and out["research/never"] == ["released"]
    assert world.fw.call("GET", f"/admission/kueue/{ids['ran']}")["state"] == "settled"
    assert world.fw.call("GET", f"/admission/kueue/{ids['never']}")["state"] == "released"
    # a deleted Workload seen by the watch: settled with its run time so far
    gone = world.kube.get("workloads", "gone", "research")
    world.kube.delete("workloads", "gone", "research")
    assert restarted.deleted(gone) == "settled"
    assert world.fw.call("GET", f"/admission/kueue/{ids['gone']}")["state"] == "settled"
    assert _step(world) == {}  # nothing left to do, nothing done twice
    restarted.kube.close()


def test_the_watch_loop_decides_new_workloads_and_survives_an_expired_watch(world: World) -> None:
    kueue = Kueue(world)
    _, queue = world.project("watched", "100")
    world.install()
    stop = threading.Event()
    thread = threading.Thread(target=world.controller.run, args=(stop,), kwargs={"resync_s": 5, "watch_timeout_s": 2},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        time.sleep(0.5)
        kueue.submit("w1", queue, 1)
        kueue.reserve("w1", queue)
        deadline = time.monotonic() + 10
        while kueue.check("w1")["state"] != "Ready":
            assert time.monotonic() < deadline, kueue.check("w1")
            time.sleep(0.05)
        world.kube.compact()  # the watch's resourceVersion is now too old: 410, the controller re-lists
        kueue.submit("w2", queue, 1)
        kueue.reserve("w2", queue)
        deadline = time.monotonic() + 15
        while kueue.check("w2")["state"] != "Ready":
            assert time.monotonic() < deadline, kueue.check("w2")
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=15)
    assert any("watch=1" in path for _, path in world.kube.requests)


def test_manifests_map_quotas_and_validate_against_kueues_schemas(world: World) -> None:
    fw = world.fw
    team = fw.call("POST", "/teams", json_body={"name": "Research"})
    p1 = fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "LLM pretrain"})
    fw.call("POST", f"/teams/{team['id']}/projects", json_body={"name": "evals"})
    for body in ({"scope_kind": "team", "scope_id": team["id"], "match_on": "device_class", "device": "gpu",
                  "max_concurrent_devices": "64"},
                 {"scope_kind": "project", "scope_id": p1["id"], "match_on": "device_type", "device": "h100*",
                  "max_concurrent_devices": "32"}):  # fmt: skip
        fw.call("POST", "/quotas", json_body=body)
    objs = manifests(fw.call("GET", "/teams"), fw.call("GET", "/projects"), fw.call("GET", "/quotas"), CONFIG)
    for obj in objs:
        assert validate(world.kube.validators, obj) == [], obj
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    assert by[("AdmissionCheck", "flopwise")]["spec"] == {"controllerName": "flopwise.io/admission"}
    assert by[("ResourceFlavor", "h100")]["spec"]["nodeLabels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    cohort = by[("Cohort", "fw-research")]["spec"]
    assert [f["resources"][0]["nominalQuota"] for f in cohort["resourceGroups"][0]["flavors"]] == [64, 64]
    cq = by[("ClusterQueue", "fw-research-llm-pretrain")]
    assert cq["metadata"]["labels"]["flopwise.io/project"] == str(p1["id"])
    assert cq["spec"]["cohortName"] == "fw-research"
    assert cq["spec"]["admissionChecksStrategy"] == {"admissionChecks": [{"name": "flopwise"}]}
    quotas = {f["name"]: f["resources"][0]["nominalQuota"] for f in cq["spec"]["resourceGroups"][0]["flavors"]}
    assert quotas == {"h100": 32, "a100": 0}  # a100 only borrowed from the team's pool
    evals = by[("ClusterQueue", "fw-research-evals")]["spec"]["resourceGroups"][0]["flavors"]
    assert {f["name"]: f["resources"][0]["nominalQuota"] for f in evals} == {"h100": 0, "a100": 0}
    # a misspelled field is refused by the schema (strict validation), as the apiserver would with Strict
    bad = {**cq, "spec": {**cq["spec"], "cohort": "fw-research"}}
    assert any("cohort" in e for e in validate(world.kube.validators, bad))


def test_the_emulator_validates_against_kueues_published_schemas(world: World) -> None:
    # the files are the published ones, unchanged (their lengths in characters as published; tests/data/README.md)
    published = {"admissioncheck_v1beta2.json": 6132, "clusterqueue_v1beta2.json": 36381,
                 "cohort_v1beta2.json": 13172, "resourceflavor_v1beta2.json": 8261,
                 WORKLOAD_STATUS_FILE: 631769 - 593944 + 1}  # fmt: skip
    assert set(published) == {*SCHEMA_FILES.values(), WORKLOAD_STATUS_FILE}
    for name, chars in published.items():
        assert len((SCHEMAS / name).read_text(encoding="utf-8")) == chars, name
    # what the controller writes is what Kueue's v1beta2 Workload status declares
    check = load_schemas()["Workload"]["properties"]["status"]["properties"]["admissionChecks"]["items"]
    assert check["properties"]["state"]["enum"] == ["Pending", "Ready", "Retry", "Rejected"]
    assert check["properties"]["requeueAfterSeconds"] == {**check["properties"]["requeueAfterSeconds"],
                                                         "type": "integer", "format": "int32", "minimum": 0}
    assert check["required"] == ["lastTransitionTime", "message", "name", "state"]

    def workload(entry: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload", "metadata": {"name": "w"},
                "spec": {}, "status": {"admissionChecks": [{"name": "flopwise", "state": "Retry", "message": "m",
                                                            "lastTransitionTime": "2026-01-01T00:00:00Z", **entry}]}}

    assert validate(world.kube.validators, workload({"requeueAfterSeconds": 3600})) == []
    assert any("minimum" in e for e in validate(world.kube.validators, workload({"requeueAfterSeconds": -1})))
    assert any("requeueAfter" in e for e in validate(world.kube.validators, workload({"requeueAfter": 3600})))
    assert any("lastTransitionTime" in e for e in validate(world.kube.validators, workload(
        {"lastTransitionTime": "yesterday"})))  # fmt: skip
    # ObjectMeta as the apiserver checks it on any object
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "h100"}}
    assert validate(world.kube.validators, flavor) == []
    for meta, field in (({"name": "H100"}, "metadata.name"), ({"name": "a", "labels": {"flopwise.io/p": "a b"}},
                        "metadata.labels.flopwise.io/p"), ({"name": "a", "labels": {"Bad_/p": "1"}}, "metadata.labels"),
                        ({"name": "a", "annotations": {"x/" + "y" * 64: ""}}, "metadata.annotations"),
                        ({"name": "a", "annotations": {"big": "x" * (256 * 1024)}}, "metadata.annotations")):
        assert any(e.startswith(field) for e in validate(world.kube.validators, {**flavor, "metadata": meta})), meta
    # the schemas' CEL rules (x-kubernetes-validations), as the apiserver evaluates them
    cq = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "q"}, "spec": {
        "resourceGroups": [{"coveredResources": ["nvidia.com/gpu", "cpu"], "flavors": [
            {"name": "h100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}]}]}}  # fmt: skip
    assert any("same number of resources" in e for e in validate(world.kube.validators, cq))
    cq["spec"]["resourceGroups"][0]["coveredResources"] = ["nvidia.com/gpu"]
    assert validate(world.kube.validators, cq) == []
    cq["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["borrowingLimit"] = 4
    assert any("borrowingLimit must be nil" in e for e in validate(world.kube.validators, cq))
    assert validate(world.kube.validators, {**cq, "spec": {**cq["spec"], "cohortName": "c"}}) == []
    # a transition rule runs on updates only: an AdmissionCheck's controllerName is immutable
    ac = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "AdmissionCheck", "metadata": {"name": "flopwise"},
          "spec": {"controllerName": "flopwise.io/admission"}}
    assert world.kube.create("admissionchecks", ac)[0] == 201
    code, body = world.kube.patch("admissionchecks", "flopwise", "", {"spec": {"controllerName": "other"}})
    assert code == 422 and "field is immutable" in body["message"], body


def test_emulator_semantics_the_controller_relies_on(world: World) -> None:
    api = world.api
    with pytest.raises(KubeError) as err:
        api.get("clusterqueues", "missing")
    assert err.value.status == 404
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "h100"}}
    assert api.request("POST", api.path("resourceflavors"), body=flavor)["metadata"]["resourceVersion"]
    with pytest.raises(KubeError) as err:
        api.request("POST", api.path("resourceflavors"), body=flavor)
    assert err.value.status == 409
    with pytest.raises(KubeError) as err:  # a JSON patch is not a merge patch
        api.request("PATCH", api.path("resourceflavors", "h100"), body={"spec": {}}, content_type="application/json")
    assert err.value.status == 415
    with pytest.raises(KubeError) as err:  # a stale resourceVersion
        api.merge_patch("resourceflavors", "h100", {"metadata": {"resourceVersion": "1"}, "spec": {}})
    assert err.value.status == 409
    with pytest.raises(KubeError) as err:  # an AdmissionCheck state Kueue does not know
        world.kube.create("workloads", {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
                                        "metadata": {"name": "x"}, "spec": {"podSets": [
                                            {"name": "main", "count": 1, "template": {}}]}}, "research")
        api.merge_patch("workloads", "x", {"status": {"admissionChecks": [
            {"name": "flopwise", "state": "Maybe", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
            namespace="research", status=True)  # fmt: skip
    assert err.value.status == 422 and "Maybe" in str(err.value)
    # status written on the main resource is ignored; spec written on /status is ignored
    api.merge_patch("workloads", "x", {"status": {"admissionChecks": []}, "metadata": {"labels": {"a": "b"}}},
                    namespace="research")  # fmt: skip
    wl = api.get("workloads", "x", "research")
    assert "status" not in wl and wl["metadata"]["labels"] == {"a": "b"}


def test_config_errors_name_the_field() -> None:
    with pytest.raises(InputError, match="did you mean flavors"):
        load_config({"flavor": {}})
    with pytest.raises(InputError, match="flavors.H100"):
        load_config({"flavors": {"H100": {"device": "h100-sxm", "usd_per_h": "2.5"}}})
    with pytest.raises(InputError, match="retry_s"):
        load_config({"flavors": {"h100": {"device": "h100-sxm", "usd_per_h": "2.5"}}, "retry_s": 0})


def test_cli_manifests_and_one_controller_pass(world: World, tmp_path: Path) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from flopwise.cli.main import app

    kueue = Kueue(world)
    _, queue = world.project("cli", "100")
    config = tmp_path / "kueue.yaml"
    config.write_text("flavors:\n  h100: {device: h100-sxm, usd_per_h: '2.50'}\n")
    runner = CliRunner()
    common = ["--config", str(config), "--url", "http://testserver", "--token", world.admin_token]
    r = runner.invoke(app, ["enforce", "kueue", "manifests", *common], obj={"transport": world.transport})
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(r.stdout))
    assert {d["kind"] for d in docs} == {"ResourceFlavor", "AdmissionCheck", "Cohort", "ClusterQueue"}
    plural = {"ResourceFlavor": "resourceflavors", "AdmissionCheck": "admissionchecks", "Cohort": "cohorts",
              "ClusterQueue": "clusterqueues"}  # fmt: skip
    for d in docs:  # `kubectl apply -f -`, as the emulator takes it (schema-validated)
        assert world.kube.create(plural[d["kind"]], d)[0] == 201
    kueue.submit("c1", queue, 1)
    kueue.reserve("c1", queue)
    r = runner.invoke(app, ["enforce", "kueue", "controller", *common, "--kube-url", world.url, "--once", "--json"],
                      obj={"transport": world.transport})  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"research/c1": ["flopwise=Ready"]}
    assert world.kube.get("admissionchecks", "flopwise")["status"]["conditions"][0]["type"] == "Active"
    bad = tmp_path / "bad.yaml"
    bad.write_text("flavors:\n  h100: {device: h100-sxm}\n")
    r = runner.invoke(app, ["enforce", "kueue", "manifests", "--config", str(bad)])
    assert r.exit_code == 2 and "bad.yaml.flavors.h100" in r.stderr
    r = runner.invoke(app, ["enforce", "kueue", "controller", *common, "--kube-url", "http://127.0.0.1:9", "--once"],
                      obj={"transport": world.transport})  # fmt: skip
    assert r.exit_code == 1 and "cannot reach the Kubernetes API" in r.stderr


def test_an_evicted_workload_is_settled_from_when_it_first_started(world: World) -> None:
    kueue = Kueue(world)
    world.clock.now = datetime(2026, 12, 15, 9, 0, tzinfo=UTC)  # within one month's window throughout
    _, queue = world.project("evicted", "100")
    world.install()
    kueue.submit("pre", queue, 2)
    kueue.reserve("pre", queue)
    _step(world)
    kueue.admit("pre")
    assert _step(world)["research/pre"] == ["committed"]
    # preempted: Kueue evicts it (Admitted goes away), later it finishes (e.g. its job was deleted)
    wl = world.kube.get("workloads", "pre", "research")
    world.clock.now += timedelta(minutes=45)
    conds = [c for c in wl["status"]["conditions"] if c["type"] != "Admitted"]
    kueue._status("pre", {**wl["status"], "admission": None, "conditions": conds})
    kueue.finish("pre")
    assert _step(world)["research/pre"] == ["settled"]
    job_id = world.kube.get("workloads", "pre", "research")["metadata"]["annotations"][ADMISSION_ANN]
    assert world.fw.call("GET", f"/admission/kueue/{job_id}")["state"] == "settled"
    budget = [b for b in world.fw.list_budgets() if b["name"] == "evicted-usd"][0]
    assert Decimal(budget["settled"]) == Decimal("3.750000")  # 2 GPUs x 0.75 h x $2.50


def test_a_status_patch_on_a_stale_version_is_refused_and_redone_on_the_next_pass(world: World) -> None:
    kueue = Kueue(world)
    _, queue = world.project("stale", "100")
    world.install()
    kueue.submit("s1", queue, 1)
    kueue.reserve("s1", queue)
    _step(world)
    kueue.evict_for_retry("s1")
    kueue.reserve("s1", queue)  # re-queued after an eviction: its check is Pending again, the admission stands
    stale = world.kube.get("workloads", "s1", "research")
    kueue.admit("s1")  # Kueue changes the Workload meanwhile
    with pytest.raises(KubeError) as err:
        world.controller.reconcile(stale, {"flopwise"})
    assert err.value.status == 409
    assert _step(world)["research/s1"][-1] == "flopwise=Ready"
