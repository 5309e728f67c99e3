"""The acceptable-use policy gates requests: none accepted -> denied with the version to accept; accepted -> decided."""

from __future__ import annotations

import gov_fixtures
from gov_fixtures import Org, make_budget, plan_request

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org


def test_unaccepted_aup_denies_until_accepted(org: Org) -> None:
    project = org.new_project()
    make_budget(org, project, "1000")
    published = org.post("/aup", "admin", {"text": "Use compute for approved research only."})
    assert published.status_code == 201, published.text
    version = published.json()["version"]
    denied = org.post("/requests", "member", plan_request(project, hours="1")).json()
    assert denied["state"] == "denied", denied
    assert any(f"acceptable-use policy version {version}" in r for r in denied["reasons"]), denied["reasons"]
    assert org.post(f"/aup/{version}/accept", "member", {}).status_code in (200, 201)
    allowed = org.post("/requests", "member", plan_request(project, hours="1")).json()
    assert allowed["state"] == "approved", allowed


def test_another_organizations_newer_aup_does_not_undo_an_acceptance(org: Org) -> None:
    """The newest version is the requester's organization's own: another organization's later version (a higher
    number, a different row) must not be the one checked for this user's acceptance."""
    project = org.new_project()
    make_budget(org, project, "1000")
    for text in ("Theirs, first.", "Theirs, second."):
        assert org.post("/aup", "other_org", {"text": text}).status_code == 201
    published = org.post("/aup", "admin", {"text": "Ours."})
    assert published.status_code == 201, published.text
    assert org.post(f"/aup/{published.json()['version']}/accept", "member", {}).status_code in (200, 201)
    allowed = org.post("/requests", "member", plan_request(project, hours="1")).json()
    assert allowed["state"] == "approved", allowed
