"""PATCH /budgets/{id}: admins change a budget's name, amount, hardness and alerts; audited; 409 on a taken name."""

from __future__ import annotations

from srvutil import API


def _budget(client, seed, name: str) -> dict:
    body = {"name": name, "scope_kind": "org", "scope_id": seed.org_id, "period": "month", "unit": "usd",
            "amount": "1000"}  # fmt: skip
    response = client.post(f"{API}/budgets", json=body, headers=seed.headers("admin"))
    assert response.status_code == 201, response.text
    return response.json()


def test_update_changes_audits_and_validates(client, seed) -> None:
    budget = _budget(client, seed, "to-edit")
    _budget(client, seed, "taken")
    url = f"{API}/budgets/{budget['id']}"
    changed = client.patch(url, json={"amount": "2500.25", "is_hard": False, "alert_thresholds": ["0.9"]},
                           headers=seed.headers("admin"))  # fmt: skip
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["amount"] == "2500.25" or float(body["amount"]) == 2500.25
    assert body["is_hard"] is False and [float(a) for a in body["alert_thresholds"]] == [0.9]
    assert body["name"] == "to-edit"
    taken = client.patch(url, json={"name": "taken"}, headers=seed.headers("admin"))
    assert taken.status_code == 409 and taken.json()["errors"][0]["field"] == "name"
    for bad in ({"amount": "-1"}, {"alert_thresholds": ["0"]}, {"scope_kind": "team"}, {"name": ""}):
        response = client.patch(url, json=bad, headers=seed.headers("admin"))
        assert response.status_code == 422, (bad, response.text)
    assert client.patch(url, json={"amount": "1"}, headers=seed.headers("approver")).status_code == 403
    entries = client.get(f"{API}/audit", params={"action": "budget.update"}, headers=seed.headers("admin")).json()
    last = entries["entries"][-1]["payload"]
    assert last["budget_id"] == budget["id"] and last["before"]["amount"].startswith("1000")
    assert last["after"]["is_hard"] is False
