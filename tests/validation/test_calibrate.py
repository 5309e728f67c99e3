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


@pytest.mark.parametrize("name", list(LOO_MEDIAN_BOUNDS))
def test_leave_one_out_error_within_bound(results, name):
    r = results[name]
    assert len(r.loo_errors) == len(r.ids) == len(r.in_sample_errors)
    loo_median, loo_p90 = r.loo
    assert loo_median <= LOO_MEDIAN_BOUNDS[name], (
        f"{name}: leave-one-out median |error| {loo_median:.1%} (p90 {loo_p90:.1%}) exceeds "
        f"{LOO_MEDIAN_BOUNDS[name]:.0%}; in-sample {r.in_sample[0]:.1%}"
    )
