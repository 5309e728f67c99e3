"""Fit the estimator's calibrated constants to the validation cases, and measure them honestly by leave-one-out.

Which constants are fitted, to which cases (everything else in ``flopwise.estimate.timing`` is derived or taken
from a datasheet and is not touched here):

* ``train_mfu``: ``DEFAULT_MFU["ampere"]``, ``DEFAULT_MFU["hopper"]`` (the MFU at ``MFU_SIZE_REF_PARAMS``) and the
  shared size exponent ``MFU_SIZE_EXPONENT`` to the bf16/fp16 ``train_device_hours`` cases on A100 and H100 (the
  fp8 DeepSeek-V3 case is left out: ``FP8_MFU_SCALE`` is derived from it alone). The prediction is
  ``hours_x_mfu / (base[gen] * (clip(N) / N_ref) ** gamma)``, linear in log space, so its fit is solved exactly
  as a linear program (least absolute deviations); the other groups use Powell search.
* ``decode``: ``BANDWIDTH_EFFICIENCY_FRAC`` for ``gpu`` and ``soc``, ``WEIGHT_ONLY_BANDWIDTH_FRAC`` and
  ``DECODE_LAYER_OVERHEAD_S`` for ``gpu`` and ``soc`` to the ``decode_tokens_per_s`` cases.
* ``prefill``: ``COMPUTE_EFFICIENCY_FRAC`` for ``gpu`` and ``soc`` and ``WEIGHT_ONLY_COMPUTE_FRAC`` to the
  ``prefill_tokens_per_s`` cases.

Method. Each case is estimated once with the committed defaults; from the estimate's assumptions the case's
prediction is written as a closed form of the group's constants (e.g. decode ``1 / (bytes / (BW * eta_b * w_b) +
L * t_layer)``), which ``tests/validation`` checks reproduces the estimator. A fit minimizes the mean absolute
log error ``mean |ln(estimated / measured)|`` (least absolute deviations: robust to the few cases no constant can
reach) with bounded Powell search (``scipy.optimize.minimize``). ``leave_one_out`` refits the group's constants
on all cases but one and predicts that one, for every case, so the published error is not in-sample only.

Run ``python -m flopwise.validation.calibrate`` to print the fitted values and both errors per category.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flopwise.validation.runner import ValidationCase, load_cases, percentile

__all__ = [
    "GROUPS",
    "CalibrationGroup",
    "GroupResult",
    "calibrate",
    "committed_constants",
    "fit_group",
    "leave_one_out",
]


@dataclass(frozen=True)
class CalibrationGroup:
    """A set of constants fitted together to the cases of one category."""

    name: str
    category: str
    constants: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]


GROUPS: tuple[CalibrationGroup, ...] = (
    CalibrationGroup(
        "train_mfu",
        "train_device_hours",
        ("mfu_ampere", "mfu_hopper", "mfu_size_exponent"),
        ((0.1, 0.8), (0.1, 0.8), (0.0, 0.5)),
    ),
    CalibrationGroup(
        "decode",
        "decode_tokens_per_s",
        ("bw_eff_gpu", "bw_eff_soc", "weight_only_bw_frac", "layer_overhead_s_gpu", "layer_overhead_s_soc"),
        ((0.3, 1.0), (0.3, 1.0), (0.3, 1.2), (0.0, 5e-4), (0.0, 5e-4)),
    ),
    CalibrationGroup(
        "prefill",
        "prefill_tokens_per_s",
        ("compute_eff_gpu", "compute_eff_soc", "weight_only_compute_frac"),
        ((0.05, 1.0), (0.05, 1.0), (0.2, 1.5)),
    ),
)


def committed_constants() -> dict[str, float]:
    """The values of the fitted constants as committed in ``flopwise.estimate.timing``."""
    from flopwise.estimate import timing as tm

    return {
        "mfu_ampere": tm.DEFAULT_MFU["ampere"][0],
        "mfu_hopper": tm.DEFAULT_MFU["hopper"][0],
        "mfu_size_exponent": tm.MFU_SIZE_EXPONENT,
        "bw_eff_gpu": tm.BANDWIDTH_EFFICIENCY_FRAC["gpu"],
        "bw_eff_soc": tm.BANDWIDTH_EFFICIENCY_FRAC["soc"],
        "weight_only_bw_frac": tm.WEIGHT_ONLY_BANDWIDTH_FRAC,
        "layer_overhead_s_gpu": tm.DECODE_LAYER_OVERHEAD_S["gpu"],
        "layer_overhead_s_soc": tm.DECODE_LAYER_OVERHEAD_S["soc"],
        "compute_eff_gpu": tm.COMPUTE_EFFICIENCY_FRAC["gpu"],
        "compute_eff_soc": tm.COMPUTE_EFFICIENCY_FRAC["soc"],
        "weight_only_compute_frac": tm.WEIGHT_ONLY_COMPUTE_FRAC,
    }


# ---------------------------------------------------------------------------------------------------------
# per-case features: what the prediction needs, taken from one estimate with the committed constants


@dataclass(frozen=True)
class _Features:
    ids: tuple[str, ...]
    measured: np.ndarray
    columns: Mapping[str, np.ndarray]


def _kind_key(kind: str) -> str:
    return kind if kind in ("gpu", "soc") else ""


def _features(group: CalibrationGroup, cases: Sequence[ValidationCase], catalog: Any, registry: Any):
    """Per-case feature columns for *group*, from the estimator run once with the committed constants."""
    from flopwise.estimate import estimate_serve, estimate_train
    from flopwise.estimate import timing as tm

    rows: list[dict[str, float]] = []
    ids: list[str] = []
    measured: list[float] = []
    for case in cases:
        if case.category != group.category or case.device not in catalog.devices:
            continue
        device = catalog.devices[case.device]
        model = registry.resolve(case.model)
        inp = case.inputs
        kw: dict[str, Any] = {}
        if case.device_count is not None:
            kw["device_count"] = case.device_count
        if group.name == "train_mfu":
            gen = tm.device_generation(device)
            if gen not in ("ampere", "hopper") or inp.get("precision") == "fp8":
                continue
            for key in ("precision", "seq_len", "tensor_parallel", "pipeline_parallel"):
                if inp.get(key):
                    kw[key] = inp[key]
            if inp.get("zero_stage") is not None:
                kw["zero_stage"] = inp["zero_stage"]
            est = estimate_train(model, device, tokens=float(inp["tokens"]), **kw)
            a = est.assumptions
            if float(a["exposed_dp_comm_s"]) > 0:
                continue  # hours are not inversely proportional to the MFU; not used for the fit
            # the estimator's size term uses the parameter count it passes to default_mfu_frac
            n_params = float(a["params_total"])
            rows.append(
                {
                    "hours_x_mfu": float(est.device_hours)
                    * tm.DEFAULT_MFU[gen][0]
                    * tm.mfu_size_factor(n_params),
                    "is_ampere": float(gen == "ampere"),
                    "log_size": float(np.log(_clip_params(n_params) / tm.MFU_SIZE_REF_PARAMS)),
                }
            )
        else:
            if inp.get("quant"):
                kw["quant"] = inp["quant"]
            if inp.get("batch"):
                kw["batch"] = inp["batch"]
            kw["input_tokens"] = max(1, inp.get("input_tokens") or 0)
            kw["output_tokens"] = max(1, inp.get("output_tokens") or 0)
            est = estimate_serve(model, device, **kw)
            a = est.assumptions
            kind = _kind_key(device.kind)
            if not kind:
                continue
            wo = bool(a["is_weight_only"])
            ec = float(a["compute_efficiency_frac"])
            eb = float(a["bandwidth_efficiency_frac"])
            tera = 1e12
            row = {
                "is_gpu": float(kind == "gpu"),
                "is_weight_only": float(wo),
                "n_layers": float(model.n_layers),
                "tp_s": float(a["tp_decode_comm_s"]),
                # seconds at 100% of the bandwidth / of the compute peak actually used
                "decode_bytes_s": float(a["decode_step_bytes_per_device"])
                / (device.memory_bandwidth_gb_per_s * 1e9),
                "decode_flops_s": float(a["decode_step_flops_per_device"])
                / (float(a["compute_peak_tflop_per_s"]) * tera),
                "batch": float(a["batch"]),
                "prefill_tokens": float(a["batch"]) * float(a["input_tokens"]),
                "prefill_compute_s1": float(a["prefill_compute_s"]) * ec,
                "prefill_memory_s1": float(a["prefill_memory_s"]) * eb,
                "chunks": float(a["prefill_chunks"]),
                "tp_prefill_s": float(a["tp_prefill_comm_s"]),
            }
            rows.append(row)
        ids.append(case.id)
        measured.append(case.measured)
    columns = {k: np.array([r[k] for r in rows], dtype=float) for k in (rows[0] if rows else {})}
    return _Features(tuple(ids), np.array(measured, dtype=float), columns)


def _clip_params(n_params: float) -> float:
    from flopwise.estimate import timing as tm

    lo, hi = tm.MFU_SIZE_PARAMS_RANGE
    return min(max(n_params, lo), hi)


def _predict(group: CalibrationGroup, c: Mapping[str, float], f: Mapping[str, np.ndarray]) -> np.ndarray:
    """The estimator's figure for each case as a closed form of the constants *c* (see the module docstring)."""
    if group.name == "train_mfu":
        mfu = np.where(f["is_ampere"] > 0, c["mfu_ampere"], c["mfu_hopper"])
        return f["hours_x_mfu"] / (mfu * np.exp(c["mfu_size_exponent"] * f["log_size"]))
    gpu = f["is_gpu"] > 0
    wo = f["is_weight_only"] > 0
    eb = np.where(gpu, c["bw_eff_gpu"], c["bw_eff_soc"]) * np.where(wo, c["weight_only_bw_frac"], 1.0)
    ec = np.where(gpu, c["compute_eff_gpu"], c["compute_eff_soc"]) * np.where(
        wo, c["weight_only_compute_frac"], 1.0
    )
    overhead = f["n_layers"] * np.where(gpu, c["layer_overhead_s_gpu"], c["layer_overhead_s_soc"])
    if group.name == "decode":
        from flopwise.estimate import timing as tm

        p = np.where(gpu, float(tm.ROOFLINE_OVERLAP_P.get("gpu") or 0.0), float(tm.ROOFLINE_OVERLAP_P.get("soc") or 0.0))
        tpot = tm.roofline_time_s(f["decode_flops_s"], f["decode_bytes_s"], ec, eb, p) + overhead + f["tp_s"]
        return f["batch"] / tpot
    ttft = (
        np.maximum(f["prefill_compute_s1"] / ec, f["prefill_memory_s1"] / eb)
        + f["chunks"] * overhead
        + f["tp_prefill_s"]
    )
    return f["prefill_tokens"] / ttft


def _loss(pred: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(np.log(pred / measured))))


def fit_group(
    group: CalibrationGroup,
    features: _Features,
    start: Mapping[str, float],
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Constants of *group* minimizing mean |ln(estimated/measured)| over the cases selected by *mask*
    (all by default); the other constants stay at *start*."""
    from scipy.optimize import minimize

    sel = np.ones(len(features.ids), dtype=bool) if mask is None else mask
    f = {k: v[sel] for k, v in features.columns.items()}
    meas = features.measured[sel]
    if group.name == "train_mfu":
        return _fit_train_mfu(group, f, meas, start)
    names = group.constants
    # scale each constant to ~1 so one Powell step size fits all
    scale = np.array([max(hi, 1e-12) for _, hi in group.bounds])

    def objective(x: np.ndarray) -> float:
        c = dict(start)
        c.update({n: float(v) for n, v in zip(names, x * scale, strict=True)})
        return _loss(_predict(group, c, f), meas)

    x0 = np.array([start[n] for n in names]) / scale
    bounds = [(lo / s, hi / s) for (lo, hi), s in zip(group.bounds, scale, strict=True)]
    x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
    best = minimize(objective, x0, method="Powell", bounds=bounds, options={"xtol": 1e-6, "ftol": 1e-10})
    out = dict(start)
    out.update({n: float(v) for n, v in zip(names, best.x * scale, strict=True)})
    return out


def _fit_train_mfu(
    group: CalibrationGroup, f: Mapping[str, np.ndarray], meas: np.ndarray, start: Mapping[str, float]
) -> dict[str, float]:
    """Exact least-absolute-deviations fit of the training MFU group: with ``y = ln(hours_x_mfu / measured)``,
    ``ln(estimated / measured) = y - ln(base[gen]) - gamma * log_size``, linear in ``(ln base_ampere,
    ln base_hopper, gamma)``; minimize ``sum |r|`` as the linear program ``r = u - v``, ``u, v >= 0``
    (HiGHS via ``scipy.optimize.linprog``); where the optimum is not unique, each constant is set in turn to the
    middle of its optimal range. A generation with no selected case keeps its *start* value."""
    from scipy.optimize import linprog

    y = np.log(f["hours_x_mfu"] / meas)
    amp = f["is_ampere"] > 0
    design = np.column_stack([amp.astype(float), (~amp).astype(float), f["log_size"]])
    n = len(y)
    (lo_a, hi_a), (lo_h, hi_h), (lo_g, hi_g) = group.bounds
    var_bounds = [(np.log(lo_a), np.log(hi_a)), (np.log(lo_h), np.log(hi_h)), (lo_g, hi_g)]
    for j, name in ((0, "mfu_ampere"), (1, "mfu_hopper")):
        if not design[:, j].any():
            var_bounds[j] = (np.log(start[name]), np.log(start[name]))
    cost = np.concatenate([np.zeros(3), np.ones(2 * n)])
    a_eq = np.hstack([design, np.eye(n), -np.eye(n)])
    all_bounds = var_bounds + [(0.0, None)] * (2 * n)

    def solve(c: np.ndarray, **kw: Any) -> np.ndarray:
        res = linprog(c, A_eq=a_eq, b_eq=y, bounds=all_bounds, method="highs", **kw)
        if not res.success:  # pragma: no cover - a bounded, feasible LP; kept as a guard
            raise RuntimeError(f"train_mfu fit failed: {res.message}")
        return res.x

    best = solve(cost)
    # LAD optima are often a whole face (e.g. an even number of cases of one generation). Make the fit unique:
    # fix each constant in turn (exponent, then the bases) to the middle of its range over the optimal face
    cap = float(cost @ best) * (1 + 1e-9) + 1e-12
    x = best[:3].copy()
    for j in (2, 0, 1):
        ends = [solve(sign * np.eye(3 + 2 * n)[j], A_ub=cost[None, :], b_ub=[cap]) for sign in (1, -1)]
        x[j] = 0.5 * (ends[0][j] + ends[1][j])
        all_bounds[j] = (x[j], x[j])
    out = dict(start)
    out.update(
        {
            "mfu_ampere": float(np.exp(x[0])),
            "mfu_hopper": float(np.exp(x[1])),
            "mfu_size_exponent": float(x[2]),
        }
    )
    return out


@dataclass(frozen=True)
class GroupResult:
    """Fit and errors of one calibration group (errors are ``(estimated - measured) / measured``).

    ``committed`` are the values in ``flopwise.estimate.timing``; ``fitted`` the fit on all cases;
    ``in_sample_errors`` the errors with the committed values; ``loo_errors`` the error of each case predicted
    with the constants refitted without it.
    """

    group: CalibrationGroup
    ids: tuple[str, ...]
    committed: Mapping[str, float]
    fitted: Mapping[str, float]
    in_sample_errors: tuple[float, ...]
    loo_errors: tuple[float, ...]

    def stats(self, errors: Sequence[float]) -> tuple[float, float]:
        """(median, p90) of |error|."""
        a = [abs(e) for e in errors]
        return statistics.median(a), percentile(a, 90.0)

    @property
    def in_sample(self) -> tuple[float, float]:
        return self.stats(self.in_sample_errors)

    @property
    def loo(self) -> tuple[float, float]:
        return self.stats(self.loo_errors)


def leave_one_out(
    group: CalibrationGroup, features: _Features, committed: Mapping[str, float]
) -> tuple[float, ...]:
    """Relative error of each case predicted with *group*'s constants refitted on all the other cases."""
    full = fit_group(group, features, committed)
    errors = []
    for i in range(len(features.ids)):
        mask = np.ones(len(features.ids), dtype=bool)
        mask[i] = False
        c = fit_group(group, features, full, mask)
        one = {k: v[i : i + 1] for k, v in features.columns.items()}
        pred = float(_predict(group, c, one)[0])
        errors.append((pred - features.measured[i]) / features.measured[i])
    return tuple(errors)


def calibrate(
    *,
    groups: Sequence[str] | None = None,
    cases: Sequence[ValidationCase] | None = None,
    catalog: Any = None,
    registry: Any = None,
    loo: bool = True,
) -> tuple[GroupResult, ...]:
    """Fit every group (or those named in *groups*) and, with *loo*, its leave-one-out errors."""
    if catalog is None:
        from flopwise.catalog import load_catalog

        catalog = load_catalog()
    if registry is None:
        from flopwise.models import load_models

        registry = load_models()
    all_cases = load_cases() if cases is None else tuple(cases)
    committed = committed_constants()
    out = []
    for group in GROUPS:
        if groups is not None and group.name not in groups:
            continue
        feats = _features(group, all_cases, catalog, registry)
        pred = _predict(group, committed, feats.columns)
        in_sample = tuple(float(e) for e in (pred - feats.measured) / feats.measured)
        fitted = fit_group(group, feats, committed)
        loo_errors = leave_one_out(group, feats, committed) if loo else ()
        out.append(
            GroupResult(
                group=group,
                ids=feats.ids,
                committed={k: committed[k] for k in group.constants},
                fitted={k: fitted[k] for k in group.constants},
                in_sample_errors=in_sample,
                loo_errors=loo_errors,
            )
        )
    return tuple(out)


def _render(results: Sequence[GroupResult], show: Callable[[str], None] = print) -> None:
    for r in results:
        show(f"{r.group.name} ({r.group.category}, n={len(r.ids)})")
        for k in r.group.constants:
            show(f"  {k:26s} committed {r.committed[k]:.4g}   fit on all cases {r.fitted[k]:.4g}")
        med, p90 = r.in_sample
        show(f"  in-sample      median |err| {med:.3f}  p90 {p90:.3f}")
        if r.loo_errors:
            med, p90 = r.loo
            show(f"  leave-one-out  median |err| {med:.3f}  p90 {p90:.3f}")
            worst = sorted(zip(r.ids, r.loo_errors, strict=True), key=lambda t: -abs(t[1]))[:3]
            show("  worst LOO: " + ", ".join(f"{i} {e:+.0%}" for i, e in worst))


if __name__ == "__main__":  # pragma: no cover - documented script entry point
    _render(calibrate())
