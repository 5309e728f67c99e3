"""Validation cases and runner: the case files are well-formed and sourced, the statistics are right, and
flopwise's default estimates stay within the stated error bounds of published measurements."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import flopwise.estimate
from flopwise.errors import CatalogFileError, InputError, UnknownModelError, UnsupportedError
from flopwise.validation import (
    CATEGORIES,
    DATA_DIR,
    MEDIAN_BOUNDS,
    CaseResult,
    load_cases,
    percentile,
    run_validation,
    summarize,
)

# --------------------------------------------------------------------------------------------------------
# case files


def test_case_files_have_enough_sourced_cases():
    cases = load_cases()
    per_cat = Counter(c.category for c in cases)
    n_train = per_cat["train_device_hours"] + per_cat["train_flops"]
    n_serve = per_cat["decode_tokens_per_s"] + per_cat["prefill_tokens_per_s"]
    assert len(cases) >= 45
    assert n_train >= 15
    assert n_serve >= 20
    # GPU power and energy per token: the published NVML measurements with their workload stated are few
    few = ("avg_power_w_per_device", "energy_j_per_output_token")
    assert all(per_cat[c] >= (3 if c in few else 5) for c in CATEGORIES), per_cat
    for c in cases:
        assert c.source_url.startswith("https://"), c.id
        assert c.source_location and c.retrieved and c.basis in ("measured", "derived"), c.id
        assert c.measured > 0, c.id
        if c.basis == "derived":
            assert c.note, f"{c.id}: a derived figure must say how in note"


def test_case_workload_inputs_are_plausible():
    for c in load_cases():
        if c.category == "train_tflops_per_device":
            assert c.inputs["seq_len"] in (2048, 8192, 131072), c.id
            assert c.device_count is None or c.device_count >= 8, c.id  # None: the source gives no count
        elif c.category in ("batch_output_tokens_per_s_per_device", "ttft_ms"):
            assert c.inputs["engine"] and 1 <= c.inputs["batch"] <= 4096, c.id
            assert c.inputs["input_tokens"] in (128, 2048), c.id
        elif c.category == "saturation_tokens_per_s":
            assert c.inputs["engine"] and c.inputs["batch"] is None, c.id  # the engine picks the batch
            assert 128 <= c.inputs["input_tokens"] <= 2048 and 128 <= c.inputs["output_tokens"] <= 4096, c.id
        elif c.category == "avg_power_w_per_device":
            assert c.inputs["engine"] == "vllm" and 1 <= c.inputs["batch"] <= 1024, c.id
            assert 100 <= c.measured <= 1200 and c.device_count in (1, 2, 4, 8), c.id
        elif c.category == "energy_j_per_output_token":
            assert c.inputs["engine"] == "vllm" and 1 <= c.inputs["batch"] <= 4096, c.id
            assert 0.01 <= c.measured <= 100 and c.device_count in (1, 2, 4, 8), c.id
        elif c.category == "tpot_ms":
            # online serving: the load is a request rate or a concurrency, never a batch
            assert c.inputs["engine"] and c.inputs["batch"] is None, c.id
            assert (c.inputs["arrival_rps"] is None) != (c.inputs["concurrency"] is None), c.id
            assert 1 <= c.measured <= 1000 and c.device_count in (1, 2, 4, 8), c.id
        elif c.category.startswith("train"):
            assert 1e9 <= c.inputs["tokens"] <= 1e14, c.id
            assert c.inputs["seq_len"] in (2048, 4096, 8192), c.id
        else:
            assert c.inputs["batch"] == 1 and c.device_count == 1, c.id
            if c.category == "prefill_tokens_per_s":
                assert c.inputs["input_tokens"] == 512, c.id
            else:
                assert c.inputs["output_tokens"] in (128, 512), c.id


def test_every_source_is_listed_in_the_readme():
    readme = (DATA_DIR.parent / "README.md").read_text(encoding="utf-8")
    for url in {c.source_url for c in load_cases()}:
        assert url in readme, f"{url} is missing from src/flopwise/validation/README.md"


def _copy_data(tmp_path: Path) -> Path:
    for name in ("cases_train.csv", "cases_serve.csv"):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (",train_device_hours,llama-2-70b,", ",train_hours,llama-2-70b,", "category"),
        (",1720320,device_h,", ",1720320,gpu_h,", "unit"),
        (",1720320,device_h,", ",-5,device_h,", "measured"),
        (",1720320,device_h,https://arxiv.org", ",1720320,device_h,http://arxiv.org", "source_url"),
    ],
)
def test_malformed_case_row_names_file_line_and_field(tmp_path, old, new, field):
    root = _copy_data(tmp_path)
    path = root / "cases_train.csv"
    text = path.read_text(encoding="utf-8")
    target = next(line for line in text.splitlines() if "train-llama-2-70b" in line)
    assert old in target
    path.write_text(text.replace(target, target.replace(old, new)), encoding="utf-8")
    with pytest.raises(CatalogFileError) as info:
        load_cases(root)
    assert info.value.field == field
    assert info.value.line is not None and info.value.line > 1
    assert "cases_train.csv" in str(info.value)


def test_duplicate_case_id_is_rejected(tmp_path):
    root = _copy_data(tmp_path)
    path = root / "cases_serve.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines + [lines[1]]), encoding="utf-8")
    with pytest.raises(CatalogFileError, match="duplicate case id"):
        load_cases(root)


# --------------------------------------------------------------------------------------------------------
# statistics


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q):
    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 20, 101):
        values = rng.lognormal(size=n).tolist()
        assert math.isclose(percentile(values, q), float(np.percentile(values, q)), rel_tol=1e-12)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 150)


def _result(cat: str, meas: float, est: float) -> CaseResult:
    return CaseResult(cat, f"{cat}-{meas}-{est}", "m", "d", meas, est, "u", (est - meas) / meas, "https://x")


def test_summarize_median_p90_and_bias():
    errs = [-0.30, -0.10, 0.00, 0.05, 0.20]
    results = [_result("decode_tokens_per_s", 100.0, 100.0 * (1 + e)) for e in errs]
    (s,) = summarize(results)
    assert s.category == "decode_tokens_per_s" and s.n == 5
    assert math.isclose(s.median_abs_rel_error, 0.10, rel_tol=1e-9)
    assert math.isclose(s.p90_abs_rel_error, float(np.percentile([abs(e) for e in errs], 90)), rel_tol=1e-9)
    assert math.isclose(s.median_rel_error, 0.0, abs_tol=1e-12)
    assert math.isclose(s.max_abs_rel_error, 0.30, rel_tol=1e-9)


# --------------------------------------------------------------------------------------------------------
# runner mechanics, with stand-in catalog, registry and estimator


class _Registry:
    def __init__(self, names):
        self.names = set(names)

    def resolve(self, name):
        if name not in self.names:
            raise UnknownModelError(name)
        return SimpleNamespace(id=name)


def test_runner_computes_errors_and_reports_skips_and_failures(monkeypatch):
    cases = [
        c
        for c in load_cases()
        if c.id
        in {
            "train-llama-2-70b",
            "train-llama-2-7b",
            "flops-gpt-3-175b",
            "decode-llama-2-7b-q40-rtx-4090",
            "prefill-llama-2-7b-q40-rtx-4090",
            "decode-llama-2-7b-fp16-rtx-4090",
        }
    ]
    assert len(cases) == 6
    seen = []

    def fake_train(model, device, *, tokens, **kw):
        seen.append(("train", model.id, device.id, tokens, kw))
        if model.id == "llama-2-7b":
            raise UnsupportedError("no such precision here")
        return SimpleNamespace(device_hours=2 * 1720320.0, train_flops=3.14e23 * 1.1, warnings=("w",))

    def fake_serve(model, device, **kw):
        seen.append(("serve", model.id, device.id, kw))
        return SimpleNamespace(decode_tokens_per_s=149.37 * 0.5, prefill_tokens_per_s=5531.19, warnings=())

    monkeypatch.setattr(flopwise.estimate, "estimate_train", fake_train, raising=False)
    monkeypatch.setattr(flopwise.estimate, "estimate_serve", fake_serve, raising=False)
    catalog = SimpleNamespace(devices={d: SimpleNamespace(id=d) for d in ("a100-sxm-80gb", "rtx-4090")})
    report = run_validation(cases=cases, catalog=catalog, registry=_Registry({"llama-2-7b", "llama-2-70b"}))

    by_id = {r.id: r for r in report.results}
    assert math.isclose(by_id["train-llama-2-70b"].rel_error, 1.0)
    assert by_id["train-llama-2-70b"].warnings == ("w",)
    assert math.isclose(by_id["decode-llama-2-7b-q40-rtx-4090"].rel_error, -0.5)
    assert math.isclose(by_id["prefill-llama-2-7b-q40-rtx-4090"].rel_error, 0.0, abs_tol=1e-12)
    assert {s.id for s in report.skipped} == {"flops-gpt-3-175b"}  # device v100 and model gpt-3 absent
    assert "v100-sxm2-32gb" in report.skipped[0].reason
    assert [f.id for f in report.failed] == ["train-llama-2-7b"]
    assert "UnsupportedError" in report.failed[0].error
    # only source-stated inputs reach the estimator, never an mfu or efficiency override
    train_kw = next(s[4] for s in seen if s[0] == "train" and s[1] == "llama-2-70b")
    assert train_kw == {"precision": "bf16", "seq_len": 4096}
    serve_kw = next(s[3] for s in seen if s[0] == "serve")
    assert serve_kw == {
        "device_count": 1,
        "quant": "q4_0",
        "batch": 1,
        "input_tokens": 1,
        "output_tokens": 128,
        "engine": "llama.cpp",  # the engine the cases_serve.csv runs used
    }
    d = report.to_dict()
    assert {c["category"] for c in d["categories"]} == {
        "train_device_hours",
        "train_flops",
        "decode_tokens_per_s",
        "prefill_tokens_per_s",
    }
    assert report.summary("train_flops").n == 0 and report.summary("train_flops").n_skipped == 1


def test_runner_rejects_unknown_category():
    with pytest.raises(InputError, match="categories"):
        run_validation(
            categories=["train_hours"], cases=[], catalog=SimpleNamespace(devices={}), registry=_Registry(())
        )


# --------------------------------------------------------------------------------------------------------
# the real check: flopwise's defaults against published measurements


@pytest.fixture(scope="module")
def real_report():
    try:
        from flopwise.catalog import load_catalog
        from flopwise.estimate import estimate_serve, estimate_train  # noqa: F401
        from flopwise.models import load_models
    except ImportError as err:  # the estimator, catalog or registry has not landed in this checkout
        pytest.skip(f"flopwise estimator/catalog/registry not importable: {err}")
    return run_validation(catalog=load_catalog(), registry=load_models())


def test_no_case_fails_in_the_estimator(real_report):
    assert not real_report.failed, "\n".join(f"{f.id}: {f.error}" for f in real_report.failed)


@pytest.mark.parametrize("category", list(MEDIAN_BOUNDS))
def test_median_error_within_bound(real_report, category):
    results = real_report.results_for(category)
    skipped = [s for s in real_report.skipped if s.category == category]
    if not results:
        pytest.skip(
            f"all {len(skipped)} {category} cases need a missing model or device: "
            + "; ".join(sorted({s.reason for s in skipped}))
        )
    s = real_report.summary(category)
    detail = "\n".join(
        f"  {r.id}: measured {r.measured:.4g} estimated {r.estimated:.4g} ({r.rel_error:+.1%})"
        for r in sorted(results, key=lambda r: r.rel_error)
    )
    assert s.median_abs_rel_error <= MEDIAN_BOUNDS[category], (
        f"{category}: median |error| {s.median_abs_rel_error:.1%} (p90 {s.p90_abs_rel_error:.1%}, "
        f"bias {s.median_rel_error:+.1%}, n={s.n}) exceeds {MEDIAN_BOUNDS[category]:.0%}\n{detail}"
    )


def test_steady_state_constants_are_the_fit_and_loso_is_reported():
    import statistics

    from flopwise.catalog import load_catalog
    from flopwise.estimate import timing as tm
    from flopwise.validation import load_cases
    from flopwise.validation.steady import fit_steady, leave_one_source_out

    catalog, cases = load_catalog(), load_cases()
    fit = fit_steady(cases, catalog)
    for gen in ("hopper", "ampere"):
        assert tm.STEADY_STATE_MFU[gen][0] == pytest.approx(round(fit.mfu[gen], 2))
    assert pytest.approx(round(fit.fp8_scale, 2)) == tm.FP8_STEADY_MFU_SCALE
    loso = leave_one_source_out(cases, catalog)
    assert len(loso) >= 3  # MosaicML, Llama 3, Megatron-Bridge
    errors = [abs(e) for rows in loso.values() for _, e in rows]
    # measured at commit time: 0.19 (each fp8 / A100 constant has a single source; see README.md)
    assert statistics.median(errors) <= 0.25


def test_engine_cases_carry_their_engine():
    from flopwise.validation import run_validation

    report = run_validation(categories=["ttft_ms", "decode_tokens_per_s"])
    engines = {r.engine for r in report.results}
    assert engines == {"trt-llm", "llama.cpp"}
    assert not report.failed and not report.skipped
