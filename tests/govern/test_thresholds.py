"""Regulatory thresholds: the data file, TPP of known devices, and the flags a request raises."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import InputError
from flopwise.govern import (
    device_peak_flop_per_s,
    device_tpp,
    flag_thresholds,
    load_thresholds,
    parse_thresholds,
)
from flopwise.govern.thresholds import THRESHOLD_COLUMNS

from .conftest import make_facts

DATA = Path(__file__).resolve().parents[2] / "src" / "flopwise" / "govern" / "data" / "thresholds.csv"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def thresholds():
    return load_thresholds()


def test_data_file_rows_have_provenance_and_the_required_lines(thresholds):
    by_id = {t.id: t for t in thresholds}
    assert len(by_id) == len(thresholds)
    for t in thresholds:
        assert t.source_url.startswith("https://") and t.note and t.as_of and t.retrieved
    expected = {
        "eu-ai-act-gpai-indicator": (Fraction(10**23), "guidance"),
        "eu-ai-act-systemic-risk": (Fraction(10**25), "in_force"),
        "eu-ai-act-modification": (Fraction(1, 3), "guidance"),
        "us-eo14110-model-reporting": (Fraction(10**26), "rescinded"),
        "us-eo14110-large-cluster": (Fraction(10**20), "rescinded"),
        "us-3a090a-tpp": (Fraction(4800), "in_force"),
    }
    for tid, (value, status) in expected.items():
        assert (by_id[tid].value, by_id[tid].status) == (value, status), tid
    assert by_id["us-eo14110-model-reporting"].as_of == "2025-01-20"  # EO 14148


def test_parse_thresholds_rejects_bad_cells_with_line_and_column():
    text = DATA.read_text(encoding="utf-8")
    header, first, *_ = text.splitlines()
    with pytest.raises(InputError, match=r"line 2 status"):
        parse_thresholds(header + "\n" + first.replace(",guidance,", ",maybe,", 1))
    with pytest.raises(InputError, match=r"line 2 value"):
        parse_thresholds(header + "\n" + first.replace(",1e23,", ",-5,", 1))
    with pytest.raises(InputError, match=r"line 3 id"):
        parse_thresholds(header + "\n" + first + "\n" + first)
    with pytest.raises(InputError, match="header"):
        parse_thresholds("id,value\nx,1\n")
    assert ",".join(THRESHOLD_COLUMNS) == header


@pytest.mark.parametrize(
    ("device_id", "tpp"),
    [
        # TPP = dense peak (T op/s, one MAC = 2 ops) x bit length, max over precisions (ECCN 3A090)
        ("h100-sxm", 1978.9 * 8),  # 15,831: the commonly quoted ~15,800-16,000
        ("h200-sxm", 1978.9 * 8),  # same GH100 compute
        ("h100-pcie", 1513 * 8),  # 12,104
        ("a100-sxm-80gb", 4992),  # 312 bf16 x 16 = 624 int8 x 8 = 4992
        ("h20", 2368),  # 296 x 8: the China part sits under 3A090.b's 2400
        ("rtx-4090", 660.6 * 8),  # 5,285: above 4800, the reason it was restricted in 2023
        ("l40s", 733 * 8),
    ],
)
def test_tpp_of_known_devices(catalog, device_id, tpp):
    value, dtype = device_tpp(catalog.device(device_id))
    assert math.isclose(value, tpp, rel_tol=1e-6), (device_id, value, dtype)


def test_tpp_picks_the_max_over_precisions_and_names_it(catalog):
    h100 = catalog.device("h100-sxm")
    assert device_tpp(h100) == (pytest.approx(15831.2), "fp8")
    assert device_tpp(h100)[0] > h100.peak_bf16_tflop_per_s * 16 - 1  # fp16 x 16 ties within rounding
    assert device_peak_flop_per_s(h100) == pytest.approx(1978.9e12)


def test_training_compute_flags(thresholds):
    flags = flag_thresholds(make_facts(flops=2e25), thresholds)
    assert [f.threshold_id for f in flags] == ["eu-ai-act-gpai-indicator", "eu-ai-act-systemic-risk"]
    assert flags[1].status == "in_force" and "1e+25" in flags[1].message
    assert [f.threshold_id for f in flag_thresholds(make_facts(flops=1e25), thresholds)] == [
        "eu-ai-act-gpai-indicator"  # "greater than 10^25": exactly 1e25 does not cross
    ]
    us = flag_thresholds(make_facts(flops=2e26), thresholds)
    assert flags_by_id(us)["us-eo14110-model-reporting"].status == "rescinded"
    assert (
        flag_thresholds(make_facts(workload="serve", flops=2e26), thresholds) == []
    )  # serving is not training


def flags_by_id(flags):
    return {f.threshold_id: f for f in flags}


def test_bio_threshold_applies_only_to_biological_sequence_data(thresholds):
    assert "us-eo14110-bio-model-reporting" not in flags_by_id(
        flag_thresholds(make_facts(flops=5e23), thresholds)
    )
    bio = make_facts(flops=5e23, data_classification="biological-sequence")
    assert "us-eo14110-bio-model-reporting" in flags_by_id(flag_thresholds(bio, thresholds))


def test_modification_one_third_rule(thresholds):
    base = 3.8e25  # Llama 3.1 405B's reported training compute
    over = make_facts(workload="fine-tune", flops=base / 3 * 1.01, base_model_flops=base)
    under = make_facts(workload="fine-tune", flops=base / 3 * 0.99, base_model_flops=base)
    exact = make_facts(workload="fine-tune", flops=1.0, base_model_flops=3.0)
    unknown = make_facts(workload="fine-tune", flops=1e24)
    assert "eu-ai-act-modification" in flags_by_id(flag_thresholds(over, thresholds))
    assert "eu-ai-act-modification" not in flags_by_id(flag_thresholds(under, thresholds))
    assert "eu-ai-act-modification" not in flags_by_id(
        flag_thresholds(exact, thresholds)
    )  # 1/3 is not above 1/3
    assert "eu-ai-act-modification" not in flags_by_id(flag_thresholds(unknown, thresholds))


def test_large_cluster_and_export_control_flags(catalog, thresholds):
    h100 = catalog.device("h100-sxm")
    n = math.ceil(1e20 / 1978.9e12)  # 50,534 H100s reach 1e20 op/s
    big = flags_by_id(flag_thresholds(make_facts(device_count=n), thresholds, device=h100))
    small = flags_by_id(flag_thresholds(make_facts(device_count=n - 1), thresholds, device=h100))
    assert "us-eo14110-large-cluster" in big and "us-eo14110-large-cluster" not in small
    assert "us-3a090a-tpp" in small and "in region 'aws:us-east-1'" in small["us-3a090a-tpp"].message
    # the peak in the facts counts even without a catalog device
    assert "us-eo14110-large-cluster" in flags_by_id(
        flag_thresholds(make_facts(device_count=n, peak_flop_per_s_per_device=1978.9e12), thresholds)
    )


def test_performance_density_bands(catalog, thresholds):
    h100 = catalog.device("h100-sxm")
    dense = flags_by_id(flag_thresholds(make_facts(), thresholds, device=h100, die_area_mm2=814))  # GH100 die
    assert "us-3a090a-density" in dense and "us-3a090b-tpp-density" not in dense
    h20 = catalog.device("h20")
    facts = make_facts(device_type="h20")
    assert (
        flag_thresholds(facts, thresholds, device=h20) == []
    )  # TPP 2368: under every line without a die area
    # a hypothetical 2368-TPP part on a 1000 mm^2 die: density 2.37 (< 3.2), TPP < 2400 -> not 3A090.b
    assert flag_thresholds(facts, thresholds, device=h20, die_area_mm2=1000) == []
    # on a 700 mm^2 die: density 3.38 -> 3A090.b second limb
    assert list(flags_by_id(flag_thresholds(facts, thresholds, device=h20, die_area_mm2=700))) == [
        "us-3a090b-density"
    ]


def test_device_must_match_the_request(catalog, thresholds):
    with pytest.raises(InputError, match="device"):
        flag_thresholds(make_facts(), thresholds, device=catalog.device("a100-sxm-80gb"))
