"""Fit of ``flopwise.estimate.serve.ONLINE_LAYER_OVERHEAD_S`` (the per-layer step time of an online GPU server) to
the published online-serving cases (``tpot_ms`` of ``data/cases_online.csv``), and its leave-one-source-out error.

Model: ``estimate_serve`` at the case's request rate or concurrency (``flopwise.estimate.serve.online_decode``)
with everything from the engine profile and the catalog except ONLINE_LAYER_OVERHEAD_S, which is searched on GRID
(0-150 us in steps of 2.5 us) for the value with the smallest mean ``|log(estimate / measured)|`` (least absolute
deviation). One value for every engine and device: a per-engine fit would grade each engine on its own table.

Leave-one-source-out: for each source (``source_url``) the value is refitted on the cases of the other sources and
the held-out cases are predicted with it, so no table grades a constant fitted to itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from flopwise.validation.runner import ValidationCase

__all__ = ["GRID", "OnlineFit", "fit_online", "leave_one_source_out", "summary_rows"]

CATEGORY = "tpot_ms"
GRID = np.round(np.arange(0.0, 150e-6 + 1e-12, 2.5e-6), 9)


@dataclass(frozen=True)
class OnlineFit:
    """The fitted per-layer overhead and, per case, the estimate on every GRID value."""

    layer_overhead_s: float
    cases: tuple[ValidationCase, ...]
    table: Any  # (n cases, len(GRID)) estimates
    skipped: tuple[str, ...] = ()


@contextmanager
def _overhead(value: float) -> Iterator[None]:
    from flopwise.estimate import serve

    saved = serve.ONLINE_LAYER_OVERHEAD_S
    serve.ONLINE_LAYER_OVERHEAD_S = value
    try:
        yield
    finally:
        serve.ONLINE_LAYER_OVERHEAD_S = saved


def _best(log_err: np.ndarray) -> float:
    return float(GRID[int(np.argmin(np.mean(np.abs(log_err), axis=0)))])


def fit_online(cases: Sequence[ValidationCase], catalog: Any = None, registry: Any = None) -> OnlineFit:
    """Estimate every tpot_ms case on every GRID value and fit the value (see the module docstring)."""
    from flopwise.errors import FlopwiseError, UnknownModelError
    from flopwise.validation.runner import _estimate_case

    if catalog is None:
        from flopwise.catalog import load_catalog

        catalog = load_catalog()
    if registry is None:
        from flopwise.models import load_models

        registry = load_models()
    used, rows, skipped = [], [], []
    for c in (c for c in cases if c.category == CATEGORY):
        device = catalog.devices.get(c.device)
        try:
            model = registry.resolve(c.model)
        except UnknownModelError:
            model = None
        if device is None or model is None:
            skipped.append(c.id)
            continue
        try:
            row = []
            for value in GRID:
                with _overhead(float(value)):
                    row.append(_estimate_case(c, model, device)[0])
        except FlopwiseError:
            skipped.append(c.id)
            continue
        used.append(c)
        rows.append(row)
    table = np.asarray(rows, dtype=float).reshape(len(rows), len(GRID))
    measured = np.array([c.measured for c in used], dtype=float).reshape(-1, 1)
    value = _best(np.log(table / measured)) if used else float("nan")
    return OnlineFit(value, tuple(used), table, tuple(skipped))


def _errors(fit: OnlineFit, value: float, idx: Sequence[int]) -> list[tuple[str, float]]:
    j = int(np.argmin(np.abs(GRID - value)))
    return [(fit.cases[i].id, float(fit.table[i, j] / fit.cases[i].measured - 1.0)) for i in idx]


def in_sample_errors(fit: OnlineFit) -> list[tuple[str, float]]:
    """(case id, rel_error) of every case with the fitted value."""
    return _errors(fit, fit.layer_overhead_s, range(len(fit.cases)))


def leave_one_source_out(fit: OnlineFit) -> dict[str, dict[str, Any]]:
    """``{source_url: {"layer_overhead_s": value refitted without it, "errors": [(case id, rel_error)]}}``."""
    measured = np.array([c.measured for c in fit.cases], dtype=float).reshape(-1, 1)
    log_err = np.log(fit.table / measured)
    out: dict[str, dict[str, Any]] = {}
    for source in sorted({c.source_url for c in fit.cases}):
        keep = np.array([c.source_url != source for c in fit.cases])
        value = _best(log_err[keep]) if keep.any() else float(GRID[0])
        held = [i for i, c in enumerate(fit.cases) if c.source_url == source]
        out[source] = {"layer_overhead_s": value, "errors": _errors(fit, value, held)}
    return out


def summary_rows(fit: OnlineFit) -> list[dict[str, Any]]:
    """Per (engine, source) and overall: n, median |rel_error| in-sample and leave-one-source-out, and the
    fitted value (overall) or the value refitted without the source."""
    ins = dict(in_sample_errors(fit))
    loso: dict[str, float] = {}
    refit: dict[str, float] = {}
    for source, block in leave_one_source_out(fit).items():
        refit[source] = block["layer_overhead_s"]
        for cid, e in block["errors"]:
            loso[cid] = e
    groups: dict[tuple[str, str], list[str]] = {}
    for c in fit.cases:
        groups.setdefault((str(c.inputs.get("engine")), c.source_url), []).append(c.id)
    rows = []
    for (eng, source), ids in sorted(groups.items()):
        rows.append(
            {
                "engine": eng,
                "source": source,
                "n": len(ids),
                "layer_overhead_s": refit[source],
                "median_abs_rel_error_in_sample": statistics.median(abs(ins[i]) for i in ids),
                "median_abs_rel_error_loso": statistics.median(abs(loso[i]) for i in ids),
                "median_rel_error_in_sample": statistics.median(ins[i] for i in ids),
            }
        )
    ids = [c.id for c in fit.cases]
    if ids:
        rows.append(
            {
                "engine": "all",
                "source": "all",
                "n": len(ids),
                "layer_overhead_s": fit.layer_overhead_s,
                "median_abs_rel_error_in_sample": statistics.median(abs(ins[i]) for i in ids),
                "median_abs_rel_error_loso": statistics.median(abs(loso[i]) for i in ids),
                "median_rel_error_in_sample": statistics.median(ins[i] for i in ids),
            }
        )
    return rows
