"""The load-dependent power fit (flopwise.validation.energy), the committed constants, energy per output token and
the fits-check of every published run in the energy cases."""

from __future__ import annotations

import statistics

import pytest

from flopwise.catalog import load_catalog
from flopwise.estimate import energy as en
from flopwise.estimate import estimate_serve
from flopwise.models import load_models
from flopwise.validation import load_cases
from flopwise.validation.energy import CATEGORY, J_CATEGORY, power_fit_report


@pytest.fixture(scope="module")
def report():
    return power_fit_report()


def test_committed_constants_are_the_fit(report):
    assert en.DYNAMIC_POWER_W_PER_RATE["default"] == pytest.approx(report.rates, abs=0.05)
    assert set(report.generation_rates) == set(en.DYNAMIC_POWER_W_PER_RATE) - {"default"}
    for gen, rates in report.generation_rates.items():
        assert en.DYNAMIC_POWER_W_PER_RATE[gen] == pytest.approx(rates, abs=0.05), gen


def test_every_case_has_a_source_and_held_out_errors(report):
    assert len(report.rows) >= 48
    assert {r["generation"] for r in report.rows} >= {"hopper", "ampere"}
    assert len({r["source_url"] for r in report.rows}) >= 2
    for r in report.rows:
        assert r["source_url"].startswith("https://")
        assert r["loso_basis"].startswith("refit on"), r  # every case is held out against another source
        for col in ("in_sample", "leave_one_case_out", "leave_one_source_out"):
            assert abs(r[col]) < 1.0, (r["id"], col, r[col])


def test_power_errors_against_the_targets(report):
    # measured at commit time (median |error|): H100 (42 cases, 2 sources) in-sample 8.0%, leave one case out 8.3%,
    # leave one model out 7.6%, leave one source out 22.1% (ML.ENERGY v3.0 cases 25.7% from the A100 +
    # LLM-Inference-Bench fit, LLM-Inference-Bench cases 18.0% from the ML.ENERGY fits), fixed 0.9/0.6 shares 18.0%;
    # A100 11.1%, 12.1%, 12.8%, 6.6% (the H100 + B200 fit), 28.3%. Targets H100 10%, A100 15%: A100 met held out;
    # H100 met in-sample, leaving a case out and leaving a model out, not leaving a source out (only the ML.ENERGY
    # v3.0 cases at large batch set the compute term; the other sources put it at 0).
    assert report.median("in_sample", "hopper") <= 0.10
    assert report.median("leave_one_case_out", "hopper") <= 0.10
    assert report.median("leave_one_model_out", "hopper") <= 0.10
    assert report.median("in_sample", "ampere") <= 0.12
    assert report.median("leave_one_source_out", "ampere") <= 0.15
    assert report.median("leave_one_source_out", "ampere") < report.median("fixed_share_model", "ampere")
    # After merging the serving step times of the fidelity pass (and refitting): H100 6.7%, 7.1%, 9.6%, 23.1%;
    # A100 10.9%, 12.7%, 13.4%, 7.8%.
    # With the TDP anchor in the H100 fit (and leave-one-source-out refitting per generation): H100 6.5%, 6.8%,
    # 7.8%, 9.6% (ML.ENERGY v3.0 cases 8.2% from the LLM-Inference-Bench cases + anchor; LLM-Inference-Bench 13.5%);
    # A100 unchanged (its cases alone place the anchor workload at -76% of TDP, so it takes no anchor).
    assert report.median("leave_one_source_out", "hopper") <= 0.10
    assert len({r["source_url"] for r in report.rows if r["generation"] == "hopper"}) >= 2


def test_anchor_identifies_the_compute_term_without_the_large_batch_source(report):
    """The H100 anchor (a compute-bound prefill at the 700 W TDP) is no grading measurement, and the ML.ENERGY v3.0
    cases alone (the only large-batch source) agree with it; held out, they are predicted from the small-batch
    LLM-Inference-Bench cases plus the anchor."""
    anchors = {an.generation: an for an in report.anchors}
    assert set(anchors) == set(en.ANCHORED_GENERATIONS)
    hop = anchors["hopper"]
    assert hop.power_w == 700.0 and hop.device == "h100-sxm"
    assert abs(report.anchor_gap["hopper"]) <= 0.10  # the cases alone: -4%
    assert report.anchor_gap["ampere"] < -0.5  # the A100 cases alone: -76%, no anchor
    # the committed H100 rates put the anchor workload at its TDP within the anchor's stated sd
    assert hop.predict_w(en.DYNAMIC_POWER_W_PER_RATE["hopper"]) == pytest.approx(700.0, rel=0.05)
    mlenergy_h100 = [r for r in report.rows if r["generation"] == "hopper" and "mlenergy-v3" in r["id"]]
    assert all("anchor" in r["loso_basis"] for r in mlenergy_h100)
    assert statistics.median(abs(r["leave_one_source_out"]) for r in mlenergy_h100) <= 0.10  # 8.2%


def test_tensor_parallel_measured_lower_and_estimated_lower(report):
    rows = {r["id"]: r for r in report.rows}
    tp8 = rows["mlenergy-2024-llama-2-70b-a100-40gb-x8-rate1.00"]
    tp1 = rows["mlenergy-2024-llama-2-13b-a100-40gb-x1-rate1.00"]
    assert tp8["measured_w"] < tp1["measured_w"]
    assert tp8["in_sample_w"] < tp1["in_sample_w"]


def test_energy_per_output_token_is_graded_with_its_throughput_split(report):
    assert len(report.j_rows) >= 38
    h100 = [r for r in report.j_rows if r["device"] == "h100-sxm"]
    assert len(h100) >= 34 and all(r["measured_power_w"] for r in h100)
    for r in h100:
        # the source gives throughput: the energy error is the power error over the throughput error
        assert 1 + r["in_sample"] == pytest.approx((1 + r["power_error"]) / (1 + r["throughput_error"]), rel=0.02)
    # measured after merging the fidelity pass's serving step times (and refitting the power rates): power -16% to
    # +13% on the H100 rows (median |6.4%|), throughput -38% to +241% (median |8.0%|; Llama 4 Maverick on 8 H100,
    # expert parallel, +73% to +241%); energy per output token median |16.3%| (9.9% without Maverick).
    # With the H100 anchor: power -16% to +13% (median |6.1%|), energy per output token median |15.5%| (9.8%
    # without Maverick); the 15% target is not met while Maverick's throughput is 1.7-3.4x too high.
    assert max(abs(r["power_error"]) for r in h100) <= 0.20
    assert statistics.median(abs(r["throughput_error"]) for r in h100) <= 0.10
    assert statistics.median(abs(r["in_sample"]) for r in h100) <= 0.20
    for r in report.j_rows:
        assert r["measured_j"] > 0 and r["estimated_j"] > 0 and r["source_url"].startswith("https://")


def test_every_published_run_fits():
    """0 'does not fit' for a configuration a published engine run shows fitting: every energy case ran."""
    cat, reg = load_catalog(), load_models()
    cases = [c for c in load_cases() if c.category in (CATEGORY, J_CATEGORY)]
    assert len(cases) >= 86
    for c in cases:
        i = c.inputs
        e = estimate_serve(
            reg.get(c.model), cat.devices[c.device], device_count=c.device_count or 1, quant=i["quant"] or "bf16",
            batch=i["batch"], input_tokens=i["input_tokens"], output_tokens=i["output_tokens"], engine=i["engine"],
        )  # fmt: skip
        assert bool(e.fits), (c.id, float(e.memory_gb))
        assert not any(w.startswith("does not fit") for w in e.warnings), c.id


def test_throughput_error_splits_into_decode_step_and_the_rest(report):
    # the ML.ENERGY rows that also give the median inter-token latency: (1 + throughput error) is exactly the
    # decode-step factor times the rest (prefill, prompt-carrying steps, tail)
    rows = [r for r in report.j_rows if r.get("measured_median_itl_ms")]
    assert len(rows) >= 28
    for r in rows:
        prod = (1 + r["decode_step_error"]) * (1 + r["overhead_error"])
        assert 1 + r["throughput_error"] == pytest.approx(prod, rel=1e-9), r["id"]
        assert r["overhead_meas"] >= 1.0 and r["overhead_est"] >= 1.0
    by_id = {r["id"]: r for r in rows}
    # measured 2026-12-06: Llama 3.1 8B's decode step is estimated too fast at every batch (+14% at 8 to +25% at
    # 384-768), Llama 3.1 70B on 4 H100 too slow from batch 128 (-8% to -22% at 898); the static-batch rest
    # (prefill as its own phase) is too slow for both at large batch (measured 1.02-1.30 per step, estimated
    # 1.04-1.57), so the 8B's two errors cancel and the 70B's compound (-38% at 898)
    small = [r for r in rows if "llama-3.1-8b-h100" in r["id"]]
    assert all(r["decode_step_error"] > 0.10 for r in small)
    big = by_id["mlenergy-v3-llama-3.1-70b-4xh100-b1024-j-per-token"]
    assert big["decode_step_error"] < -0.15 and big["overhead_error"] < -0.15
    # Llama 4 Maverick (expert parallel): the whole miss is the decode step (+73% to +230%), the rest within 6%
    moe = [r for r in rows if "maverick" in r["id"]]
    assert len(moe) == 9
    assert all(r["decode_step_error"] > 0.5 and abs(r["overhead_error"]) < 0.06 for r in moe)


def test_decode_step_check_separates_the_efficiency():
    # analysis of the README: at vLLM's committed efficiency no host term fits the 8B and 70B steps together; at
    # TensorRT-LLM's efficiency one does, within 5% for all 17 measured steps
    from flopwise.validation.energy import decode_step_check

    low = decode_step_check(0.285)
    high = decode_step_check(0.675, 2.0)
    assert len(low["residuals"]) == 17
    assert low["max_abs_residual"] > 0.25
    assert high["max_abs_residual"] < 0.06
    assert 20e-6 < high["c1_s_per_seq"] < 50e-6 and 0.3e-3 < high["c0_s"] < 1.0e-3
