"""plan_size: compute-optimal model size and training tokens for a budget (Hoffmann et al. 2022), and the
inference-aware optimum when the model will serve many tokens (Sardana et al. 2023).

Pure: numbers in, a frozen :class:`SizePlan` out. See docs/plan-train.md, "plan size".

Symbols: N parameters, D training tokens, C = 6 N D training FLOPs (Kaplan et al. 2020, arXiv:2001.08361
Sec. 2.1), D_inf lifetime inference tokens costing 2 N FLOPs each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from flopwise.catalog.types import Device
from flopwise.errors import InputError, UnsupportedError
from flopwise.estimate._inputs import jsonable
from flopwise.estimate.quant import TRAIN_PRECISIONS, resolve_compute_peak
from flopwise.estimate.timing import SMALL_MODEL_PARAMS, default_mfu_frac
from flopwise.units import S_PER_H, TERA, check_positive

__all__ = [
    "CHINCHILLA_A",
    "CHINCHILLA_ALPHA",
    "CHINCHILLA_B",
    "CHINCHILLA_BETA",
    "CHINCHILLA_E",
    "CHINCHILLA_TOKENS_PER_PARAM",
    "SizePlan",
    "SizePoint",
    "budget_usd_to_flops",
    "chinchilla_loss",
    "chinchilla_optimal",
    "inference_aware_optimal",
    "plan_size",
    "tokens_per_param_optimal",
]

HOFFMANN_URL = "https://arxiv.org/abs/2203.15556"
SARDANA_URL = "https://arxiv.org/abs/2401.00448"
BESIROGLU_URL = "https://arxiv.org/abs/2404.10102"

#: Parametric loss fit of Hoffmann et al. 2022 (arXiv:2203.15556), Approach 3, eq. (10): the rounded values printed
#: in the paper body. Besiroglu et al. 2024 (arXiv:2404.10102) show the rounding biases the optimum towards smaller N.
CHINCHILLA_E = 1.69
CHINCHILLA_A = 406.4
CHINCHILLA_B = 410.7
CHINCHILLA_ALPHA = 0.34
CHINCHILLA_BETA = 0.28
#: Approaches 1 and 2 of Hoffmann et al. scale N and D about equally (a ~ b ~ 0.5); their Table 3 gives
#: ~20 tokens per parameter (e.g. 10B parameters -> 205.1B tokens, 67B -> 1.5T). Chinchilla itself: 70B on 1.4T.
CHINCHILLA_TOKENS_PER_PARAM = 20.0
#: Training FLOPs per parameter per token (forward + backward), C = 6 N D (Kaplan et al. 2020 Sec. 2.1).
TRAIN_FLOPS_PER_PARAM_TOKEN = 6.0
#: Inference FLOPs per parameter per token (forward only), as in Sardana et al. 2023 eq. (2).
INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0


@dataclass(frozen=True)
class SizePoint:
    """One model size and training length, with its predicted loss and FLOPs."""

    method: str
    params: float
    tokens: float
    tokens_per_param: float
    loss: float
    train_flops: float
    inference_flops: float
    total_flops: float

    def to_dict(self) -> dict:
        return jsonable(self)


@dataclass(frozen=True)
class SizePlan:
    """The answer of :func:`plan_size`.

    ``chinchilla`` is the Approach 3 optimum of the parametric loss at ``budget_flops``; ``rule_of_thumb`` the
    ~20 tokens-per-parameter split of Approaches 1/2; ``inference_aware`` (when ``inference_tokens`` was given)
    the Sardana et al. model that reaches the same loss as ``chinchilla`` with the least training + inference
    FLOPs, and ``inference_saving_frac`` its saving on total FLOPs against serving the Chinchilla-optimal model.
    """

    budget_flops: float
    inference_tokens: float
    chinchilla: SizePoint
    rule_of_thumb: SizePoint
    inference_aware: SizePoint | None
    inference_saving_frac: float | None
    assumptions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return jsonable(self)


def chinchilla_loss(params, tokens):
    """Predicted pre-training loss ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022,
    arXiv:2203.15556, eq. (2) with the Approach 3 fit of eq. (10)). Floats or numpy arrays."""
    return (
        CHINCHILLA_E
        + CHINCHILLA_A / np.power(params, CHINCHILLA_ALPHA)
        + CHINCHILLA_B / np.power(tokens, CHINCHILLA_BETA)
    )


def chinchilla_optimal(budget_flops: float) -> tuple[float, float]:
    """(N_opt, D_opt) minimizing ``L(N, D)`` subject to ``6 N D = C`` (Hoffmann et al. 2022, eq. (4)):
    ``N_opt = G (C/6)^a``, ``D_opt = G^-1 (C/6)^b`` with ``G = (alpha A / (beta B))^(1/(alpha+beta))``,
    ``a = beta / (alpha + beta)``, ``b = alpha / (alpha + beta)``."""
    c6 = budget_flops / TRAIN_FLOPS_PER_PARAM_TOKEN
    s = CHINCHILLA_ALPHA + CHINCHILLA_BETA
    g = (CHINCHILLA_ALPHA * CHINCHILLA_A / (CHINCHILLA_BETA * CHINCHILLA_B)) ** (1.0 / s)
    n_opt = g * c6 ** (CHINCHILLA_BETA / s)
    return n_opt, c6 / n_opt


def tokens_per_param_optimal(budget_flops: float) -> tuple[float, float]:
    """(N, D) with ``D = 20 N`` and ``6 N D = C``: ``N = sqrt(C / 120)`` (the ~20 tokens per parameter of
    Hoffmann et al. 2022 Approaches 1 and 2, Table 3)."""
    n = math.sqrt(budget_flops / (TRAIN_FLOPS_PER_PARAM_TOKEN * CHINCHILLA_TOKENS_PER_PARAM))
    return n, CHINCHILLA_TOKENS_PER_PARAM * n


def _tokens_for_loss(params, target_loss: float):
    """Training tokens D such that ``L(N, D) = target_loss`` (inf where N alone cannot reach it)."""
    gap = target_loss - CHINCHILLA_E - CHINCHILLA_A / np.power(params, CHINCHILLA_ALPHA)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(
            gap > 0, np.power(CHINCHILLA_B / np.where(gap > 0, gap, 1.0), 1.0 / CHINCHILLA_BETA), np.inf
        )
    return d


def inference_aware_optimal(target_loss: float, inference_tokens: float) -> tuple[float, float]:
    """(N, D) minimizing ``6 N D + 2 N D_inf`` subject to ``L(N, D) = target_loss`` (Sardana et al. 2023,
    arXiv:2401.00448, eq. (3) in FLOPs). Solved in log N: a vectorized grid brackets the minimum, then
    ``scipy.optimize.minimize_scalar`` (bounded Brent) refines it."""
    if target_loss <= CHINCHILLA_E:
        raise InputError("target_loss", target_loss, f"must be above the irreducible loss E={CHINCHILLA_E}")
    # smallest N that can reach the target with infinite data
    n_min = (CHINCHILLA_A / (target_loss - CHINCHILLA_E)) ** (1.0 / CHINCHILLA_ALPHA)

    def total(log_n):
        n = np.exp(log_n)
        return np.log(
            n
            * (
                TRAIN_FLOPS_PER_PARAM_TOKEN * _tokens_for_loss(n, target_loss)
                + INFERENCE_FLOPS_PER_PARAM_TOKEN * inference_tokens
            )
        )

    lo, hi = math.log(n_min) + 1e-9, math.log(n_min) + 40.0
    grid = np.linspace(lo, hi, 801)
    values = total(grid)
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    from scipy.optimize import minimize_scalar  # lazy: importing scipy.optimize costs ~0.2 s

    res = minimize_scalar(
        lambda x: float(total(x)), bounds=(a, b), method="bounded", options={"xatol": 1e-10}
    )
    n = float(math.exp(res.x))
    return n, float(_tokens_for_loss(n, target_loss))


def _point(method: str, n: float, d: float, inference_tokens: float) -> SizePoint:
    train = TRAIN_FLOPS_PER_PARAM_TOKEN * n * d
    infer = INFERENCE_FLOPS_PER_PARAM_TOKEN * n * inference_tokens
    return SizePoint(
        method=method,
        params=n,
        tokens=d,
        tokens_per_param=d / n,
        loss=float(chinchilla_loss(n, d)),
        train_flops=train,
        inference_flops=infer,
        total_flops=train + infer,
    )


def budget_usd_to_flops(
    budget_usd: Decimal | float,
    device: Device,
    usd_per_device_h: Decimal | float,
    *,
    precision: str = "bf16",
    mfu_frac: float | None = None,
    n_params_hint: float | None = None,
) -> tuple[float, dict]:
    """Training FLOPs a dollar budget buys: ``budget / price * 3600 * peak * MFU`` (MFU as defined by Chowdhery
    et al. 2022, arXiv:2204.02311 App. B). Returns (FLOPs, assumptions). MFU defaults to the estimator's
    per-generation value (``estimate.timing.DEFAULT_MFU``) for a model of *n_params_hint* parameters."""
    budget = check_positive(float(budget_usd), "budget_usd", 1e13)
    price = check_positive(float(usd_per_device_h), "usd_per_device_h", 1e6)
    if precision not in TRAIN_PRECISIONS:
        raise InputError("precision", precision, "use one of " + ", ".join(TRAIN_PRECISIONS))
    dtype, peak_tflop = resolve_compute_peak(device, precision)
    if mfu_frac is None:
        mfu, mfu_note = default_mfu_frac(device, n_params_hint if n_params_hint else SMALL_MODEL_PARAMS)
    else:
        mfu = check_positive(mfu_frac, "mfu_frac", 1.0)
        mfu_note = "given by the caller"
    device_hours = budget / price
    flops = device_hours * S_PER_H * peak_tflop * TERA * mfu
    return flops, {
        "device": device.id,
        "usd_per_device_h": str(usd_per_device_h),
        "device_hours": device_hours,
        "compute_dtype": dtype,
        "peak_tflop_per_s": peak_tflop,
        "mfu_frac": mfu,
        "mfu_source": mfu_note,
    }


def plan_size(
    *,
    budget_flops: float | None = None,
    budget_usd: Decimal | float | None = None,
    device: Device | None = None,
    usd_per_device_h: Decimal | float | None = None,
    precision: str = "bf16",
    mfu_frac: float | None = None,
    inference_tokens: float | None = None,
) -> SizePlan:
    """Compute-optimal parameters and tokens for a training budget, and the inference-aware optimum.

    Give exactly one of *budget_flops* or *budget_usd*; a dollar budget also needs *device* and
    *usd_per_device_h* to convert it to FLOPs (see :func:`budget_usd_to_flops`). *inference_tokens* is the number
    of tokens the model will process in its lifetime (prompt + generated); with it, the plan adds the model that
    reaches the Chinchilla-optimal loss with the least total (training + inference) FLOPs (Sardana et al. 2023).
    """
    if (budget_flops is None) == (budget_usd is None):
        raise InputError(
            "budget",
            {"budget_flops": budget_flops, "budget_usd": budget_usd},
            "give exactly one of budget_flops or budget_usd",
        )
    assumptions: dict[str, Any] = {
        "loss_fit": f"L = {CHINCHILLA_E} + {CHINCHILLA_A}/N^{CHINCHILLA_ALPHA} + {CHINCHILLA_B}/D^{CHINCHILLA_BETA}"
        f" (Hoffmann et al. 2022 Approach 3, {HOFFMANN_URL})",
        "loss_fit_caveat": "the rounded published constants bias the Approach 3 optimum towards fewer parameters "
        f"and more tokens than Approaches 1/2 (Besiroglu et al. 2024, {BESIROGLU_URL}); compare rule_of_thumb",
        "train_flops": "6 N D (Kaplan et al. 2020, arXiv:2001.08361)",
        "inference_flops": f"2 N per token (Sardana et al. 2023, {SARDANA_URL})",
        "tokens_per_param_rule": CHINCHILLA_TOKENS_PER_PARAM,
    }
    if budget_usd is not None:
        if device is None or usd_per_device_h is None:
            raise InputError(
                "device" if device is None else "usd_per_device_h",
                None,
                "a dollar budget needs a device and its price per device-hour to convert it to FLOPs "
                "(or give budget_flops)",
            )
        flops, conv = budget_usd_to_flops(
            budget_usd, device, usd_per_device_h, precision=precision, mfu_frac=mfu_frac, n_params_hint=1e12
        )
        if mfu_frac is None and chinchilla_optimal(flops)[0] < SMALL_MODEL_PARAMS:
            # small models get the estimator's lower MFU; redo the conversion once with it
            flops, conv = budget_usd_to_flops(
                budget_usd,
                device,
                usd_per_device_h,
                precision=precision,
                n_params_hint=chinchilla_optimal(flops)[0],
            )
        assumptions["budget_usd"] = str(budget_usd)
        assumptions["budget_conversion"] = conv
        budget = flops
    else:
        if device is not None or usd_per_device_h is not None:
            raise InputError(
                "device",
                getattr(device, "id", device),
                "device and usd_per_device_h only apply with budget_usd; drop them or "
                "give budget_usd instead of budget_flops",
            )
        budget = float(budget_flops)  # type: ignore[arg-type]
    budget = check_positive(budget, "budget_flops", 1e35)
    if budget < 1e12:
        raise UnsupportedError(
            f"budget_flops {budget:g} is below 1e12 FLOPs, outside the range the Chinchilla fit describes "
            "(their models used 6e18 to 3e21 FLOPs); give a larger budget"
        )
    d_inf = (
        0.0
        if inference_tokens is None
        else check_positive(float(inference_tokens), "inference_tokens", 1e30, allow_zero=True)
    )

    n3, d3 = chinchilla_optimal(budget)
    chin = _point("hoffmann-approach-3", n3, d3, d_inf)
    n20, d20 = tokens_per_param_optimal(budget)
    rule = _point("tokens-per-param-20", n20, d20, d_inf)
    aware = None
    saving = None
    if inference_tokens is not None:
        n_a, d_a = inference_aware_optimal(chin.loss, d_inf)
        aware = _point("sardana-inference-aware", n_a, d_a, d_inf)
        saving = 1.0 - aware.total_flops / chin.total_flops
        assumptions["inference_aware_constraint"] = (
            f"same loss as the Chinchilla-optimal model ({chin.loss:.4f}); minimize 6 N D + 2 N D_inf"
        )
    return SizePlan(
        budget_flops=budget,
        inference_tokens=d_inf,
        chinchilla=chin,
        rule_of_thumb=rule,
        inference_aware=aware,
        inference_saving_frac=saving,
        assumptions=assumptions,
    )
