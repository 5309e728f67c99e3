"""Policies: every operator, combinators, the precedence table (a total order), traces, bad files."""

from __future__ import annotations

import contextlib
import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwise.errors import InputError
from flopwise.govern import evaluate_policies, parse_policy, policy_context

from .conftest import make_facts


def _outcome(when: dict, **facts_kw) -> bool:
    policy = parse_policy(
        {
            "name": "p",
            "default": "allow",
            "rules": [{"id": "r", "when": when, "effect": "deny", "message": "m"}],
        }
    )
    result = evaluate_policies(
        [policy], policy_context(make_facts(**facts_kw), ("eu-ai-act-gpai-indicator",))
    )
    return result.outcome == "deny"


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"field": "device_type", "eq": "h100-sxm"}, True),
        ({"field": "device_type", "eq": "H100-SXM"}, False),  # exact, case-sensitive
        ({"field": "device_type", "ne": "a100-sxm-80gb"}, True),
        ({"field": "device_type", "ne": "h100-sxm"}, False),
        ({"field": "provider", "in": ["aws", "gcp"]}, True),
        ({"field": "provider", "in": ["azure"]}, False),
        ({"field": "provider", "not_in": ["azure"]}, True),
        ({"field": "provider", "not_in": ["aws"]}, False),
        ({"field": "cost_usd", "gt": "239.99"}, True),
        ({"field": "cost_usd", "gt": "240.00"}, False),
        ({"field": "cost_usd", "gte": 240}, True),
        ({"field": "cost_usd", "lt": 240}, False),
        ({"field": "cost_usd", "lte": "240"}, True),
        ({"field": "cost_usd", "eq": "240"}, True),  # numbers compare as Decimals: 240 == 240.00
        ({"field": "device_count", "in": [4, 8]}, True),
        ({"field": "flops", "gte": "1e21"}, True),  # YAML reads 1e21 as text; accepted as a number
        ({"field": "flops", "gt": 1e21}, False),
        ({"field": "region", "matches": "aws:us-*"}, True),
        ({"field": "region", "matches": "gcp:*"}, False),
        ({"field": "base_model_flops", "exists": False}, True),
        ({"field": "base_model_flops", "exists": True}, False),
        ({"field": "base_model_flops", "gt": 0}, False),  # a missing value makes comparisons false
        ({"field": "requester_teams", "eq": "nlp"}, True),  # list fields: any element
        ({"field": "requester_teams", "in": ["vision", "research"]}, True),
        ({"field": "requester_teams", "not_in": ["vision"]}, True),
        ({"field": "requester_teams", "ne": "nlp"}, False),
        ({"field": "requester_teams", "matches": "re*"}, True),
        ({"field": "threshold_flags", "eq": "eu-ai-act-gpai-indicator"}, True),
        ({"field": "threshold_flags", "matches": "us-*"}, False),
    ],
)
def test_each_operator(when, expected):
    assert _outcome(when) is expected


def test_combinators_and_nesting():
    big = {"field": "cost_usd", "gt": 100}
    spot = {"field": "pricing", "eq": "spot"}
    assert _outcome({"all": [big, {"not": spot}]})
    assert not _outcome({"all": [big, spot]})
    assert _outcome({"any": [spot, big]})
    assert not _outcome({"any": [spot, {"not": big}]})
    assert _outcome({"not": {"not": big}})


PRECEDENCE = ["deny", "require_approval", "allow", "default"]


def _policy(effects: list[str], default: str = "allow") -> dict:
    rules = []
    for i, effect in enumerate(effects):
        rule = {"id": f"r{i}", "effect": effect}
        if effect == "deny":
            rule["message"] = f"no ({i})"
        if effect == "require_approval":
            rule["approvals"] = i + 1
        rules.append(rule)
    return {"name": "p", "default": default, "rules": rules}


@pytest.mark.parametrize("pair", list(itertools.combinations(range(3), 2)))
def test_precedence_is_a_total_order(pair):
    """For every pair of effects, the stronger one wins whatever the rule order: deny > require_approval > allow."""
    stronger, weaker = (["deny", "require_approval", "allow"][i] for i in pair)
    for order in ([stronger, weaker], [weaker, stronger]):
        result = evaluate_policies([parse_policy(_policy(order))], policy_context(make_facts()))
        assert result.outcome == stronger


@pytest.mark.parametrize("default", ["deny", "require_approval"])
def test_explicit_allow_beats_default_and_defaults_apply_only_when_nothing_matches(default):
    ctx = policy_context(make_facts())
    assert evaluate_policies([parse_policy(_policy(["allow"], default))], ctx).outcome == "allow"
    result = evaluate_policies([parse_policy(_policy([], default))], ctx)
    assert result.outcome == default
    assert result.trace[-1].why == ("no rule matched: policy default",)


def test_no_policy_allows():
    result = evaluate_policies([], policy_context(make_facts()))
    assert result.outcome == "allow" and result.reasons == ("no policy applies: allow",)


def test_require_approval_merges_to_max_count_and_highest_role_across_policies():
    a = parse_policy(
        {"name": "a", "rules": [{"id": "x", "effect": "require_approval", "approvals": 3, "role": "member"}]}
    )
    b = parse_policy(
        {"name": "b", "rules": [{"id": "y", "effect": "require_approval", "approvals": 1, "role": "admin"}]}
    )
    result = evaluate_policies([a, b], policy_context(make_facts()))
    assert (result.outcome, result.approvals, result.role) == ("require_approval", 3, "admin")
    assert result.decided_by == ("a/x", "b/y")


def test_deny_collects_every_message_and_defaults_combine_by_precedence():
    p1 = parse_policy({"name": "one", "rules": [{"id": "a", "effect": "deny", "message": "first"}]})
    p2 = parse_policy({"name": "two", "rules": [{"id": "b", "effect": "deny", "message": "second"}]})
    assert evaluate_policies([p1, p2], policy_context(make_facts())).reasons == ("first", "second")
    d1 = parse_policy({"name": "d1", "default": "allow"})
    d2 = parse_policy({"name": "d2", "default": {"effect": "require_approval", "approvals": 2}})
    result = evaluate_policies([d1, d2], policy_context(make_facts()))
    assert (result.outcome, result.approvals, result.role) == ("require_approval", 2, "approver")


def test_trace_lists_every_rule_with_each_condition_reading():
    text = """
name: spend
rules:
  - id: big
    when: {all: [{field: cost_usd, gt: 1000}, {field: device_type, matches: "h100-*"}]}
    effect: require_approval
  - id: cheap
    when: {field: cost_usd, lte: 1000}
    effect: allow
"""
    result = evaluate_policies([parse_policy(text)], policy_context(make_facts(cost_usd=Decimal("240.00"))))
    assert result.outcome == "allow"
    big, cheap = result.trace
    assert (big.rule_id, big.matched, cheap.matched) == ("big", False, True)
    assert big.why[0] == "all (1 of 2 true): false"
    assert big.why[1] == "  cost_usd 240.00 gt 1000: false"
    assert big.why[2] == "  device_type h100-sxm matches h100-*: true"
    assert cheap.why == ("cost_usd 240.00 lte 1000: true",)


@pytest.mark.parametrize(
    ("doc", "field", "accepted"),
    [
        ("rules: [1]\nname: x", "rules[0]", "a rule is a mapping"),
        ("name: x\nrules:\n  - {id: a, effect: maybe}", "rules[0].effect", "deny, require_approval, allow"),
        ("name: x\nrules:\n  - {id: a, effect: deny}", "rules[0].message", "needs a message"),
        (
            "name: x\nrules:\n  - {id: a, effect: allow, approvals: 2}",
            "rules[0].approvals",
            "require_approval",
        ),
        (
            "name: x\nrules:\n  - {id: a, effect: require_approval, approvals: 0}",
            "rules[0].approvals",
            "1 to 100",
        ),
        (
            "name: x\nrules:\n  - {id: a, effect: require_approval, role: boss}",
            "rules[0].role",
            "viewer, member",
        ),
        ("name: x\nrules:\n  - {id: a, effect: allow, colour: red}", "rules[0].colour", "unknown key"),
        ("name: x\nrules:\n  - {id: a, effect: allow}\n  - {id: a, effect: allow}", "rules[1].id", "unique"),
        (
            "name: x\nrules:\n  - {effect: allow, when: {field: price, gt: 1}}",
            "rules[0].when.field",
            "cost_usd",
        ),
        ("name: x\nrules:\n  - {effect: allow, when: {field: region, gt: 1}}", "rules[0].when.gt", "is text"),
        (
            "name: x\nrules:\n  - {effect: allow, when: {field: flops, matches: '1*'}}",
            "rules[0].when.matches",
            "is a number",
        ),
        (
            "name: x\nrules:\n  - {effect: allow, when: {field: flops, gt: lots}}",
            "rules[0].when.gt",
            "decimal string",
        ),
        (
            "name: x\nrules:\n  - {effect: allow, when: {field: flops, gt: 1, lt: 2}}",
            "rules[0].when",
            "exactly one operator",
        ),
        (
            "name: x\nrules:\n  - {effect: allow, when: {field: flops, between: 2}}",
            "rules[0].when",
            "exactly one operator",
        ),
        (
            "name: x\nrules:\n  - {effect: allow, when: {field: region, in: []}}",
            "rules[0].when.in",
            "non-empty list",
        ),
        (
            "name: x\nrules:\n  - {effect: allow, when: {field: region, exists: maybe}}",
            "rules[0].when.exists",
            "true or false",
        ),
        ("name: x\nrules:\n  - {effect: allow, when: {any: []}}", "rules[0].when.any", "non-empty list"),
        (
            "name: x\nrules:\n  - {effect: allow, when: {all: [{field: x, eq: 1}]}}",
            "rules[0].when.all[0].field",
            "cost_usd",
        ),
        (
            "name: x\nrules:\n  - {effect: allow, when: {not: {field: region}}}",
            "rules[0].when.not",
            "exactly one operator",
        ),
        ("name: x\nrules:\n  - {effect: allow, when: {all: [], any: []}}", "rules[0].when", "stands alone"),
        ("name: x\ndefault: maybe", "policy.default.effect", "deny, require_approval, allow"),
        ("rules: []", "policy.name", "non-empty name"),
        ("name: x\nrules: {a: 1}", "policy.rules", "list of rules"),
        ("name: x\nrulez: []", "policy.rulez", "unknown key"),
        ("- just a list", "policy", "a policy is a mapping"),
        ("name: x\nrules: [unclosed", "policy", "does not parse"),
    ],
)
def test_bad_policy_files_name_the_rule_and_field(doc, field, accepted):
    with pytest.raises(InputError) as err:
        parse_policy(doc)
    assert err.value.field == field
    assert accepted in str(err.value)


def test_yaml_and_mapping_forms_parse_the_same():
    text = "name: p\nrules:\n  - id: a\n    when: {field: cost_usd, gt: '10.5'}\n    effect: require_approval\n    approvals: 2\n"
    as_mapping = {"name": "p", "rules": [{"id": "a", "when": {"field": "cost_usd", "gt": "10.5"},
                                          "effect": "require_approval", "approvals": 2}]}  # fmt: skip
    assert parse_policy(text) == parse_policy(as_mapping)
    rule = parse_policy(text).rules[0]
    assert rule.when.operand == Decimal("10.5") and (rule.approvals, rule.role) == (2, "approver")


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
    st.sampled_from(["field", "cost_usd", "region", "gt", "in", "matches", "exists", "deny", "1e25", "all", "not"]),
)  # fmt: skip
_keys = st.sampled_from(
    ["name", "rules", "default", "id", "when", "effect", "approvals", "role", "message", "field", "eq", "in",
     "gt", "matches", "exists", "all", "any", "not", "version", "x"]
)  # fmt: skip
_docs = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(doc=_docs)
def test_any_document_parses_or_raises_input_error(doc):
    """Fuzz: arbitrary nested input is either a policy or an InputError, never another exception."""
    try:
        policy = parse_policy(doc)
    except InputError:
        return
    evaluate_policies([policy], policy_context(make_facts()))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_parses_or_raises_input_error(text):
    with contextlib.suppress(InputError):
        parse_policy(text)


def test_default_mapping_without_effect_is_an_input_error():
    # found by the fuzz test above: {"default": {}} raised KeyError
    with pytest.raises(InputError, match=r"policy\.default\.effect"):
        parse_policy({"name": "p", "default": {}})
