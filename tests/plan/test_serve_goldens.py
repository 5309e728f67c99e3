"""plan_serve answers do not change under speed work: the full JSON (options, rejected, Pareto fronts, assumptions,
summary, CPU-vs-GPU) of seven diverse plans over the whole built-in catalog equals goldens written before the
search was pruned and vectorized further (issue 8: every engine under 0.5 s).

The goldens are outputs of flopwise itself, not measurements: they guard against a change of answer, not for
its correctness (tests/plan/test_serve.py and test_serve_ranking.py do that). Only the parts that depend on
today's date (``assumptions.data_age`` and each option's ``stale``) are left out. When the physics or the
catalog changes on purpose, regenerate them with
``PYTHONPATH=src python tests/plan/test_serve_goldens.py`` and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.models import load_models
from flopwise.plan import ServeWorkload, plan_serve

GOLDEN_DIR = Path(__file__).parent / "fixtures" / "serve_goldens"
REJECTED_KEPT = 40

#: name -> (model, rps, input, output, ttft p95 ms, tpot p95 ms, plan_serve keywords)
CASES: dict[str, tuple] = {
    # the bench's service over every engine and price basis (bench/bench_plan_serve.py)
    "bench-8b-all-engines": (
        "llama-3.1-8b", 20.0, 1000, 200, 1000.0, 100.0,
        {"engines": ["all"], "pricing": ("on-demand", "spot", "reserved", "onprem")},
    ),
    # a 70B model ranked by latency with tight TPOT, two price bases
    "70b-latency": (
        "llama-3.3-70b", 5.0, 2000, 300, 2000.0, 50.0,
        {"engines": ["all"], "pricing": ("on-demand", "spot"), "objective": "latency"},
    ),
    # MoE without SLOs, ranked by energy, three datacenter engines
    "mixtral-energy-no-slo": (
        "mixtral-8x7b", 50.0, 512, 256, None, None,
        {"engines": ["vllm", "sglang", "trt-llm"], "objective": "energy", "top_k": 15},
    ),
    # a tiny model at a low rate: CPUs compete (CPU vs GPU, crossover), on-prem included
    "tiny-cpu-vs-gpu": (
        "qwen3-0.6b", 0.5, 256, 128, 5000.0, 200.0,
        {"engines": ["all"], "pricing": ("on-demand", "onprem")},
    ),
    # a 405B model ranked by CO2e, reserved pricing
    "405b-co2": (
        "llama-3.1-405b", 2.0, 1000, 500, None, 80.0,
        {"engines": ["all"], "pricing": ("on-demand", "reserved"), "objective": "co2"},
    ),
    # explicit KV dtypes on two engines, a high rate and tight SLOs, a long list
    "8b-kv-dtypes-tight": (
        "llama-3.1-8b", 100.0, 1000, 200, 500.0, 30.0,
        {"engines": ["vllm", "llama.cpp"], "kv_dtypes": ["fp8", "bf16"], "top_k": 30},
    ),
    # MLA MoE on one device per replica: mostly rejected (nearest misses), generic engine
    "deepseek-one-device": (
        "deepseek-v3", 10.0, 1000, 200, 2000.0, 100.0,
        {"max_devices": 1, "pricing": ("on-demand", "spot", "reserved", "onprem")},
    ),
}  # fmt: skip


def _answer(name: str, catalog, models) -> dict:
    model_id, rps, tin, tout, ttft, tpot, kw = CASES[name]
    w = ServeWorkload(models.resolve(model_id), rps, tin, tout, ttft_p95_ms=ttft, tpot_p95_ms=tpot)
    out = plan_serve(w, catalog, **kw).to_dict()
    out["assumptions"].pop("data_age", None)  # relative to today's date
    for o in out["options"]:
        o.pop("stale", None)
    out = json.loads(json.dumps(out, sort_keys=True))
    # the rejected list ends with every skipped offering (thousands, from the enumeration): the golden keeps the
    # first REJECTED_KEPT in full and the count and a digest of the whole list
    rejected = out.pop("rejected")
    out["rejected_head"] = rejected[:REJECTED_KEPT]
    out["rejected_count"] = len(rejected)
    out["rejected_sha256"] = hashlib.sha256(json.dumps(rejected, sort_keys=True).encode()).hexdigest()
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_serve_json_equals_golden(name, catalog, models):
    want = json.loads((GOLDEN_DIR / f"{name}.json").read_text())
    got = _answer(name, catalog, models)
    for part in ("options", "pareto", "rejected_head", "rejected_sha256", "cpu_vs_gpu", "assumptions", "summary"):
        assert got[part] == want[part], f"{name}: {part} changed"
    assert got == want


def main() -> None:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    catalog, models = load_catalog(), load_models()
    for name in sys.argv[1:] or sorted(CASES):
        ans = _answer(name, catalog, models)
        (GOLDEN_DIR / f"{name}.json").write_text(json.dumps(ans, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {len(ans['options'])} options, {ans['rejected_count']} rejected")


if __name__ == "__main__":
    main()
