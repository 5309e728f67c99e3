"""flopwise.validation.engine_fit: engine compute efficiencies fitted to the published batched-serving cases."""

import numpy as np
import pytest

from flopwise.catalog.engines import get_engine
from flopwise.validation import load_cases
from flopwise.validation.engine_fit import (
    GRID,
    THROUGHPUT_CATEGORY,
    _best,
    energy_loso_efficiency,
    fit_engines,
    in_sample_errors,
    leave_one_source_out,
    summary_rows,
)


@pytest.fixture(scope="module")
def fit():
    return fit_engines(load_cases())


def test_engines_csv_holds_the_fitted_efficiencies(fit):
    assert set(fit.efficiency) == {"trt-llm", "vllm", "sglang"}
    assert not fit.skipped
    for eng, value in fit.efficiency.items():
        assert get_engine(eng).compute_efficiency_frac == pytest.approx(value, abs=0.0051), eng


def test_engine_backends_csv_holds_the_per_vendor_fits(fit):
    # vLLM is the one engine measured on two vendors: CUDA (NVIDIA) and ROCm (AMD MI300X)
    assert set(fit.backend_efficiency) == {("vllm", "nvidia"), ("vllm", "amd")}
    for (eng, vendor), value in fit.backend_efficiency.items():
        assert get_engine(eng).compute_efficiency_by_vendor[vendor] == pytest.approx(value, abs=0.0051)


def test_energy_throughputs_join_the_fit_and_their_held_out_value_is_reported(fit):
    tput = [c for c in fit.cases if c.category == THROUGHPUT_CATEGORY]
    assert len(tput) == 44 and all(c.id.endswith("-throughput") for c in tput)
    assert {fit.vendors[fit.cases.index(c)] for c in tput} == {"nvidia"}
    held = energy_loso_efficiency(fit, "https://ml.energy/leaderboard", "vllm", "nvidia")
    assert held != fit.backend_efficiency[("vllm", "nvidia")]
    # without the energy throughputs the CUDA backend rests on two saturation rows
    small = fit_engines(load_cases(), with_energy=False)
    assert (
        sum(
            1
            for i, c in enumerate(small.cases)
            if small.vendors[i] == "nvidia" and c.inputs["engine"] == "vllm"
        )
        == 2
    )


def test_a_backend_held_out_takes_its_engines_pooled_refit(fit):
    oracle = (
        "https://blogs.oracle.com/cloud-infrastructure/post/serving-llama-31-405b-model-with-amd-mi300x-gpus"
    )
    block = leave_one_source_out(fit)[oracle]
    assert ("vllm", "amd") not in block["backend_efficiency"]
    mi300x = {c.id for c in fit.cases if c.source_url == oracle}
    i = next(i for i, c in enumerate(fit.cases) if c.id in mi300x)
    assert (
        fit.efficiency_of(i, block["efficiency"], block["backend_efficiency"]) == block["efficiency"]["vllm"]
    )


def test_leave_one_source_out_refits_without_the_held_out_source(fit):
    loso = leave_one_source_out(fit)
    assert set(loso) == {c.source_url for c in fit.cases}
    held = {cid for block in loso.values() for cid, _, _ in block["errors"]}
    assert held == {c.id for c in fit.cases}  # every case is predicted exactly once, from the other sources
    sglang_only = "https://github.com/sgl-project/sglang/blob/120affb9613cc3f5bcd055ec09c7621d3ced0ebc/benchmark/benchmark_vllm_060/README.md"
    eff = loso[sglang_only]["efficiency"]
    # SGLang has no other source: it takes the median of the other engines' refitted efficiencies
    assert eff["sglang"] == pytest.approx(float(np.median([eff["trt-llm"], eff["vllm"]])))
    for block in loso.values():
        assert all(np.isfinite(e) for _, _, e in block["errors"])


def test_a_case_the_efficiency_does_not_move_does_not_move_the_fit():
    sensitive = np.log(np.linspace(0.5, 2.0, len(GRID)))[None, :]  # exact at the middle of the grid
    flat = np.full((3, len(GRID)), 0.8)  # latency-bound cases: same error at every efficiency
    assert _best(sensitive) == _best(np.vstack([sensitive, flat]))


def test_summary_rows_report_in_sample_and_loso_per_engine(fit):
    rows = summary_rows(fit)
    cats = {(r["category"], r["engine"]) for r in rows}
    assert ("saturation_tokens_per_s", "sglang") in cats and ("ttft_ms", "all") in cats
    ins = {cid: e for cid, _, e in in_sample_errors(fit)}
    assert len(ins) == len(fit.cases)
    for r in rows:
        assert 0 <= r["median_abs_rel_error_in_sample"] < 1.0
        assert 0 <= r["median_abs_rel_error_loso"] < 1.5
