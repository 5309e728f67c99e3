"""``flopwise serve --workers 2``: a real server of two processes on one database; 60 concurrent creations that
together need 3x a hard budget never overspend it (the budget row locks hold across processes), and the cheap
``/health`` and the readiness check answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from pgutil import BACKENDS, throwaway_database_url
from served import served

CONCURRENT_REQUESTS = 60
CAP_USD = Decimal(200)
COST_USD = Decimal(10)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    with throwaway_database_url(request.param, tmp_path_factory, "workers") as url:
        yield url


def test_two_worker_processes_never_overspend_a_hard_budget(database_url: str, tmp_path) -> None:
    import httpx

    with served(database_url, tmp_path) as (root, token):
        base = f"{root}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/ready").json()["ready"] is True
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            team = client.post("/teams", json={"name": "research"}).json()
            project = client.post(f"/teams/{team['id']}/projects", json={"name": "llm"}).json()
            budget = client.post("/budgets", json={"name": "cap", "scope_kind": "project", "scope_id": project["id"],
                                                   "period": "month", "unit": "usd", "amount": str(CAP_USD)})  # fmt: skip
            assert budget.status_code == 201, budget.text
            body = {"project_id": project["id"], "workload": "train", "device": "h100-sxm", "device_count": 1,
                    "usd_per_device_h": "2.00", "plan": {"duration_h": "5", "flops": 1e20}}  # fmt: skip

            def create(i: int) -> tuple[int, dict]:
                r = client.post("/requests", json=body, headers={"Idempotency-Key": f"w-{i}"})
                return r.status_code, r.json()

            with ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(create, range(CONCURRENT_REQUESTS)))
            assert {s for s, _ in results} == {201}, [b for s, b in results if s != 201][:3]
            approved = [b for _, b in results if b["state"] == "approved"]
            assert len(approved) == CAP_USD / COST_USD
            shown = client.get(f"/budgets/{budget.json()['id']}").json()
            assert Decimal(shown["used"]) == CAP_USD and Decimal(shown["remaining"]) == 0
            verify = client.get("/audit/verify").json()
            assert verify["is_ok"], verify
