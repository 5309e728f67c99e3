"""Admission latency at SkyPilot's admin policy and at the Ray Jobs gate, each beside its baselines, one process.

flopwise runs in this process on a SQLite file, served by uvicorn on loopback HTTP (as a deployment reaches it),
and the gates reach it through the real client. Arms, interleaved call by call:

* SkyPilot: ``POST /skypilot/policy`` for an ``exec`` request (passed through, no decision: the engine-side
  baseline); ``POST /api/v1/admission/decide`` straight to flopwise (the decision itself); a ``launch`` with GPUs
  through the policy with one shared client (keep-alive, what the gate does now); the same with a client built
  per call (what it did before: a new httpx client, TLS context and connection each time).
* Ray (where FLOPWISE_TEST_RAY_PYTHON names a Python with ray[default]): ``POST /api/jobs/`` straight to the
  dashboard of a real ``ray start --head`` on loopback vs through the gate (shared client, and client per call).

Prints p50 and p99 per arm and what admission adds over the engine's own call and over the bare decision.
Run: ``python bench/bench_enforce_gates.py [N]`` (default N = 200 policy calls per arm, N/10 Ray jobs per arm).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _enforce_common import delta, flopwise_app, line, serve  # noqa: E402

from asgi_transport import AsgiSyncTransport  # noqa: E402
from flopwise.client import FlopwiseClient  # noqa: E402
from flopwise.enforce import ray as fw_ray  # noqa: E402
from flopwise.enforce import skypilot as fw_sky  # noqa: E402


def _flopwise(tmp: Path) -> tuple[Any, str, int]:
    app, token, project_id = flopwise_app(tmp)
    transport = AsgiSyncTransport(app)
    with FlopwiseClient(url="http://testserver", token=token, transport=transport) as fw:
        fw.create_budget({"name": "big", "scope_kind": "project", "scope_id": project_id, "period": "month",
                          "unit": "usd", "amount": "100000000", "is_hard": True})  # fmt: skip
    transport.shutdown()
    return app, token, project_id


def _timed(sink: list[float], call: Any) -> Any:
    t0 = time.perf_counter()
    out = call()
    sink.append(time.perf_counter() - t0)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        app, token, pid = _flopwise(Path(tmp))
        fw_url, fw_server, fw_thread = serve(app)
        shared = FlopwiseClient(url=fw_url, token=token)

        def per_call() -> FlopwiseClient:
            return FlopwiseClient(url=fw_url, token=token)

        cfg = fw_sky.load_config({"accelerators": {"H100": {"device": "h100-sxm", "usd_per_h": "2.50"}}})
        now_url, now_server, now_thread = serve(fw_sky.create_policy_app(shared, cfg))
        old_url, old_server, old_thread = serve(fw_sky.create_policy_app(per_call, cfg))
        task = {"run": "x", "resources": {"accelerators": "H100:1",
                                          "labels": {"flopwise-project": str(pid), "flopwise-max-hours": "1"}}}  # fmt: skip

        def body(name: str) -> str:
            return json.dumps({"task": yaml.safe_dump(task), "skypilot_config": "{}\n", "request_name": name,
                               "request_options": None, "at_client_side": False, "user": ""})  # fmt: skip

        arms: dict[str, list[float]] = {"exec": [], "direct": [], "now": [], "before": []}
        with httpx.Client() as http:
            for i in range(n):
                calls = [
                    ("exec", lambda: http.post(f"{now_url}/skypilot/policy", json=body("exec"))),
                    ("direct", lambda i=i: _Ok(shared.call("POST", "/admission/decide", json_body={
                        "engine": "bench", "engine_job_id": f"d{i}", "project_id": pid, "device": "h100-sxm",
                        "device_count": 1, "max_duration_h": "1", "usd_per_device_h": "2.50"}))),  # fmt: skip
                    ("now", lambda: http.post(f"{now_url}/skypilot/policy", json=body("launch"))),
                    ("before", lambda: http.post(f"{old_url}/skypilot/policy", json=body("launch"))),
                ]
                for name, call in calls[i % 4:] + calls[: i % 4]:
                    r = _timed(arms[name], call)
                    assert r.status_code == 200, r.text
        for server, thread in ((now_server, now_thread), (old_server, old_thread)):
            server.should_exit = True
            thread.join()
        print(f"SkyPilot admin policy, loopback HTTP, flopwise on SQLite over loopback HTTP: {n} calls per arm")
        print(line("policy pass-through (exec, no decision)", arms["exec"]))
        print(line("decide straight to flopwise (no gate)", arms["direct"]))
        print(line("launch via policy, shared client (now)", arms["now"]))
        print(line("launch via policy, client per call (before)", arms["before"]))
        print(delta("admission adds over pass-through (now)", arms["exec"], arms["now"]))
        print(delta("admission adds over pass-through (before)", arms["exec"], arms["before"]))
        print(delta("gate's own overhead over the decision (now)", arms["direct"], arms["now"]))
        print(delta("gate's own overhead over the decision (before)", arms["direct"], arms["before"]))
        print(f"  ratio before / now, p50: {statistics.median(arms['before']) / statistics.median(arms['now']):.2f}x")

        python = os.environ.get("FLOPWISE_TEST_RAY_PYTHON")
        if python:
            _bench_ray(python, shared, per_call, pid, max(5, n // 10))
        else:
            print("Ray gate: skipped (set FLOPWISE_TEST_RAY_PYTHON to a Python with ray[default])")
        shared.close()
        fw_server.should_exit = True
        fw_thread.join()
        app.state.engine.dispose()


class _Ok:
    status_code = 200

    def __init__(self, body: Any) -> None:
        self.text = str(body)[:200]


def _bench_ray(python: str, shared: Any, per_call: Any, pid: int, n: int) -> None:
    import signal
    import socket
    import subprocess

    def port() -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        return p

    dash = port()
    tmp = tempfile.mkdtemp(prefix="fwray", dir="/tmp")
    proc = subprocess.Popen(
        [str(Path(python).with_name("ray")), "start", "--head", "--block", f"--port={port()}",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         "--include-dashboard=true", "--num-cpus=2", "--num-gpus=0", "--object-store-memory=80000000",
         "--disable-usage-stats", f"--temp-dir={tmp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    dashboard = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{dashboard}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the Ray dashboard did not come up")
            time.sleep(0.5)
        upstream = httpx.Client(base_url=dashboard, timeout=60)
        ray_cfg = fw_ray.load_config({"device": "h100-sxm", "usd_per_h": "2.50"})
        now_url, now_server, now_thread = serve(fw_ray.create_gate_app(fw_ray.RayGate(shared, ray_cfg, upstream)))
        old_url, old_server, old_thread = serve(fw_ray.create_gate_app(fw_ray.RayGate(per_call, ray_cfg, upstream)))
        meta = {"flopwise-project": str(pid), "flopwise-max-hours": "1", "flopwise-gpus": "1"}
        arms: dict[str, list[float]] = {"straight": [], "now": [], "before": []}
        with httpx.Client(timeout=60) as http:
            for i in range(n):
                calls = [(name, target) for name, target in (("straight", dashboard), ("now", now_url),
                                                            ("before", old_url))]  # fmt: skip
                for name, target in calls[i % 3:] + calls[: i % 3]:
                    r = _timed(arms[name], lambda t=target: http.post(f"{t}/api/jobs/",
                                                                      json={"entrypoint": "true", "metadata": meta}))  # fmt: skip
                    assert r.status_code == 200, r.text
        for server, thread in ((now_server, now_thread), (old_server, old_thread)):
            server.should_exit = True
            thread.join()
        upstream.close()
        print(f"Ray Jobs API (real ray head on loopback): {n} submissions per arm")
        print(line("straight to the dashboard", arms["straight"]))
        print(line("through the gate, shared client (now)", arms["now"]))
        print(line("through the gate, client per call (before)", arms["before"]))
        print(delta("admission adds (now)", arms["straight"], arms["now"]))
        print(delta("admission adds (before)", arms["straight"], arms["before"]))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
