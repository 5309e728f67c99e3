"""flopwise.validation.online_fit and the tpot_ms category: TPOT under load against published online cases."""

import pytest

from flopwise.estimate import serve
from flopwise.validation import MEDIAN_BOUNDS, load_cases, run_validation
from flopwise.validation.online_fit import (
    GRID,
    fit_online,
    in_sample_errors,
    leave_one_source_out,
    summary_rows,
)


@pytest.fixture(scope="module")
def fit():
    return fit_online(load_cases())


def test_the_committed_overhead_is_the_fitted_one(fit):
    assert not fit.skipped
    assert len(fit.cases) >= 10
    assert pytest.approx(fit.layer_overhead_s, abs=(GRID[1] - GRID[0]) / 2) == serve.ONLINE_LAYER_OVERHEAD_S


def test_at_least_two_independent_sources_and_three_engines(fit):
    assert len({c.source_url for c in fit.cases}) >= 2
    assert {str(c.inputs["engine"]) for c in fit.cases} >= {"vllm", "sglang", "trt-llm"}
    # both kinds of load: request rate (open loop) and concurrency (closed loop)
    assert any(c.inputs["arrival_rps"] for c in fit.cases) and any(c.inputs["concurrency"] for c in fit.cases)


def test_in_sample_and_leave_one_source_out_errors(fit):
    rows = {(r["engine"], r["source"]): r for r in summary_rows(fit)}
    overall = rows[("all", "all")]
    assert overall["median_abs_rel_error_in_sample"] <= MEDIAN_BOUNDS["tpot_ms"]
    # issue 8: leave-one-source-out within 1.5x of in-sample
    assert overall["median_abs_rel_error_loso"] <= 1.5 * overall["median_abs_rel_error_in_sample"] + 1e-9
    blocks = leave_one_source_out(fit)
    assert set(blocks) == {c.source_url for c in fit.cases}
    held = sum(len(b["errors"]) for b in blocks.values())
    assert held == len(fit.cases) == len(in_sample_errors(fit))


def test_validate_reports_the_tpot_category():
    report = run_validation(categories=["tpot_ms"])
    s = report.summary("tpot_ms")
    assert s.n >= 10 and s.n_failed == 0 and s.n_skipped == 0
    assert s.median_abs_rel_error <= MEDIAN_BOUNDS["tpot_ms"]
    engines = {row["engine"] for row in report.by_engine() if row["category"] == "tpot_ms"}
    assert engines >= {"vllm", "sglang", "trt-llm"}
