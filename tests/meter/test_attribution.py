"""Attribution rules on real Slurm and OpenCost records: priority order, every match key, request ids, nothing dropped."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import InputError
from flopwise.meter.attribution import (
    AttributionRule,
    Scope,
    attribute,
    parse_request_id,
    record_request_id,
    rule_matches,
    validate_match,
)
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.meter.sacct import parse_sacct

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "tests" / "data" / "slurm"
FIXTURES = ROOT / "tests" / "fixtures" / "meter"
T0 = datetime(2025, 1, 1, tzinfo=UTC)

GPU = Scope(1, 10, 100)
CPU = Scope(1, 11, 110)
CATCH_ALL = Scope(1, 12, None)


def _rec(**kw) -> UsageRecord:
    base = {"source": "slurm", "source_key": "k", "charge_period_start": T0, "charge_period_end": T0}
    return UsageRecord(**{**base, **kw})


def _sacct_records() -> list[UsageRecord]:
    path = SLURM / "hb-jobinfo-sacct.txt"
    if not path.exists():
        pytest.skip(f"sample file {path.name} not found in {SLURM}")
    rejected: list[RejectedRow] = []
    with path.open(encoding="utf-8") as f:
        return list(
            parse_sacct(f, rejected=rejected, fields="hb-jobinfo", assume_tz="UTC", catalog=load_catalog())
        )


def test_partition_rules_on_real_sacct_first_match_by_priority_and_none_dropped():
    records = _sacct_records()
    rules = [
        AttributionRule(3, 100, {}, CATCH_ALL),  # catch-all, tried last
        AttributionRule(2, 10, {"partition": "gpu*"}, GPU),
        AttributionRule(1, 20, {"partition": ["regular*", "parallel*"]}, CPU),
    ]
    results = [attribute(r, rules) for r in records]
    assert len(results) == len(records) == 87
    by_scope = Counter(a.scope for a in results)
    parts = Counter(r.tags["partition"] for r in records)
    n_gpu = sum(n for p, n in parts.items() if p.startswith("gpu"))
    n_cpu = sum(n for p, n in parts.items() if p.startswith(("regular", "parallel")))
    assert by_scope[GPU] == n_gpu == 14
    assert by_scope[CPU] == n_cpu == 69
    assert by_scope[CATCH_ALL] == 87 - n_gpu - n_cpu  # himem + gelifes
    assert all(a.basis == "rule" for a in results)


def test_without_a_matching_rule_records_stay_unattributed_with_a_reason():
    records = _sacct_records()
    rules = [AttributionRule(1, 1, {"partition": "gpu*"}, GPU)]
    results = [attribute(r, rules) for r in records]
    unattributed = [a for a in results if not a.is_attributed]
    assert len(unattributed) == 87 - 14
    assert all(a.scope is None and a.basis == "none" and a.reasons for a in unattributed)
    assert attribute(records[0], []).reasons == ("no attribution rules",)


def test_lower_priority_number_wins_then_lower_id():
    rec = _rec(x_account="physics", x_user="ada")
    a = AttributionRule(5, 10, {"account": "physics"}, GPU)
    b = AttributionRule(4, 10, {"user": "ada"}, CPU)
    c = AttributionRule(1, 50, {}, CATCH_ALL)
    assert attribute(rec, [c, a, b]).rule_id == 4  # same priority: lower id
    assert attribute(rec, [c, AttributionRule(9, 1, {"account": "phys*"}, GPU)]).rule_id == 9


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"source": "opencost"}, True),
        ({"source": ["slurm", "focus"]}, False),
        ({"namespace": "ml-*"}, True),
        ({"labels": {"team": "nlp"}}, True),
        ({"label": "team=nl?"}, True),
        ({"tag": {"team": "nlp", "app": "train*"}}, True),
        ({"tags": {"team": "vision"}}, False),
        ({"tag": ["team=vision", "app=trainer"]}, True),  # any of a list
        ({"resource_id": "gke-*-pool-gpu-*"}, True),
        ({"namespace": "ml-*", "labels": {"team": "vision"}}, False),  # all conditions hold
        ({"user": "ada"}, False),  # absent field never matches
    ],
)
def test_kubernetes_match_keys(match, expected):
    rec = _rec(
        source="opencost",
        x_account="ml-research",
        resource_id="gke-prod-pool-gpu-a1b2",
        tags={"team": "nlp", "app": "trainer"},
    )
    assert rule_matches(match, rec) is expected


def test_real_opencost_allocations_by_namespace():
    from flopwise.meter.opencost import parse_opencost_file

    path = FIXTURES / "opencost-allocation-handmade.json"
    rejected: list[RejectedRow] = []
    records = list(parse_opencost_file(path, rejected=rejected, catalog=load_catalog()))
    namespaces = {r.x_account for r in records if r.x_account}
    assert namespaces
    ns = sorted(namespaces)[0]
    rules = [AttributionRule(1, 1, {"namespace": ns}, GPU)]
    hits = [r for r in records if attribute(r, rules).scope == GPU]
    assert hits and all(r.x_account == ns for r in hits)


def test_request_id_wins_over_rules_and_unknown_ids_fall_through():
    rec = _rec(x_account="physics", x_request_id="42")
    rules = [AttributionRule(1, 1, {"account": "physics"}, CPU)]
    scopes = {42: GPU}
    got = attribute(rec, rules, scopes)
    assert (got.scope, got.basis, got.request_id) == (GPU, "request", 42)
    fallback = attribute(rec, rules, {})
    assert (fallback.scope, fallback.basis) == (CPU, "rule")
    none = attribute(rec, [], {})
    assert none.scope is None and "request 42 is not known" in none.reasons


@pytest.mark.parametrize(
    "record",
    [
        _rec(x_request_id="req-7"),
        _rec(tags={"flopwise-request": "7"}),
        _rec(tags={"flopwise-request-id": "request_7"}),
        _rec(x_extra={"comment": "nightly run flopwise-request=7 retry"}),
        _rec(x_extra={"admincomment": "flopwise_request: 7"}),
    ],
)
def test_request_id_from_field_tag_label_or_slurm_comment(record):
    assert record_request_id(record) == 7


def test_parse_request_id_refuses_non_ids():
    assert parse_request_id("12") == 12
    assert parse_request_id("abc") is None
    assert parse_request_id("") is None
    assert parse_request_id(None) is None


@pytest.mark.parametrize(
    "match",
    [
        {"acount": "physics"},
        {"tags": "team=nlp"},
        {"tag": "team"},
        {"account": ""},
        {"user": 3},
        ["account", "x"],
    ],
)
def test_bad_match_is_an_input_error_naming_the_field(match):
    with pytest.raises(InputError) as info:
        validate_match(match)
    assert "match" in str(info.value)
