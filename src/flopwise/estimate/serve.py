"""estimate_serve: memory, latency, throughput, power, energy, CO2e and cost of serving one model replica."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flopwise.catalog.engines import EngineProfile, check_engine_supports, get_engine
from flopwise.catalog.types import Device, OnPremProfile
from flopwise.errors import InputError, UnsupportedError
from flopwise.estimate import energy as en
from flopwise.estimate import flops as fl
from flopwise.estimate import memory as mem
from flopwise.estimate import timing as tm
from flopwise.estimate._inputs import Inputs, jsonable
from flopwise.estimate.cost import onprem_usd_per_device_h, to_money
from flopwise.estimate.quant import QuantFormat, get_quant, kv_bytes_per_element, resolve_serving_quant
from flopwise.models.params import count_params
from flopwise.models.types import ModelArch
from flopwise.units import BYTES_PER_GB, BYTES_PER_GIB, GIGA, MEGA, MS_PER_S, S_PER_H, TERA

__all__ = [
    "OnlineDecode",
    "ServeEstimate",
    "ServingRates",
    "estimate_serve",
    "online_decode",
    "serving_memory_reserve_bytes",
    "serving_rates",
]

#: llama.cpp's integer-quantized weight types (Q2_K ... Q8_0, IQ*), by the names flopwise gives them
_LLAMA_CPP_INT_QUANT = re.compile(r"^i?q\d")


@dataclass(frozen=True)
class ServeEstimate:
    """The estimate of serving one replica (``device_count`` devices in tensor parallel) with static batches of
    ``batch`` requests of ``input_tokens`` prompt and ``output_tokens`` generated tokens each.

    ``decode_tokens_per_s`` counts all sequences of the batch together; ``output_tokens_per_s`` is the batch's
    generated tokens over its whole time (prefill included: what static-batch benchmarks publish);
    ``max_batch`` is the most concurrent sequences of this shape that the engine's memory budget and sequence
    limit allow with every sequence at its full length (no preemption), and ``saturation_tokens_per_s`` the output
    throughput at that batch (the engine's saturation); ``max_batch_in_use`` is the most a paged-KV engine admits
    under continuous batching, each sequence holding the blocks it uses (input + output/2 on average), the basis
    of ``fits`` (what vLLM, SGLang and TensorRT-LLM accept).
    Under load (``arrival_rps`` or ``concurrency`` given: continuous batching, see :func:`online_decode`)
    ``tpot_ms`` is the mean time per output token at that load, ``running_batch`` the mean decode batch,
    ``arrival_rps`` the admitted request rate, ``online_ttft_ms`` one prompt's prefill plus the step in progress
    and ``is_saturated`` whether the offered rate exceeds what the replica completes; the other figures stay
    those of the static batch (``batch`` 1). Without them these fields are None.
    ``*_per_1m_tokens`` are per million generated (output) tokens, with the prefill's time, energy and cost included.
    Energy is given at three boundaries: ``device_`` (the accelerators, what NVML/DCGM measure), ``node_`` (plus
    the host share) and ``facility_`` (node x PUE); the headline ``energy_per_1m_tokens_kwh`` and
    ``co2e_per_1m_tokens_kg`` are at ``energy_boundary`` ("facility"). Numeric fields are arrays
    in vector mode; money is Decimal (object arrays in vector mode), None where no price was given.
    """

    memory: mem.MemoryEstimate
    memory_gb: Any
    fits: Any
    ttft_ms: Any
    tpot_ms: Any
    decode_tokens_per_s: Any
    prefill_tokens_per_s: Any
    power_per_device_w: Any
    energy_per_1m_tokens_kwh: Any
    co2e_per_1m_tokens_kg: Any
    cost_per_1m_tokens_usd: Any
    cost_per_hour_usd: Any
    output_tokens_per_s: Any = None
    max_batch: Any = None
    saturation_tokens_per_s: Any = None
    max_batch_in_use: Any = None
    device_energy_per_1m_tokens_kwh: Any = None
    node_energy_per_1m_tokens_kwh: Any = None
    facility_energy_per_1m_tokens_kwh: Any = None
    co2e_per_1m_tokens_kg_by_boundary: Any = None
    arrival_rps: Any = None
    concurrency: Any = None
    running_batch: Any = None
    online_ttft_ms: Any = None
    is_saturated: Any = None
    energy_boundary: str = "facility"
    assumptions: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists, Decimal as str)."""
        return jsonable(self)


@dataclass(frozen=True)
class ServingRates:
    """What one device sustains when serving a quantization with an engine: the dtype its matmuls run in, the
    dense and the used peak (fp16 accumulation on GeForce for llama.cpp formats), the effective compute and memory
    rates after the engine's efficiencies, and the fixed per-step overhead. Shared by ``estimate_serve`` and the
    planner."""

    dtype: str
    peak_tflop_per_s: float
    compute_peak_tflop_per_s: float
    is_weight_only: bool
    is_fp16_accumulate: bool
    peak_flop_per_s: float
    bandwidth_bytes_per_s: float
    layer_overhead_s: float
    warnings: tuple[str, ...]
    bandwidth_efficiency_frac: float = 0.0
    compute_efficiency_frac: float = 0.0
    prefill_layer_overhead_s: float = 0.0
    #: the matrix x vector rate of decode where it differs from peak_flop_per_s (0: the same); CPUs running
    #: llama.cpp kernels (flopwise.catalog.cpu.kernel_compute)
    decode_peak_flop_per_s: float = 0.0
    cpu_kernel_basis: str = ""

    @property
    def decode_flop_per_s(self) -> float:
        return self.decode_peak_flop_per_s or self.peak_flop_per_s


def serving_rates(
    q: QuantFormat, device: Device, n_layers: int, engine: EngineProfile | None = None
) -> ServingRates:
    """The rates of :class:`ServingRates` for quantization *q* on *device* with *engine* (default ``generic``;
    see docs/methodology.md, "Serving"). An engine's empty efficiency fields take the device-kind defaults of
    ``flopwise.estimate.timing``; the compute efficiency is the one fitted for the device's vendor where
    ``engine_backends.csv`` has one (vLLM on CUDA and on ROCm). Matmuls in fp8 reach a lower share of the (2x) fp8
    peak, since attention, norms and activations stay 16-bit: the compute share is scaled by ``timing.FP8_MFU_SCALE`` (derived from
    DeepSeek-V3's fp8 training, arXiv:2412.19437, an independent source; not fitted to serving cases)."""
    eng = get_engine(engine)
    dtype, peak_tflop, warnings = resolve_serving_quant(q, device)
    weight_only = q.is_weight_only or bool(warnings and "weight-only" in warnings[0])
    if device.kind == "cpu" and _LLAMA_CPP_INT_QUANT.match(q.name) and device.peak_int8_tflop_per_s:
        # llama.cpp's CPU kernels quantize activations to Q8 and run integer dot products (vec_dot_type of the
        # Q4/Q5/Q6/Q8/IQ types is Q8_0/Q8_K in ggml-cpu), i.e. at the int8 rate: VNNI, SDOT/I8MM or AMX
        dtype, peak_tflop = "int8", device.peak_int8_tflop_per_s
        warnings = tuple(w for w in warnings if "matmuls costed at" not in w)
    kind = device.kind
    fp16_acc = eng.fp16_accumulate and dtype == "fp16" and q.name in tm.FP16_ACCUMULATE_QUANTS
    used_tflop = tm.fp16_accumulate_peak_tflop_per_s(device, peak_tflop) if fp16_acc else peak_tflop
    on_gpu = kind == "gpu"
    # the engine's efficiency on this vendor's kernel backend (vLLM CUDA / ROCm, engine_backends.csv), else its own
    eng_compute = eng.compute_efficiency_for(device.vendor) if on_gpu else None
    compute_frac = (
        eng_compute
        if eng_compute is not None
        else tm.COMPUTE_EFFICIENCY_FRAC.get(kind, 0.5)
    ) * (tm.WEIGHT_ONLY_COMPUTE_FRAC if weight_only else 1.0) * tm.low_precision_compute_scale(dtype)
    bw_frac = (
        eng.bandwidth_efficiency_frac
        if eng.bandwidth_efficiency_frac is not None and on_gpu
        else tm.BANDWIDTH_EFFICIENCY_FRAC.get(kind, 0.6)
    ) * (tm.WEIGHT_ONLY_BANDWIDTH_FRAC if weight_only else 1.0)
    layer_s = (
        eng.layer_overhead_s
        if eng.layer_overhead_s is not None and on_gpu
        else tm.DECODE_LAYER_OVERHEAD_S.get(kind, 0.0)
    )
    # CUDA graphs cover decode steps only (vLLM, SGLang, TensorRT-LLM capture decode batch sizes; prompts run
    # eagerly), so a prefill step pays the eager per-layer launch time even where decode does not
    pre_layer_s = max(layer_s, tm.DECODE_LAYER_OVERHEAD_S.get(kind, 0.0)) if on_gpu else layer_s
    rates = ServingRates(
        dtype,
        peak_tflop,
        used_tflop,
        weight_only,
        fp16_acc,
        used_tflop * TERA * compute_frac,
        device.memory_bandwidth_gb_per_s * GIGA * bw_frac,
        float(n_layers * layer_s),
        tuple(warnings),
        bw_frac,
        compute_frac,
        float(n_layers * pre_layer_s),
    )
    if kind == "cpu" and _LLAMA_CPP_INT_QUANT.match(q.name):
        # GGUF formats run llama.cpp's own CPU kernels: their measured per-core rates (catalog/cpu.py)
        # replace peak x efficiency where a published run covers the ISA class and the format
        from dataclasses import replace as _replace

        from flopwise.catalog.cpu import kernel_compute

        kc = kernel_compute(device, q.name)
        if kc is not None:
            rates = _replace(
                rates,
                peak_flop_per_s=kc.prefill_flop_per_s,
                decode_peak_flop_per_s=kc.decode_flop_per_s,
                cpu_kernel_basis=kc.basis,
            )
    return rates


def serving_memory_reserve_bytes(engine: EngineProfile, capacity_bytes, used_bytes=0.0, kind: str = "gpu"):
    """Memory per device the engine keeps out of reach of weights, activations and KV cache: its runtime
    reserve (CUDA context, graphs, workspaces) plus the share it leaves unused: ``(1 - u) x capacity`` when it
    budgets the total (vLLM ``gpu_memory_utilization``, SGLang ``mem_fraction_static``) or ``(1 - u) x (capacity -
    reserve - used)`` when it budgets what is free after weights and activations (TensorRT-LLM
    ``free_gpu_memory_fraction``); sources in catalog/data/engines.csv. Empty profile fields take the
    device-kind defaults of ``flopwise.estimate.memory`` (RUNTIME_CONTEXT_BYTES, ENGINE_MEMORY_UTILIZATION_FRAC)."""
    reserve = (
        mem.RUNTIME_CONTEXT_BYTES.get(kind, mem.RUNTIME_CONTEXT_BYTES["gpu"])
        if engine.runtime_reserve_gib is None
        else engine.runtime_reserve_gib * BYTES_PER_GIB
    )
    util = (
        mem.ENGINE_MEMORY_UTILIZATION_FRAC.get(kind, 0.9)
        if engine.memory_utilization_frac is None
        else engine.memory_utilization_frac
    )
    unused = 1.0 - util
    if engine.memory_basis == "free":
        return reserve + unused * np.maximum(capacity_bytes - reserve - used_bytes, 0.0)
    return reserve + unused * capacity_bytes


def _paged_tokens(tokens, block_tokens: int):
    """KV tokens held per sequence when the cache is allocated in blocks of *block_tokens* (vLLM PagedAttention,
    Kwon et al. 2023, arXiv:2309.06180: waste is under one block per sequence)."""
    return np.ceil(tokens / block_tokens) * block_tokens if block_tokens > 1 else tokens


def _kv_tokens_in_use(n_in, n_out, block_tokens: int):
    """KV tokens one sequence holds on average. Paged engines (block > 1: vLLM PagedAttention, Kwon et al. 2023,
    arXiv:2309.06180; SGLang; TensorRT-LLM paged KV) allocate blocks as tokens arrive and free them when the
    sequence ends, so under continuous batching, with sequences spread uniformly over their decode, one holds the
    prompt plus half its output on average; the engine admits sequences while blocks are free. An engine that
    reserves per sequence (block 1) holds input + output."""
    if block_tokens > 1:
        return _paged_tokens(n_in + np.ceil(n_out / 2.0), block_tokens)
    return n_in + n_out


@dataclass(frozen=True)
class _Req:
    """Validated inputs of one estimate_serve call (numbers broadcast)."""

    inp: Inputs
    q: QuantFormat
    engine: EngineProfile
    kv_name: str
    kv_b: float
    tp: Any
    b: Any
    n_in: Any
    n_out: Any
    price: Any
    grid: Any
    pue: Any
    rps: Any = None
    conc: Any = None


def _read_inputs(
    device,
    engine,
    quant,
    kv_dtype,
    device_count,
    batch,
    input_tokens,
    output_tokens,
    price,
    onprem,
    grid,
    pue,
    arrival_rps=None,
    concurrency=None,
) -> _Req:
    q = get_quant(quant)
    eng = get_engine(engine)
    compute_kv = "fp32" if q.name == "fp32" else "bf16"
    kv_name = eng.default_kv_dtype(compute_kv) if kv_dtype is None else str(kv_dtype).lower()
    kv_b = kv_bytes_per_element(kv_name)
    check_engine_supports(eng, device, q.name, kv_name)
    if price is not None and onprem is not None:
        raise InputError("onprem", onprem.device_id, "give either price_usd_per_device_h or onprem, not both")
    inp = Inputs()
    tp = inp.num(device_count, "device_count", max_value=1e5, integer=True)
    b = inp.num(batch, "batch", max_value=1e6, integer=True)
    n_in = inp.num(input_tokens, "input_tokens", max_value=1e8, integer=True)
    n_out = inp.num(output_tokens, "output_tokens", max_value=1e8, integer=True)
    price_v = (
        None if price is None else inp.num(price, "price_usd_per_device_h", max_value=1e6, allow_min=True)
    )
    grid_v = None if grid is None else inp.num(grid, "grid_gco2e_per_kwh", max_value=5000.0, allow_min=True)
    pue_given = pue if pue is not None else (onprem.pue if onprem is not None else None)
    pue_v = (
        en.DEFAULT_PUE
        if pue_given is None
        else inp.num(pue_given, "pue", min_value=1.0, allow_min=True, max_value=5.0)
    )
    if arrival_rps is not None and concurrency is not None:
        raise InputError(
            "concurrency", concurrency, "give either arrival_rps (requests/s, open loop) or concurrency, not both"
        )
    rps_v = None if arrival_rps is None else inp.num(arrival_rps, "arrival_rps", max_value=1e7)
    conc_v = None if concurrency is None else inp.num(concurrency, "concurrency", max_value=1e7, integer=True)
    if (rps_v is not None or conc_v is not None) and np.any(np.asarray(b) != 1):
        raise InputError(
            "batch", batch, "under load (arrival_rps or concurrency) the running batch follows from the load; "
            "leave batch at 1"
        )
    inp.shape()
    if np.any(np.asarray(tp) > 1) and device.interconnect_gb_per_s <= 0 and eng.multi_device == "tensor":
        raise UnsupportedError(
            f"device {device.id!r} has no interconnect in the catalog; tensor-parallel serving "
            "over several of them cannot be estimated (use device_count=1, or a layer-split engine such as "
            "llama.cpp)"
        )
    return _Req(inp, q, eng, kv_name, kv_b, tp, b, n_in, n_out, price_v, grid_v, pue_v, rps_v, conc_v)


@dataclass(frozen=True)
class _Split:
    """How the devices of a replica share the work: ``shard`` divides weights and per-device bytes/FLOPs of one
    step (tensor parallel: n; layer split: 1, the devices work in turn), ``mem_shard`` divides memory (n either
    way), ``kv_shard`` the KV heads, ``ranks`` the all-reduce group (1 for a layer split), ``hops`` the device
    hand-offs per step of a layer split."""

    shard: Any
    mem_shard: Any
    kv_shard: Any
    kv_mem_shard: Any
    ranks: Any
    hops: Any


def _split_of(model: ModelArch, engine: EngineProfile, tp) -> _Split:
    if engine.multi_device == "layer":
        one = 1.0 + 0.0 * tp
        return _Split(one, tp, one, tp, one, tp - 1.0)
    kv_shard = 1.0 if model.attention == "mla" else np.minimum(tp, model.n_kv_heads)
    return _Split(tp, tp, kv_shard, kv_shard, tp, 0.0 * tp)


def _weight_read_fn(model: ModelArch, q: QuantFormat, shard):
    """Bytes of weights one device reads in a step over *step_tokens* tokens (MoE reads only the routed experts
    the step's tokens reach)."""
    pc = count_params(model)
    inactive = float(pc.total - pc.active)
    input_table = 0.0 if model.tied_embeddings else float(model.vocab_size * model.d_model)
    bytes_per_param = q.bits_per_weight / 8.0

    def weight_read_bytes(step_tokens):
        touched = (
            tm.moe_touched_frac(model.n_experts, model.n_experts_active, step_tokens) if model.is_moe else 0.0
        )
        return (pc.active - input_table + inactive * touched) * bytes_per_param / shard

    return weight_read_bytes


def _prefill_s(model, r: _Req, rates: ServingRates, sp: _Split, n_mm, wread, device, batch):
    """(TTFT s, compute s, memory s, chunks, TP comm s) of prefilling *batch* prompts together, in chunks of the
    engine's ``prefill_chunk_tokens`` (roofline per chunk plus the fixed per-step overhead)."""
    chunk = float(r.engine.prefill_chunk_tokens)
    prefill_tok = batch * r.n_in
    chunks = np.maximum(np.ceil(prefill_tok / chunk), 1.0)
    compute_s = fl.prefill_flops(n_mm, model, r.n_in, batch) / sp.shard / rates.peak_flop_per_s
    mem_s = wread(np.minimum(prefill_tok, chunk)) * chunks / rates.bandwidth_bytes_per_s
    link = device.interconnect_gb_per_s * GIGA or 1.0
    latency = tm.collective_latency_s(device)
    comm_s = (
        2.0
        * model.n_layers
        * (
            tm.allreduce_time_s(prefill_tok * model.d_model * 2.0, sp.ranks, link, 0.0)
            + chunks * latency * (sp.ranks > 1)
        )
        + chunks * sp.hops * latency
    )
    ttft = np.maximum(compute_s, mem_s) + chunks * rates.prefill_layer_overhead_s + comm_s
    return ttft, compute_s, mem_s, chunks, comm_s


def _decode_step_s(model, r: _Req, rates: ServingRates, sp: _Split, n_mm, wread, device, batch, ctx,
                   prefill_tokens=0.0):
    """(TPOT s, FLOPs, bytes, TP comm s) of one decode step of *batch* sequences at context *ctx*: weights read
    once per step plus every sequence's KV cache (reads grow with batch x context), on the roofline (Williams et
    al. 2009) that turns compute-bound when batch x 2 FLOP/param outgrows the bytes per FLOP of the device.

    *prefill_tokens*: prompt tokens prefilled in the same step (mixed batches: chunked prefill, Agrawal et al.
    2024, Sarathi-Serve, arXiv:2403.02310): their FLOPs join the step's, its weight read serves them too (a
    memory-bound decode step has idle compute that they fill), and their activations join the all-reduce."""
    link = device.interconnect_gb_per_s * GIGA or 1.0
    latency = tm.collective_latency_s(device)
    step_flops = batch * fl.decode_flops_per_token(n_mm, model, ctx) / sp.shard
    tokens = batch + prefill_tokens
    if np.any(np.asarray(prefill_tokens) > 0):
        step_flops = step_flops + prefill_tokens * fl.prefill_flops(n_mm, model, r.n_in, 1.0) / r.n_in / sp.shard
    step_bytes = wread(tokens) + mem.kv_cache_bytes(model, ctx, batch, r.kv_b) / sp.kv_shard
    comm = 2.0 * model.n_layers * tm.allreduce_time_s(tokens * model.d_model * 2.0, sp.ranks, link, latency)
    comm = comm + sp.hops * latency
    tpot = (
        tm.roofline_time_s(
            step_flops, step_bytes, rates.decode_flop_per_s, rates.bandwidth_bytes_per_s,
            tm.ROOFLINE_OVERLAP_P.get(device.kind),
        )  # fmt: skip
        + rates.layer_overhead_s
        + comm
    )
    return tpot, step_flops, step_bytes, comm


#: Per-layer time of one decode step of a GPU serving engine running online (requests streamed as they come), where
#: the engine profile's own per-layer overhead is smaller (CUDA-graph decode measured offline): the step's host work
#: (scheduling, sampling, detokenizing and streaming every token; the vLLM v0.6.0 performance update,
#: https://blog.vllm.ai/2024/09/05/perf-update.html, found most of a Llama 3 8B step on H100 outside the GPU in
#: v0.5.3) and the unfused small kernels and all-reduces between layers. The light-load time per output token of
#: the published online cases is above the offline step by 48-62 us per layer (8B on 1 A100, 70B on 2 and 4 H100),
#: so it is per layer. FITTED: least absolute log error over the tpot_ms cases of validation/data/cases_online.csv
#: (flopwise.validation.online_fit, which also gives the leave-one-source-out error).
ONLINE_LAYER_OVERHEAD_S = 5.75e-5
#: bisection steps of the online steady state (online_decode): the bracket (at most the step with every slot busy
#: plus its prefill stalls) shrinks 2^-28, about 1e-6 of TPOT for a bracket 200x TPOT (tests/estimate/test_online.py)
ONLINE_SOLVE_STEPS = 28


@dataclass(frozen=True)
class OnlineDecode:
    """Steady state of one replica serving requests as they come (continuous batching; arrays, broadcast).

    ``tpot_s``: mean time per output token after the first; ``running_batch``: mean sequences in each decode
    step (the tagged request included); ``arrival_rps``: requests/s admitted (the offered rate, or less where the
    replica saturates); ``prefill_tokens_per_step``: prompt tokens mixed into each step (0 without mixed
    prefill); ``ttft_s``: the prefill of one prompt plus the wait for the step in progress (no queue for a slot);
    ``is_saturated``: the offered rate exceeds what the replica completes (open loop: requests queue without
    bound) or more clients than slots (closed loop: the others wait for a slot)."""

    tpot_s: Any
    running_batch: Any
    arrival_rps: Any
    prefill_tokens_per_step: Any
    ttft_s: Any
    is_saturated: Any


def online_decode(
    step_s,
    prefill_s,
    input_tokens,
    output_tokens,
    *,
    slots,
    mixed_prefill: bool,
    chunk_tokens=np.inf,
    arrival_rps=None,
    concurrency=None,
) -> OnlineDecode:
    """TPOT under load: the fixed point of Little's law and the step time at the load it implies.

    *step_s(batch, prefill_tokens)* is the time of one engine step decoding *batch* sequences with
    *prefill_tokens* prompt tokens mixed in; *prefill_s* the time to prefill one prompt alone; *slots* the most
    sequences the engine runs at once (its cap or what memory holds). Give *arrival_rps* (open loop, Poisson
    arrivals: what vLLM's ``benchmark_serving --request-rate`` sends) or *concurrency* (closed loop: that many
    clients, each sending its next request when the last one ends: ``--max-concurrency``, NVIDIA GenAI-Perf /
    AIPerf ``--concurrency``). All numbers broadcast.

    With ``d = output_tokens - 1`` decode steps per request and a step of ``T``, a request stays
    ``R = TTFT + d T`` (TTFT ~ ``prefill_s + T``); Little's law gives the running batch: open loop
    ``B = 1 + lambda R`` (an arrival finds the time-average number, PASTA, plus itself), capped at *slots*
    (above that, admissions run at ``slots / R``); closed loop ``B = min(concurrency, slots)`` and
    ``lambda = B / R``. Prefills of the other requests reach the tagged one at ``lambda_o = lambda`` (open) or
    ``lambda (B - 1) / B`` (closed: its own prompt is not among them), and then:

    * mixed prefill (vLLM chunked prefill, https://docs.vllm.ai/en/latest/configuration/optimization.html;
      Sarathi-Serve, Agrawal et al. 2024, arXiv:2403.02310; TensorRT-LLM in-flight batching): each step carries
      ``P = lambda_o x input_tokens x T`` prompt tokens (at most ``chunk_tokens - B``), so ``T = step_s(B, P)``:
      prompt compute fills a memory-bound step nearly for free and lengthens a compute-bound one;
    * prefill as its own step (SGLang's default, vLLM v0.6 without chunking): every prefill stalls the running
      decode, ``lambda_o T`` of them per output token, so ``T = step_s(B, 0) + lambda_o x prefill_s x T`` (the
      interference DistServe, Zhong et al. 2024, arXiv:2401.09670, measures between the phases).

    ``T -> g(T)`` is increasing, ``g(T0) >= T0`` at ``T0 = step_s(1, 0)`` and ``g(T_hi) <= T_hi`` at the bound
    reached with every slot busy, so the fixed point is found by bisection (ONLINE_SOLVE_STEPS) with numpy
    arrays: no loop over configurations. At ``lambda -> 0`` (or concurrency 1) it is the batch-1 decode step.
    """
    n_in = np.asarray(input_tokens, dtype=float)
    d = np.maximum(np.asarray(output_tokens, dtype=float) - 1.0, 1.0)
    p1 = np.asarray(prefill_s, dtype=float)
    cap = np.maximum(np.asarray(slots, dtype=float), 1.0)
    chunk = np.asarray(chunk_tokens, dtype=float)
    closed = concurrency is not None
    if closed == (arrival_rps is not None):
        raise InputError("arrival_rps", arrival_rps, "give either arrival_rps or concurrency, not both or neither")
    lam_in = None if closed else np.asarray(arrival_rps, dtype=float)
    n_max = np.minimum(np.asarray(concurrency, dtype=float), cap) if closed else cap

    def state(t):
        resid = p1 + t + d * t
        if closed:
            batch = n_max + 0.0 * t
            lam = batch / resid
            others = lam * (batch - 1.0) / batch
        else:
            lam = np.minimum(lam_in, cap / resid)
            batch = np.minimum(1.0 + lam * resid, cap)
            others = lam
        if mixed_prefill:
            pre = np.minimum(others * n_in * t, np.maximum(chunk - batch, 0.0))
            g = step_s(batch, pre)
        else:
            pre = 0.0 * t
            g = step_s(batch, 0.0) + others * p1 * t
        return g, batch, lam, pre

    lo = np.asarray(step_s(1.0, 0.0), dtype=float) + 0.0 * n_max + 0.0 * p1 + 0.0 * d
    if mixed_prefill:
        hi = step_s(n_max, np.minimum(n_max * n_in / (1.0 + d), np.maximum(chunk - n_max, 0.0)))
    else:
        hi = step_s(n_max, 0.0) + n_max * p1 / (1.0 + d)
    hi = np.maximum(np.asarray(hi, dtype=float) + 0.0 * lo, lo)
    # bisection keeps h(lo) >= 0 >= h(hi), h(T) = g(T) - T; h < 0 between the light-load fixed point and the
    # saturated one near hi, so it converges to the former (false position is drawn to the latter)
    for _ in range(ONLINE_SOLVE_STEPS):
        mid = 0.5 * (lo + hi)
        above = state(mid)[0] <= mid
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    t = hi
    _, batch, lam, pre = state(t)
    # open loop: the offered rate exceeds what the replica completes; closed loop: more clients than slots (the
    # rest wait for a slot, a bounded queue)
    saturated = (np.asarray(concurrency, dtype=float) > cap) + 0.0 * t > 0 if closed else lam_in > lam * (1.0 + 1e-6)
    return OnlineDecode(t, batch, lam, pre, p1 + t, saturated)


def _online_step_fn(model, r: _Req, rates: ServingRates, sp: _Split, n_mm, wread, device, ctx, extra_s):
    """``step_s(batch, prefill_tokens)`` of :func:`online_decode`: ``_decode_step_s`` plus *extra_s*. For a dense
    model every term but the roofline is linear in the batch and the prompt tokens (FLOPs and KV reads per
    sequence, all-reduce bytes per token; the weight read is one per step), so their coefficients are taken once
    and each bisection step costs a few array operations; MoE weight reads depend on the tokens routed (calls
    ``_decode_step_s``)."""
    if model.is_moe:

        def step_moe(batch, prefill_tokens):
            return _decode_step_s(model, r, rates, sp, n_mm, wread, device, batch, ctx, prefill_tokens)[0] + extra_s

        return step_moe
    f_dec = fl.decode_flops_per_token(n_mm, model, ctx) / sp.shard
    f_pre = fl.prefill_flops(n_mm, model, r.n_in, 1.0) / r.n_in / sp.shard
    w_bytes = wread(1.0)
    kv_seq = mem.kv_cache_bytes(model, ctx, 1.0, r.kv_b) / sp.kv_shard
    comm0 = _decode_step_s(model, r, rates, sp, n_mm, wread, device, 0.0, ctx)[3]
    comm1 = _decode_step_s(model, r, rates, sp, n_mm, wread, device, 1.0, ctx)[3] - comm0
    const = rates.layer_overhead_s + comm0 + extra_s
    peak, bw, overlap = rates.decode_flop_per_s, rates.bandwidth_bytes_per_s, tm.ROOFLINE_OVERLAP_P.get(device.kind)

    def step(batch, prefill_tokens):
        flops = batch * f_dec + prefill_tokens * f_pre
        t = tm.roofline_time_s(flops, w_bytes + batch * kv_seq, peak, bw, overlap)
        return t + const + comm1 * (batch + prefill_tokens)

    return step


def _max_batch(model, r: _Req, sp: _Split, weights, capacity, kv_tokens, kind: str):
    """Most concurrent sequences of *kv_tokens* cached tokens each that fit the engine's memory budget, capped
    by its ``max_seqs_limit`` (at least 1)."""
    acts_one = mem.serving_activation_bytes(model, 1.0, r.n_in, chunk_tokens=r.engine.prefill_chunk_tokens)
    reserve = serving_memory_reserve_bytes(r.engine, capacity, weights + acts_one, kind)
    kv_one = mem.kv_cache_bytes(model, kv_tokens, 1.0, r.kv_b) / sp.kv_mem_shard
    room = capacity - reserve - weights - acts_one
    fit = np.floor(np.maximum(room, 0.0) / np.maximum(kv_one, 1.0))
    return np.clip(fit, 1.0, float(r.engine.max_seqs_limit))


def estimate_serve(
    model: ModelArch,
    device: Device,
    *,
    device_count=1,
    quant: str = "bf16",
    kv_dtype: str | None = None,
    batch=1,
    input_tokens=512,
    output_tokens=256,
    engine: str | EngineProfile | None = None,
    price_usd_per_device_h=None,
    onprem: OnPremProfile | None = None,
    grid_gco2e_per_kwh=None,
    pue=None,
    arrival_rps=None,
    concurrency=None,
) -> ServeEstimate:
    """Estimate serving *model* on *device_count* x *device* with *engine* (a profile or its name; default
    ``generic``): tensor parallel, or layers split across devices for engines whose ``multi_device`` is
    ``layer``.

    *arrival_rps* (requests/s arriving, Poisson) or *concurrency* (clients each with one request in flight)
    estimate the time per output token under continuous batching at that load (:func:`online_decode`).

    Numeric keywords (device_count, batch, input_tokens, output_tokens, price_usd_per_device_h,
    grid_gco2e_per_kwh, pue, arrival_rps, concurrency) accept numpy arrays and broadcast. See
    docs/methodology.md, "Serving".
    """
    r = _read_inputs(
        device, engine, quant, kv_dtype, device_count, batch, input_tokens, output_tokens,
        price_usd_per_device_h, onprem, grid_gco2e_per_kwh, pue, arrival_rps, concurrency,
    )  # fmt: skip
    inp, q, eng = r.inp, r.q, r.engine
    warnings: list[str] = [f"{model.id}: {feat} is not modelled" for feat in model.unmodelled]
    rates = serving_rates(q, device, model.n_layers, eng)
    warnings.extend(rates.warnings)
    if np.any(np.asarray(r.n_in + r.n_out) > model.max_context):
        warnings.append(f"input_tokens + output_tokens exceed {model.id}'s max_context {model.max_context}")
    covered = eng.id in _VALIDATED_ENGINE_KINDS.get(device.kind, ())
    if not covered:
        warnings.append(
            f"no published case covers engine {eng.id!r} on {device.kind} devices; its efficiencies are derived "
            "(see flopwise validate)"
        )
    pc = count_params(model)
    n_mm = fl.matmul_params(pc.non_embedding_active, model)
    sp = _split_of(model, eng, r.tp)
    wread = _weight_read_fn(model, q, sp.shard)

    # --- memory per device --------------------------------------------------------------------------------
    capacity = device.memory_gb * BYTES_PER_GB
    kv_tokens = _kv_tokens_in_use(r.n_in, r.n_out, eng.kv_block_tokens)
    kv_full_tokens = _paged_tokens(r.n_in + r.n_out, eng.kv_block_tokens)
    weights = mem.weight_bytes(pc.total, q.bits_per_weight) / sp.mem_shard
    # a paged engine must also hold one sequence at its full length (it refuses a max_model_len that does not fit)
    kv = np.maximum(
        mem.kv_cache_bytes(model, kv_tokens, r.b, r.kv_b), mem.kv_cache_bytes(model, kv_full_tokens, 1.0, r.kv_b)
    ) / sp.kv_mem_shard
    acts = mem.serving_activation_bytes(model, r.b, r.n_in, chunk_tokens=eng.prefill_chunk_tokens)
    overhead = serving_memory_reserve_bytes(eng, capacity, weights + acts, device.kind)
    memory = mem.MemoryEstimate.from_parts(
        weights_bytes=inp.finish(weights),
        kv_cache_bytes=inp.finish(kv),
        activations_bytes=inp.finish(acts),
        gradients_bytes=inp.finish(0.0),
        optimizer_bytes=inp.finish(0.0),
        overhead_bytes=inp.finish(overhead),
        capacity_bytes=inp.finish(capacity),
        assumptions={
            "bits_per_weight": q.bits_per_weight,
            "kv_dtype": r.kv_name,
            "kv_bytes_per_element": r.kv_b,
            "kv_bytes_per_token": mem.kv_cache_bytes_per_token(model, r.kv_b),
            "kv_tokens_per_sequence": (
                "input_tokens + output_tokens / 2 (paged KV under continuous batching: sequences are spread over "
                f"their decode, each holds its blocks in use), in blocks of {eng.kv_block_tokens}; at least one "
                "sequence at full length"
                if eng.kv_block_tokens > 1
                else "input_tokens + output_tokens (reserved per sequence)"
            ),
            "engine_memory_utilization_frac": eng.memory_utilization_frac
            if eng.memory_utilization_frac is not None
            else mem.ENGINE_MEMORY_UTILIZATION_FRAC.get(device.kind, 0.9),
            "engine_memory_basis": eng.memory_basis,
            "engine_runtime_reserve_gib": eng.runtime_reserve_gib,
            "prefill_chunk_tokens": eng.prefill_chunk_tokens,
        },
    )
    if np.any(~np.asarray(memory.fits)):
        need = float(np.max(memory.total_bytes)) / BYTES_PER_GB
        warnings.append(
            f"does not fit: up to {need:.1f} GB per device needed, {device.memory_gb:g} GB available; "
            "try a smaller quant, a smaller batch or context, kv_dtype='fp8', or more devices"
        )
    if np.any(np.asarray(r.b) > eng.max_seqs_limit):
        warnings.append(f"batch exceeds engine {eng.id!r}'s {eng.max_seqs_limit} concurrent sequences")

    # --- prefill (TTFT) and decode (TPOT at the mean context) ---------------------------------------------
    ttft_s, pre_compute_s, pre_mem_s, chunks, tp_pre_s = _prefill_s(
        model, r, rates, sp, n_mm, wread, device, r.b
    )
    ctx = r.n_in + r.n_out / 2.0
    tpot_s, step_flops, step_bytes, tp_dec_s = _decode_step_s(
        model, r, rates, sp, n_mm, wread, device, r.b, ctx
    )
    is_memory_bound = step_bytes / rates.bandwidth_bytes_per_s >= step_flops / rates.decode_flop_per_s
    decode_tps = r.b / tpot_s
    prefill_tps = r.b * r.n_in / ttft_s
    request_s = ttft_s + r.n_out * tpot_s
    out_tokens = r.b * r.n_out
    output_tps = out_tokens / request_s

    # --- saturation: the largest batch the engine's memory and sequence limit allow -------------------------
    max_b = _max_batch(model, r, sp, weights, capacity, kv_full_tokens, device.kind)
    max_b_in_use = _max_batch(model, r, sp, weights, capacity, kv_tokens, device.kind)
    sat_ttft = _prefill_s(model, r, rates, sp, n_mm, wread, device, max_b)[0]
    sat_tpot = _decode_step_s(model, r, rates, sp, n_mm, wread, device, max_b, ctx)[0]
    saturation_tps = max_b * r.n_out / (sat_ttft + r.n_out * sat_tpot)

    online = None
    if r.rps is not None or r.conc is not None:
        # the engine runs at most its default number of sequences (vLLM max_num_seqs, SGLang max_running_requests,
        # TensorRT-LLM max_batch_size) and what its paged KV memory holds
        slots = np.minimum(max_b_in_use, float(eng.default_max_seqs))
        p1 = _prefill_s(model, r, rates, sp, n_mm, wread, device, 1.0)[0]

        online_extra_s = (
            model.n_layers * max(ONLINE_LAYER_OVERHEAD_S - rates.layer_overhead_s / model.n_layers, 0.0)
            if device.kind == "gpu"
            else 0.0
        )
        step_s = _online_step_fn(model, r, rates, sp, n_mm, wread, device, ctx, online_extra_s)

        online = online_decode(
            step_s, p1, r.n_in, r.n_out, slots=slots, mixed_prefill=eng.mixed_prefill,
            chunk_tokens=float(eng.prefill_chunk_tokens), arrival_rps=r.rps, concurrency=r.conc,
        )  # fmt: skip
        if eng.id not in _ONLINE_VALIDATED_ENGINES or device.kind != "gpu":
            warnings.append(
                f"no published online case covers engine {eng.id!r} on {device.kind} devices: tpot_ms under load "
                "is derived (validated on vLLM, SGLang and TensorRT-LLM GPU servers, flopwise validate tpot_ms)"
            )
        if np.any(np.asarray(online.is_saturated)):
            warnings.append(
                "arrival_rps exceeds what one replica completes: requests queue without bound (TTFT grows); "
                "tpot_ms is the saturated one. Add replicas (flopwise plan serve)"
                if r.conc is None
                else "concurrency exceeds the sequences the engine runs at once (its max_seqs or its KV memory): "
                "the other requests wait for a slot (TTFT grows); tpot_ms is at every slot busy"
            )
    util = _phase_utilization(device, rates, ttft_s, pre_compute_s, pre_mem_s, tpot_s, step_flops, step_bytes)
    money = _power_energy_cost(device, r, ttft_s, tpot_s, request_s, out_tokens, onprem, util)
    assumptions = _assumptions(model, device, r, rates, pc, n_mm, locals(), money)
    return ServeEstimate(
        memory=memory,
        memory_gb=inp.finish(memory.total_bytes / BYTES_PER_GB),
        fits=memory.fits,
        ttft_ms=inp.finish(ttft_s * MS_PER_S),
        tpot_ms=inp.finish((tpot_s if online is None else online.tpot_s) * MS_PER_S),
        decode_tokens_per_s=inp.finish(decode_tps),
        prefill_tokens_per_s=inp.finish(prefill_tps),
        power_per_device_w=inp.finish(money["power"]),
        energy_per_1m_tokens_kwh=inp.finish(money["kwh_per_1m"]),
        co2e_per_1m_tokens_kg=inp.finish(money["co2_per_1m"]),
        cost_per_1m_tokens_usd=money["cost_1m"],
        cost_per_hour_usd=money["cost_h"],
        output_tokens_per_s=inp.finish(output_tps),
        max_batch=inp.finish(max_b),
        max_batch_in_use=inp.finish(max_b_in_use),
        saturation_tokens_per_s=inp.finish(saturation_tps),
        device_energy_per_1m_tokens_kwh=inp.finish(money["kwh_1m"]["device"]),
        node_energy_per_1m_tokens_kwh=inp.finish(money["kwh_1m"]["node"]),
        facility_energy_per_1m_tokens_kwh=inp.finish(money["kwh_1m"]["facility"]),
        co2e_per_1m_tokens_kg_by_boundary=None
        if r.grid is None
        else {k: inp.finish(en.co2e_kg(v, r.grid)) for k, v in money["kwh_1m"].items()},
        arrival_rps=None if online is None else inp.finish(online.arrival_rps),
        concurrency=None if r.conc is None else inp.finish(r.conc),
        running_batch=None if online is None else inp.finish(online.running_batch),
        online_ttft_ms=None if online is None else inp.finish(online.ttft_s * MS_PER_S),
        is_saturated=None if online is None else inp.finish(online.is_saturated),
        assumptions=assumptions,
        warnings=tuple(warnings),
    )


#: engines whose TPOT under load has published cases (validation/data/cases_online.csv; GPUs)
_ONLINE_VALIDATED_ENGINES = ("vllm", "sglang", "trt-llm")
#: engines with published cases per device kind in src/flopwise/validation/data (others carry a warning)
_VALIDATED_ENGINE_KINDS = {
    "gpu": ("generic", "llama.cpp", "ollama", "trt-llm", "vllm", "sglang"),
    "soc": ("generic", "llama.cpp", "ollama"),
}


def _phase_utilization(device: Device, rates: ServingRates, ttft_s, pre_compute_s, pre_mem_s, tpot_s,
                       step_flops, step_bytes) -> dict:
    """Memory-bandwidth and compute utilization of each phase against the device's datasheet peaks: the bytes and
    FLOPs the roofline puts in the phase over (peak x phase time, overheads and TP communication included)."""
    raw_flop = rates.compute_peak_tflop_per_s * TERA
    raw_bw = device.memory_bandwidth_gb_per_s * GIGA
    return {
        "prefill_mem": pre_mem_s * rates.bandwidth_bytes_per_s / raw_bw / ttft_s,
        "prefill_compute": pre_compute_s * rates.peak_flop_per_s / raw_flop / ttft_s,
        "decode_mem": step_bytes / raw_bw / tpot_s,
        "decode_compute": step_flops / raw_flop / tpot_s,
    }


def _power_energy_cost(device: Device, r: _Req, ttft_s, tpot_s, request_s, out_tokens, onprem, util) -> dict:
    """Power per device over a request (load-dependent per phase, estimate.energy.load_activity_frac), energy at
    the three boundaries, CO2e and cost per 1M output tokens, cost per hour."""
    inp = r.inp
    coeffs, coeff_basis = en.load_power_coeffs(device)
    act_prefill = en.load_activity_frac(util["prefill_mem"], util["prefill_compute"], coeffs)
    act_decode = en.load_activity_frac(util["decode_mem"], util["decode_compute"], coeffs)
    p_prefill = en.device_power_w(device.tdp_w, device.idle_w, act_prefill)
    p_decode = en.device_power_w(device.tdp_w, device.idle_w, act_decode)
    power = (p_prefill * ttft_s + p_decode * r.n_out * tpot_s) / request_s
    host = en.host_power_frac(device)
    device_kwh_1m = en.energy_kwh(power, 0.0, r.tp, request_s / S_PER_H, 1.0) / out_tokens * MEGA
    kwh_1m = en.energy_boundaries_kwh(device_kwh_1m, host, r.pue)
    kwh_per_1m = kwh_1m["facility"]
    co2_per_1m = None if r.grid is None else en.co2e_kg(kwh_per_1m, r.grid)
    if r.price is not None:
        usd_per_h = r.price * r.tp
    elif onprem is not None:
        usd_per_h = onprem_usd_per_device_h(onprem, power * (1.0 + host), r.pue) * r.tp
    else:
        usd_per_h = None
    if usd_per_h is not None:
        cost_h = to_money(inp.finish(usd_per_h))
        cost_1m = to_money(inp.finish(usd_per_h * request_s / S_PER_H / out_tokens * MEGA))
    else:
        cost_h = cost_1m = None
    return {
        "power": power,
        "kwh_1m": kwh_1m,
        "coeffs": coeffs,
        "coeff_basis": coeff_basis,
        "util": util,
        "p_prefill": p_prefill,
        "p_decode": p_decode,
        "host": host,
        "kwh_per_1m": kwh_per_1m,
        "co2_per_1m": co2_per_1m,
        "cost_h": cost_h,
        "cost_1m": cost_1m,
    }


def _assumptions(model, device, r: _Req, rates: ServingRates, pc, n_mm, v: dict, money: dict) -> dict:
    """The assumptions dict of a serving estimate (*v*: estimate_serve's intermediate values)."""
    f = r.inp.finish
    eng = r.engine
    return {
        "model": model.id,
        "device": device.id,
        "engine": eng.id,
        "engine_source": eng.provenance.get("source_url", ""),
        "engine_multi_device": eng.multi_device,
        "engine_published_cases": "validated on published cases of this engine and device kind (flopwise validate)"
        if v["covered"]
        else f"warning: no published case covers engine {eng.id!r} on {device.kind} devices; derived values",
        "engine_max_seqs": eng.max_seqs_limit,
        "quant": r.q.name,
        "compute_dtype": rates.dtype,
        "peak_tflop_per_s": rates.peak_tflop_per_s,
        "compute_peak_tflop_per_s": rates.compute_peak_tflop_per_s,
        "is_fp16_accumulate": rates.is_fp16_accumulate,
        "fp16_accumulate": "fp16 matmuls of llama.cpp formats (GGUF, F16) accumulate in fp16 (cuBLAS "
        "CUBLAS_COMPUTE_16F), which GeForce runs at 2x its fp32-accumulate peak; bf16 and other engines' "
        "kernels accumulate in fp32",
        "layer_overhead_s": rates.layer_overhead_s / max(model.n_layers, 1),
        "step_overhead_s": rates.layer_overhead_s,
        "prefill_step_overhead_s": rates.prefill_layer_overhead_s,
        "prefill_step_overhead_basis": "prompts run eagerly (CUDA graphs cover decode only), so each prefill step "
        "pays the eager per-layer launch time timing.DECODE_LAYER_OVERHEAD_S (fitted on llama.cpp cases) where the "
        "engine's own per-layer decode overhead is smaller",
        "is_weight_only": rates.is_weight_only,
        "tensor_parallel": f(r.tp),
        "batch": f(r.b),
        "input_tokens": f(r.n_in),
        "output_tokens": f(r.n_out),
        "params_total": pc.total,
        "params_active": pc.active,
        "matmul_params": n_mm,
        "bandwidth_efficiency_frac": rates.bandwidth_efficiency_frac,
        "compute_efficiency_frac": rates.compute_efficiency_frac,
        **({"cpu_kernel_rates": rates.cpu_kernel_basis} if rates.cpu_kernel_basis else {}),
        "decode_context_tokens": f(v["ctx"]),
        "decode_is_memory_bound": f(v["is_memory_bound"]),
        "decode_step_bytes_per_device": f(v["step_bytes"]),
        "decode_step_flops_per_device": f(v["step_flops"]),
        "prefill_compute_s": f(v["pre_compute_s"]),
        "prefill_memory_s": f(v["pre_mem_s"]),
        "prefill_chunks": f(v["chunks"]),
        "tp_decode_comm_s": f(v["tp_dec_s"]),
        "tp_prefill_comm_s": f(v["tp_pre_s"]),
        "request_batch_s": f(v["request_s"]),
        "decode_tokens_per_s_per_device": f(v["decode_tps"] / r.tp),
        "max_batch_basis": "most sequences of input + output tokens whose KV cache fits the engine's memory "
        f"budget, capped at engine {eng.id!r}'s {eng.max_seqs_limit}",
        "max_batch_in_use_basis": "most sequences the engine admits with paged KV, each holding its blocks in use "
        "(input + output/2 on average under continuous batching); the basis of fits",
        "tokens_basis": "per 1M generated tokens; prefill time and energy are charged to them",
        "batching": "static: the batch's prompts prefill together, then decode in lockstep"
        if v["online"] is None
        else "static for every figure but tpot_ms, running_batch, arrival_rps and online_ttft_ms: those are "
        "continuous batching at the given load (flopwise.estimate.serve.online_decode: Little's law and the step "
        "time at that load)",
        "online_prefill": ("mixed into decode steps (chunked prefill / in-flight batching)" if eng.mixed_prefill
                           else "own steps that stall the running decode"),
        "online_prefill_tokens_per_step": None if v["online"] is None else f(v["online"].prefill_tokens_per_step),
        "online_slots": None if v["online"] is None else f(v["slots"]),
        "online_step_overhead_s": None if v["online"] is None else v["online_extra_s"],
        "online_step_overhead_basis": "online servers pay ONLINE_LAYER_OVERHEAD_S per layer per step where the "
        "engine's own (offline, CUDA-graph) per-layer overhead is smaller: host work per step and unfused kernels; "
        "fitted to the published online cases (flopwise validate, tpot_ms)",
        "power_prefill_w": f(money["p_prefill"]),
        "power_decode_w": f(money["p_decode"]),
        "power_model": "idle + (TDP - idle) x clip(k_mem x memory-bandwidth utilization + k_compute x compute "
        "utilization, 0, 1) per phase (docs/methodology.md, 'Power and energy')",
        "power_coeffs_k_mem_k_compute": list(money["coeffs"]),
        "power_coeffs_basis": money["coeff_basis"],
        "prefill_memory_utilization": f(money["util"]["prefill_mem"]),
        "prefill_compute_utilization": f(money["util"]["prefill_compute"]),
        "decode_memory_utilization": f(money["util"]["decode_mem"]),
        "decode_compute_utilization": f(money["util"]["decode_compute"]),
        "host_power_frac": money["host"],
        "energy_boundary": "energy_per_1m_tokens_kwh and co2e_per_1m_tokens_kg are facility energy: device "
        "(GPU) energy x (1 + host_power_frac) x pue; device_ and node_energy_per_1m_tokens_kwh give the narrower "
        "boundaries (NVML/DCGM measure the device one)",
        "pue": f(r.pue),
        "pue_source": "given"
        if v["pue"] is not None
        else ("onprem profile" if v["onprem"] else "default 1.0 (IT only)"),
        "grid_gco2e_per_kwh": f(r.grid),
        "price_usd_per_device_h": f(r.price) if r.price is not None else None,
        "onprem": v["onprem"].device_id if v["onprem"] is not None else None,
    }
