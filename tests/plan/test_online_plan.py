"""plan serve's latency under load with the online step of estimate.serve: prefills mixed into decode steps
(mixed_prefill engines) lengthen the steps instead of stalling them."""

import numpy as np
import pytest

from flopwise.catalog import load_catalog
from flopwise.estimate import serve as est_serve
from flopwise.models import load_models
from flopwise.plan.queueing import continuous_batching_state
from flopwise.plan.serve import serve_physics


def test_queue_without_stalls_has_tpot_of_the_tagged_step():
    n = np.array([1.0, 8.0, 32.0])
    kw = {"slots": 64.0, "step_s": 0.010 + 0.0001 * n, "step_s_tagged": 0.010 + 0.0001 * (n + 1),
          "step_s_full": 0.0164, "prefill_s": 0.05, "decode_steps": 199}  # fmt: skip
    stall = continuous_batching_state(n, **kw)
    mixed = continuous_batching_state(n, **kw, stall_prefill_s=0.0)
    assert np.allclose(mixed.tpot_mean_s, kw["step_s_tagged"]) and np.allclose(mixed.tpot_p95_s, kw["step_s_tagged"])
    assert np.all(stall.tpot_p95_s > mixed.tpot_p95_s)
    # the request's own prefill still comes before its first token
    assert np.all(mixed.ttft_mean_s >= kw["prefill_s"])
    # no stalls: more requests/s at the same occupancy (the steps given already carry the prompt tokens)
    assert np.all(mixed.arrival_rps > stall.arrival_rps)


def test_load_step_carries_the_admitted_prompts_and_the_online_overhead():
    cat, models = load_catalog(), load_models()
    model, h100 = models.resolve("llama-3.1-8b"), cat.devices["h100-sxm"]
    phys = serve_physics(model, [(h100, "bf16", 1, "vllm", None), (h100, "bf16", 1, "sglang", None)], 1000, 200)
    assert list(phys.mixed_prefill) == [1.0, 0.0]
    n = np.array([1.0, 16.0, 128.0])
    base = phys.step_s(n[None, :], 1)  # (configurations, occupancies)
    load = phys.load_step_s(n[None, :], 199, 1)
    online = np.asarray(phys.online_step_overhead_s)
    assert online[0] == pytest.approx(model.n_layers * est_serve.ONLINE_LAYER_OVERHEAD_S - 32 * 1.5e-5)
    # sglang (no mixing): the decode step plus the online overhead; vllm: longer still (the prompt tokens)
    assert np.allclose(load[1], base[1] + online[1])
    assert np.all(load[0] > base[0] + online[0])
