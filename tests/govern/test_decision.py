"""decide(): policies, budgets, quotas, thresholds and the AUP combined, with reservations and a trace."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwise.catalog import load_catalog
from flopwise.errors import InputError
from flopwise.govern import (
    Budget,
    BudgetState,
    BudgetUsage,
    Quota,
    QuotaState,
    admission_facts,
    check_quota,
    decide,
    load_thresholds,
    parse_policy,
    quota_applies,
)

from .conftest import NOW, make_facts

POLICY = parse_policy(
    """
name: spend
default: allow
rules:
  - id: big
    when: {field: cost_usd, gt: 1000}
    effect: require_approval
    approvals: 2
  - id: systemic-risk
    when: {field: threshold_flags, eq: eu-ai-act-systemic-risk}
    effect: require_approval
    approvals: 1
    role: admin
  - id: no-restricted-spot
    when: {all: [{field: data_classification, eq: restricted}, {field: pricing, eq: spot}]}
    effect: deny
    message: Restricted data may not run on spot capacity.
"""
)


def _budget(amount="1000", unit="usd", hard=True, bid="org-usd", scope=("org", "acme")) -> Budget:
    return Budget(bid, scope[0], scope[1], "month", unit, Decimal(amount), is_hard=hard)


def test_allow_reserves_against_every_covering_budget_in_its_unit():
    budgets = [
        BudgetState(_budget(), BudgetUsage(settled=Decimal("100"))),
        BudgetState(_budget("500", "device_hours", bid="team-dh", scope=("team", "nlp")), BudgetUsage()),
        BudgetState(
            _budget("1", bid="other-team", scope=("team", "vision")), BudgetUsage()
        ),  # does not cover
    ]
    d = decide(make_facts(), [POLICY], budgets, [], load_thresholds(), True, NOW)
    assert d.outcome == "allow"
    assert [(r.budget_id, r.unit, r.amount) for r in d.reservations] == [
        ("org-usd", "usd", Decimal("240.00")),
        ("team-dh", "device_hours", Decimal("80.0")),
    ]
    org = d.trace.budgets[0]
    assert (org.remaining_before, org.remaining_after) == (Decimal("900"), Decimal("660.00"))
    assert len(d.trace.budgets) == 2
    assert d.trace.policy.trace[0].matched is False


def test_hard_budget_denies_and_reserves_nothing():
    budgets = [BudgetState(_budget("1000"), BudgetUsage(reserved=Decimal("800")))]
    d = decide(make_facts(), [POLICY], budgets, [], (), True, NOW)
    assert d.outcome == "deny" and d.reservations == ()
    assert "is hard" in d.reasons[0] and "only 200 of 1000 remains" in d.reasons[0]


def test_soft_budget_allows_with_a_warning_and_alerts():
    budgets = [BudgetState(_budget("1000", hard=False), BudgetUsage(reserved=Decimal("800")))]
    d = decide(make_facts(), [POLICY], budgets, [], (), True, NOW)
    assert d.outcome == "allow" and d.reservations[0].amount == Decimal("240.00")
    assert any("soft" in w for w in d.warnings) and any("100% alert" in w for w in d.warnings)


def test_policy_require_approval_carries_count_role_and_reservations():
    d = decide(
        make_facts(cost_usd=Decimal("5000")),
        [POLICY],
        [BudgetState(_budget("10000"), BudgetUsage())],
        [],
        (),
        True,
        NOW,
    )
    assert (d.outcome, d.approvals_required, d.approver_role) == ("require_approval", 2, "approver")
    assert d.reservations[0].amount == Decimal("5000")


def test_threshold_flag_drives_the_policy():
    d = decide(make_facts(flops=3e25), [POLICY], [], [], load_thresholds(), True, NOW)
    assert (d.outcome, d.approvals_required, d.approver_role) == ("require_approval", 1, "admin")
    assert [f.threshold_id for f in d.trace.thresholds] == [
        "eu-ai-act-gpai-indicator",
        "eu-ai-act-systemic-risk",
    ]
    assert any(w.startswith("threshold: ") for w in d.warnings)


def test_policy_deny_quota_and_aup_each_deny_and_all_reasons_are_kept():
    facts = make_facts(data_classification="restricted", pricing="spot")
    quota = Quota("q-h100", "team", "nlp", Decimal("16"), device_type="h100-*")
    d = decide(facts, [POLICY], [], [QuotaState(quota, Decimal("12"))], (), False, NOW)
    assert d.outcome == "deny"
    assert d.reasons[0] == "policy: Restricted data may not run on spot capacity."
    assert "20 of at most 16" in d.reasons[1]
    assert "acceptable-use" in d.reasons[2]
    assert d.trace.quotas[0].is_exceeded and d.trace.is_aup_accepted is False


def test_quota_matching_by_type_glob_or_class_and_scope():
    facts = make_facts()
    assert quota_applies(Quota("a", "org", "acme", Decimal(8), device_type="h100-sxm"), facts)
    assert quota_applies(Quota("b", "org", "acme", Decimal(8), device_class="gpu"), facts)
    assert not quota_applies(Quota("c", "org", "acme", Decimal(8), device_type="a100-*"), facts)
    assert not quota_applies(Quota("d", "user", "bob", Decimal(8), device_class="gpu"), facts)
    fits = check_quota(Quota("e", "org", "acme", Decimal(16), device_class="gpu"), Decimal(8), facts)
    assert not fits.is_exceeded  # 8 + 8 = 16 is at the limit
    with pytest.raises(InputError, match="exactly one"):
        Quota("f", "org", "acme", Decimal(8), device_type="h100-sxm", device_class="gpu")


def test_admission_worst_case_goes_through_the_same_decision():
    h100 = load_catalog().device("h100-sxm")
    facts = admission_facts(
        workload="batch-inference", device_type="h100-sxm", device_class="gpu", device_count=16,
        max_duration_s=4 * 3600, usd_per_device_h=Decimal("3.20"), device_power_w=h100.tdp_w, pue=1.2,
        grid_gco2e_per_kwh=400, peak_flop_per_s_per_device=1978.9e12, org="acme", requester="slurm:bob",
    )  # fmt: skip
    assert facts.device_hours == 64 and facts.cost_usd == Decimal("204.80")
    assert facts.energy_kwh == pytest.approx(16 * 700 * 4 * 1.2 / 1000)  # 53.76 kWh
    assert facts.co2e_kg == pytest.approx(53.76 * 0.4)
    assert facts.flops == pytest.approx(16 * 1978.9e12 * 4 * 3600)
    d = decide(facts, [POLICY], [BudgetState(_budget("204.80"), BudgetUsage())], [], (), True, NOW)
    assert d.outcome == "allow" and d.reservations[0].amount == Decimal("204.80")
    d = decide(facts, [POLICY], [BudgetState(_budget("204.79"), BudgetUsage())], [], (), True, NOW)
    assert d.outcome == "deny"


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"workload": "train-ish"}, "workload"), ({"device_count": 0}, "device_count"), ({"flops": float("nan")}, "flops"),
     ({"cost_usd": 5.0}, "cost_usd"), ({"cost_usd": Decimal("-1")}, "cost_usd"), ({"pricing": "free"}, "pricing"),
     ({"device_type": ""}, "device_type"), ({"base_model_flops": 0.0}, "base_model_flops")],
)  # fmt: skip
def test_bad_facts_name_the_field(kw, field):
    with pytest.raises(InputError) as err:
        make_facts(**kw)
    assert err.value.field == field


money = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("1e9"), places=2, allow_nan=False, allow_infinity=False
)


@settings(max_examples=300, deadline=None)
@given(amount=money, reserved=money, committed=money, settled=money, cost=money)
def test_hard_budget_never_goes_negative_after_a_reserving_decide(amount, reserved, committed, settled, cost):
    budget = Budget("b", "org", "acme", "month", "usd", amount, is_hard=True)
    usage = BudgetUsage(reserved=reserved, committed=committed, settled=settled)
    d = decide(make_facts(cost_usd=cost), [], [BudgetState(budget, usage)], [], (), True, NOW)
    remaining = amount - usage.used
    if d.reservations:
        after = remaining - sum(r.amount for r in d.reservations)
        assert after >= 0 and after == d.trace.budgets[0].remaining_after  # exact Decimal, no rounding drift
    else:
        assert d.outcome == "deny" and cost > remaining


@settings(max_examples=100, deadline=None)
@given(costs=st.lists(money, min_size=1, max_size=60), amount=money)
def test_sequential_hard_reservations_never_exceed_the_budget(costs, amount):
    """Many requests against one hard budget, each decided on the usage the previous ones left."""
    budget = Budget("b", "org", "acme", "quarter", "usd", amount)
    reserved = Decimal(0)
    for cost in costs:
        d = decide(
            make_facts(cost_usd=cost),
            [],
            [BudgetState(budget, BudgetUsage(reserved=reserved))],
            [],
            (),
            True,
            NOW,
        )
        reserved += sum((r.amount for r in d.reservations), Decimal(0))
    assert reserved <= amount


def test_admission_facts_rejects_unknown_or_conflicting_context_and_bad_numbers():
    kw = dict(workload="serve", device_type="h100-sxm", device_class="gpu", device_count=1, max_duration_s=60,
              usd_per_device_h="2.5", device_power_w=700, pue=1.1, grid_gco2e_per_kwh=300)  # fmt: skip
    assert admission_facts(**kw, requester_teams="nlp").requester_teams == ("nlp",)
    with pytest.raises(InputError) as err:
        admission_facts(**kw, flops=1.0)
    assert err.value.field == "flops"
    with pytest.raises(InputError, match="pue"):
        admission_facts(**{**kw, "pue": 0.9})
    with pytest.raises(InputError, match="max_duration_s"):
        admission_facts(**{**kw, "max_duration_s": 0})
    with pytest.raises(InputError, match="magnitude"):
        admission_facts(**{**kw, "usd_per_device_h": "1e999999"})
