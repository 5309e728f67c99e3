"""Admission latency of the Kueue AdmissionCheck controller, beside its baselines, in one process.

flopwise runs in this process on a SQLite file, served by uvicorn on loopback HTTP; the Kubernetes API is the
test emulator (tests/enforce/kubeapi.py) on loopback HTTP. For each Workload (quota reserved, flopwise's check
Pending), interleaved call by call:

* ``Ready`` patch only: the one ``/status`` merge patch any check controller makes to answer (the engine-side
  baseline: what a check costs when nothing is decided);
* decide straight to flopwise: the bare ``POST /api/v1/admission/decide`` (the decision itself);
* the controller's full answer: ``reconcile`` = decide + the annotation patch (admission id) + the status patch.

Prints p50 and p99 per arm, what admission adds over the bare patch, and the controller's own overhead over the
decision; beside them the CPU time each call costs this process (client, flopwise server and emulator threads
together, ``time.process_time``), which a busy shared machine inflates far less than wall time: on a quiet
machine a call's wall time is about its CPU time plus SQLite's commit. Run: ``python bench/bench_enforce_kueue.py [N]`` (default N = 200 Workloads per arm).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "enforce"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _enforce_common import delta, flopwise_app, line, serve  # noqa: E402
from kubeapi import KubeEmulator  # noqa: E402

from flopwise.client import FlopwiseClient  # noqa: E402
from flopwise.enforce.kueue import KubeApi, KueueController, load_config  # noqa: E402

GPU = "nvidia.com/gpu"






def _cpu(values: list[float]) -> str:
    return f"  cpu p50 {statistics.median(values) * 1e3:6.2f} ms"








def _workload(i: int, pid: int) -> dict[str, Any]:
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": {"name": f"w{i}", "namespace": "bench", "labels": {"flopwise.io/project": str(pid)},
                         "annotations": {"flopwise.io/max-hours": "1"}},
            "spec": {"podSets": [{"name": "main", "count": 1, "template": {"spec": {"containers": [
                {"name": "c", "image": "busybox", "resources": {"requests": {GPU: "1"}}}]}}}]}}  # fmt: skip


def _reserve(kube: KubeEmulator, name: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    code, body = kube.patch("workloads", name, "bench", {"status": {
        "admission": {"clusterQueue": "q", "podSetAssignments": [{"name": "main", "count": 1,
                                                                   "flavors": {GPU: "h100"}}]},
        "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "",
                        "lastTransitionTime": now}],
        "admissionChecks": [{"name": "flopwise", "state": "Pending", "message": "", "lastTransitionTime": now}]}},
        sub="status")  # fmt: skip
    assert code == 200, body
    return body


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        app, token, pid = flopwise_app(Path(tmp))
        fw_url, fw_server, fw_thread = serve(app)
        fw = FlopwiseClient(url=fw_url, token=token)
        fw.create_budget({"name": "big", "scope_kind": "project", "scope_id": pid, "period": "month",
                          "unit": "usd", "amount": "100000000", "is_hard": True})  # fmt: skip
        kube = KubeEmulator(history=100_000)
        kube_url = kube.start()
        api = KubeApi(kube_url)
        cfg = load_config({"flavors": {"h100": {"device": "h100-sxm", "usd_per_h": "2.50"}}})
        controller = KueueController(api, fw, cfg)
        arms: dict[str, list[float]] = {"patch": [], "direct": [], "reconcile": []}
        cpu: dict[str, list[float]] = {arm: [] for arm in arms}
        for i in range(n):
            names = {arm: f"{arm}-{i}" for arm in arms}
            wls = {}
            for arm, name in names.items():
                kube.create("workloads", {**_workload(0, pid), "metadata": {**_workload(0, pid)["metadata"],
                                                                            "name": name}}, "bench")  # fmt: skip
                wls[arm] = _reserve(kube, name)
            order = list(arms)[i % 3:] + list(arms)[: i % 3]
            for arm in order:
                wl = wls[arm]
                c0, t0 = time.process_time(), time.perf_counter()
                if arm == "patch":
                    api.merge_patch("workloads", wl["metadata"]["name"], {"status": {"admissionChecks": [
                        {"name": "flopwise", "state": "Ready", "message": "ok",
                         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}, namespace="bench", status=True)  # fmt: skip
                elif arm == "direct":
                    fw.call("POST", "/admission/decide", json_body={
                        "engine": "bench", "engine_job_id": wl["metadata"]["uid"], "project_id": pid,
                        "device": "h100-sxm", "device_count": 1, "max_duration_h": "1", "usd_per_device_h": "2.50"})  # fmt: skip
                else:
                    done = controller.reconcile(wl, {"flopwise"})
                    assert done == ["flopwise=Ready"], done
                arms[arm].append(time.perf_counter() - t0)
                cpu[arm].append(time.process_time() - c0)
        print(f"Kueue AdmissionCheck controller: Kubernetes API emulator and flopwise (SQLite) on loopback HTTP, "
              f"{n} Workloads per arm")  # fmt: skip
        print(line("Ready patch only (no decision)", arms["patch"]) + _cpu(cpu["patch"]))
        print(line("decide straight to flopwise (no controller)", arms["direct"]) + _cpu(cpu["direct"]))
        print(line("controller answers the check (decide+2 patches)", arms["reconcile"]) + _cpu(cpu["reconcile"]))
        print(delta("admission adds over the bare Ready patch", arms["patch"], arms["reconcile"]))
        print(delta("controller's own overhead over the decision", arms["direct"], arms["reconcile"]))
        api.close()
        kube.stop()
        fw.close()
        fw_server.should_exit = True
        fw_thread.join()
        app.state.engine.dispose()


if __name__ == "__main__":
    main()
