"""Declarative policies: YAML rules over request fields, with a documented precedence and a full trace.

A policy file::

    name: gpu-spend
    default: allow                      # or require_approval / deny, or a mapping like a rule's effect
    rules:
      - id: big-runs
        description: runs over $10k need two approvers
        when:
          all:
            - {field: cost_usd, gt: 10000}
            - {field: device_type, in: [h100-sxm, h200-sxm]}
        effect: require_approval
        approvals: 2
        role: approver
      - id: no-restricted-on-spot
        when: {all: [{field: data_classification, eq: restricted}, {field: pricing, eq: spot}]}
        effect: deny
        message: Restricted data may not run on spot capacity.

A condition is ``{field: NAME, OP: VALUE}`` with exactly one operator, or ``{all: [...]}``, ``{any: [...]}``,
``{not: CONDITION}``. A rule without ``when`` always matches. Numbers compare as Decimals, so
``cost_usd: {gt: "10000.00"}`` is exact and ``flops: {gte: 1e25}`` works even though YAML reads ``1e25``
as a string.

Precedence (a total order, tested in ``tests/govern/test_policy.py``): every rule of every policy is
evaluated; then

1. any matched ``deny``                -> deny, with every matched deny's message;
2. else any matched ``require_approval`` -> require_approval with the **largest** approval count and the
   **highest** role (admin > approver > member > viewer) among the matches, so one set of approvals
   satisfies every matched rule;
3. else any matched ``allow``          -> allow;
4. else the policies' ``default`` effects, combined by the same order (1-3); with no policy at all, allow.

An explicit ``allow`` never overrides a matched ``deny`` or ``require_approval``; it only beats defaults.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import cast

import yaml

from flopwise.errors import InputError
from flopwise.govern.facts import RequestFacts, to_decimal
from flopwise.vocab import pricing_kind, workload_kind

__all__ = [
    "EFFECTS",
    "FIELDS",
    "LIST_FIELDS",
    "NUMERIC_FIELDS",
    "OPERATORS",
    "ROLES",
    "STRING_FIELDS",
    "Condition",
    "Policy",
    "PolicyEvaluation",
    "Rule",
    "RuleTrace",
    "evaluate_policies",
    "parse_policy",
    "policy_context",
    "role_rank",
]

#: rule effects, strongest first
EFFECTS = ("deny", "require_approval", "allow")
#: roles per scope, weakest first; a higher role can do everything a lower one can
ROLES = ("viewer", "member", "approver", "admin")
OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "matches", "exists")
_ORDER_OPS = ("gt", "gte", "lt", "lte")
_COMPARE = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}  # fmt: skip

NUMERIC_FIELDS = (
    "flops",
    "device_count",
    "duration_s",
    "device_hours",
    "cost_usd",
    "energy_kwh",
    "co2e_kg",
    "base_model_flops",
    "peak_flop_per_s_per_device",
)
STRING_FIELDS = (
    "workload",
    "device_type",
    "device_class",
    "provider",
    "region",
    "pricing",
    "data_classification",
    "requester",
    "project",
    "org",
)
#: fields holding several values; ``eq``/``in``/``matches`` match when any element does
LIST_FIELDS = ("requester_teams", "threshold_flags")
FIELDS = NUMERIC_FIELDS + STRING_FIELDS + LIST_FIELDS

_RULE_KEYS = ("id", "description", "when", "effect", "approvals", "role", "message")
_POLICY_KEYS = ("name", "version", "description", "default", "rules")


def role_rank(role: str, field: str = "role") -> int:
    """Position of *role* in ROLES (viewer=0 ... admin=3); InputError for an unknown role."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise InputError(field, role, f"use one of {', '.join(ROLES)}") from None


@dataclass(frozen=True)
class Condition:
    """A leaf ``{field, op, operand}`` or a combinator ``all``/``any``/``not`` over ``children``."""

    kind: str  # field | all | any | not
    field: str = ""
    op: str = ""
    operand: object = None
    children: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One rule. ``when=None`` matches every request. ``approvals``/``role`` only for require_approval."""

    id: str
    index: int
    effect: str
    when: Condition | None = None
    approvals: int = 0
    role: str = ""
    message: str = ""
    description: str = ""


@dataclass(frozen=True)
class Policy:
    """A named, ordered list of rules with a default effect (a Rule with index -1 and no condition)."""

    name: str
    rules: tuple[Rule, ...]
    default: Rule
    version: int = 1
    description: str = ""


@dataclass(frozen=True)
class RuleTrace:
    """Whether one rule matched, and each condition's reading (``cost_usd 12000 > 10000: true``)."""

    policy: str
    rule_id: str
    index: int
    effect: str
    matched: bool
    why: tuple[str, ...]


@dataclass(frozen=True)
class PolicyEvaluation:
    """The combined policy outcome, its reasons and the trace of every rule (matched or not)."""

    outcome: str  # allow | require_approval | deny
    approvals: int
    role: str
    reasons: tuple[str, ...]
    decided_by: tuple[str, ...]  # "policy/rule-id" of the rules (or defaults) that set the outcome
    trace: tuple[RuleTrace, ...]


# ---------------------------------------------------------------------------------------------- parsing


def parse_policy(source: str | Mapping[str, object], name: str | None = None) -> Policy:
    """Parse a policy from YAML text or an already-loaded mapping.

    Raises InputError naming the place (``rules[2].when.all[0].gt``), the bad value and what is accepted.
    """
    if isinstance(source, str):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "the text"
            raise InputError(
                "policy", where, f"the YAML does not parse ({getattr(err, 'problem', err)})"
            ) from None
    else:
        data = source
    if not isinstance(data, Mapping):
        raise InputError(
            "policy", data, "a policy is a mapping with 'name', 'rules' and optionally 'default'"
        )
    for key in data:
        if key not in _POLICY_KEYS:
            raise InputError(f"policy.{key}", data[key], f"unknown key; use {', '.join(_POLICY_KEYS)}")
    policy_name = name or data.get("name")
    if not isinstance(policy_name, str) or not policy_name.strip():
        raise InputError("policy.name", policy_name, "give the policy a non-empty name")
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError("policy.version", version, "give a whole number, 1 or more")
    rules_raw = data.get("rules", [])
    if not isinstance(rules_raw, list):
        raise InputError("policy.rules", rules_raw, "give a list of rules")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(rules_raw):
        rule = _parse_rule(raw, i)
        if rule.id in seen:
            raise InputError(
                f"rules[{i}].id", rule.id, f"rule ids must be unique; rules[{seen[rule.id]}] has it"
            )
        seen[rule.id] = i
        rules.append(rule)
    default = _parse_default(data.get("default", "allow"))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InputError("policy.description", description, "give text")
    return Policy(policy_name.strip(), tuple(rules), default, version, description)


def _parse_default(raw: object) -> Rule:
    if isinstance(raw, str):
        raw = {"effect": raw}
    if not isinstance(raw, Mapping):
        raise InputError("policy.default", raw, f"use one of {', '.join(EFFECTS)} or a mapping with 'effect'")
    raw = dict(raw)
    if "when" in raw:
        raise InputError("policy.default.when", raw["when"], "the default has no condition; make it a rule")
    raw.setdefault("id", "default")
    if "effect" not in raw:
        raise InputError(
            "policy.default.effect", None, f"the default needs an effect: one of {', '.join(EFFECTS)}"
        )
    if raw["effect"] == "deny":
        raw.setdefault("message", "no rule allows this request (policy default is deny)")
    return _parse_rule(raw, -1, where="policy.default")


def _parse_rule(raw: object, index: int, where: str | None = None) -> Rule:
    at = where or f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise InputError(at, raw, "a rule is a mapping with 'id', 'when' and 'effect'")
    for key in raw:
        if key not in _RULE_KEYS:
            raise InputError(f"{at}.{key}", raw[key], f"unknown key; use {', '.join(_RULE_KEYS)}")
    rule_id = raw.get("id", f"rule-{index}")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise InputError(f"{at}.id", rule_id, "give the rule a non-empty text id")
    effect = raw.get("effect")
    if effect not in EFFECTS:
        raise InputError(f"{at}.effect", effect, f"use one of {', '.join(EFFECTS)}")
    approvals, role, message = 0, "", ""
    if effect == "require_approval":
        approvals = raw.get("approvals", 1)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or not 1 <= approvals <= 100:
            raise InputError(f"{at}.approvals", approvals, "give a whole number of approvers from 1 to 100")
        role = raw.get("role", "approver")
        role_rank(role, f"{at}.role")
    else:
        for key in ("approvals", "role"):
            if key in raw:
                raise InputError(f"{at}.{key}", raw[key], "only an effect of require_approval takes it")
    if effect == "deny":
        given = raw.get("message")
        if not isinstance(given, str) or not given.strip():
            raise InputError(f"{at}.message", given, "a deny rule needs a message telling the user why")
        message = given
    elif "message" in raw:
        message = raw["message"]
        if not isinstance(message, str):
            raise InputError(f"{at}.message", message, "give text")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise InputError(f"{at}.description", description, "give text")
    when = None
    if "when" in raw:
        when = _parse_condition(raw["when"], f"{at}.when")
    return Rule(rule_id.strip(), index, effect, when, approvals, role, message, description)


def _parse_condition(raw: object, at: str) -> Condition:
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(at, raw, "a condition is {field: NAME, OP: VALUE} or {all|any: [...]} or {not: ...}")
    keys = set(raw)
    for combinator in ("all", "any"):
        if combinator in keys:
            if keys != {combinator}:
                raise InputError(at, dict(raw), f"'{combinator}' stands alone in its mapping")
            items = raw[combinator]
            if not isinstance(items, list) or not items:
                raise InputError(f"{at}.{combinator}", items, "give a non-empty list of conditions")
            children = tuple(_parse_condition(c, f"{at}.{combinator}[{i}]") for i, c in enumerate(items))
            return Condition(combinator, children=children)
    if "not" in keys:
        if keys != {"not"}:
            raise InputError(at, dict(raw), "'not' stands alone in its mapping")
        return Condition("not", children=(_parse_condition(raw["not"], f"{at}.not"),))
    field = raw.get("field")
    if field not in FIELDS:
        raise InputError(f"{at}.field", field, f"use one of {', '.join(FIELDS)}")
    ops = [k for k in raw if k != "field"]
    if len(ops) != 1 or ops[0] not in OPERATORS:
        raise InputError(
            f"{at}", {k: raw[k] for k in ops}, f"give exactly one operator, one of {', '.join(OPERATORS)}"
        )
    op = ops[0]
    return Condition("field", field, op, _parse_operand(field, op, raw[op], f"{at}.{op}"))


def _parse_operand(field: str, op: str, value: object, at: str) -> object:
    numeric = field in NUMERIC_FIELDS
    if op == "exists":
        if not isinstance(value, bool):
            raise InputError(at, value, "give true or false")
        return value
    if op in _ORDER_OPS:
        if not numeric:
            raise InputError(
                at, value, f"{op} compares numbers; {field!r} is text, use eq, ne, in, not_in or matches"
            )
        return to_decimal(value, at)
    if op == "matches":
        if numeric:
            raise InputError(
                at, value, f"matches is a glob over text; {field!r} is a number, use gt/gte/lt/lte"
            )
        if not isinstance(value, str) or not value:
            raise InputError(at, value, "give a glob pattern such as 'h100-*'")
        return value
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise InputError(at, value, "give a non-empty list of values")
        return tuple(_scalar(field, v, f"{at}[{i}]") for i, v in enumerate(value))
    return _scalar(field, value, at)  # eq, ne


def _scalar(field: str, value: object, at: str) -> object:
    if field in NUMERIC_FIELDS:
        return to_decimal(value, at)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(at, value, f"give a text value for {field!r}")
    if field == "workload":  # one spelling (flopwise.vocab): a rule written fine_tune still matches
        return workload_kind(value, at)
    if field == "pricing":
        return pricing_kind(value, at)
    return str(value)


# ---------------------------------------------------------------------------------------------- evaluation


def policy_context(facts: RequestFacts, threshold_flags: Sequence[str] = ()) -> dict[str, object]:
    """The values rules read: every RequestFacts field plus ``threshold_flags`` (ids of crossed thresholds)."""
    ctx: dict[str, object] = {f.name: getattr(facts, f.name) for f in fields(facts)}
    ctx["threshold_flags"] = tuple(threshold_flags)
    return ctx


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(value: object) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else to_decimal(value, "value")


def _leaf(cond: Condition, ctx: Mapping[str, object]) -> tuple[bool, str]:
    field, op, operand = cond.field, cond.op, cond.operand
    value = ctx.get(field)
    missing = value is None or value == "" or value == ()
    label = f"{field} {_show(value) if not missing else '(unknown)'} {op} {_show(operand)}"
    if op == "exists":
        result = (not missing) == operand
        return result, f"{label}: {str(result).lower()}"
    if missing:
        return False, f"{label}: false (no value)"
    if field in NUMERIC_FIELDS:
        number = _number(value)
        if op in ("in", "not_in"):
            result = (number in cast(tuple, operand)) == (op == "in")
        else:
            result = bool(_COMPARE[op](cast(Decimal, number), cast(Decimal, operand)))
        return result, f"{label}: {str(result).lower()}"
    values = tuple(str(v) for v in value) if isinstance(value, (tuple, list)) else (str(value),)
    if op in ("eq", "ne"):
        result = (operand in values) == (op == "eq")
    elif op in ("in", "not_in"):
        result = any(v in cast(tuple, operand) for v in values) == (op == "in")
    else:  # matches
        result = any(fnmatch.fnmatchcase(v, str(operand)) for v in values)
    return result, f"{label}: {str(result).lower()}"


def _evaluate(cond: Condition, ctx: Mapping[str, object], out: list[str], depth: int = 0) -> bool:
    pad = "  " * depth
    if cond.kind == "field":
        result, text = _leaf(cond, ctx)
        out.append(pad + text)
        return result
    if cond.kind == "not":
        at = len(out)
        out.append("")
        result = not _evaluate(cond.children[0], ctx, out, depth + 1)
        out[at] = f"{pad}not: {str(result).lower()}"
        return result
    at = len(out)
    out.append("")
    results = [_evaluate(child, ctx, out, depth + 1) for child in cond.children]
    result = all(results) if cond.kind == "all" else any(results)
    out[at] = f"{pad}{cond.kind} ({sum(results)} of {len(results)} true): {str(result).lower()}"
    return result


def evaluate_policies(policies: Sequence[Policy], ctx: Mapping[str, object]) -> PolicyEvaluation:
    """Evaluate every rule of every policy against *ctx* (see :func:`policy_context`) and combine them.

    The precedence is the one in this module's docstring. Each rule appears in the trace, matched or not,
    with the reading of every condition.
    """
    trace: list[RuleTrace] = []
    matched: list[tuple[str, Rule]] = []
    for policy in policies:
        for rule in policy.rules:
            why: list[str] = []
            hit = True if rule.when is None else _evaluate(rule.when, ctx, why)
            if rule.when is None:
                why.append("no condition: always matches")
            trace.append(RuleTrace(policy.name, rule.id, rule.index, rule.effect, hit, tuple(why)))
            if hit:
                matched.append((policy.name, rule))
    source = matched
    if not matched:
        source = [(p.name, p.default) for p in policies]
        for name, rule in source:
            trace.append(
                RuleTrace(name, rule.id, -1, rule.effect, True, ("no rule matched: policy default",))
            )
    return _combine(source, trace)


def _combine(source: list[tuple[str, Rule]], trace: list[RuleTrace]) -> PolicyEvaluation:
    denies = [(p, r) for p, r in source if r.effect == "deny"]
    if denies:
        return PolicyEvaluation(
            "deny",
            0,
            "",
            tuple(r.message for _, r in denies),
            tuple(f"{p}/{r.id}" for p, r in denies),
            tuple(trace),
        )
    approvals = [(p, r) for p, r in source if r.effect == "require_approval"]
    if approvals:
        count = max(r.approvals for _, r in approvals)
        role = max((r.role for _, r in approvals), key=role_rank)
        reasons = tuple(
            f"{p}/{r.id}: {r.approvals} approval(s) by {r.role}" + (f" ({r.message})" if r.message else "")
            for p, r in approvals
        )
        return PolicyEvaluation(
            "require_approval", count, role, reasons, tuple(f"{p}/{r.id}" for p, r in approvals), tuple(trace)
        )
    allows = [(p, r) for p, r in source if r.effect == "allow"]
    reasons = tuple(f"{p}/{r.id}: allow" + (f" ({r.message})" if r.message else "") for p, r in allows)
    if not source:
        reasons = ("no policy applies: allow",)
    return PolicyEvaluation("allow", 0, "", reasons, tuple(f"{p}/{r.id}" for p, r in allows), tuple(trace))
