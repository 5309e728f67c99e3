"""Admission latency at SkyPilot's admin policy and at the Ray Jobs gate, each beside its baseline, one process.

* SkyPilot: POST /skypilot/policy over loopback HTTP for a ``launch`` with GPUs (decided by flopwise: an
  admission with a budget reservation on SQLite) vs an ``exec`` request (passed through, no decision).
* Ray (where FLOPWISE_TEST_RAY_PYTHON names a Python with ray[default]): ``POST /api/jobs/`` through the gate
  vs straight to the dashboard of a real ``ray start --head`` on loopback.

The flopwise server runs in process on a SQLite file, reached through the real client. Prints p50 and p99 and
the difference. Run: ``python bench/bench_enforce_gates.py [N]`` (default N = 200 policy calls, N/10 Ray jobs).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "enforce"))

from conftest import AsgiSyncTransport  # noqa: E402
from flopwise.client import FlopwiseClient  # noqa: E402
from flopwise.enforce import ray as fw_ray  # noqa: E402
from flopwise.enforce import skypilot as fw_sky  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _serve(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def _flopwise(tmp: Path) -> tuple[Any, AsgiSyncTransport, str, int]:
    from flopwise.server import Settings, create_app
    from flopwise.server.auth import mint_token
    from flopwise.store import ApiToken, Organization, Project, RoleBinding, Team, User, write_session

    app = create_app(Settings(database_url=f"sqlite:///{tmp / 'fw.db'}"))
    with write_session(app.state.db) as s:
        org = Organization(name="bench")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="t")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="p")
        user = User(org_id=org.id, name="ada")
        s.add_all([project, user])
        s.flush()
        s.add(RoleBinding(user_id=user.id, role="admin", scope_kind="org", scope_id=org.id))
        token, prefix, token_hash = mint_token()
        s.add(ApiToken(user_id=user.id, name="bench", prefix=prefix, token_hash=token_hash))
        project_id = project.id
    transport = AsgiSyncTransport(app)
    with FlopwiseClient(url="http://testserver", token=token, transport=transport) as fw:
        fw.create_budget({"name": "big", "scope_kind": "project", "scope_id": project_id, "period": "month",
                          "unit": "usd", "amount": "100000000", "is_hard": True})  # fmt: skip
    return app, transport, token, project_id


def _report(name: str, base_label: str, base: list[float], gated: list[float]) -> None:
    ms = 1000.0
    print(f"{name}: {len(gated)} calls each")
    print(f"  {base_label:<28} p50 {statistics.median(base) * ms:7.2f} ms  p99 {_pct(base, 0.99) * ms:7.2f} ms")
    print(f"  {'decided by flopwise':<28} p50 {statistics.median(gated) * ms:7.2f} ms  p99 {_pct(gated, 0.99) * ms:7.2f} ms")
    print(f"  {'added by admission':<28} p50 {(statistics.median(gated) - statistics.median(base)) * ms:+7.2f} ms  "
          f"p99 {(_pct(gated, 0.99) - _pct(base, 0.99)) * ms:+7.2f} ms")  # fmt: skip


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        app, transport, token, pid = _flopwise(Path(tmp))

        def client() -> FlopwiseClient:
            return FlopwiseClient(url="http://testserver", token=token, transport=transport)

        cfg = fw_sky.load_config({"accelerators": {"H100": {"device": "h100-sxm", "usd_per_h": "2.50"}}})
        url, server, thread = _serve(fw_sky.create_policy_app(client, cfg))
        task = {"run": "x", "resources": {"accelerators": "H100:1",
                                          "labels": {"flopwise-project": str(pid), "flopwise-max-hours": "1"}}}  # fmt: skip

        def body(name: str) -> str:
            return json.dumps({"task": yaml.safe_dump(task), "skypilot_config": "{}\n", "request_name": name,
                               "request_options": None, "at_client_side": False, "user": ""})  # fmt: skip

        base: list[float] = []
        gated: list[float] = []
        with httpx.Client(base_url=url) as http:
            for i in range(n):
                for name, sink in (("exec", base), ("launch", gated)) if i % 2 else (("launch", gated), ("exec", base)):
                    t0 = time.perf_counter()
                    r = http.post("/skypilot/policy", json=body(name))
                    sink.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
        server.should_exit = True
        thread.join()
        _report("SkyPilot admin policy (loopback HTTP, flopwise on SQLite in process)", "pass-through (exec)",
                base, gated)  # fmt: skip

        python = os.environ.get("FLOPWISE_TEST_RAY_PYTHON")
        if python:
            _bench_ray(python, client, pid, max(5, n // 10))
        else:
            print("Ray gate: skipped (set FLOPWISE_TEST_RAY_PYTHON to a Python with ray[default])")
        transport.shutdown()
        app.state.engine.dispose()


def _bench_ray(python: str, client: Any, pid: int, n: int) -> None:
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
        gate = fw_ray.RayGate(client, fw_ray.load_config({"device": "h100-sxm", "usd_per_h": "2.50"}), upstream)
        url, server, thread = _serve(fw_ray.create_gate_app(gate))
        meta = {"flopwise-project": str(pid), "flopwise-max-hours": "1", "flopwise-gpus": "1"}
        base: list[float] = []
        gated: list[float] = []
        with httpx.Client(timeout=60) as http:
            for i in range(n):
                order = ((dashboard, base), (url, gated)) if i % 2 else ((url, gated), (dashboard, base))
                for target, sink in order:
                    t0 = time.perf_counter()
                    r = http.post(f"{target}/api/jobs/", json={"entrypoint": "true", "metadata": meta})
                    sink.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
        server.should_exit = True
        thread.join()
        upstream.close()
        _report("Ray Jobs API (real ray head on loopback)", "straight to the dashboard", base, gated)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
