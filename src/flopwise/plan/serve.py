"""plan_serve: the cheapest (greenest, fastest) way to serve a model at a request rate, searched across the catalog.

Steps (docs/plan-serve.md):

1. ``enumerate_serve_space``: every device x tensor-parallel degree x quantization x price basis.
2. ``serve_physics``: the estimator's serving terms (``flopwise.estimate``: the same memory, FLOP, roofline,
   collective and power functions and constants as ``estimate_serve``) evaluated for all distinct
   (device, quant, TP) configurations at once, as numpy arrays over configurations x batch caps x occupancies:
   prefill time of one prompt, decode step time at an occupancy, memory at a batch cap, power per phase.
3. ``replica_capacity``: the queueing model of continuous batching (``plan.queueing``) on a grid of loads for
   every configuration and batch cap; the largest request rate per replica that is stable, below
   ``MAX_UTILIZATION_FRAC`` of saturation and within the p95 SLOs; the batch cap that achieves the most.
4. replicas = ceil(rps / capacity), latency/energy/cost at the per-replica load rps / replicas, ranking by the
   objective, the rejected alternatives with their shortfall, and the Pareto fronts.

Pure: no file, network, environment or clock access. Money is Decimal in results.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

import numpy as np

from flopwise import money
from flopwise.catalog.cpu import burstable_caveat
from flopwise.catalog.engines import EngineProfile, check_engine_supports, get_engine, load_engines
from flopwise.catalog.types import Device, OnPremProfile
from flopwise.errors import FlopwiseError, InputError
from flopwise.estimate import energy as en
from flopwise.estimate import flops as fl
from flopwise.estimate import memory as mem
from flopwise.estimate import serve as _estimate_serve
from flopwise.estimate import timing as tm
from flopwise.estimate.cost import onprem_usd_per_device_h
from flopwise.estimate.quant import get_quant, kv_bytes_per_element
from flopwise.estimate.serve import serving_memory_reserve_bytes, serving_rates
from flopwise.models.params import count_params
from flopwise.models.types import ModelArch
from flopwise.plan.candidates import (
    CandidateRows,
    CandidateSpace,
    ServeCandidate,
    ServeWorkload,
    SkippedCandidate,
    enumerate_serve_space,
)
from flopwise.plan.queueing import continuous_batching_state, occupancy_arrival_rps, saturation_rps
from flopwise.units import (
    BYTES_PER_GB,
    BYTES_PER_GIB,
    CENT,
    GIGA,
    KILO,
    MEGA,
    MS_PER_S,
    PRICE_STEP,
    S_PER_H,
    TERA,
)

__all__ = [
    "BATCH_CAPS",
    "DEFAULT_GRID_GCO2E_PER_KWH",
    "MAX_UTILIZATION_FRAC",
    "OBJECTIVES",
    "CapacityTable",
    "OwnedDevice",
    "ServePhysics",
    "ServePlan",
    "engine_profiles",
    "expand_engines",
    "plan_serve",
    "replica_capacity",
    "serve_physics",
]

OBJECTIVES = ("cost", "energy", "co2", "latency")
#: batch caps (concurrent sequences per replica, vLLM ``max_num_seqs``) searched; each configuration uses those up
#: to its engine's ``max_seqs_limit`` that fit its memory (not a fixed 256)
BATCH_CAPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: same-precision formats an engine loads when it cannot load the planner's default (the llama.cpp family serves
#: int8/int4 as GGUF Q8_0/Q4_K_M; fp8 as Q8_0)
ENGINE_QUANT_EQUIVALENTS = {
    "int4-awq": ("int4-gptq", "q4_k_m"),
    "int4-gptq": ("int4-awq", "q4_k_m"),
    "int8": ("fp8", "q8_0"),
    "fp8": ("int8", "q8_0"),
    "bf16": ("fp16",),
    "fp16": ("bf16",),
}
#: a replica is never planned above this share of its saturation throughput: headroom for bursts beyond
#: Poisson and for the model's error near saturation, where queueing delay diverges (derived; the usual
#: 80-90% ceiling of capacity planning, e.g. Gunther, "Guerrilla Capacity Planning", 2007, ch. 2)
MAX_UTILIZATION_FRAC = 0.9
#: grid intensity for on-prem candidates with no region: the world average of 2023, 480 gCO2e/kWh (Ember, Global
#: Electricity Review 2024)
DEFAULT_GRID_GCO2E_PER_KWH = 480.0
DEFAULT_GRID_SOURCE = "https://ember-energy.org/latest-insights/global-electricity-review-2024/"
#: occupancy grid (share of the batch cap) on which the queueing model is evaluated, refined by bisection
#: (24 points + 15 bisection steps: against 40 + 13 on five workloads x generic / every engine, the top-30
#: options agree but for the order of near-ties, capacities within 1e-4, in 60% of the CPU time; 40 + 13 itself
#: matched 64 + 12)
_OCCUPANCY_FRACS = np.concatenate([np.geomspace(0.002, 0.05, 6), np.linspace(0.06, 0.999, 18)])
_BISECT_STEPS = 15
_MONEY_1M = PRICE_STEP
#: skip the (configuration, batch cap) pairs, refinements and queue states that cannot change the answer
#: (``_config_capacity``, ``_pair_capacity``, ``_screened_ok``); False evaluates everything, the reference the
#: tests compare the pruned search with
_PRUNE = True
#: candidates of one option group tied on the float objective whose exact (Decimal) keys are compared
_TIES_BUILT = 2


# --------------------------------------------------------------------------------------------------------------
# physics of all distinct configurations at once
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServePhysics:
    """Per-configuration constants (arrays of length G over distinct device x quant x TP) and the step-time
    functions of ``estimate_serve``, broadcasting over extra trailing axes."""

    model: ModelArch
    input_tokens: int
    output_tokens: int
    keys: tuple[tuple, ...]  # (device id, quant, tp, engine id, kv dtype)
    devices: tuple[Device, ...]
    tp: Any
    peak_flop_per_s: Any
    decode_flop_per_s: Any  # the matrix x vector rate of decode (differs on CPUs with llama.cpp kernels)
    bandwidth_bytes_per_s: Any
    link_bytes_per_s: Any
    collective_latency_s: Any
    kv_shard: Any
    bytes_per_param: Any
    weights_bytes: Any
    overhead_bytes: Any
    capacity_bytes: Any
    kv_bytes_per_element: Any
    power_prefill_w: Any
    power_decode_w: Any
    idle_w: Any
    host_frac: Any
    step_overhead_s: Any = 0.0
    prefill_step_overhead_s: Any = 0.0
    overlap_p: Any = 0.0  # p-norm of compute and memory time of a decode step (0 = the roofline)
    params: Any = None
    shard: Any = None  # divides a step's weight bytes and FLOPs (tp; 1 for a layer split)
    ranks: Any = None  # all-reduce group (tp; 1 for a layer split)
    hops: Any = None  # device hand-offs per step of a layer split
    kv_mem_shard: Any = None  # divides KV memory (kv_shard; the device count for a layer split)
    chunk_tokens: Any = None  # prefill chunk of the engine
    kv_block_tokens: Any = None  # KV paging block of the engine
    max_seqs: Any = None  # the engine's most concurrent sequences
    is_free_basis: Any = None  # the engine budgets free memory (TensorRT-LLM) rather than the total
    util_frac: Any = None
    reserve_bytes: Any = None
    tdp_w: Any = None
    raw_flop_per_s: Any = None  # dense datasheet peak of the serving dtype (utilization denominator)
    raw_bandwidth_bytes_per_s: Any = None  # datasheet bandwidth
    k_mem: Any = None  # load-power coefficients (estimate.energy.load_power_coeffs)
    k_compute: Any = None
    mixed_prefill: Any = None  # 1 where the engine prefills new prompts inside decode steps (engines.csv)
    online_step_overhead_s: Any = None  # added to a step under load (estimate.serve.ONLINE_LAYER_OVERHEAD_S)

    def take(self, rows) -> ServePhysics:
        """The physics of configurations *rows* (an index array; repeats allowed)."""
        arrays = {
            f.name: np.asarray(getattr(self, f.name))[rows]
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        return dataclasses.replace(self, **arrays)

    def _col(self, x, extra: int):
        return np.asarray(x).reshape((-1,) + (1,) * extra)

    def _weight_read_bytes(self, step_tokens, extra: int):
        pc = self.params
        model = self.model
        inactive = float(pc.total - pc.active)
        input_table = 0.0 if model.tied_embeddings else float(model.vocab_size * model.d_model)
        touched = (
            tm.moe_touched_frac(model.n_experts, model.n_experts_active, step_tokens) if model.is_moe else 0.0
        )
        return (
            (pc.active - input_table + inactive * touched)
            * self._col(self.bytes_per_param, extra)
            / self._col(self.shard, extra)
        )

    def _step_parts(self, occupancy, extra: int = 0, prefill_tokens=None) -> tuple[Any, Any, Any]:
        """(FLOPs, bytes, time s) of one decode step per device at *occupancy* sequences, with *prefill_tokens*
        prompt tokens mixed in (as ``estimate.serve._decode_step_s``)."""
        model = self.model
        col = self._col
        shard = col(self.shard, extra)
        n_mm = fl.matmul_params(self.params.non_embedding_active, model)
        ctx = self.input_tokens + self.output_tokens / 2.0
        n = np.asarray(occupancy, dtype=float)
        tokens = n
        step_flops = n * fl.decode_flops_per_token(n_mm, model, ctx) / shard
        if prefill_tokens is not None:
            tokens = n + prefill_tokens
            per_tok = fl.prefill_flops(n_mm, model, self.input_tokens, 1.0) / self.input_tokens
            step_flops = step_flops + prefill_tokens * per_tok / shard
        step_bytes = self._weight_read_bytes(tokens, extra) + mem.kv_cache_bytes(
            model, ctx, n, col(self.kv_bytes_per_element, extra)
        ) / col(self.kv_shard, extra)
        comm = (
            2.0
            * model.n_layers
            * tm.allreduce_time_s(
                tokens * model.d_model * 2.0,
                col(self.ranks, extra),
                col(self.link_bytes_per_s, extra),
                col(self.collective_latency_s, extra),
            )
        ) + col(self.hops, extra) * col(self.collective_latency_s, extra)
        t = (
            tm.roofline_time_s(
                step_flops,
                step_bytes,
                col(self.decode_flop_per_s, extra),
                col(self.bandwidth_bytes_per_s, extra),
                col(self.overlap_p, extra),
            )
            + comm
            + col(self.step_overhead_s, extra)
        )
        return step_flops, step_bytes, t

    def step_s(self, occupancy, extra: int = 0):
        """Decode step time (s) at *occupancy* sequences (array broadcasting against (G, ...) with *extra*
        trailing axes), at the mean context ``input + output/2``, as ``estimate_serve``'s TPOT."""
        return self._step_parts(occupancy, extra)[2]

    def load_step_s(self, occupancy, decode_steps: int, extra: int = 0):
        """Step time (s) under continuous batching at *occupancy* sequences in decode, with the online per-step
        overhead (``online_step_overhead_s``); where the engine mixes
        prefills into decode steps (``mixed_prefill``, as ``estimate.serve.online_decode``) each step also carries
        the prompt tokens of the requests admitted meanwhile, ``occupancy x input_tokens / decode_steps`` (the
        engine-time balance ``lambda = N / (decode_steps x T)`` times ``input_tokens x T``); elsewhere the decode
        step alone (prefills stall it, see plan.queueing)."""
        online = 0.0 if self.online_step_overhead_s is None else self._col(self.online_step_overhead_s, extra)
        if self.mixed_prefill is None or not np.any(np.asarray(self.mixed_prefill) > 0):
            return self.step_s(occupancy, extra) + online
        n = np.asarray(occupancy, dtype=float)
        pre = n * (self.input_tokens / float(decode_steps)) * (self._col(self.mixed_prefill, extra) > 0)
        return self._step_parts(n, extra, pre)[2] + online

    def stall_prefill_s(self, prefill_s, extra: int = 0):
        """The prefill time that stalls running decodes: *prefill_s* where the engine runs prefills as their own
        steps, 0 where it mixes them into decode steps."""
        if self.mixed_prefill is None:
            return prefill_s
        return np.where(self._col(self.mixed_prefill, extra) > 0, 0.0, prefill_s)

    def _power_w(self, flops, nbytes, t, extra: int):
        col = self._col
        act = np.clip(
            col(self.k_mem, extra) * nbytes / col(self.raw_bandwidth_bytes_per_s, extra) / t
            + col(self.k_compute, extra) * flops / col(self.raw_flop_per_s, extra) / t,
            0.0,
            1.0,
        )
        idle = col(self.idle_w, extra)
        return idle + (col(self.tdp_w, extra) - idle) * act

    def decode_power_w(self, occupancy, extra: int = 0):
        """Device power (W) while decoding *occupancy* sequences: estimate.energy.load_activity_frac on the
        step's memory-bandwidth and compute utilization, as ``estimate_serve``."""
        return self._power_w(*self._step_parts(occupancy, extra), extra)

    def prefill_power_w(self, batch=1, extra: int = 0):
        """Device power (W) while prefilling *batch* prompts together (as ``estimate_serve``)."""
        model = self.model
        col = self._col
        n_mm = fl.matmul_params(self.params.non_embedding_active, model)
        b = np.asarray(batch, dtype=float)
        prefill_tok = b * self.input_tokens
        chunk = col(self.chunk_tokens, extra)
        chunks = np.maximum(np.ceil(prefill_tok / chunk), 1.0)
        flops = fl.prefill_flops(n_mm, model, self.input_tokens, b) / col(self.shard, extra)
        nbytes = self._weight_read_bytes(np.minimum(prefill_tok, chunk), extra) * chunks
        return self._power_w(flops, nbytes, self.prefill_s(batch, extra), extra)

    def prefill_s(self, batch=1, extra: int = 0):
        """Prefill time (s) of *batch* prompts together (``estimate_serve``'s TTFT at that batch)."""
        model = self.model
        col = self._col
        shard = col(self.shard, extra)
        chunk = col(self.chunk_tokens, extra)
        lat = col(self.collective_latency_s, extra)
        ranks = col(self.ranks, extra)
        n_mm = fl.matmul_params(self.params.non_embedding_active, model)
        b = np.asarray(batch, dtype=float)
        prefill_tok = b * self.input_tokens
        chunks = np.maximum(np.ceil(prefill_tok / chunk), 1.0)
        compute = (
            fl.prefill_flops(n_mm, model, self.input_tokens, b) / shard / col(self.peak_flop_per_s, extra)
        )
        memory = (
            self._weight_read_bytes(np.minimum(prefill_tok, chunk), extra)
            * chunks
            / col(self.bandwidth_bytes_per_s, extra)
        )
        comm = (
            2.0
            * model.n_layers
            * (
                tm.allreduce_time_s(
                    prefill_tok * model.d_model * 2.0, ranks, col(self.link_bytes_per_s, extra), 0.0
                )
                + chunks * lat * (ranks > 1)
            )
            + chunks * col(self.hops, extra) * lat
        )
        return np.maximum(compute, memory) + chunks * col(self.prefill_step_overhead_s, extra) + comm

    def memory_bytes(self, batch, extra: int = 0):
        """Memory per device (bytes) with *batch* sequences cached (in whole KV blocks), the engine's reserve
        included (``estimate.serve.serving_memory_reserve_bytes``): paged engines hold input + output/2 tokens per
        sequence on average under continuous batching and at least one sequence at full length, as
        ``estimate_serve`` (``_kv_tokens_in_use``)."""
        col = self._col
        block = col(self.kv_block_tokens, extra)
        full = _paged_tokens_col(self.input_tokens + self.output_tokens, block)
        in_use = np.where(
            block > 1,
            _paged_tokens_col(self.input_tokens + np.ceil(self.output_tokens / 2.0), block),
            self.input_tokens + self.output_tokens,
        )
        kv_b = col(self.kv_bytes_per_element, extra)
        kv = np.maximum(
            mem.kv_cache_bytes(self.model, in_use, batch, kv_b), mem.kv_cache_bytes(self.model, full, 1.0, kv_b)
        ) / col(self.kv_mem_shard, extra)
        acts = mem.serving_activation_bytes(
            self.model, batch, self.input_tokens, chunk_tokens=col(self.chunk_tokens, extra)
        )
        weights = col(self.weights_bytes, extra)
        capacity = col(self.capacity_bytes, extra)
        reserve = col(self.reserve_bytes, extra)
        unused = 1.0 - col(self.util_frac, extra)
        overhead = reserve + np.where(
            col(self.is_free_basis, extra) > 0,
            unused * np.maximum(capacity - reserve - weights - acts, 0.0),
            unused * capacity,
        )
        return weights + kv + acts + overhead


def _paged_tokens_col(tokens, block_tokens):
    """``estimate.serve._paged_tokens`` with a per-configuration block size (array)."""
    return np.ceil(tokens / block_tokens) * block_tokens


def _config_tuple(config) -> tuple[Device, str, int, EngineProfile, str | None]:
    if len(config) == 3:
        device, quant, tp = config
        return device, quant, tp, get_engine(None), None
    device, quant, tp, engine, kv = config
    return device, quant, tp, get_engine(engine), kv


def _device_row(device: Device) -> dict:
    """The constants of serve_physics that depend on the device alone (shared by its quant x engine x TP rows)."""
    kind = device.kind
    (k_mem, k_compute), _basis = en.load_power_coeffs(device)
    return {
        "link": device.interconnect_gb_per_s * GIGA or 1.0,
        "lat": tm.collective_latency_s(device),
        "capacity": device.memory_gb * BYTES_PER_GB,
        "p_pre": en.device_power_w(device.tdp_w, device.idle_w, en.PREFILL_ACTIVITY_FRAC),
        "p_dec": en.device_power_w(device.tdp_w, device.idle_w, en.DECODE_ACTIVITY_FRAC),
        "idle": device.idle_w,
        "tdp": device.tdp_w,
        "raw_bw": device.memory_bandwidth_gb_per_s * GIGA,
        "k_mem": k_mem,
        "k_compute": k_compute,
        "host": en.host_power_frac(device),
        "overlap_p": float(tm.ROOFLINE_OVERLAP_P.get(kind) or 0.0),
    }


def _tp_free_row(model: ModelArch, device: Device, quant: str, eng: EngineProfile, dev: dict) -> dict:
    """The per-configuration constants of serve_physics that do not depend on the TP degree, the KV dtype or the
    device alone (*dev*: ``_device_row(device)``, whose capacity it reads)."""
    q = get_quant(quant)
    rates = serving_rates(q, device, model.n_layers, eng)
    kind = device.kind
    capacity = dev["capacity"]
    reserve = (
        mem.RUNTIME_CONTEXT_BYTES.get(kind, mem.RUNTIME_CONTEXT_BYTES["gpu"])
        if eng.runtime_reserve_gib is None
        else eng.runtime_reserve_gib * BYTES_PER_GIB
    )
    util = (
        mem.ENGINE_MEMORY_UTILIZATION_FRAC.get(kind, 0.9)
        if eng.memory_utilization_frac is None
        else eng.memory_utilization_frac
    )
    return {
        "peak": rates.peak_flop_per_s,
        "dpeak": rates.decode_flop_per_s,
        "bw": rates.bandwidth_bytes_per_s,
        "bpp": q.bits_per_weight / 8.0,
        "bits": q.bits_per_weight,
        "overhead": float(serving_memory_reserve_bytes(eng, capacity, 0.0, kind)),
        "raw_flop": rates.compute_peak_tflop_per_s * TERA,
        "overhead_s": rates.layer_overhead_s,
        # online servers pay at least ONLINE_LAYER_OVERHEAD_S per layer per step on GPUs (as estimate.serve)
        "online_s": max(model.n_layers * _estimate_serve.ONLINE_LAYER_OVERHEAD_S - rates.layer_overhead_s, 0.0)
        if kind == "gpu"
        else 0.0,
        "mixed": 1.0 if eng.mixed_prefill else 0.0,
        "overhead_pre_s": rates.prefill_layer_overhead_s,
        "chunk": float(eng.prefill_chunk_tokens),
        "block": float(eng.kv_block_tokens),
        "max_seqs": float(eng.max_seqs_limit),
        "free": 1.0 if eng.memory_basis == "free" else 0.0,
        "util": util,
        "reserve": reserve,
    }


def serve_physics(
    model: ModelArch, configs: Sequence[tuple], input_tokens: int, output_tokens: int
) -> ServePhysics:
    """Constants of ``estimate_serve`` for each (device, quant, tensor parallel[, engine, kv dtype]) in
    *configs* (engine: a profile or its id; kv dtype None = the engine's default for the quant)."""
    pc = count_params(model)
    # the values that do not depend on the TP degree, worked out once per device, per device x quant x engine and
    # per engine x quant x KV dtype (the catalog has many offerings and TP degrees per device), then broadcast to
    # the configurations with numpy
    dev_index: dict[str, int] = {}
    dev_rows: list[dict] = []
    base: dict[tuple, int] = {}
    base_rows: list[dict] = []
    kv_of: dict[tuple, tuple[str, float]] = {}
    n = len(configs)
    bidx = np.empty(n, dtype=np.int64)
    didx = np.empty(n, dtype=np.int64)
    tps = np.empty(n, dtype=float)
    layer = np.zeros(n, dtype=bool)
    kv_bytes = np.empty(n, dtype=float)
    keys = []
    devices = []
    for i, config in enumerate(configs):
        device, quant, tp, eng, kv_given = _config_tuple(config)
        devices.append(device)
        d = dev_index.get(device.id)
        if d is None:
            d = dev_index[device.id] = len(dev_rows)
            dev_rows.append(_device_row(device))
        bkey = (device.id, quant, eng.id)
        j = base.get(bkey)
        if j is None:
            j = base[bkey] = len(base_rows)
            base_rows.append(_tp_free_row(model, device, quant, eng, dev_rows[d]))
        kkey = (eng.id, quant, kv_given)
        kv = kv_of.get(kkey)
        if kv is None:
            kv_name = (
                eng.default_kv_dtype("fp32" if get_quant(quant).name == "fp32" else "bf16")
                if kv_given is None
                else kv_given
            )
            kv = kv_of[kkey] = (kv_name, kv_bytes_per_element(kv_name))
        keys.append((device.id, quant, tp, eng.id, kv[0]))
        bidx[i] = j
        didx[i] = d
        tps[i] = tp
        layer[i] = eng.multi_device == "layer"
        kv_bytes[i] = kv[1]
    b_names = (
        "peak", "bw", "bpp", "overhead", "overhead_s", "chunk", "block", "max_seqs", "free", "util", "reserve",
        "raw_flop", "overhead_pre_s", "dpeak", "mixed", "online_s",
    )  # fmt: skip
    d_names = (
        "link", "lat", "capacity", "p_pre", "p_dec", "idle", "host", "tdp", "raw_bw", "k_mem", "k_compute",
        "overlap_p",
    )  # fmt: skip
    b_cols = np.asarray([[row[k] for k in b_names] for row in base_rows], dtype=float).reshape(-1, len(b_names))
    d_cols = np.asarray([[row[k] for k in d_names] for row in dev_rows], dtype=float).reshape(-1, len(d_names))
    a = {k: b_cols[bidx, c] for c, k in enumerate(b_names)}
    a.update({k: d_cols[didx, c] for c, k in enumerate(d_names)})
    b_weights = np.asarray([mem.weight_bytes(pc.total, row["bits"]) for row in base_rows], dtype=float)
    kv_shard = np.where(
        layer | (model.attention == "mla"), 1.0, np.minimum(tps, model.n_kv_heads).astype(float)
    )
    a.update(
        tp=tps,
        kv_shard=kv_shard,
        weights=b_weights[bidx] / tps if n else np.zeros(0),
        kv_b=kv_bytes,
        shard=np.where(layer, 1.0, tps),
        ranks=np.where(layer, 1.0, tps),
        hops=np.where(layer, tps - 1.0, 0.0),
        kv_mem_shard=np.where(layer, tps, kv_shard),
    )
    return ServePhysics(
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        keys=tuple(keys),
        devices=tuple(devices),
        tp=a["tp"],
        peak_flop_per_s=a["peak"],
        decode_flop_per_s=a["dpeak"],
        bandwidth_bytes_per_s=a["bw"],
        link_bytes_per_s=a["link"],
        collective_latency_s=a["lat"],
        kv_shard=a["kv_shard"],
        bytes_per_param=a["bpp"],
        weights_bytes=a["weights"],
        overhead_bytes=a["overhead"],
        capacity_bytes=a["capacity"],
        kv_bytes_per_element=a["kv_b"],
        power_prefill_w=a["p_pre"],
        power_decode_w=a["p_dec"],
        idle_w=a["idle"],
        host_frac=a["host"],
        step_overhead_s=a["overhead_s"],
        prefill_step_overhead_s=a["overhead_pre_s"],
        overlap_p=a["overlap_p"],
        params=pc,
        shard=a["shard"],
        ranks=a["ranks"],
        hops=a["hops"],
        kv_mem_shard=a["kv_mem_shard"],
        chunk_tokens=a["chunk"],
        kv_block_tokens=a["block"],
        max_seqs=a["max_seqs"],
        is_free_basis=a["free"],
        util_frac=a["util"],
        reserve_bytes=a["reserve"],
        tdp_w=a["tdp"],
        raw_flop_per_s=a["raw_flop"],
        raw_bandwidth_bytes_per_s=a["raw_bw"],
        k_mem=a["k_mem"],
        k_compute=a["k_compute"],
        mixed_prefill=a["mixed"],
        online_step_overhead_s=a["online_s"],
    )


def engine_profiles(
    engines: Sequence[str | EngineProfile] | None, catalog_dir: str | None = None
) -> tuple[list[EngineProfile], dict[str, EngineProfile]]:
    """(the profiles named in *engines*, the pool they come from): None or empty = ``generic``; ``all`` = every
    profile (the built-in ones and ``catalog_dir``'s ``engines.csv``). Unknown names raise InputError with the
    closest."""
    pool = load_engines(catalog_dir)
    names = ["generic"] if not engines else list(engines)
    if any(isinstance(e, str) and e.strip().lower() == "all" for e in names):
        names = sorted(pool)
    profiles: list[EngineProfile] = []
    for name in names:
        profile = get_engine(name, pool)
        if profile not in profiles:
            profiles.append(profile)
    return profiles, pool


def _kv_choices(engine: EngineProfile, quant: str, kv_dtypes: Sequence[str] | None) -> list[str | None]:
    """KV dtypes searched for *engine*: the given ones it supports, or its default plus FP8 where the engine
    lists an FP8 KV cache (vLLM, SGLang, TensorRT-LLM)."""
    if kv_dtypes is not None:
        return [kv for kv in kv_dtypes if engine.runs_kv(kv)]
    default = engine.default_kv_dtype("fp32" if quant == "fp32" else "bf16")
    return [None] + (["fp8"] if "fp8" in engine.kv_dtypes and default != "fp8" else [])


def expand_engines(
    space: CandidateSpace,
    engines: Sequence[str | EngineProfile],
    kv_dtypes: Sequence[str] | None = None,
    engine_pool: dict[str, EngineProfile] | None = None,
) -> CandidateSpace:
    """Every candidate of *space* x each engine that can run it (its device kind, vendor and weight format, or a
    same-precision format the engine loads: ``ENGINE_QUANT_EQUIVALENTS``) x KV dtype (``_kv_choices``).
    Combinations no engine runs are skipped with kind ``unsupported_engine`` and the engine's own reason."""
    from flopwise.estimate.quant import resolve_serving_quant

    profiles = [get_engine(e, engine_pool) for e in engines]
    base = tuple(space.candidates)
    skipped: list[SkippedCandidate] = list(space.skipped)
    runs: dict[tuple, tuple] = {}  # (device, quant, engine) -> (quant used or None, reason, kv dtypes)
    # the variants (engine x KV dtype) depend on device x quant x TP only: worked out once per such key, then
    # broadcast to its offerings with numpy (no object per offering x engine x KV dtype; CandidateRows)
    key_index: dict[tuple, int] = {}
    key_start: list[int] = []
    key_len: list[int] = []
    variants: list[tuple] = []
    pair_config: list[int] = []
    config_index: dict[tuple, int] = {}
    configs: list[tuple] = []
    key_of_base = np.empty(len(base), dtype=np.int64)
    for i, c in enumerate(base):
        key = (c.device.id, c.quant, c.device_count)
        k = key_index.get(key)
        if k is None:
            k = key_index[key] = len(key_start)
            start = len(variants)
            for eng in profiles:
                rkey = (c.device.id, c.quant, eng.id)
                if rkey not in runs:
                    quant, reason = None, ""
                    for alt in (c.quant, *ENGINE_QUANT_EQUIVALENTS.get(c.quant, ())):
                        try:
                            check_engine_supports(eng, c.device, alt)
                            if alt != c.quant:
                                resolve_serving_quant(get_quant(alt), c.device)
                            quant = alt
                            break
                        except FlopwiseError as err:
                            reason = reason or str(err)
                    runs[rkey] = (quant, reason, _kv_choices(eng, quant, kv_dtypes) if quant else [])
                quant, reason, kvs = runs[rkey]
                if quant is None:
                    skipped.append(
                        SkippedCandidate(c.device.id, c.device_count, c.quant, c.pricing, "unsupported_engine", reason)
                    )
                    continue
                if c.device_count > 1 and eng.multi_device == "tensor" and c.device.interconnect_gb_per_s <= 0:
                    continue
                for kv in kvs:
                    ckey = (c.device.id, quant, c.device_count, eng.id, kv)
                    j = config_index.get(ckey)
                    if j is None:
                        j = config_index[ckey] = len(configs)
                        configs.append((c.device, quant, c.device_count, eng, kv))
                    variants.append((quant, eng, kv))
                    pair_config.append(j)
            key_start.append(start)
            key_len.append(len(variants) - start)
        key_of_base[i] = k
    counts = np.asarray(key_len, dtype=np.int64)[key_of_base] if len(base) else np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(len(base), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    pair = np.repeat(np.asarray(key_start, dtype=np.int64)[key_of_base] - first, counts) + np.arange(
        len(rows), dtype=np.int64
    )
    cand = CandidateRows(base, rows, pair, variants, np.asarray(pair_config, dtype=np.int64), configs)
    return CandidateSpace(cand, tuple(skipped))


# --------------------------------------------------------------------------------------------------------------
# capacity of one replica
# --------------------------------------------------------------------------------------------------------------


class _PerConfig(Sequence):
    """A per-candidate column whose value depends on the physics configuration only: ``values[index[i]]`` for row
    *i*, read on access (no tuple of hundreds of thousands of rows is built for the few rows a plan reports)."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[str], index) -> None:
        self._values = tuple(values)
        self._index = index

    @property
    def values(self) -> tuple[str, ...]:
        """The value of each configuration."""
        return self._values

    @property
    def index(self):
        """The configuration of each row."""
        return self._index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self._values[j] for j in self._index[i].tolist())
        return self._values[int(self._index[i])]

    def __iter__(self):
        values = self._values
        return iter([values[j] for j in self._index.tolist()])

    def __eq__(self, other) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class CapacityTable:
    """Per candidate (arrays aligned with ``candidates``): the largest request rate per replica meeting the
    SLOs (``capacity_rps``, 0 where infeasible), the batch cap achieving it, replicas for the workload, and at the
    per-replica load ``rps / replicas``: p95 TTFT/TPOT (ms), utilization, power, energy and CO2e per 1M output
    tokens, cost per hour of the whole deployment (float USD; Decimal in the plan's options).

    ``reason`` is "" for feasible candidates, else ``does_not_fit`` | ``misses_slo``; ``shortfall`` says by how
    much (GB per device short, or ms over the tighter SLO at the lightest load) in ``shortfall_unit``.
    """

    candidates: CandidateRows  # objects are built on access
    config_index: Any
    feasible: Any
    capacity_rps: Any
    batch: Any
    replicas: Any
    load_rps_per_replica: Any
    ttft_p95_ms: Any
    tpot_p95_ms: Any
    utilization: Any
    saturation_tokens_per_s: Any
    power_per_device_w: Any
    energy_per_1m_tokens_kwh: Any
    co2e_per_1m_tokens_kg: Any
    cost_per_hour_usd: Any
    cost_per_replica_hour_usd: Any
    instances: Any
    memory_gb: Any
    reason: Sequence[str]
    shortfall: Any
    shortfall_unit: Sequence[str]
    detail: Sequence[str]
    kv_dtype: Sequence[str] = ()
    device_energy_per_1m_tokens_kwh: Any = None  # GPU only (what NVML/DCGM measure)
    node_energy_per_1m_tokens_kwh: Any = None  # device + host share
    pue: Any = None


def _metrics(phys: ServePhysics, slots, n, extra: int, decode_steps: int, fixed=None):
    """Queue state for configs x (trailing axes) at occupancy *n* with batch cap *slots*. *fixed*: the
    (full-batch step time, one prompt's prefill time) when the caller has them already (they do not depend on
    the occupancy)."""
    t = phys.load_step_s(n, decode_steps, extra)
    t_tag = phys.load_step_s(np.minimum(n + 1.0, slots), decode_steps, extra)
    t_full, p1 = fixed if fixed is not None else _fixed(phys, slots, decode_steps, extra)
    return continuous_batching_state(
        n,
        slots=slots,
        step_s=t,
        step_s_tagged=t_tag,
        step_s_full=t_full,
        prefill_s=p1,
        decode_steps=decode_steps,
        stall_prefill_s=phys.stall_prefill_s(p1, extra),
    )


def _fixed(phys: ServePhysics, slots, decode_steps: int, extra: int = 0):
    """(full-batch step time, one prompt's prefill time): the occupancy-free inputs of ``_metrics``."""
    return phys.load_step_s(slots, decode_steps, extra), phys.prefill_s(1, extra)


def _ok(state, slots, ttft_slo_s: float, tpot_slo_s: float):
    return (
        state.is_stable
        & (state.utilization <= MAX_UTILIZATION_FRAC)
        & (state.ttft_p95_s <= ttft_slo_s)
        & (state.tpot_p95_s <= tpot_slo_s)
    )


def _at(x, pts):
    """*x* (a scalar, or an array broadcasting against the points' grid) at the points *pts* (np.nonzero of a
    mask over that grid)."""
    x = np.asarray(x)
    if x.ndim == 0:
        return x
    return x[tuple(i if size > 1 else np.zeros_like(i) for i, size in zip(pts, x.shape, strict=True))]


def _screened_ok(
    n, slots, t, t_tag, t_full, p1, p_stall, decode_steps: int, ttft_slo: float, tpot_slo: float, keep=None
):
    """(``_ok`` of the queue state at each occupancy *n*, the arrival rate there, the state at the points
    screened in, those points). The state (Erlang C and the latency tails) is evaluated only where the two
    necessary conditions that need none of it hold: the utilization ``lambda / saturation`` within
    ``MAX_UTILIZATION_FRAC`` (the same expression as the state's) and the tagged decode step ``t(N + 1)``
    within the TPOT target (TPOT p95 is that step plus non-negative prefill stalls); elsewhere a point is not
    ok. *keep*: points evaluated regardless (mask). *p1*: one prompt's prefill time; *p_stall*: the part of it that
    stalls the running decodes (``ServePhysics.stall_prefill_s``)."""
    lam = occupancy_arrival_rps(n, t, p_stall, decode_steps)
    util = lam / saturation_rps(slots, t_full, p_stall, decode_steps)
    need = (util <= MAX_UTILIZATION_FRAC) & (t_tag <= tpot_slo)
    if not _PRUNE:
        need = np.ones(need.shape, dtype=bool)
    if keep is not None:
        need = need | keep
    pts = np.nonzero(need)
    st = continuous_batching_state(
        _at(n, pts),
        slots=_at(slots, pts),
        step_s=_at(t, pts),
        step_s_tagged=_at(t_tag, pts),
        step_s_full=_at(t_full, pts),
        prefill_s=_at(p1, pts),
        decode_steps=decode_steps,
        stall_prefill_s=_at(p_stall, pts),
    )
    ok = np.zeros(need.shape, dtype=bool)
    ok[pts] = _ok(st, None, ttft_slo, tpot_slo)
    return ok, lam, st, pts


def _pair_capacity(
    phys: ServePhysics, gi, pcap, decode_steps: int, ttft_slo: float, tpot_slo: float, floor=None
):
    """(capacity rps, TTFT p95 s and TPOT p95 s at the lightest load) of configurations *gi* at batch caps *pcap*
    (pairs on one axis): the largest feasible load on the occupancy grid, refined by bisection. The queue state
    is evaluated only at the points that pass the cheap screens of ``_screened_ok`` (and at every pair's
    lightest load, whose latencies are returned): the answer is that of evaluating it everywhere.

    *floor* (per configuration, optional): a capacity its configuration is known to reach at another cap. A
    pair is refined only if the refinement can reach the larger of that floor and the best grid capacity of
    the configuration's other pairs here; else it keeps its grid capacity, below the best of its configuration
    either way. Between the grid occupancies ``n_f < N < n_f+1`` the arrival rate
    ``N / (k t(N) + N p1)`` is at most ``n_f+1 / (k t(n_f) + n_f+1 p1)``, since the decode step time ``t``
    does not fall as the occupancy grows (more tokens, more KV reads, larger all-reduces;
    tests/plan/test_serve_search.py checks it over the catalog), and at most ``MAX_UTILIZATION_FRAC`` of the
    saturation rate."""
    pp = phys.take(gi)
    slots = pcap[:, None]
    n = slots * _OCCUPANCY_FRACS[None, :]  # (P, F)
    t = pp.load_step_s(n, decode_steps, 1)
    t_tag = pp.load_step_s(np.minimum(n + 1.0, slots), decode_steps, 1)
    t_full, p1 = pp.load_step_s(slots, decode_steps, 1), pp.prefill_s(1, 1)
    ps = pp.stall_prefill_s(p1, 1)
    lightest = np.zeros(n.shape, dtype=bool)
    lightest[:, 0] = True
    ok, lam, st, pts = _screened_ok(n, slots, t, t_tag, t_full, p1, ps, decode_steps, ttft_slo, tpot_slo, lightest)
    light_ttft = np.empty(len(gi))
    light_tpot = np.empty(len(gi))
    first = pts[1] == 0
    light_ttft[pts[0][first]] = st.ttft_p95_s[first]
    light_tpot[pts[0][first]] = st.tpot_p95_s[first]
    lam = np.where(ok, lam, 0.0)
    rows = np.arange(len(gi))
    best_f = np.argmax(lam, axis=1)  # (P,) index of the best feasible occupancy
    cap = lam[rows, best_f]
    # refine between the best feasible grid point and the next one by bisection on the occupancy
    lo_n = n[rows, best_f]
    hi_n = pcap * _OCCUPANCY_FRACS[np.minimum(best_f + 1, len(_OCCUPANCY_FRACS) - 1)]
    # only the pairs with a feasible grid point are refined (the others keep capacity 0), and of those only the
    # ones whose refinement can reach the best capacity of their configuration
    refine = cap > 0
    if floor is not None and _PRUNE:
        best_here = np.zeros(len(floor))
        np.maximum.at(best_here, gi, cap)
        need = np.maximum(np.asarray(floor, dtype=float)[gi], best_here[gi])
        reach = np.minimum(
            hi_n / (decode_steps * t[rows, best_f] + hi_n * ps[:, 0]),
            MAX_UTILIZATION_FRAC * saturation_rps(pcap, t_full[:, 0], ps[:, 0], decode_steps),
        ) * (1.0 + 1e-9)
        refine &= ~(reach < need)
    has = np.flatnonzero(refine)
    ph, hcap, lo_n, hi_n, hbest = pp.take(has), pcap[has], lo_n[has], hi_n[has], cap[has]
    h_full, h_p1, h_ps = t_full[has, 0], p1[has, 0], ps[has, 0]
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo_n + hi_n)
        good, lam_mid, _st, _pts = _screened_ok(
            mid,
            hcap,
            ph.load_step_s(mid, decode_steps, 0),
            ph.load_step_s(np.minimum(mid + 1.0, hcap), decode_steps, 0),
            h_full,
            h_p1,
            h_ps,
            decode_steps,
            ttft_slo,
            tpot_slo,
        )
        lo_n = np.where(good, mid, lo_n)
        hi_n = np.where(good, hi_n, mid)
        hbest = np.where(good, np.maximum(hbest, lam_mid), hbest)
    cap[has] = hbest
    return cap, light_ttft, light_tpot


def _config_capacity(phys: ServePhysics, workload: ServeWorkload):
    """(capacity_rps, batch, fits_any, need_gb, ttft_min_s, tpot_min_s) per configuration.

    The queueing model runs only on (configuration, batch cap) pairs whose batch fits memory and the engine's
    sequence limit, flattened to one axis (``_pair_capacity``), and only on those that can still win: a point is
    accepted only at a utilization of at most ``MAX_UTILIZATION_FRAC`` of the saturation rate at its cap, so
    ``MAX_UTILIZATION_FRAC * saturation_rps(cap)`` bounds the capacity any load at that cap can reach. A pair
    whose bound is below the best capacity already found for its configuration cannot be the best (the best cap
    is the smallest of those reaching the largest capacity, so a strictly smaller one never is) and is not
    evaluated; the largest fitting cap of each configuration (whose bound is the largest) is evaluated first. The
    answer (capacity, cap) is the one of evaluating every pair. *ttft_min_s* / *tpot_min_s* (the lightest-load
    p95s, for the shortfall of configurations that miss the SLOs) are the minimum over the evaluated caps: over
    every fitting cap wherever no capacity is found, since nothing is skipped there."""
    decode_steps = max(workload.output_tokens - 1, 1)
    ttft_slo = math.inf if workload.ttft_p95_ms is None else workload.ttft_p95_ms / MS_PER_S
    tpot_slo = math.inf if workload.tpot_p95_ms is None else workload.tpot_p95_ms / MS_PER_S
    caps = np.asarray(BATCH_CAPS, dtype=float)
    g = len(phys.keys)
    fits = (phys.memory_bytes(caps[None, :], 1) <= phys._col(phys.capacity_bytes, 1)) & (
        caps[None, :] <= phys._col(phys.max_seqs, 1)
    )  # (G, B): memory holds the batch and the engine allows it
    nb = len(caps)
    # upper bound of the capacity at each cap (the utilization ceiling), with a margin for rounding
    bound = (
        MAX_UTILIZATION_FRAC
        * saturation_rps(
            caps[None, :],
            phys.load_step_s(caps[None, :], decode_steps, 1),
            phys._col(phys.stall_prefill_s(phys.prefill_s(1, 0)), 1),
            decode_steps,
        )
        * (1.0 + 1e-9)
    )
    cap_gb = np.zeros((g, nb))
    light = np.full((g, nb), np.inf)
    light_tpot = np.full((g, nb), np.inf)
    best = np.zeros(g)

    def evaluate(mask) -> None:
        if _PRUNE:
            mask = mask & ~(bound < best[:, None])  # NaN bounds are evaluated
        gi, bi = np.nonzero(mask)
        cap_gb[gi, bi], light[gi, bi], light_tpot[gi, bi] = _pair_capacity(
            phys, gi, caps[bi], decode_steps, ttft_slo, tpot_slo, best
        )
        best[:] = cap_gb.max(axis=1)

    # two passes: every other cap (1, 4, 16, ...), then the caps next to each configuration's best (all the
    # remaining ones where no coarse cap is feasible). Against trying every cap on six workloads x every engine
    # (5,975 configurations each): capacities within 1e-5 but for one Mixtral configuration (1.5%); where
    # capacity is flat in the cap the chosen cap may be the next power of two
    coarse = (np.arange(nb) % 2 == 0)[None, :]
    fits_coarse = fits & coarse
    # the largest fitting coarse cap first (its bound is the largest), then the other coarse caps that can win
    top = np.zeros_like(fits_coarse)
    last = nb - 1 - np.argmax(fits_coarse[:, ::-1], axis=1)
    top[np.arange(g), last] = True
    top &= fits_coarse
    evaluate(top)
    evaluate(fits_coarse & ~top)
    best_b = np.argmax(cap_gb, axis=1)
    none = best <= 0
    near = np.abs(np.arange(nb)[None, :] - best_b[:, None]) == 1
    evaluate(fits & ~coarse & (near | none[:, None]))
    best_b = np.argmax(cap_gb, axis=1)  # the smallest cap among equal best (cap 1 where none is feasible)
    capacity = cap_gb[np.arange(g), best_b]
    need_gb = phys.memory_bytes(1.0, 0) / BYTES_PER_GB
    return capacity, caps[best_b], fits.any(axis=1), need_gb, light.min(axis=1), light_tpot.min(axis=1)


def _state_at_load(phys: ServePhysics, workload: ServeWorkload, slots, lam):
    """Queue state per configuration at arrival rate *lam* (bisection on the occupancy: 30 halvings leave it
    within 1e-9 of the batch cap)."""
    decode_steps = max(workload.output_tokens - 1, 1)
    lo = np.zeros_like(lam)
    hi = np.asarray(slots, dtype=float) * 0.9999
    fixed = _fixed(phys, slots, decode_steps)
    p_stall = phys.stall_prefill_s(fixed[1])
    for _ in range(30):  # the arrival rate at the occupancy is all the bisection needs
        mid = 0.5 * (lo + hi)
        below = occupancy_arrival_rps(mid, phys.load_step_s(mid, decode_steps, 0), p_stall, decode_steps) < lam
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    occupancy = np.maximum(0.5 * (lo + hi), 1e-9)
    return _metrics(phys, slots, occupancy, 0, decode_steps, fixed), occupancy


def _configs_of(candidates: Sequence[ServeCandidate]) -> tuple[list[tuple], np.ndarray]:
    index: dict[tuple, int] = {}
    configs: list[tuple] = []
    idx = np.empty(len(candidates), dtype=np.int64)
    for i, c in enumerate(candidates):
        key = (c.device.id, c.quant, c.device_count, c.engine_id, c.kv_dtype)
        j = index.get(key)
        if j is None:
            j = index[key] = len(configs)
            configs.append((c.device, c.quant, c.device_count, c.engine, c.kv_dtype))
        idx[i] = j
    return configs, idx


def _as_rows(candidates: Sequence[ServeCandidate]) -> CandidateRows:
    """*candidates* as :class:`CandidateRows` (as they are when they are already)."""
    if isinstance(candidates, CandidateRows):
        return candidates
    cands = tuple(candidates)
    configs, idx = _configs_of(cands)
    variants = [(c.quant, c.engine, c.kv_dtype) for c in cands]
    n = len(cands)
    return CandidateRows(cands, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), variants, idx, configs)


def _float_of(value: Decimal, memo: dict[Decimal, float]) -> float:
    """``float(value)``, memoized in *memo*."""
    f = memo.get(value)
    if f is None:
        f = memo[value] = float(value)
    return f


def replica_capacity(workload: ServeWorkload, candidates: Sequence[ServeCandidate]) -> CapacityTable:
    """Capacity, sizing, latency, energy, CO2e and cost of every candidate for *workload* (vectorized over the
    distinct device x quant x TP configurations, batch caps and loads). See the module docstring."""
    cands = _as_rows(candidates)
    if not len(cands):
        raise InputError("candidates", [], "give at least one candidate (see enumerate_serve_candidates)")
    configs = list(cands.configs)
    cidx = cands.pair_config[cands.pair]
    rows = cands.rows
    base = cands.base
    phys = serve_physics(workload.model, configs, workload.input_tokens, workload.output_tokens)
    capacity, batch, fits_any, need_gb, ttft_min_s, tpot_min_s = _config_capacity(phys, workload)
    feasible_cfg = capacity > 0
    safe_cap = np.where(feasible_cfg, capacity, 1.0)
    replicas_cfg = np.where(feasible_cfg, np.ceil(workload.rps / safe_cap - 1e-9), 0.0)
    lam = np.where(feasible_cfg, workload.rps / np.maximum(replicas_cfg, 1.0), 1e-6)
    st, occupancy = _state_at_load(phys, workload, batch, np.minimum(lam, safe_cap))
    decode_steps = max(workload.output_tokens - 1, 1)
    sat_rps = saturation_rps(
        batch, phys.load_step_s(batch, decode_steps), phys.stall_prefill_s(phys.prefill_s(1)), decode_steps
    )
    # average device power at the load: prefill share, decode (at the mean occupancy, load-dependent power of
    # estimate.energy) while anything runs, idle otherwise
    power = (
        st.prefill_frac * phys.prefill_power_w(1)
        + np.maximum(st.busy_frac - st.prefill_frac, 0.0) * phys.decode_power_w(np.maximum(occupancy, 1.0))
        + (1.0 - st.busy_frac) * phys.idle_w
    )
    wall_w_per_device = power * (1.0 + phys.host_frac)

    reps = replicas_cfg[cidx]
    # what depends on the offering (price, region) is read once per base candidate and broadcast to its engine x
    # KV dtype rows; cloud candidates vectorized, on-prem ones (few) in a loop
    tp = phys.tp[cidx]  # the configuration's TP degree is its base candidate's device count
    price_memo: dict[Decimal, float] = {}  # float() of a Decimal is slow; offerings share prices
    per_base: list[float] = []  # grid, PUE, cloud (1/0), price per device-hour, devices per instance
    for c in base:
        region, onprem = c.region, c.onprem
        per_base.extend(
            (
                region.grid_gco2e_per_kwh if region is not None else DEFAULT_GRID_GCO2E_PER_KWH,
                onprem.pue if onprem is not None else (region.pue if region is not None else en.DEFAULT_PUE),
                1.0 if onprem is None else 0.0,
                _float_of(c.usd_per_device_h, price_memo) if onprem is None else 0.0,  # type: ignore[arg-type]
                c.offering.device_count if onprem is None else 1.0,  # type: ignore[union-attr]
            )
        )
    base_cols = np.asarray(per_base, dtype=np.float64).reshape(len(base), 5)[rows]
    grid, pue, per_dev, unit = base_cols[:, 0], base_cols[:, 1], base_cols[:, 3], base_cols[:, 4]
    cloud = base_cols[:, 2] > 0
    cost_replica = per_dev * tp
    instances = np.where(cloud, np.ceil(reps * tp / unit - 1e-9), 0.0)
    cost_total = per_dev * unit * instances
    # on-prem rows, one base candidate (its profile) at a time over its engine x KV dtype rows (contiguous)
    onprem_rows = np.flatnonzero(~cloud)
    if len(onprem_rows):
        cuts = np.flatnonzero(np.diff(rows[onprem_rows])) + 1
        for idx in np.split(onprem_rows, cuts):
            c = base[int(rows[idx[0]])]
            assert c.onprem is not None
            per_dev_onprem = onprem_usd_per_device_h(c.onprem, wall_w_per_device[cidx[idx]], c.onprem.pue)
            cost_replica[idx] = per_dev_onprem * c.device_count
            cost_total[idx] = cost_replica[idx] * reps[idx]
    out_tokens_per_h = workload.rps * workload.output_tokens * S_PER_H
    kwh_per_h = wall_w_per_device[cidx] * tp * reps * pue / KILO
    with np.errstate(divide="ignore", invalid="ignore"):
        kwh_1m = kwh_per_h / out_tokens_per_h * MEGA
        device_kwh_1m = power[cidx] * tp * reps / KILO / out_tokens_per_h * MEGA
        node_kwh_1m = device_kwh_1m * (1.0 + phys.host_frac[cidx])
    feasible = feasible_cfg[cidx]

    # why a configuration is infeasible depends on the configuration only (its device, memory, physics)
    reason: list[str] = []
    shortfall_cfg = np.zeros(len(configs))
    units: list[str] = []
    detail: list[str] = []
    for j, config in enumerate(configs):
        device = config[0]
        if feasible_cfg[j]:
            reason.append("")
            units.append("")
            detail.append("")
        elif not fits_any[j]:
            short = need_gb[j] - device.memory_gb
            reason.append("does_not_fit")
            shortfall_cfg[j] = short
            units.append("GB per device")
            detail.append(
                f"does not fit: {need_gb[j]:.1f} GB per device needed at batch 1 "
                f"(weights {phys.weights_bytes[j] / BYTES_PER_GB:.1f} GB), {device.memory_gb:g} GB available: "
                f"short by {short:.1f} GB"
            )
        else:
            over_ttft = (
                ttft_min_s[j] * MS_PER_S - workload.ttft_p95_ms
                if workload.ttft_p95_ms is not None
                else -np.inf
            )
            over_tpot = (
                tpot_min_s[j] * MS_PER_S - workload.tpot_p95_ms
                if workload.tpot_p95_ms is not None
                else -np.inf
            )
            reason.append("misses_slo")
            units.append("ms")
            if over_ttft >= over_tpot and over_ttft > 0:
                shortfall_cfg[j] = over_ttft
                detail.append(
                    f"misses the TTFT p95 target: {ttft_min_s[j] * MS_PER_S:.0f} ms even at the lightest load "
                    f"vs {workload.ttft_p95_ms:g} ms (over by {over_ttft:.0f} ms)"
                )
            elif over_tpot > 0:
                shortfall_cfg[j] = over_tpot
                detail.append(
                    f"misses the TPOT p95 target: {tpot_min_s[j] * MS_PER_S:.1f} ms even at the lightest load "
                    f"vs {workload.tpot_p95_ms:g} ms (over by {over_tpot:.1f} ms)"
                )
            else:
                shortfall_cfg[j] = 0.0
                detail.append("no load meets both SLOs together below the utilization ceiling")

    def per_row(values: list) -> _PerConfig:
        return _PerConfig(values, cidx)

    return CapacityTable(
        candidates=cands,
        config_index=cidx,
        feasible=feasible,
        capacity_rps=capacity[cidx],
        batch=batch[cidx].astype(int),
        replicas=reps.astype(int),
        load_rps_per_replica=np.where(feasible, lam[cidx], 0.0),
        ttft_p95_ms=st.ttft_p95_s[cidx] * MS_PER_S,
        tpot_p95_ms=st.tpot_p95_s[cidx] * MS_PER_S,
        utilization=st.utilization[cidx],
        saturation_tokens_per_s=(sat_rps * workload.output_tokens)[cidx],
        power_per_device_w=power[cidx],
        energy_per_1m_tokens_kwh=kwh_1m,
        co2e_per_1m_tokens_kg=kwh_1m * grid / 1000.0,
        device_energy_per_1m_tokens_kwh=device_kwh_1m,
        node_energy_per_1m_tokens_kwh=node_kwh_1m,
        pue=pue,
        cost_per_hour_usd=cost_total,
        cost_per_replica_hour_usd=cost_replica,
        instances=instances,
        memory_gb=need_gb[cidx],
        reason=per_row(reason),
        shortfall=shortfall_cfg[cidx],
        shortfall_unit=per_row(units),
        detail=per_row(detail),
        kv_dtype=per_row([k[4] for k in phys.keys]),
    )


# --------------------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------------------


def _money(x: float, step: Decimal = CENT) -> Decimal:
    return money.from_float(float(x), "cost_usd", step)


@dataclass(frozen=True)
class ServePlan:
    """Ranked options, the strongest rejected alternatives, Pareto fronts and assumptions of a serve plan.

    ``options``/``rejected``/``pareto`` hold JSON-ready dicts (money as Decimal); ``summary`` says in one line
    what was found, or why nothing was and how far the nearest option is.
    """

    workload: ServeWorkload
    objective: str
    options: tuple[dict, ...]
    rejected: tuple[dict, ...]
    pareto: tuple[dict, ...]
    assumptions: dict = field(default_factory=dict)
    summary: str = ""
    candidates_evaluated: int = 0
    cpu_vs_gpu: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """``{"options", "rejected", "pareto", "assumptions", "summary", "cpu_vs_gpu"}``, Decimal as str."""
        return _jsonable(
            {
                "options": list(self.options),
                "rejected": list(self.rejected),
                "pareto": list(self.pareto),
                "assumptions": self.assumptions,
                "summary": self.summary,
                "cpu_vs_gpu": self.cpu_vs_gpu,
            }
        )


#: traffic multiples of the asked rate at which the CPU-vs-GPU crossover series is evaluated
CROSSOVER_RPS_MULTIPLES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _row_kinds(table: CapacityTable, idx) -> np.ndarray:
    """The device kind (gpu, cpu, ...) of candidates *idx* of *table*, read per physics configuration."""
    cands = table.candidates
    kinds = np.array([config[0].kind for config in cands.configs])
    return kinds[np.asarray(table.config_index)[np.asarray(idx, dtype=np.int64)]]


def _cheapest_of_kind(
    table: CapacityTable, idx: Sequence[int], kinds: tuple[str, ...], row_kinds: np.ndarray | None = None
) -> int | None:
    """The feasible candidate of *idx* on a device of *kinds* with the smallest (cost per hour, TPOT p95), the
    first of *idx* among equals. *row_kinds*: ``_row_kinds(table, idx)`` when the caller has it."""
    ids = np.asarray(idx, dtype=np.int64)
    row_kinds = _row_kinds(table, ids) if row_kinds is None else row_kinds
    pick = ids[np.asarray(table.feasible, dtype=bool)[ids] & np.isin(row_kinds, kinds)]
    if not len(pick):
        return None
    cost = np.asarray(table.cost_per_hour_usd, dtype=float)[pick]
    tpot = np.asarray(table.tpot_p95_ms, dtype=float)[pick]
    return int(pick[np.lexsort((tpot, cost))[0]])  # stable: the first of the smallest


def _brief(table: CapacityTable, i: int) -> dict:
    c = table.candidates[i]
    return {
        "device": c.device.id,
        "device_kind": c.device.kind,
        "instance_type": c.offering.instance_type if c.offering is not None else None,
        "provider": c.provider,
        "region": c.region.id if c.region is not None else None,
        "quant": c.quant,
        "replicas": int(table.replicas[i]),
        "cost_per_hour_usd": _money(float(table.cost_per_hour_usd[i])),
        "utilization": round(float(table.utilization[i]), 4),
        "ttft_p95_ms": round(float(table.ttft_p95_ms[i]), 1),
        "tpot_p95_ms": round(float(table.tpot_p95_ms[i]), 2),
    }


def cpu_vs_gpu(workload: ServeWorkload, table: CapacityTable, idx: Sequence[int]) -> dict:
    """The cheapest CPU option beside the cheapest GPU option on the same SLO, how over-provisioned that GPU would
    be (its utilization; its cost over the CPU's), and a crossover series: both cheapest costs per hour at
    ``CROSSOVER_RPS_MULTIPLES`` x the asked rate (replicas = ceil(rps / capacity per replica) at the cost per
    replica-hour), and the first rate where a GPU is the cheaper (``None`` when a CPU stays cheaper over the whole
    series). *idx*: the candidates to compare (the best per group)."""
    row_kinds = _row_kinds(table, idx)
    cpu_i = _cheapest_of_kind(table, idx, ("cpu",), row_kinds)
    gpu_i = _cheapest_of_kind(table, idx, ("gpu",), row_kinds)
    out: dict[str, Any] = {
        "cheapest_cpu": None if cpu_i is None else _brief(table, cpu_i),
        "cheapest_gpu": None if gpu_i is None else _brief(table, gpu_i),
        "gpu_over_provisioning": None,
        "crossover": None,
    }
    if cpu_i is None or gpu_i is None:
        return out
    cpu_h, gpu_h = float(table.cost_per_hour_usd[cpu_i]), float(table.cost_per_hour_usd[gpu_i])
    out["gpu_over_provisioning"] = {
        "gpu_utilization": round(float(table.utilization[gpu_i]), 4),
        "cpu_utilization": round(float(table.utilization[cpu_i]), 4),
        "gpu_cost_ratio_vs_cpu": round(gpu_h / cpu_h, 3) if cpu_h > 0 else None,
    }
    # capacity per replica does not depend on the traffic, so each level is replicas = ceil(rps / capacity)
    # at the candidate's cost per replica-hour (vectorized over the compared candidates)
    ids = np.asarray(idx, dtype=np.int64)
    kinds = row_kinds
    cap = np.asarray(table.capacity_rps, dtype=float)[ids]
    per_replica = np.asarray(table.cost_per_replica_hour_usd, dtype=float)[ids]
    ok = np.asarray(table.feasible, dtype=bool)[ids] & (cap > 0)
    series = []
    takeover = None
    for m in CROSSOVER_RPS_MULTIPLES:
        rps = workload.rps * m
        cost = np.where(ok, np.ceil(rps / np.where(ok, cap, 1.0) - 1e-9) * per_replica, np.inf)
        row: dict[str, Any] = {"rps": round(rps, 6)}
        best_cost = {}
        for kind in ("cpu", "gpu"):
            c = np.where(kinds == kind, cost, np.inf)
            j = int(np.argmin(c))
            if np.isfinite(c[j]):
                best_cost[kind] = float(c[j])
                k = int(ids[j])
                row[f"{kind}_cost_per_hour_usd"] = _money(float(c[j]))
                row[f"{kind}_option"] = f"{int(np.ceil(rps / cap[j] - 1e-9))} x {table.candidates[k].label}"
            else:
                row[f"{kind}_cost_per_hour_usd"] = row[f"{kind}_option"] = None
        cheaper = (
            "gpu" if "cpu" not in best_cost or best_cost.get("gpu", np.inf) <= best_cost["cpu"] else "cpu"
        )
        row["cheaper"] = cheaper
        series.append(row)
        if cheaper == "gpu" and takeover is None:
            takeover = row["rps"]
    out["crossover"] = {"series": series, "gpu_takes_over_at_rps": takeover}
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _option(table: CapacityTable, i: int, workload: ServeWorkload) -> dict:
    c = table.candidates[i]
    cost_h = float(table.cost_per_hour_usd[i])
    tokens_per_h = workload.rps * workload.output_tokens * S_PER_H
    cost_h_dec = _instance_cost(c, int(table.instances[i]), cost_h)
    return {
        "device": c.device.id,
        "device_name": c.device.name,
        "count": int(table.replicas[i]) * c.device_count,
        "replicas": int(table.replicas[i]),
        "tensor_parallel": c.device_count,
        "quant": c.quant,
        "engine": c.engine_id,
        "kv_dtype": table.kv_dtype[i],
        "batch": int(table.batch[i]),
        "pricing": c.pricing,
        "provider": c.provider,
        "instance_type": c.offering.instance_type if c.offering is not None else None,
        "instances": int(table.instances[i]) if c.offering is not None else None,
        "region": c.region.id if c.region is not None else None,
        "usd_per_device_h": c.usd_per_device_h,
        "cost_per_hour_usd": cost_h_dec,
        "cost_per_1m_tokens_usd": _money(float(cost_h_dec) / tokens_per_h * MEGA, _MONEY_1M),
        "ttft_p95_ms": round(float(table.ttft_p95_ms[i]), 1),
        "tpot_p95_ms": round(float(table.tpot_p95_ms[i]), 2),
        "capacity_rps_per_replica": round(float(table.capacity_rps[i]), 3),
        "throughput_tokens_per_s": round(float(table.saturation_tokens_per_s[i]), 1),
        "utilization": round(float(table.utilization[i]), 3),
        "memory_gb_per_device": round(float(table.memory_gb[i]), 2),
        "power_per_device_w": round(float(table.power_per_device_w[i]), 1),
        "energy_per_1m_tokens_kwh": round(float(table.energy_per_1m_tokens_kwh[i]), 4),
        "energy_boundary": "facility",
        "device_energy_per_1m_tokens_kwh": round(float(table.device_energy_per_1m_tokens_kwh[i]), 4),
        "node_energy_per_1m_tokens_kwh": round(float(table.node_energy_per_1m_tokens_kwh[i]), 4),
        "facility_energy_per_1m_tokens_kwh": round(float(table.energy_per_1m_tokens_kwh[i]), 4),
        "pue": round(float(table.pue[i]), 3),
        "co2e_per_1m_tokens_kg": round(float(table.co2e_per_1m_tokens_kg[i]), 4),
        "grid_gco2e_per_kwh": c.region.grid_gco2e_per_kwh
        if c.region is not None
        else DEFAULT_GRID_GCO2E_PER_KWH,
        "meets_slo": True,
        "source_url": c.offering.source_url
        if c.offering is not None
        else (c.onprem.source_url if c.onprem else ""),
        "price_retrieved": c.offering.retrieved if c.offering is not None else None,
        "caveats": [
            x
            for x in (
                burstable_caveat(c.offering.instance_type, float(table.utilization[i]))
                if c.offering is not None
                else None,
            )
            if x
        ],
    }


def _light_option(table: CapacityTable, i: int) -> dict:
    """The fields of ``_option`` that the Pareto fronts show (same values) and the index ``_i``; read from the
    candidate columns (no candidate object)."""
    cands = table.candidates
    c = cands.base[int(cands.rows[i])]
    quant, engine, _kv = cands.variants[int(cands.pair[i])]
    cost = _instance_cost(c, int(table.instances[i]), float(table.cost_per_hour_usd[i]))
    return {
        "_i": i,
        "device": c.device.id,
        "count": int(table.replicas[i]) * c.device_count,
        "tensor_parallel": c.device_count,
        "quant": quant,
        "engine": str(getattr(engine, "id", engine)),
        "pricing": c.pricing,
        "provider": c.provider,
        "region": c.region.id if c.region is not None else None,
        "cost_per_hour_usd": cost,
        "ttft_p95_ms": round(float(table.ttft_p95_ms[i]), 1),
        "tpot_p95_ms": round(float(table.tpot_p95_ms[i]), 2),
        "energy_per_1m_tokens_kwh": round(float(table.energy_per_1m_tokens_kwh[i]), 4),
        "co2e_per_1m_tokens_kg": round(float(table.co2e_per_1m_tokens_kg[i]), 4),
    }


#: the offering's price field of each cloud pricing kind
_PRICE_FIELD = {"on-demand": "on_demand_usd_per_h", "spot": "spot_usd_per_h", "reserved": "reserved_usd_per_h"}


def _instance_cost(c: ServeCandidate, instances: int, cost_h: float) -> Decimal:
    if c.offering is None:
        return _money(cost_h)
    price = getattr(c.offering, _PRICE_FIELD[c.pricing])
    assert price is not None
    return money.quantize(price * instances)


def _rejected(table: CapacityTable, i: int) -> dict:
    c = table.candidates[i]
    return {
        "device": c.device.id,
        "count": c.device_count,
        "tensor_parallel": c.device_count,
        "quant": c.quant,
        "engine": c.engine_id,
        "kv_dtype": table.kv_dtype[i],
        "pricing": c.pricing,
        "provider": c.provider,
        "region": c.region.id if c.region is not None else None,
        "kind": table.reason[i],
        "reason": table.detail[i],
        "shortfall": round(float(table.shortfall[i]), 2),
        "shortfall_unit": table.shortfall_unit[i],
        "meets_slo": False,
    }


def _float_objective_key(objective: str, table: CapacityTable) -> np.ndarray:
    """The first component of the ranking key (``_rank_columns``) for every candidate of *table*, as floats."""
    field_of = {
        "cost": table.cost_per_hour_usd,
        "energy": table.energy_per_1m_tokens_kwh,
        "co2": table.co2e_per_1m_tokens_kg,
        "latency": table.ttft_p95_ms,
    }
    return np.asarray(field_of[objective], dtype=float)


def _rank_columns(
    table: CapacityTable, rows: np.ndarray, objective: str | None = None
) -> tuple[list, list, list, list, list]:
    """For candidates *rows*: the cost per hour (the exact Decimal of ``_instance_cost``, as a float) and the
    rounded TTFT / TPOT p95, energy and CO2e per 1M tokens of the options, as lists (no dict per row). With an
    *objective*, the columns its ranking key and the Pareto fronts do not read (TPOT but for ``latency``,
    energy but for ``energy``) are left empty."""
    cands = table.candidates
    base = cands.base
    # a cloud row's exact cost is its offering's price x instances: worked out once per offering x instance count
    # (the engine x KV dtype rows of one offering mostly need the same count)
    memo: dict[tuple[int, int], float] = {}
    cost = []
    for b, n, c in zip(
        cands.rows[rows].tolist(),
        np.asarray(table.instances)[rows].astype(int).tolist(),
        np.asarray(table.cost_per_hour_usd)[rows].tolist(),
        strict=True,
    ):
        cand = base[b]
        if cand.offering is None:
            cost.append(float(_instance_cost(cand, n, c)))
            continue
        v = memo.get((b, n))
        if v is None:
            v = memo[(b, n)] = float(_instance_cost(cand, n, c))
        cost.append(v)

    def rounded(values, digits: int) -> list:
        return [round(x, digits) for x in np.asarray(values, dtype=float)[rows].tolist()]

    return (
        cost,
        rounded(table.ttft_p95_ms, 1),
        rounded(table.tpot_p95_ms, 2) if objective in (None, "latency") else [],
        rounded(table.energy_per_1m_tokens_kwh, 4) if objective in (None, "energy") else [],
        rounded(table.co2e_per_1m_tokens_kg, 4),
    )


def _pareto_front(table: CapacityTable, members, order: list[int], cost: list, y: list, key_y: str, front: str):
    """The Pareto front of cost per hour against *y* (lower is better in both) over the options at positions
    *order* (ranked) of *members*: sorted by (cost, y), each point that lowers y; option fields are read only for
    the points on the front."""
    out = []
    pos = np.asarray(order, dtype=np.int64)
    y_arr = np.asarray(y, dtype=float)[pos]
    ranked = np.lexsort((y_arr, np.asarray(cost, dtype=float)[pos]))  # stable, as sorted() by (cost, y)
    y_ranked = y_arr[ranked]
    # a point is on the front when its y is below every y before it
    below = y_ranked < np.minimum.accumulate(np.r_[math.inf, y_ranked[:-1]])
    for p in pos[ranked[below]].tolist():
        o = _light_option(table, int(members[p]))
        out.append(
            {
                k: o[k]
                for k in (
                    "device",
                    "count",
                    "tensor_parallel",
                    "quant",
                    "engine",
                    "pricing",
                    "provider",
                    "region",
                    "cost_per_hour_usd",
                    key_y,
                )
            }
        )
    return {"front": front, "x": "cost_per_hour_usd", "y": key_y, "points": out}


def _check_choice(value: str, field: str, allowed: Sequence[str]) -> str:
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in allowed:
        raise InputError(field, value, "use one of " + ", ".join(repr(a) for a in allowed))
    return key


@dataclass(frozen=True)
class OwnedDevice:
    """The machine you already have: *count* x *device*, priced by *profile* (its purchase sunk, so the hourly
    cost is its electricity at the profile's PUE; ``flopwise.api.owned_profile`` builds it)."""

    device: Device
    count: int
    profile: OnPremProfile


class _OwnedView:
    """The slice of a catalog ``enumerate_serve_space`` reads, holding only the owned devices and their profiles."""

    def __init__(self, catalog: Any, owned: Sequence[OwnedDevice]) -> None:
        self.devices = {o.device.id: o.device for o in owned}
        self.offerings: tuple = ()
        self.onprem = {o.device.id: o.profile for o in owned}
        self.regions = catalog.regions
        self.region = catalog.region


def _owned_space(
    catalog: Any,
    model: ModelArch,
    owned: Sequence[OwnedDevice],
    regions: Sequence[str] | None,
    min_precision: str,
    max_devices: int,
) -> CandidateSpace:
    """Candidates on the owned devices: pricing ``onprem``, provider ``owned``, tensor parallel up to the count
    owned."""
    cands: list[ServeCandidate] = []
    skipped: list[SkippedCandidate] = []
    for o in owned:
        sub = enumerate_serve_space(
            _OwnedView(catalog, [o]),
            model,
            pricing=("onprem",),
            regions=regions,
            min_precision=min_precision,
            max_devices=min(max_devices, o.count),
        )
        cands.extend(dataclasses.replace(c, provider="owned") for c in sub.candidates)
        skipped.extend(sub.skipped)
    return CandidateSpace(tuple(cands), tuple(skipped))


def _cap_owned(table: CapacityTable, owned: Sequence[OwnedDevice]) -> CapacityTable:
    """Owned candidates needing more devices (replicas x TP) than are owned are infeasible, with the shortfall."""
    have = {o.device.id: o.count for o in owned}
    feasible = table.feasible.copy()
    shortfall = table.shortfall.copy()
    reason, units, detail = list(table.reason), list(table.shortfall_unit), list(table.detail)
    changed = False
    for i, c in enumerate(table.candidates):
        if c.provider != "owned" or not feasible[i]:
            continue
        need = int(table.replicas[i]) * c.device_count
        if need > have[c.device.id]:
            changed = True
            feasible[i] = False
            shortfall[i] = need - have[c.device.id]
            reason[i] = "exceeds_owned"
            units[i] = "devices"
            detail[i] = (
                f"needs {need} x {c.device.id} ({int(table.replicas[i])} replica(s) x TP {c.device_count}); "
                f"{have[c.device.id]} owned"
            )
    if not changed:
        return table
    return dataclasses.replace(
        table,
        feasible=feasible,
        shortfall=shortfall,
        reason=tuple(reason),
        shortfall_unit=tuple(units),
        detail=tuple(detail),
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _gc_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """*fn* with the cyclic garbage collector paused while it runs (restored after). A plan allocates hundreds of
    thousands of short-lived arrays, tuples and dicts; with the collector on, the net growth triggers collections
    that walk the young objects and, every few, every object the process holds (the catalog, a server's state),
    a share of the plan's time that grows with the process (what cyclic garbage the plan leaves is collected
    once the collector is back on)."""

    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_on = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_on:
                gc.enable()

    return paused


@_gc_paused
def plan_serve(
    workload: ServeWorkload,
    catalog: Any,
    *,
    objective: str = "cost",
    pricing: Sequence[str] = ("on-demand",),
    providers: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    min_precision: str = "int4",
    max_devices: int = 8,
    top_k: int = 10,
    space: CandidateSpace | None = None,
    engines: Sequence[str | EngineProfile] | None = None,
    kv_dtypes: Sequence[str] | None = None,
    catalog_dir: str | None = None,
    owned: Sequence[OwnedDevice] = (),
) -> ServePlan:
    """Search the catalog for the best ways to serve *workload*; see the module docstring.

    *space* skips enumeration (a precomputed ``enumerate_serve_space`` result, e.g. for what-ifs and benches).
    Options are deduplicated to the best per device x TP x quant x pricing x provider, ranked by *objective*
    (cost: cost per hour of the deployment; energy / co2: per 1M output tokens; latency: TTFT then TPOT p95).
    *engines* (profile ids, or ``["all"]``; default ``generic``) and *kv_dtypes* (default: each engine's own and
    FP8 where it has one) widen the search to engine x device x TP x quant x KV dtype x batch cap; profiles come
    from ``catalog_dir``'s ``engines.csv`` too.

    *owned*: machines already owned, ranked beside the rentals as provider ``owned`` (pricing ``onprem``) at
    their energy cost only; a plan needing more of them than are owned is rejected with ``exceeds_owned``.
    """
    objective = _check_choice(objective, "objective", OBJECTIVES)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise InputError("top_k", top_k, "give a whole number from 1 to 1000")
    if space is None:
        space = enumerate_serve_space(
            catalog,
            workload.model,
            pricing=pricing,
            providers=providers,
            regions=regions,
            min_precision=min_precision,
            max_devices=max_devices,
        )
    if owned:
        mine = _owned_space(catalog, workload.model, owned, regions, min_precision, max_devices)
        space = CandidateSpace((*space.candidates, *mine.candidates), space.skipped + mine.skipped)
    profiles, pool = engine_profiles(engines, catalog_dir)
    if [e.id for e in profiles] != ["generic"] or kv_dtypes is not None:
        space = expand_engines(space, profiles, kv_dtypes, pool)
    assumptions = _assumptions(workload, objective, pricing, min_precision, max_devices)
    assumptions["engines_searched"] = [e.id for e in profiles]
    if owned:
        assumptions["owned"] = [
            {
                "device": o.device.id,
                "count": o.count,
                "cost": "energy only (purchase sunk): electricity at "
                f"${o.profile.electricity_usd_per_kwh}/kWh x PUE {o.profile.pue:g}",
                "source_url": o.profile.source_url,
            }
            for o in owned
        ]
    assumptions["kv_dtypes_searched"] = (
        list(kv_dtypes)
        if kv_dtypes is not None
        else "each engine's default, and fp8 where it has an FP8 KV cache"
    )
    if not space.candidates:
        rejected = tuple(s.to_dict() for s in space.skipped[:top_k])
        why = "; ".join(sorted({s.reason for s in space.skipped})[:3]) or "the filters leave no offering"
        return ServePlan(
            workload,
            objective,
            (),
            rejected,
            (),
            assumptions,
            f"No candidate to evaluate for pricing {list(pricing)}: {why}. Widen --pricing, --providers or "
            "--regions (or add --pricing onprem).",
            0,
        )
    table = replica_capacity(workload, space.candidates)
    if owned:
        table = _cap_owned(table, owned)
    feas = np.flatnonzero(table.feasible)
    # the best candidate per device x TP x quant x engine x pricing x provider: option dicts are built only for
    # the candidates at the group's smallest float objective, then ranked by the exact (Decimal) key
    cands = table.candidates
    cfg_code, row_cfg_code = _group_codes(table)
    # an integer per pricing x provider of each base candidate (equal codes = same group)
    pricing_codes: dict[str, int] = {}
    provider_codes: dict[str, int] = {}
    pricing_code = np.array(
        [pricing_codes.setdefault(c.pricing, len(pricing_codes)) for c in cands.base], dtype=np.int64
    )
    provider_code = np.array(
        [provider_codes.setdefault(c.provider, len(provider_codes)) for c in cands.base], dtype=np.int64
    )
    base_code = pricing_code * max(len(provider_codes), 1) + provider_code
    gcode = row_cfg_code * max(len(pricing_codes) * len(provider_codes), 1) + base_code[cands.rows]
    first_key = _float_objective_key(objective, table)
    members = np.asarray(_tie_members(feas, gcode[feas], first_key[feas]), dtype=np.int64)
    cost_l, ttft_l, tpot_l, energy_l, co2_l = _rank_columns(table, members, objective)
    key_cols = {
        "cost": (cost_l, ttft_l),
        "energy": (energy_l, cost_l),
        "co2": (co2_l, cost_l),
        "latency": (ttft_l, tpot_l, cost_l),
    }[objective]
    # the best member of each group (the smallest key, the first among equals), groups in the order of their first
    # member; then the ranked options: the bests by key, ties in that order (stable sorts throughout)
    kcols = [np.asarray(col, dtype=float) for col in key_cols]  # _objective_key of each member, as columns
    gm = gcode[members]
    positions = np.arange(len(members))
    by_group = np.lexsort((positions, *reversed(kcols), gm))
    starts = np.r_[True, gm[by_group][1:] != gm[by_group][:-1]] if len(members) else np.zeros(0, dtype=bool)
    bests = by_group[starts]
    first_member = np.full(int(gm.max()) + 1 if len(members) else 0, len(members), dtype=np.int64)
    np.minimum.at(first_member, gm, positions)
    bests = bests[np.argsort(first_member[gm[bests]], kind="stable")]
    best_in_order: list[int] = bests.tolist()  # positions in members, groups in first-member order
    winners: list[int] = bests[np.lexsort(tuple(reversed([k[bests] for k in kcols])))].tolist() if len(bests) else []
    options = tuple(
        {**_option(table, int(members[p]), workload), "rank": r} for r, p in enumerate(winners[:top_k], 1)
    )
    # CPU vs GPU compares what can be bought or rented; owned machines are ranked, but not part of it
    base_of = table.candidates.base
    rows_of = table.candidates.rows
    versus = cpu_vs_gpu(
        workload,
        table,
        [
            m
            for m, b in zip(members[best_in_order].tolist(), rows_of[members[best_in_order]].tolist(), strict=True)
            if base_of[b].provider != "owned"
        ],
    )
    # the whole ranking, as light options, only where the owned machines' place in it is asked for
    all_opts = [_light_option(table, int(members[p])) for p in winners] if owned else []

    # rejected: the evaluated ones closest to working (smallest relative shortfall), one per device x TP x quant
    infeas = np.flatnonzero(~table.feasible)
    # per configuration: how far from working (relative shortfall), and whether it runs at all
    slos = [x for x in (workload.ttft_p95_ms, workload.tpot_p95_ms) if x is not None]
    a_row = np.zeros(len(cands.configs), dtype=np.int64)  # one row of each configuration
    a_row[table.config_index] = np.arange(len(table.config_index))
    reason_col = table.reason
    reason_of = (  # per configuration: the column's own values where it is kept per configuration
        list(reason_col.values)
        if isinstance(reason_col, _PerConfig) and reason_col.index is table.config_index
        else [reason_col[i] for i in a_row.tolist()]
    )
    shortfall_cfg = np.asarray(table.shortfall, dtype=float)[a_row]
    denom = np.asarray(
        [
            config[0].memory_gb
            if r == "does_not_fit"
            else (min(slos) if r == "misses_slo" and slos else 1.0)
            for config, r in zip(cands.configs, reason_of, strict=True)
        ],
        dtype=np.float64,
    )
    rel_cfg = shortfall_cfg / np.maximum(denom, 1e-9)
    # a candidate that runs but is too slow is nearer than one that does not fit
    fit_rank_cfg = np.asarray([r != "misses_slo" for r in reason_of], dtype=np.float64)
    # the infeasible rows in the order (runs at all, relative shortfall, row), one per device x TP x quant x engine
    # (the first of each in that order): a configuration's rows share its keys, so each configuration stands for
    # its first infeasible row, and the configurations are sorted instead of the rows
    rej: list[dict] = []
    if len(infeas):
        no_row = np.iinfo(np.int64).max
        first_row = np.full(len(cands.configs), no_row, dtype=np.int64)
        np.minimum.at(first_row, table.config_index[infeas], infeas)
        with_rows = np.flatnonzero(first_row < no_row)
        corder = with_rows[
            np.lexsort((first_row[with_rows], rel_cfg[with_rows], fit_rank_cfg[with_rows]))
        ]
        _, first_pos = np.unique(cfg_code[corder], return_index=True)
        rej = [_rejected(table, int(first_row[corder[p]])) for p in np.sort(first_pos)[:top_k].tolist()]
    rej.extend(s.to_dict() for s in space.skipped if s.kind == "not_sold_in_region")
    rej.extend(s.to_dict() for s in space.skipped if s.kind != "not_sold_in_region")
    pareto = (
        (
            _pareto_front(table, members, winners, cost_l, ttft_l, "ttft_p95_ms", "cost_vs_latency"),
            _pareto_front(table, members, winners, cost_l, co2_l, "co2e_per_1m_tokens_kg", "cost_vs_co2"),
        )
        if winners
        else ()
    )
    if options:
        top = options[0]
        summary = (
            f"Best by {objective}: {top['replicas']} x {top['tensor_parallel']} {top['device']} {top['quant']} "
            f"on {top['engine']} (kv {top['kv_dtype']}) "
            f"({top['pricing']}, {top['provider']}, {top['region'] or 'no region'}) at "
            f"${top['cost_per_hour_usd']}/h, ${top['cost_per_1m_tokens_usd']} per 1M output tokens, "
            f"TTFT p95 {top['ttft_p95_ms']:.0f} ms, TPOT p95 {top['tpot_p95_ms']:.1f} ms; "
            f"{len(winners)} feasible options of {len(space.candidates)} candidates."
        )
        if top.get("caveats"):
            summary += " Caveat: " + "; ".join(top["caveats"]) + "."
        over = versus.get("gpu_over_provisioning")
        if (
            over is not None
            and versus["cheapest_cpu"]["cost_per_hour_usd"] <= versus["cheapest_gpu"]["cost_per_hour_usd"]
        ):
            g = versus["cheapest_gpu"]
            summary += (
                f" A CPU is enough: the cheapest GPU option ({g['device']}, ${g['cost_per_hour_usd']}/h) would run "
                f"at {over['gpu_utilization']:.1%} utilization for {over['gpu_cost_ratio_vs_cpu']:.2f}x the cost"
            )
            at = versus["crossover"]["gpu_takes_over_at_rps"]
            summary += f"; a GPU is cheaper from {at:g} req/s." if at is not None else "."
    else:
        summary = "No candidate meets the targets. " + (
            f"Nearest: {rej[0]['tensor_parallel']} x {rej[0]['device']} {rej[0]['quant']}: {rej[0]['reason']}."
            if rej
            else ""
        )
    if owned:
        summary += " " + _owned_sentence(owned, all_opts, table, assumptions)
    from flopwise.catalog.staleness import data_age, is_stale

    assumptions["data_age"] = data_age(
        catalog, ((o["provider"], o["instance_type"], o["region"]) for o in options)
    )
    for o in options:
        o["stale"] = is_stale(o["price_retrieved"], stale_days=assumptions["data_age"]["stale_days"])
    return ServePlan(
        workload,
        objective,
        options,
        tuple(rej),
        pareto,
        assumptions,
        summary,
        len(space.candidates),
        versus,
    )


def _owned_sentence(owned: Sequence[OwnedDevice], all_opts: Sequence[dict], table: CapacityTable, assumptions) -> str:
    """The owned machines' place in the ranking, beside the best rental (also into ``assumptions["owned"]``)."""
    rental = next((o for o in all_opts if o["provider"] != "owned"), None)
    parts = []
    for entry, o in zip(assumptions["owned"], owned, strict=True):
        rank, best = next(
            ((r, x) for r, x in enumerate(all_opts, 1) if x["provider"] == "owned" and x["device"] == o.device.id),
            (None, None),
        )
        if best is None:
            mine = [
                i
                for i, c in enumerate(table.candidates)
                if c.provider == "owned" and c.device.id == o.device.id and table.detail[i]
            ]
            # the nearest miss: too few owned before too slow before does not fit, then the smallest shortfall
            order = {"exceeds_owned": 0, "misses_slo": 1}
            near = min(mine, key=lambda i: (order.get(table.reason[i], 2), table.shortfall[i]), default=None)
            why = (
                table.detail[near]
                if near is not None
                else "no configuration of it could be evaluated for this model"
            )
            entry.update(rank=None, cost_per_hour_usd=None, meets_targets=False, reason=why)
            parts.append(f"Owned {o.count} x {o.device.id}: does not meet the targets ({why}).")
            continue
        entry.update(rank=rank, cost_per_hour_usd=best["cost_per_hour_usd"], meets_targets=True)
        text = (
            f"Owned {o.count} x {o.device.id}: rank {rank} of {len(all_opts)} at ${best['cost_per_hour_usd']}/h "
            "(energy only, purchase sunk)"
        )
        if rental is not None:
            entry["cheapest_rental_cost_per_hour_usd"] = rental["cost_per_hour_usd"]
            text += (
                f" vs the cheapest rental {rental['device']} ({rental['provider']} {rental['pricing']}) at "
                f"${rental['cost_per_hour_usd']}/h"
            )
        parts.append(text + ".")
    return " ".join(parts)


def _group_codes(table: CapacityTable) -> tuple[np.ndarray, np.ndarray]:
    """(an integer per physics configuration for its device x TP x quant x engine, the same per row)."""
    cands = table.candidates
    codes: dict[tuple, int] = {}
    cfg_code = np.array(
        [
            codes.setdefault((d.id, tp, q, str(getattr(e, "id", e))), len(codes))
            for d, q, tp, e, _kv in cands.configs
        ],
        dtype=np.int64,
    )
    return cfg_code, cfg_code[table.config_index]


def _tie_members(rows: np.ndarray, group: np.ndarray, key: np.ndarray) -> list[int]:
    """Of *rows* (ascending) in groups *group* (non-negative integers): the first ``_TIES_BUILT`` rows of each group
    whose float *key* is within 1e-9 of the group's smallest, groups in the order of their first row, rows
    ascending within a group. The group minima and first rows are scattered (``np.minimum.at``); only the tied
    rows (a few per group) are sorted."""
    if not len(rows):
        return []
    size = int(group.max()) + 1
    kmin = np.full(size, np.inf)
    np.minimum.at(kmin, group, key)
    tie = key <= kmin[group] * (1.0 + 1e-9) + 1e-12
    tie_rows, tie_groups = rows[tie], group[tie]
    order = np.argsort(tie_groups, kind="stable")  # by group, rows ascending within one
    g = tie_groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)])) + 1  # 1-based among the ties
    keep = rank <= _TIES_BUILT
    kept_rows, kept_groups = tie_rows[order][keep], g[keep]
    first = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)  # each group's first row: groups' order
    np.minimum.at(first, group, rows)
    sel = np.lexsort((kept_rows, first[kept_groups]))
    return kept_rows[sel].tolist()


def _assumptions(
    workload: ServeWorkload, objective: str, pricing, min_precision: str, max_devices: int
) -> dict:
    return {
        "model": workload.model.id,
        "rps": workload.rps,
        "input_tokens": workload.input_tokens,
        "output_tokens": workload.output_tokens,
        "ttft_p95_ms": workload.ttft_p95_ms,
        "tpot_p95_ms": workload.tpot_p95_ms,
        "objective": objective,
        "pricing": list(pricing),
        "min_precision": min_precision,
        "max_devices_per_replica": max_devices,
        "arrivals": "Poisson at rps, split evenly over replicas",
        "scheduler": "continuous batching (Orca/vLLM iteration-level), prefill priority, one prompt per prefill "
        "iteration, batch cap = max concurrent sequences",
        "queueing_model": "flopwise.plan.queueing: engine-time balance + Erlang C slots (Allen-Cunneen) + M/D/1 "
        "prefill queue with a residual decode step; checked against flopwise.plan.simulate",
        "batch_caps_searched": f"{list(BATCH_CAPS)}, up to each engine's max_seqs_limit and what memory holds",
        "max_utilization_frac": MAX_UTILIZATION_FRAC,
        "decode_step_context_tokens": workload.input_tokens + workload.output_tokens / 2.0,
        "tokens_basis": "per 1M generated (output) tokens; prefill time, energy and cost are charged to them",
        "cloud_billing": "whole instances: ceil(replicas x TP / devices per instance) x instance price",
        "onprem_cost": "straight-line depreciation over the profile's lifetime + electricity at the profile's PUE",
        "pue": "cloud: the region's PUE; on-prem: the profile's PUE",
        "energy_boundary": "energy_per_1m_tokens_kwh and co2e_per_1m_tokens_kg are facility energy (device x (1 + "
        "host share) x PUE); device_ and node_energy_per_1m_tokens_kwh give the narrower boundaries",
        "default_grid_gco2e_per_kwh": DEFAULT_GRID_GCO2E_PER_KWH,
        "default_grid_source": DEFAULT_GRID_SOURCE,
        "tensor_parallel": "within one instance; divides the attention heads; needs an interconnect",
        "physics": "flopwise.estimate serving terms (roofline decode at the mean context, chunked prefill, "
        "ring all-reduce per layer, load-dependent power model); see docs/methodology.md",
    }
