"""Fit of each datacenter serving engine's compute efficiency (``compute_efficiency_frac`` of
``flopwise/catalog/data/engines.csv``, and per vendor backend of ``engine_backends.csv``) to the published
batched-serving cases, and its leave-one-source-out error.

Model: ``estimate_serve`` with everything from the engine profile and the catalog except the engine's compute
efficiency, which is searched on a grid (GRID: 0.10-0.95 in steps of 0.005) for the value with the smallest mean
``|log(estimate / measured)|`` (least absolute deviation) over the engine's cases of FIT_CATEGORIES (static-batch
output throughput, saturation throughput and first-token latency). The efficiency is the share of the dense peak
that prefill and compute-bound decode reach; at saturation it also absorbs what the roofline does not see (scheduler
and sampling time per step, in-flight batching bubbles, the tail of an offline run), which is why it is fitted per
engine rather than derived.

Per backend: an engine whose cases span more than one device vendor (vLLM on NVIDIA GPUs, i.e. CUDA, and on AMD
GPUs, i.e. ROCm) gets a value per vendor besides the pooled one. The per-vendor values go to ``engine_backends.csv``;
the pooled value stays in ``engines.csv`` for the vendors without a fit of their own.

Besides the engine case file, the fit reads the output throughput that the energy sources publish with their power
(``measured_output_tokens_per_s`` of ``cases_energy.csv``, one case per configuration, category
THROUGHPUT_CATEGORY: the static-batch output tokens/s at the run's batch, as the energy estimate uses). No validate
category grades those throughputs, but they set the energy per output token (energy = power / throughput), so that
category is reported held out too (``energy_loso_efficiency``: the efficiency refitted without the energy source).

Leave-one-source-out: for each source (``source_url``) every engine and backend is refitted on the cases of the
other sources; an engine left with no case takes the median of the other engines' refitted values, a backend left
with no case its engine's pooled refit. The held-out cases are predicted with the refitted values, so no table
grades an efficiency fitted to itself.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flopwise.validation.runner import ValidationCase

__all__ = [
    "FIT_CATEGORIES",
    "GRID",
    "THROUGHPUT_CATEGORY",
    "EngineFit",
    "energy_loso_efficiency",
    "energy_throughput_cases",
    "fit_engines",
    "leave_one_source_out",
]

FIT_CATEGORIES = ("batch_output_tokens_per_s_per_device", "saturation_tokens_per_s", "ttft_ms")
#: the output throughput of the energy cases (not a validate category; see the module docstring)
THROUGHPUT_CATEGORY = "output_tokens_per_s"
GRID = np.round(np.arange(0.10, 0.95 + 1e-9, 0.005), 3)


@dataclass(frozen=True)
class EngineFit:
    """Fitted compute efficiency per engine (pooled over its cases) and per (engine, vendor) for the engines
    measured on several vendors; per case its device vendor and the estimate on every grid value."""

    efficiency: Mapping[str, float]
    cases: tuple[ValidationCase, ...]
    table: Any  # (n cases, len(GRID)) estimates
    skipped: tuple[str, ...] = ()
    #: (engine, vendor) -> efficiency, only for engines measured on more than one vendor
    backend_efficiency: Mapping[tuple[str, str], float] = field(default_factory=dict)
    vendors: tuple[str, ...] = ()
    #: False: one pooled value per engine (the comparison without per-vendor fits)
    by_vendor: bool = True

    def efficiency_of(
        self,
        i: int,
        efficiency: Mapping[str, float] | None = None,
        backend: Mapping[tuple[str, str], float] | None = None,
    ) -> float:
        """The efficiency case *i* is predicted with: its backend's where fitted, else its engine's."""
        eff = self.efficiency if efficiency is None else efficiency
        back = self.backend_efficiency if backend is None else backend
        eng = str(self.cases[i].inputs.get("engine"))
        vendor = self.vendors[i] if self.vendors else ""
        return back.get((eng, vendor), eff[eng])

    def backend_of(self, i: int) -> str:
        """``engine/vendor`` where the engine has per-vendor fits, else ``engine``."""
        eng = str(self.cases[i].inputs.get("engine"))
        vendor = self.vendors[i] if self.vendors else ""
        return f"{eng}/{vendor}" if (eng, vendor) in self.backend_efficiency else eng


def energy_throughput_cases(cases: Sequence[ValidationCase]) -> list[ValidationCase]:
    """One THROUGHPUT_CATEGORY case per average-power case whose source also gives the run's output throughput
    (``measured_output_tokens_per_s`` of the packaged ``cases_energy.csv``), its id suffixed ``-throughput``."""
    from flopwise.validation.energy import _measured_throughputs

    tps = _measured_throughputs()
    out = []
    for c in cases:
        if c.category == "avg_power_w_per_device" and tps.get(c.id):
            out.append(
                dataclasses.replace(
                    c,
                    id=f"{c.id}-throughput",
                    category=THROUGHPUT_CATEGORY,
                    measured=tps[c.id],
                    unit="tokens/s",
                )
            )
    return out


def _case_value(case: ValidationCase, est: Any) -> float:
    if case.category == "batch_output_tokens_per_s_per_device":
        return float(est.output_tokens_per_s) / (case.device_count or 1)
    if case.category == "ttft_ms":
        return float(est.ttft_ms)
    if case.category == THROUGHPUT_CATEGORY:
        return float(est.output_tokens_per_s)
    return float(est.saturation_tokens_per_s)


def _grid_table(
    cases: Sequence[ValidationCase], catalog: Any, registry: Any
) -> tuple[list, np.ndarray, list, list]:
    """Estimates of each usable case on every GRID efficiency (cases whose model or device is missing are
    skipped), and each used case's device vendor."""
    from flopwise.catalog.engines import get_engine
    from flopwise.errors import FlopwiseError, UnknownModelError
    from flopwise.estimate import estimate_serve

    used, rows, skipped, vendors = [], [], [], []
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
                eng = base.with_compute_efficiency(float(ce))
                row.append(_case_value(c, estimate_serve(model, device, engine=eng, **kwargs)))
        except FlopwiseError:
            skipped.append(c.id)
            continue
        used.append(c)
        rows.append(row)
        vendors.append(str(device.vendor).lower())
    table = np.asarray(rows, dtype=float).reshape(len(rows), len(GRID))
    return used, table, skipped, vendors


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


def _multi_vendor(cases: Sequence[ValidationCase], vendors: Sequence[str]) -> dict[str, list[str]]:
    """Engines measured on more than one vendor (over all cases) -> those vendors."""
    seen: dict[str, set[str]] = {}
    for c, v in zip(cases, vendors, strict=True):
        seen.setdefault(str(c.inputs.get("engine")), set()).add(v)
    return {e: sorted(vs) for e, vs in seen.items() if len(vs) > 1}


def _fit_backends(
    cases: Sequence[ValidationCase], vendors: Sequence[str], log_err: np.ndarray, keep: np.ndarray
) -> dict[tuple[str, str], float]:
    """Per (engine, vendor) of the engines measured on several vendors: the fit on that backend's kept cases (a
    backend with none kept is left out: it takes its engine's pooled value)."""
    out: dict[tuple[str, str], float] = {}
    for eng, vs in _multi_vendor(cases, vendors).items():
        for v in vs:
            rows = np.array(
                [
                    keep[i] and str(c.inputs.get("engine")) == eng and vendors[i] == v
                    for i, c in enumerate(cases)
                ]
            )
            if rows.any():
                out[(eng, v)] = _best(log_err[rows])
    return out


def fit_engines(
    cases: Sequence[ValidationCase],
    catalog: Any = None,
    registry: Any = None,
    *,
    with_energy: bool = True,
    by_vendor: bool = True,
) -> EngineFit:
    """Fit every engine's compute efficiency on its cases of FIT_CATEGORIES, plus the energy sources' throughputs
    when *with_energy*, pooled and (when *by_vendor*) per vendor backend (see the module docstring)."""
    if catalog is None:
        from flopwise.catalog import load_catalog

        catalog = load_catalog()
    if registry is None:
        from flopwise.models import load_models

        registry = load_models()
    chosen = [c for c in cases if c.category in FIT_CATEGORIES]
    if with_energy:
        chosen += energy_throughput_cases(cases)
    used, table, skipped, vendors = _grid_table(chosen, catalog, registry)
    measured = np.array([c.measured for c in used], dtype=float).reshape(-1, 1)
    log_err = np.log(table / measured)
    keep = np.ones(len(used), dtype=bool)
    eff = _fit(used, log_err, keep)
    back = _fit_backends(used, vendors, log_err, keep) if by_vendor else {}
    return EngineFit(eff, tuple(used), table, tuple(skipped), back, tuple(vendors), by_vendor)


def _errors(
    fit: EngineFit,
    efficiency: Mapping[str, float],
    idx: Sequence[int],
    backend: Mapping[tuple[str, str], float] | None = None,
) -> list[tuple[str, float]]:
    out = []
    for i in idx:
        c = fit.cases[i]
        ce = fit.efficiency_of(i, efficiency, backend)
        j = int(np.argmin(np.abs(GRID - ce)))
        out.append((c.id, float(fit.table[i, j] / c.measured - 1.0)))
    return out


def in_sample_errors(fit: EngineFit) -> list[tuple[str, str, float]]:
    """(case id, category, rel_error) of every case with the in-sample fitted efficiencies."""
    errs = _errors(fit, fit.efficiency, range(len(fit.cases)))
    return [(cid, fit.cases[i].category, e) for i, (cid, e) in enumerate(errs)]


def leave_one_source_out(fit: EngineFit) -> dict[str, dict[str, Any]]:
    """``{source_url: {"efficiency": {engine: value}, "backend_efficiency": {(engine, vendor): value}, "errors":
    [(case id, category, rel_error)]}}`` with every engine and backend refitted without that source (an engine left
    with no case takes the median of the others; a backend left with no case, its engine's pooled refit)."""
    measured = np.array([c.measured for c in fit.cases], dtype=float).reshape(-1, 1)
    log_err = np.log(fit.table / measured)
    out: dict[str, dict[str, Any]] = {}
    engines = sorted({str(c.inputs.get("engine")) for c in fit.cases})
    vendors = fit.vendors or tuple("" for _ in fit.cases)
    for source in sorted({c.source_url for c in fit.cases}):
        keep = np.array([c.source_url != source for c in fit.cases])
        eff = _fit(fit.cases, log_err, keep)
        fallback = statistics.median(eff.values()) if eff else float(GRID[len(GRID) // 2])
        for eng in engines:
            eff.setdefault(eng, fallback)
        back = _fit_backends(fit.cases, vendors, log_err, keep) if fit.by_vendor else {}
        held = [i for i, c in enumerate(fit.cases) if c.source_url == source]
        out[source] = {
            "efficiency": eff,
            "backend_efficiency": back,
            "errors": [
                (cid, fit.cases[i].category, e)
                for i, (cid, e) in zip(held, _errors(fit, eff, held, back), strict=True)
            ],
        }
    return out


def energy_loso_efficiency(fit: EngineFit, source_url: str, engine: str, vendor: str) -> float:
    """*engine*'s compute efficiency on *vendor* refitted without *source_url*'s cases: what that source's energy
    per token is estimated with when its own throughputs are held out of the fit."""
    if not any(c.source_url == source_url for c in fit.cases):
        return fit.backend_efficiency.get((engine, vendor), fit.efficiency[engine])
    block = leave_one_source_out(fit)[source_url]
    return block["backend_efficiency"].get((engine, vendor), block["efficiency"][engine])


def summary_rows(fit: EngineFit) -> list[dict[str, Any]]:
    """Per (category, engine backend): n, median |rel_error| in-sample and leave-one-source-out, and the fitted
    value; then per category over all engines."""
    ins = {cid: e for cid, _, e in in_sample_errors(fit)}
    loso: dict[str, float] = {}
    for block in leave_one_source_out(fit).values():
        for cid, _, e in block["errors"]:
            loso[cid] = e
    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(fit.cases):
        groups.setdefault((c.category, fit.backend_of(i)), []).append(i)
    rows = []
    for (cat, eng), idx in sorted(groups.items()):
        ids = [fit.cases[i].id for i in idx]
        rows.append(
            {
                "category": cat,
                "engine": eng,
                "n": len(ids),
                "compute_efficiency_frac": fit.efficiency_of(idx[0]),
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
