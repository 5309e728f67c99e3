"""Every public name of flopwise.govern is documented in docs/governance.md (the datasette docs-test pattern)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import flopwise.govern as govern

DOC = Path(__file__).resolve().parents[2] / "docs" / "governance.md"
PUBLIC = [
    n for n in govern.__all__ if inspect.isfunction(getattr(govern, n)) or inspect.isclass(getattr(govern, n))
]


@pytest.mark.skipif(not DOC.exists(), reason=f"{DOC} not found")
@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_documented(name):
    assert f"`{name}" in DOC.read_text(encoding="utf-8"), (
        f"flopwise.govern.{name} is missing from docs/governance.md"
    )


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_a_docstring(name):
    doc = inspect.getdoc(getattr(govern, name)) or ""
    assert len(doc) > 15, f"flopwise.govern.{name} needs a docstring"


def test_python_example_in_the_docs_runs():
    """The opening example of docs/governance.md, with the policy inline instead of from a file."""
    from datetime import UTC, datetime
    from decimal import Decimal

    text = DOC.read_text(encoding="utf-8")
    policy_yaml = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    facts = govern.RequestFacts(
        workload="train", flops=3e25, device_type="h100-sxm", device_class="gpu", device_count=1024,
        duration_s=30 * 86400, device_hours=737_280, cost_usd=Decimal("2211840.00"), energy_kwh=619_315,
        co2e_kg=240_000, requester="alice", requester_teams=("nlp",), project="llm", org="acme",
    )  # fmt: skip
    budget = govern.Budget("acme-q", "org", "acme", "quarter", "usd", Decimal("5000000"))
    decision = govern.decide(
        facts, [govern.parse_policy(policy_yaml)], [govern.BudgetState(budget, govern.BudgetUsage(settled=Decimal("1200000")))],
        [], govern.load_thresholds(), True, datetime(2025, 5, 1, tzinfo=UTC),
    )  # fmt: skip
    assert decision.outcome == "require_approval"
    assert (decision.approvals_required, decision.approver_role) == (2, "admin")
    assert decision.reservations == (govern.Reservation("acme-q", "usd", Decimal("2211840.00")),)
