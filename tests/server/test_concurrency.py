"""Hard budgets never overspend: 60 concurrent request creations that together need 3x a hard budget.

Threads post through the in-process TestClient (each request runs in the app's worker threads against the real
database), on SQLite and on PostgreSQL. Each request costs $10 against a $200 hard budget, so exactly 20 can be
approved; the approved + reserved sum must stay within the cap and equal what the budget reports.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import gov_fixtures
from gov_fixtures import Org, make_budget, plan_request

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org

CONCURRENT_REQUESTS = 60
CAP_USD = Decimal(200)
COST_USD = Decimal(10)  # 1 device x 5 h x $2.00


def test_concurrent_requests_never_overspend_a_hard_budget(org: Org) -> None:
    budget = make_budget(org, org.project_id, str(CAP_USD))
    body = plan_request(org.project_id, hours="5", price="2.00")

    def create(i: int) -> tuple[int, dict]:
        who = "member" if i % 2 else "member2"
        r = org.post("/requests", who, body, headers={"Idempotency-Key": f"c-{i}"})
        return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(create, range(CONCURRENT_REQUESTS)))

    assert {status for status, _ in results} == {201}, [b for s, b in results if s != 201][:3]
    approved = [b for _, b in results if b["state"] == "approved"]
    denied = [b for _, b in results if b["state"] == "denied"]
    assert len(approved) + len(denied) == CONCURRENT_REQUESTS
    assert len(approved) == CAP_USD / COST_USD  # every dollar used, none beyond
    reserved = sum(Decimal(r["amount"]) for b in approved for r in b["reservations"])
    assert reserved <= CAP_USD
    shown = org.get(f"/budgets/{budget['id']}", "admin").json()
    assert Decimal(shown["used"]) == reserved == CAP_USD and Decimal(shown["remaining"]) == 0
    assert all(any("is hard" in reason for reason in b["reasons"]) for b in denied)
