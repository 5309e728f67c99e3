"""The pruned capacity search of plan_serve (issue 8: every engine over the whole catalog under 0.5 s) gives the
answer of the exhaustive one: every (configuration, batch cap) pair, every refinement and the queue state at
every occupancy (``serve._PRUNE = False``). Compared on the whole JSON of plans over the current catalog, so the
check holds whatever the physics and the catalog become (tests/plan/test_serve_goldens.py pins the answers of
one point in time). And the one property of the physics the pruning assumes: the decode step time does not fall
as the occupancy grows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flopwise.plan import ServeWorkload, enumerate_serve_space, plan_serve
from flopwise.plan import serve as serve_mod
from flopwise.plan.serve import BATCH_CAPS, engine_profiles, expand_engines, serve_physics


def _json(plan) -> dict:
    out = plan.to_dict()
    out["assumptions"].pop("data_age", None)  # relative to today's date
    for o in out["options"]:
        o.pop("stale", None)
    return json.loads(json.dumps(out, sort_keys=True))


@pytest.mark.parametrize(
    ("model_id", "rps", "tin", "tout", "ttft", "tpot", "kw"),
    [
        # MoE, every engine, tight TTFT: the TTFT tail binds
        ("mixtral-8x7b", 30.0, 2000, 300, 800.0, 60.0, {"engines": ["all"]}),
        # dense 32B at a high rate, ranked by latency, with FP8 KV caches
        ("qwen3-32b", 80.0, 1000, 500, 3000.0, 40.0, {"engines": ["vllm", "sglang", "trt-llm"], "objective": "latency"}),
        # a small model with TPOT only, CPUs and GPUs, on-prem too
        ("llama-3.2-3b", 3.0, 500, 200, None, 120.0, {"engines": ["all"], "pricing": ("on-demand", "onprem")}),
    ],
)  # fmt: skip
def test_pruned_search_equals_exhaustive(catalog, models, monkeypatch, model_id, rps, tin, tout, ttft, tpot, kw):
    w = ServeWorkload(models.resolve(model_id), rps, tin, tout, ttft_p95_ms=ttft, tpot_p95_ms=tpot)
    space = enumerate_serve_space(catalog, w.model, pricing=kw.pop("pricing", ("on-demand",)))
    pruned = _json(plan_serve(w, catalog, space=space, **kw))
    monkeypatch.setattr(serve_mod, "_PRUNE", False)
    exhaustive = _json(plan_serve(w, catalog, space=space, **kw))
    assert pruned["options"], "the case should have feasible options"
    for part in ("options", "pareto", "rejected", "cpu_vs_gpu", "summary"):
        assert pruned[part] == exhaustive[part], part
    assert pruned == exhaustive


@pytest.mark.parametrize("model_id", ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b"])
def test_decode_step_time_does_not_fall_with_occupancy(catalog, models, model_id):
    # _pair_capacity bounds the arrival rate between two grid occupancies by the step time at the lower one
    model = models.resolve(model_id)
    profiles, pool = engine_profiles(["all"])
    space = expand_engines(enumerate_serve_space(catalog, model, pricing=("on-demand", "onprem")), profiles, None, pool)
    phys = serve_physics(model, list(space.candidates.configs), 1000, 200)
    n = np.geomspace(1e-3, max(BATCH_CAPS), 400)[None, :]
    # the decode step alone and the step under load the capacity search uses (mixed prefill, online overhead)
    for t in (phys.step_s(n, 1), phys.load_step_s(n, 199, 1)):
        assert np.all(np.isfinite(t))
        worst = np.min(np.diff(t, axis=1) / t[:, 1:])
        assert worst >= -1e-12, f"decode step time falls with occupancy (relative {worst:.3g})"


def _tie_members_by_sorting(rows, group, key, ties_built=2):
    # the former implementation: one stable sort of every row by group
    order = np.argsort(group, kind="stable")
    g, k, r = group[order], key[order], rows[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    kmin = np.repeat(np.minimum.reduceat(k, starts), sizes)
    tie = k <= kmin * (1.0 + 1e-9) + 1e-12
    rank = np.cumsum(tie) - np.repeat((np.cumsum(tie) - tie)[starts], sizes)
    keep = tie & (rank <= ties_built)
    group_first = np.repeat(r[starts], sizes)
    sel = np.lexsort((r[keep], group_first[keep]))
    return r[keep][sel].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_tie_members_equal_the_sorting_reference(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    rows = np.sort(rng.choice(20000, size=n, replace=False))
    group = rng.integers(0, 700, size=n) * 3
    key = np.round(rng.random(n) * 20.0) / 4.0  # many exact ties
    key[rng.random(n) < 0.05] *= 1.0 + 5e-10  # ties within the 1e-9 tolerance
    assert serve_mod._tie_members(rows, group, key) == _tie_members_by_sorting(rows, group, key, serve_mod._TIES_BUILT)
