"""Latency under load of one replica serving with continuous batching: an analytic queueing model.

The scheduler modelled (and simulated step by step in ``plan.simulate``) is iteration-level scheduling as in Orca
(Yu et al., OSDI '22, https://www.usenix.org/conference/osdi22/presentation/yu) and vLLM (Kwon et al., SOSP '23,
arXiv:2309.06180) with prefill priority and no chunking: the engine loops over iterations; when requests wait and
one of the ``slots`` (the batch / concurrency cap, vLLM's ``max_num_seqs``) is free it admits them and runs their
prefill as one iteration (which emits each request's first token); otherwise it runs one decode step for every
running request, whose duration ``t(n)`` depends on the occupancy ``n``. A request leaves after ``decode_steps``
decode steps.

The model is parametrized by the mean number of requests in decode, ``N`` (so the arrival rate is explicit and
the search over loads needs no fixed-point iteration):

* engine-time balance: prefills take ``lambda * p1`` of the engine's time and decode steps the rest, producing
  ``N`` tokens each, so ``lambda * decode_steps = N (1 - lambda p1) / t(N)``, i.e.
  ``lambda = N / (decode_steps * t(N) + N * p1)``; the decode phase lasts ``D = N / lambda`` (Little's law).
* slots as an M/G/c queue (Erlang C): a request holds a slot for ``S = W_engine + p1 + D``; offered load
  ``a = lambda S``; probability of waiting ``C(c, a)`` from the Erlang B formula written with the Poisson
  distribution (``B = pmf(c; a) / cdf(c; a)``, ``C = B / (1 - (a/c)(1 - B))``). The M/M/c waiting tail
  ``P(W > x) = C exp(-(c - a) x / S)`` is scaled by the Allen-Cunneen factor ``(1 + cs^2) / 2`` for a service
  time with squared coefficient of variation ``cs^2`` (service here is nearly deterministic), which gives
  ``W_95 = (1 + cs^2)/2 * S / (c - a) * ln(C / 0.05)`` when ``C > 0.05``, else 0 (Allen 1990, "Probability,
  Statistics and Queueing Theory", Sec. 5.5; Kingman 1961's heavy-traffic form for one server).
* engine wait after admission: the residual of the decode step in progress (uniform on ``[0, t(N)]`` while the
  engine is busy) plus earlier prefills, an M/D/1 queue of load ``f_p = lambda p1`` whose mean wait is
  ``f_p p1 / (2 (1 - f_p))`` (Pollaczek-Khinchine) with an exponential tail of the same mean.
* TTFT p95 = slot-wait p95 + engine-wait p95 + ``p1`` (a sum of p95s: an upper bound of the p95 of the sum).
* TPOT p95: a tagged request decodes alongside ``N`` others on average (PASTA), so each step takes ``t(N + 1)``;
  prefills of requests arriving meanwhile stall its decode: their number is Poisson with mean ``lambda D``, so
  ``TPOT_95 = t(N + 1) + (lambda D + 1.645 sqrt(lambda D) / (1 - f_p)) p1 / decode_steps`` (normal
  approximation; the ``1 / (1 - f_p)`` widens the spread because every stall lengthens the decode and lets more
  arrivals in, a branching process whose total size has a standard deviation about ``1 / (1 - f_p)`` times the
  Poisson one; derived, checked against the simulation).

Agreement with ``plan.simulate`` (tests/plan/test_queueing.py): within 35% on both p95s at 30/60/85% of
saturation for a batch cap of 64 and for a batch cap of 4. Known gap: with a mid-size cap (16) near saturation
the analytic TTFT p95 is up to 2.5x too low, because the occupancy is burstier than Poisson and the slots
saturate in bursts; hence the planner's ceiling of 90% of saturation and the batch caps it prefers (large).

Every function takes numpy arrays and broadcasts; nothing loops over candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

__all__ = [
    "P95_TAIL_FRAC",
    "P95_Z",
    "QueueState",
    "continuous_batching_state",
    "erlang_c",
    "saturation_rps",
]

#: the tail probability of a p95
P95_TAIL_FRAC = 0.05
#: the standard normal 95th percentile
P95_Z = 1.6448536269514722


def erlang_c(servers, offered_load):
    """Probability that an arrival waits in an M/M/c queue with *servers* c and *offered_load* a = lambda/mu
    (Erlang C), for real a in [0, c); 1.0 where a >= c.

    Uses Erlang B = Poisson pmf(c; a) / Poisson cdf(c; a) (Erlang's loss formula; e.g. Kleinrock 1975,
    "Queueing Systems" Vol. 1, Sec. 3.7) and ``C = B / (1 - (a / c)(1 - B))``; vectorized through
    ``scipy.special`` (no recursion over c).
    """
    c = np.asarray(servers, dtype=float)
    a = np.asarray(offered_load, dtype=float)
    a_pos = np.maximum(a, 1e-300)
    log_pmf = c * np.log(a_pos) - a_pos - special.gammaln(c + 1.0)
    cdf = special.pdtr(c, a_pos)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b = np.exp(log_pmf) / np.maximum(cdf, 1e-300)
        rho = a / c
        out = b / (1.0 - rho * (1.0 - b))
    out = np.where(a <= 0, 0.0, out)
    return np.where(a >= c, 1.0, np.clip(out, 0.0, 1.0))


def saturation_rps(slots, step_s_full, prefill_s, decode_steps):
    """Requests/s one replica completes with every slot busy: each request costs the engine its prefill ``p1``
    plus ``1/c`` of ``decode_steps`` steps of ``t(c)``: ``c / (decode_steps * t(c) + c * p1)``."""
    return slots / (decode_steps * step_s_full + slots * prefill_s)


@dataclass(frozen=True)
class QueueState:
    """The steady state of one replica at mean decode occupancy ``n_decoding`` (arrays, broadcast shape).

    ``arrival_rps``: the request rate that yields it; ``slot_load``: offered load in slots (Erlangs);
    ``is_stable``: the slot queue is stable (a < c); ``utilization``: arrival rate over the saturation rate;
    ``prefill_frac``: share of engine time in prefill; ``wait_prob``: Erlang C; times in seconds.
    """

    n_decoding: Any
    arrival_rps: Any
    decode_s: Any
    slot_hold_s: Any
    slot_load: Any
    is_stable: Any
    wait_prob: Any
    slot_wait_p95_s: Any
    engine_wait_p95_s: Any
    ttft_mean_s: Any
    ttft_p95_s: Any
    tpot_mean_s: Any
    tpot_p95_s: Any
    prefill_frac: Any
    busy_frac: Any
    utilization: Any


def continuous_batching_state(
    n_decoding,
    *,
    slots,
    step_s,
    step_s_tagged,
    step_s_full,
    prefill_s,
    decode_steps,
) -> QueueState:
    """The queueing model of the module docstring at mean decode occupancy *n_decoding* (> 0).

    *step_s* is the decode step time at occupancy ``N``, *step_s_tagged* at ``min(N + 1, slots)``, *step_s_full*
    at ``slots``; *prefill_s* is one request's prefill time ``p1``; *decode_steps* the decode steps per request.
    """
    n = np.asarray(n_decoding, dtype=float)
    c = np.asarray(slots, dtype=float)
    t = np.asarray(step_s, dtype=float)
    p1 = np.asarray(prefill_s, dtype=float)
    k = np.asarray(decode_steps, dtype=float)
    lam = n / (k * t + n * p1)
    f_p = lam * p1
    decode = n / lam
    busy = np.minimum(1.0, f_p + (1.0 - f_p) * (1.0 - np.exp(-n)))
    # engine wait after admission: residual decode step (uniform while busy) + M/D/1 prefill queue
    residual_p95 = np.where(busy > P95_TAIL_FRAC, t * (1.0 - P95_TAIL_FRAC / np.maximum(busy, 1e-12)), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pq_mean = f_p * p1 / (2.0 * (1.0 - f_p))
        pq_p95 = np.where(
            f_p > P95_TAIL_FRAC,
            p1 / (2.0 * (1.0 - f_p)) * np.log(np.maximum(f_p, 1e-300) / P95_TAIL_FRAC),
            0.0,
        )
    engine_wait_mean = busy * t / 2.0 + pq_mean
    engine_wait_p95 = residual_p95 + pq_p95
    hold = engine_wait_mean + p1 + decode
    a = lam * hold
    stable = (a < c) & (f_p < 1.0)
    wait_prob = erlang_c(c, a)
    interleaved = lam * decode
    cs2 = interleaved * p1**2 / hold**2
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (1.0 + cs2) / 2.0 * hold / (c - a)
        slot_wait_mean = wait_prob * scale
        slot_wait_p95 = np.where(
            wait_prob > P95_TAIL_FRAC, scale * np.log(np.maximum(wait_prob, 1e-300) / P95_TAIL_FRAC), 0.0
        )
    slot_wait_mean = np.where(stable, slot_wait_mean, np.inf)
    slot_wait_p95 = np.where(stable, slot_wait_p95, np.inf)
    t_tag = np.asarray(step_s_tagged, dtype=float)
    tpot_mean = t_tag + interleaved * p1 / k
    tpot_p95 = t_tag + (interleaved + P95_Z * np.sqrt(interleaved) / (1.0 - np.minimum(f_p, 0.99))) * p1 / k
    util = lam / saturation_rps(c, np.asarray(step_s_full, dtype=float), p1, k)
    return QueueState(
        n_decoding=n,
        arrival_rps=lam,
        decode_s=decode,
        slot_hold_s=hold,
        slot_load=a,
        is_stable=stable,
        wait_prob=wait_prob,
        slot_wait_p95_s=slot_wait_p95,
        engine_wait_p95_s=engine_wait_p95,
        ttft_mean_s=slot_wait_mean + engine_wait_mean + p1,
        ttft_p95_s=slot_wait_p95 + engine_wait_p95 + p1,
        tpot_mean_s=tpot_mean,
        tpot_p95_s=tpot_p95,
        prefill_frac=f_p,
        busy_frac=busy,
        utilization=util,
    )
