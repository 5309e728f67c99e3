"""One vocabulary: canonical spellings, aliases accepted on input, a suggestion for anything else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flopwise import vocab
from flopwise.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "flopwise"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fine-tune", "fine-tune"),
        ("fine_tune", "fine-tune"),
        ("Fine Tune", "fine-tune"),
        ("finetune", "fine-tune"),
        ("batch_inference", "batch-inference"),
        (" TRAIN ", "train"),
        ("serve", "serve"),
    ],
)
def test_workload_aliases(value, expected):
    assert vocab.workload_kind(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("on-demand", "on-demand"),
        ("on_demand", "on-demand"),
        ("OnDemand", "on-demand"),
        ("on-prem", "onprem"),
        ("on_prem", "onprem"),
        ("onprem", "onprem"),
        ("Spot", "spot"),
        ("reserved", "reserved"),
    ],
)
def test_pricing_aliases(value, expected):
    assert vocab.pricing_kind(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("sacct", "slurm"), ("nvidia_smi", "nvidia-smi"), ("AWS_CUR", "aws-cur"), ("cur", "aws-cur"), ("dcgm", "dcgm")],
)
def test_source_aliases(value, expected):
    assert vocab.ingest_source(value) == expected


def test_unknown_names_fail_with_field_and_suggestion():
    with pytest.raises(InputError, match=r"pricing: 'on-demnd'.*did you mean 'on-demand'"):
        vocab.pricing_kind("on-demnd")
    with pytest.raises(InputError, match=r"workload: 'fine-tunning'.*did you mean 'fine-tune'"):
        vocab.workload_kind("fine-tunning")
    with pytest.raises(InputError, match=r"--source: 'nvml'.*use one of slurm"):
        vocab.ingest_source("nvml", "--source", allowed=vocab.FILE_SOURCES)
    with pytest.raises(InputError, match="give a name"):
        vocab.workload_kind(3)


def test_canonical_names_are_fixed_points():
    for kinds, fn in (
        (vocab.WORKLOAD_KINDS, vocab.workload_kind),
        (vocab.PRICING_KINDS, vocab.pricing_kind),
        (vocab.INGEST_SOURCES, vocab.ingest_source),
    ):
        assert tuple(fn(k) for k in kinds) == kinds


def test_every_layer_uses_the_one_vocabulary():
    """The store's CHECK, govern, catalog, plan and ingest all hold the same tuples (no second copy)."""
    from flopwise.catalog.pricing import PRICING_KINDS as catalog_pricing
    from flopwise.govern.facts import PRICING_KINDS as govern_pricing
    from flopwise.govern.facts import WORKLOAD_KINDS as govern_workloads
    from flopwise.meter.ingest import INGEST_SOURCE_NAMES
    from flopwise.plan.candidates import PRICING_KINDS as plan_pricing
    from flopwise.store import INGEST_SOURCES, WORKLOAD_KINDS

    assert WORKLOAD_KINDS is govern_workloads is vocab.WORKLOAD_KINDS
    assert catalog_pricing is govern_pricing is plan_pricing is vocab.PRICING_KINDS
    assert INGEST_SOURCES is vocab.INGEST_SOURCES
    assert INGEST_SOURCE_NAMES == vocab.FILE_SOURCES


def _string_tuples(path: Path) -> list[tuple[str, ...]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Tuple) and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
        ):
            out.append(tuple(e.value for e in node.elts))  # type: ignore[attr-defined]
    return out


def test_no_second_spelling_table_in_the_package():
    """No module but vocab.py spells out a vocabulary, and no translation dict maps one spelling to another."""
    vocabularies = [set(vocab.WORKLOAD_KINDS), set(vocab.PRICING_KINDS), set(vocab.FILE_SOURCES)]
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "vocab.py" or "migrations" in path.parts:
            continue
        for values in _string_tuples(path):
            if any(set(values) >= v for v in vocabularies):  # a copy of a whole vocabulary
                offenders.append(f"{path.relative_to(SRC)}: {values}")
        text = path.read_text().replace('else "on-prem"', "")  # a display label in plan/candidates.py
        for old in ('"fine_tune"', '"batch_inference"', '"on_demand"', '"on-prem"'):
            if old in text:
                offenders.append(f"{path.relative_to(SRC)}: {old}")
    assert offenders == []


def test_request_facts_and_policies_take_aliases():
    from decimal import Decimal

    from flopwise.govern.facts import RequestFacts
    from flopwise.govern.policy import evaluate_policies, parse_policy, policy_context

    facts = RequestFacts(
        workload="fine_tune", flops=1e20, device_type="h100-sxm", device_class="datacenter", device_count=8,
        duration_s=3600.0, device_hours=8.0, cost_usd=Decimal("20"), energy_kwh=5.0, co2e_kg=2.0,
        pricing="on_demand",
    )  # fmt: skip
    assert (facts.workload, facts.pricing) == ("fine-tune", "on-demand")
    # a rule written with the old spellings still matches (its literals are normalized when parsed)
    policy = parse_policy(
        "name: p\nrules:\n  - id: r\n    when: {all: [{field: workload, eq: fine_tune},"
        " {field: pricing, in: [on_demand, on-prem]}]}\n    effect: deny\n    message: blocked\n"
    )
    assert evaluate_policies([policy], policy_context(facts)).outcome == "deny"
    with pytest.raises(InputError, match=r"when\.eq: 'spto'.*\(did you mean 'spot'\?\)"):
        parse_policy("name: p\nrules:\n  - id: r\n    when: {field: pricing, eq: spto}\n    effect: deny\n    message: x\n")
