"""Calibration of the estimator's fitted constants: the closed-form predictions reproduce the estimator, the
committed constants are the fit, the fit recovers known constants, and leave-one-out errors stay within bounds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from flopwise.validation import LOO_MEDIAN_BOUNDS, run_validation
from flopwise.validation.calibrate import (
    GROUPS,
    _features,
    _loss,
    _predict,
    calibrate,
    committed_constants,
    fit_group,
)


@pytest.fixture(scope="module")
def env():
    from flopwise.catalog import load_catalog
    from flopwise.models import load_models
    from flopwise.validation import load_cases

    return load_cases(), load_catalog(), load_models()


@pytest.fixture(scope="module")
def results(env):
    cases, catalog, registry = env
    return {r.group.name: r for r in calibrate(cases=cases, catalog=catalog, registry=registry)}


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_closed_form_reproduces_the_estimator(env, group):
    cases, catalog, registry = env
    feats = _features(group, cases, catalog, registry)
    assert len(feats.ids) >= 5
    pred = _predict(group, committed_constants(), feats.columns)
    report = run_validation(categories=[group.category], cases=cases, catalog=catalog, registry=registry)
    by_id = {r.id: r.estimated for r in report.results}
    np.testing.assert_allclose(pred, [by_id[i] for i in feats.ids], rtol=1e-9)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_committed_constants_are_the_fit(env, group):
    # committed values are the all-case fit rounded to 2 significant digits: the loss may only be a hair worse
    cases, catalog, registry = env
    feats = _features(group, cases, catalog, registry)
    committed = committed_constants()
    fitted = fit_group(group, feats, committed)
    loss_committed = _loss(_predict(group, committed, feats.columns), feats.measured)
    loss_fitted = _loss(_predict(group, fitted, feats.columns), feats.measured)
    assert loss_fitted <= loss_committed + 1e-9
    assert loss_committed <= loss_fitted * 1.02 + 1e-3, (group.name, committed, fitted)


def test_fit_recovers_known_constants(env):
    cases, catalog, registry = env
    group = next(g for g in GROUPS if g.name == "decode")
    feats = _features(group, cases, catalog, registry)
    truth = dict(committed_constants())
    truth.update(
        {"bw_eff_gpu": 0.7, "bw_eff_soc": 0.6, "weight_only_bw_frac": 0.8, "layer_overhead_s_gpu": 5e-5}
    )
    synthetic = dataclasses.replace(feats, measured=_predict(group, truth, feats.columns))
    fitted = fit_group(group, synthetic, committed_constants())
    for name in ("bw_eff_gpu", "bw_eff_soc", "weight_only_bw_frac", "layer_overhead_s_gpu"):
        assert math.isclose(fitted[name], truth[name], rel_tol=0.02), (name, fitted[name])


def test_train_mfu_fit_recovers_known_constants(env):
    # the exact (linear-program) fit of base MFU per generation and the shared size exponent
    cases, catalog, registry = env
    group = next(g for g in GROUPS if g.name == "train_mfu")
    feats = _features(group, cases, catalog, registry)
    assert np.ptp(feats.columns["log_size"]) > 5  # 0.4B to 405B: the exponent is identifiable
    truth = dict(committed_constants())
    truth.update({"mfu_ampere": 0.45, "mfu_hopper": 0.3, "mfu_size_exponent": 0.15})
    synthetic = dataclasses.replace(feats, measured=_predict(group, truth, feats.columns))
    fitted = fit_group(group, synthetic, committed_constants())
    for name in ("mfu_ampere", "mfu_hopper", "mfu_size_exponent"):
        assert math.isclose(fitted[name], truth[name], rel_tol=1e-6), (name, fitted[name])


def test_train_mfu_fit_is_unique_and_optimal(env):
    # least absolute deviations can have a whole face of optima (an even number of H100 runs once one is left
    # out); the fit takes the middle of it, so it does not depend on the case order
    cases, catalog, registry = env
    group = next(g for g in GROUPS if g.name == "train_mfu")
    feats = _features(group, cases, catalog, registry)
    mask = np.array(["llama-3-70b" not in i for i in feats.ids])
    order = np.arange(len(feats.ids))[::-1]
    flipped = dataclasses.replace(
        feats,
        ids=tuple(feats.ids[i] for i in order),
        measured=feats.measured[order],
        columns={k: v[order] for k, v in feats.columns.items()},
    )
    a = fit_group(group, feats, committed_constants(), mask)
    b = fit_group(group, flipped, committed_constants(), mask[order])
    for name in group.constants:
        assert math.isclose(a[name], b[name], rel_tol=1e-6), (name, a[name], b[name])
    f = {k: v[mask] for k, v in feats.columns.items()}
    loss_a = _loss(_predict(group, a, f), feats.measured[mask])
    for nudge in ({"mfu_hopper": 1.02}, {"mfu_ampere": 0.98}, {"mfu_size_exponent": 1.05}):
        c = dict(a)
        c.update({k: a[k] * v for k, v in nudge.items()})
        assert loss_a <= _loss(_predict(group, c, f), feats.measured[mask]) + 1e-12


@pytest.mark.parametrize("name", list(LOO_MEDIAN_BOUNDS))
def test_leave_one_out_error_within_bound(results, name):
    r = results[name]
    assert len(r.loo_errors) == len(r.ids) == len(r.in_sample_errors)
    loo_median, loo_p90 = r.loo
    assert loo_median <= LOO_MEDIAN_BOUNDS[name], (
        f"{name}: leave-one-out median |error| {loo_median:.1%} (p90 {loo_p90:.1%}) exceeds "
        f"{LOO_MEDIAN_BOUNDS[name]:.0%}; in-sample {r.in_sample[0]:.1%}"
    )
