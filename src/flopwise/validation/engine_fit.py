"""Fit of each datacenter serving engine's compute efficiency (``compute_efficiency_frac`` of
``flopwise/catalog/data/engines.csv``) to the published batched-serving cases, and its leave-one-source-out error.

Model: ``estimate_serve`` with everything from the engine profile and the catalog except the engine's compute
efficiency, which is searched on a grid (GRID: 0.10-0.95 in steps of 0.005) for the value with the smallest mean
``|log(estimate / measured)|`` (least absolute deviation) over the engine's cases of FIT_CATEGORIES (static-batch output throughput,
saturation throughput and first-token latency). The efficiency is the share of the dense peak that prefill and
compute-bound decode reach; at saturation it also absorbs what the roofline does not see (scheduler and sampling
time per step, in-flight batching bubbles, the tail of an offline run), which is why it is fitted per engine rather
than derived.

Leave-one-source-out: for each source (``source_url``) every engine is refitted on the cases of the other sources;
an engine left with no case takes the median of the other engines' refitted values. The held-out cases are
predicted with the refitted values, so no table grades an efficiency fitted to itself.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flopwise.validation.runner import ValidationCase

__all__ = ["FIT_CATEGORIES", "GRID", "EngineFit", "fit_engines", "leave_one_source_out"]

FIT_CATEGORIES = ("batch_output_tokens_per_s_per_device", "saturation_tokens_per_s", "ttft_ms")
GRID = np.round(np.arange(0.10, 0.95 + 1e-9, 0.005), 3)


@dataclass(frozen=True)
class EngineFit:
    """Fitted compute efficiency per engine, and per case the estimate on every grid value."""

    efficiency: Mapping[str, float]
    cases: tuple[ValidationCase, ...]
    table: Any  # (n cases, len(GRID)) estimates
    skipped: tuple[str, ...] = ()


def _case_value(case: ValidationCase, est: Any) -> float:
    if case.category == "batch_output_tokens_per_s_per_device":
        return float(est.output_tokens_per_s) / (case.device_count or 1)
    if case.category == "ttft_ms":
        return float(est.ttft_ms)
    return float(est.saturation_tokens_per_s)


def _grid_table(
    cases: Sequence[ValidationCase], catalog: Any, registry: Any
) -> tuple[list, np.ndarray, list]:
    """Estimates of each usable case on every GRID efficiency (cases whose model or device is missing are
    skipped)."""
    from flopwise.catalog.engines import get_engine
    from flopwise.errors import FlopwiseError, UnknownModelError
    from flopwise.estimate import estimate_serve

    used, rows, skipped = [], [], []
    for c in cases:
        device = catalog.devices.get(c.device)
        if device is None:
            skipped.append(c.id)
            continue
        try:
            model = registry.resolve(c.model)
        except UnknownModelError:
            skipped.append(c.id)
            continue
        inp = c.inputs
        base = get_engine(inp.get("engine"))
        kwargs: dict[str, Any] = {
            "device_count": c.device_count or 1,
            "input_tokens": max(1, inp.get("input_tokens") or 0),
            "output_tokens": max(1, inp.get("output_tokens") or 0),
        }
        for key in ("quant", "batch", "kv_dtype"):
            if inp.get(key):
                kwargs[key] = inp[key]
        row = []
        try:
            for ce in GRID:
                eng = dataclasses.replace(base, compute_efficiency_frac=float(ce))
                row.append(_case_value(c, estimate_serve(model, device, engine=eng, **kwargs)))
        except FlopwiseError:
            skipped.append(c.id)
            continue
        used.append(c)
        rows.append(row)
    table = np.asarray(rows, dtype=float).reshape(len(rows), len(GRID))
    return used, table, skipped


def _best(log_err: np.ndarray) -> float:
    """The GRID value with the smallest mean |log error| over the rows of *log_err* (cases x grid): least absolute
    deviation, so a case whose estimate does not depend on the efficiency (a latency-bound batch of one) adds the
    same amount at every grid value and does not move the fit."""
    score = np.mean(np.abs(log_err), axis=0)
    return float(GRID[int(np.argmin(score))])


def _fit(cases: Sequence[ValidationCase], log_err: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for eng in sorted({str(c.inputs.get("engine")) for c in cases}):
        rows = np.array([keep[i] and str(c.inputs.get("engine")) == eng for i, c in enumerate(cases)])
        if rows.any():
            out[eng] = _best(log_err[rows])
    return out


def fit_engines(cases: Sequence[ValidationCase], catalog: Any = None, registry: Any = None) -> EngineFit:
    """Fit every engine's compute efficiency on its cases of FIT_CATEGORIES (see the module docstring)."""
    if catalog is None:
        from flopwise.catalog import load_catalog

        catalog = load_catalog()
    if registry is None:
        from flopwise.models import load_models

        registry = load_models()
    chosen = [c for c in cases if c.category in FIT_CATEGORIES]
    used, table, skipped = _grid_table(chosen, catalog, registry)
    measured = np.array([c.measured for c in used], dtype=float).reshape(-1, 1)
    log_err = np.log(table / measured)
    eff = _fit(used, log_err, np.ones(len(used), dtype=bool))
    return EngineFit(eff, tuple(used), table, tuple(skipped))


def _errors(fit: EngineFit, efficiency: Mapping[str, float], idx: Sequence[int]) -> list[tuple[str, float]]:
    out = []
    for i in idx:
        c = fit.cases[i]
        eng = str(c.inputs.get("engine"))
        ce = efficiency[eng]
        j = int(np.argmin(np.abs(GRID - ce)))
        out.append((c.id, float(fit.table[i, j] / c.measured - 1.0)))
    return out


def in_sample_errors(fit: EngineFit) -> list[tuple[str, str, float]]:
    """(case id, category, rel_error) of every case with the in-sample fitted efficiencies."""
    errs = _errors(fit, fit.efficiency, range(len(fit.cases)))
    return [(cid, fit.cases[i].category, e) for i, (cid, e) in enumerate(errs)]


def leave_one_source_out(fit: EngineFit) -> dict[str, dict[str, Any]]:
    """``{source_url: {"efficiency": {engine: value}, "errors": [(case id, category, rel_error)]}}`` with every
    engine refitted without that source (an engine left with no case takes the median of the others)."""
    measured = np.array([c.measured for c in fit.cases], dtype=float).reshape(-1, 1)
    log_err = np.log(fit.table / measured)
    out: dict[str, dict[str, Any]] = {}
    engines = sorted({str(c.inputs.get("engine")) for c in fit.cases})
    for source in sorted({c.source_url for c in fit.cases}):
        keep = np.array([c.source_url != source for c in fit.cases])
        eff = _fit(fit.cases, log_err, keep)
        fallback = statistics.median(eff.values()) if eff else float(GRID[len(GRID) // 2])
        for eng in engines:
            eff.setdefault(eng, fallback)
        held = [i for i, c in enumerate(fit.cases) if c.source_url == source]
        out[source] = {
            "efficiency": eff,
            "errors": [
                (cid, fit.cases[i].category, e)
                for i, (cid, e) in zip(held, _errors(fit, eff, held), strict=True)
            ],
        }
    return out


def summary_rows(fit: EngineFit) -> list[dict[str, Any]]:
    """Per (category, engine): n, median |rel_error| in-sample and leave-one-source-out, and the fitted value."""
    ins = {cid: e for cid, _, e in in_sample_errors(fit)}
    loso: dict[str, float] = {}
    for block in leave_one_source_out(fit).values():
        for cid, _, e in block["errors"]:
            loso[cid] = e
    groups: dict[tuple[str, str], list[str]] = {}
    for c in fit.cases:
        groups.setdefault((c.category, str(c.inputs.get("engine"))), []).append(c.id)
    rows = []
    for (cat, eng), ids in sorted(groups.items()):
        rows.append(
            {
                "category": cat,
                "engine": eng,
                "n": len(ids),
                "compute_efficiency_frac": fit.efficiency[eng],
                "median_abs_rel_error_in_sample": float(statistics.median(abs(ins[i]) for i in ids)),
                "median_abs_rel_error_loso": float(statistics.median(abs(loso[i]) for i in ids)),
            }
        )
    for cat in sorted({c.category for c in fit.cases}):
        ids = [c.id for c in fit.cases if c.category == cat]
        rows.append(
            {
                "category": cat,
                "engine": "all",
                "n": len(ids),
                "compute_efficiency_frac": math.nan,
                "median_abs_rel_error_in_sample": float(statistics.median(abs(ins[i]) for i in ids)),
                "median_abs_rel_error_loso": float(statistics.median(abs(loso[i]) for i in ids)),
            }
        )
    return rows
