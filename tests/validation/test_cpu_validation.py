"""Published CPU/edge decode runs with thread counts against the CPU-slice estimate."""

from __future__ import annotations

from flopwise.validation.cpu import load_cpu_cases, run_cpu_validation

#: measured at commit time: median |err| 0.109 over 12 runs (3 pages: 13900K and GCP C3 in one thread, Raspberry Pi 5, OnePlus 12
#: phone with ExecuTorch); thread scaling (13900K 8/16/24/32 vs 4 threads) -11.6%, +3.5%, -3.0%, +2.1% (median 0.033,
#: max 0.116). Before the Raptor Lake bandwidth curve, the AVX2 decode kernel rate and the tested DRAM (DDR5-6400):
#: median 0.140, 8 vs 4 threads -17.0%.
MEDIAN_BOUND = 0.15  # the target of the CPU issue
SCALING_MEDIAN_BOUND = 0.15
#: the issue's target for thread scaling (4 vs 8 vs all cores within 15%). The worst ratio is 8 vs 4 threads on the
#: 13900K (-11.6%): 4 threads are limited by llama.cpp's per-core matrix x vector kernel (4 x 42.3 GFLOP/s: 12.8
#: tokens/s vs 12.65 measured), 8 and more by the DRAM (the published Raptor Lake curve has 4 cores drawing 94% of
#: the socket already).
SCALING_MAX_BOUND = 0.15
#: prompt processing (13900K pp512, 4-32 threads), llama.cpp's per-core kernel rates from other machines
#: (catalog/data/cpu_kernels.csv): median |err| 0.172 at commit time (0.67 with int8 peak x efficiency before)
PREFILL_MEDIAN_BOUND = 0.25


def test_cases_are_sourced_and_cover_several_thread_counts():
    cases = load_cpu_cases()
    assert len({c.source_url for c in cases}) >= 3
    assert any(c.device == "snapdragon-8-gen-3-cpu" for c in cases)  # a phone
    assert len({c.threads for c in cases if c.device == "core-i9-13900k"}) >= 3


def test_cpu_decode_error_and_thread_scaling_within_bounds():
    v = run_cpu_validation()
    assert v.median_abs_rel_error <= MEDIAN_BOUND, v.to_dict()
    assert v.scaling_median_abs_rel_error <= SCALING_MEDIAN_BOUND, v.scaling
    assert v.scaling_max_abs_rel_error <= SCALING_MAX_BOUND, v.scaling
    d = v.to_dict()
    assert d["leave_one_source_out_median_abs_rel_error"] == d["median_abs_rel_error"]
    assert v.prefill_median_abs_rel_error is not None
    assert v.prefill_median_abs_rel_error <= PREFILL_MEDIAN_BOUND, v.to_dict()["cases"]


def test_kernel_rates_come_from_other_sources_than_the_cases():
    """Leave-one-source-out holds by construction: no kernel rate or bandwidth curve point is taken from a
    validation source."""
    from flopwise.catalog.cpu import _bandwidth_curves, kernel_rates

    case_sources = {c.source_url for c in load_cpu_cases()}
    assert not {k.source_url for k in kernel_rates().values()} & case_sources
    curve_sources = {p.source_url for pts in _bandwidth_curves().values() for p in pts}
    assert not curve_sources & case_sources


def test_runs_are_estimated_on_the_tested_machines_dram():
    # the 13900K runs were on DDR5-6400 (the source says so); the catalog device has DDR5-5600
    v = run_cpu_validation()
    k13 = [r for r in v.rows if r["device"] == "core-i9-13900k"]
    assert k13 and all(r["memory_gb_per_s"] == 102.4 for r in k13)
    c3 = next(r for r in v.rows if r["device"] == "xeon-8480plus")
    assert c3["memory_gb_per_s"] == 307.2  # no statement: the catalog's
    # the mechanism behind the 8-vs-4 ratio: 4 threads kernel-bound, 8 bandwidth-bound on the measured curve
    dec = {r["threads"]: r for r in k13 if r["category"] == "decode_tokens_per_s"}
    assert dec[4]["bandwidth_basis"] == "measured curve"
    assert abs(dec[4]["rel_error"]) <= 0.05 and abs(dec[8]["rel_error"]) <= 0.15


def test_bad_tested_memory_names_the_column(tmp_path):
    import pytest

    from flopwise.errors import CatalogFileError
    from flopwise.validation.cpu import CASES_PATH

    lines = CASES_PATH.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "cases_cpu.csv"
    bad.write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",-5"]) + "\n", encoding="utf-8")
    with pytest.raises(CatalogFileError, match="memory_gb_per_s must be > 0"):
        load_cpu_cases(bad)


def test_prompt_processing_scaling_checks_hybrid_thread_placement():
    # llama-bench pp512 on a 13900K (8 P + 16 E cores): compute-bound, so the ratio to 4 threads shows where the
    # threads land. Measured at commit time vs 4 threads: 8 +33%, 16 -10%, 24 +5%, 32 (SMT) -11%; counting the
    # cores alike would give 16 +144% and 24 +186%.
    v = run_cpu_validation()
    pp = {s["threads"]: s for s in v.prefill_scaling}
    assert set(pp) == {8, 16, 24, 32}
    for t in (16, 24, 32):
        assert abs(pp[t]["rel_error"]) <= 0.15, pp[t]
    # threads past the 8 P-cores run at the E-core pace: 16 threads are modelled slower than 8
    assert pp[16]["estimated_ratio"] < pp[8]["estimated_ratio"]
    assert len([r for r in v.rows if r["category"] == "decode_tokens_per_s"]) == 12
