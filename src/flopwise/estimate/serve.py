"""estimate_serve: memory, latency, throughput, power, energy, CO2e and cost of serving one model replica."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
from flopwise.units import BYTES_PER_GB, GIGA, MEGA, MS_PER_S, S_PER_H, TERA

__all__ = ["ServeEstimate", "ServingRates", "estimate_serve", "serving_rates"]

#: llama.cpp's integer-quantized weight types (Q2_K ... Q8_0, IQ*), by the names flopwise gives them
_LLAMA_CPP_INT_QUANT = re.compile(r"^i?q\d")


@dataclass(frozen=True)
class ServeEstimate:
    """The estimate of serving one replica (``device_count`` devices in tensor parallel) with static batches of
    ``batch`` requests of ``input_tokens`` prompt and ``output_tokens`` generated tokens each.

    ``decode_tokens_per_s`` counts all sequences of the batch together; ``*_per_1m_tokens`` are per million
    generated (output) tokens, with the prefill's time, energy and cost included. Numeric fields are arrays
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
    assumptions: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists, Decimal as str)."""
        return jsonable(self)


@dataclass(frozen=True)
class ServingRates:
    """What one device sustains when serving a quantization: the dtype its matmuls run in, the dense and the
    used peak (fp16 accumulation on GeForce for llama.cpp formats), the effective compute and memory rates after
    the calibrated efficiencies, and the fixed per-step overhead. Shared by ``estimate_serve`` and the planner."""

    dtype: str
    peak_tflop_per_s: float
    compute_peak_tflop_per_s: float
    is_weight_only: bool
    is_fp16_accumulate: bool
    peak_flop_per_s: float
    bandwidth_bytes_per_s: float
    layer_overhead_s: float
    warnings: tuple[str, ...]


def serving_rates(q: QuantFormat, device: Device, n_layers: int) -> ServingRates:
    """The rates of :class:`ServingRates` for quantization *q* on *device* (see docs/methodology.md, "Serving")."""
    dtype, peak_tflop, warnings = resolve_serving_quant(q, device)
    weight_only = q.is_weight_only or bool(warnings and "weight-only" in warnings[0])
    if device.kind == "cpu" and _LLAMA_CPP_INT_QUANT.match(q.name) and device.peak_int8_tflop_per_s:
        # llama.cpp's CPU kernels quantize activations to Q8 and run integer dot products (vec_dot_type of the
        # Q4/Q5/Q6/Q8/IQ types is Q8_0/Q8_K in ggml-cpu), i.e. at the int8 rate: VNNI, SDOT/I8MM or AMX
        dtype, peak_tflop = "int8", device.peak_int8_tflop_per_s
    kind = device.kind
    fp16_acc = dtype == "fp16" and q.name in tm.FP16_ACCUMULATE_QUANTS
    used_tflop = tm.fp16_accumulate_peak_tflop_per_s(device, peak_tflop) if fp16_acc else peak_tflop
    peak = (
        used_tflop
        * TERA
        * tm.COMPUTE_EFFICIENCY_FRAC.get(kind, 0.5)
        * (tm.WEIGHT_ONLY_COMPUTE_FRAC if weight_only else 1.0)
    )
    bw = (
        device.memory_bandwidth_gb_per_s
        * GIGA
        * tm.BANDWIDTH_EFFICIENCY_FRAC.get(kind, 0.6)
        * (tm.WEIGHT_ONLY_BANDWIDTH_FRAC if weight_only else 1.0)
    )
    return ServingRates(
        dtype,
        peak_tflop,
        used_tflop,
        weight_only,
        fp16_acc,
        peak,
        bw,
        float(tm.decode_overhead_s(n_layers, kind)),
        tuple(warnings),
    )


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
    price_usd_per_device_h=None,
    onprem: OnPremProfile | None = None,
    grid_gco2e_per_kwh=None,
    pue=None,
) -> ServeEstimate:
    """Estimate serving *model* on *device_count* x *device* (tensor parallel).

    Numeric keywords (device_count, batch, input_tokens, output_tokens, price_usd_per_device_h,
    grid_gco2e_per_kwh, pue) accept numpy arrays and broadcast. See docs/methodology.md, "Serving".
    """
    q = get_quant(quant)
    kv_name = ("fp32" if q.name == "fp32" else "bf16") if kv_dtype is None else str(kv_dtype).lower()
    kv_b = kv_bytes_per_element(kv_name)
    if price_usd_per_device_h is not None and onprem is not None:
        raise InputError("onprem", onprem.device_id, "give either price_usd_per_device_h or onprem, not both")
    inp = Inputs()
    tp = inp.num(device_count, "device_count", max_value=1e5, integer=True)
    b = inp.num(batch, "batch", max_value=1e6, integer=True)
    n_in = inp.num(input_tokens, "input_tokens", max_value=1e8, integer=True)
    n_out = inp.num(output_tokens, "output_tokens", max_value=1e8, integer=True)
    price = (
        None
        if price_usd_per_device_h is None
        else inp.num(price_usd_per_device_h, "price_usd_per_device_h", max_value=1e6, allow_min=True)
    )
    grid = (
        None
        if grid_gco2e_per_kwh is None
        else inp.num(grid_gco2e_per_kwh, "grid_gco2e_per_kwh", max_value=5000.0, allow_min=True)
    )
    pue_given = pue if pue is not None else (onprem.pue if onprem is not None else None)
    pue_v = (
        en.DEFAULT_PUE
        if pue_given is None
        else inp.num(pue_given, "pue", min_value=1.0, allow_min=True, max_value=5.0)
    )
    inp.shape()
    if np.any(np.asarray(tp) > 1) and device.interconnect_gb_per_s <= 0:
        raise UnsupportedError(
            f"device {device.id!r} has no interconnect in the catalog; tensor-parallel serving "
            "over several of them cannot be estimated (use device_count=1)"
        )

    warnings: list[str] = [f"{model.id}: {feat} is not modelled" for feat in model.unmodelled]
    rates = serving_rates(q, device, model.n_layers)
    dtype, peak_tflop, weight_only = rates.dtype, rates.peak_tflop_per_s, rates.is_weight_only
    warnings.extend(rates.warnings)
    if np.any(np.asarray(n_in + n_out) > model.max_context):
        warnings.append(f"input_tokens + output_tokens exceed {model.id}'s max_context {model.max_context}")

    pc = count_params(model)
    n_mm = fl.matmul_params(pc.non_embedding_active, model)
    kind = device.kind
    fp16_acc, peak_used_tflop = rates.is_fp16_accumulate, rates.compute_peak_tflop_per_s
    layer_overhead_s = rates.layer_overhead_s
    peak, bw = rates.peak_flop_per_s, rates.bandwidth_bytes_per_s
    link = device.interconnect_gb_per_s * GIGA or 1.0
    latency = tm.collective_latency_s(device)
    kv_shard = 1.0 if model.attention == "mla" else np.minimum(tp, model.n_kv_heads)

    # --- memory per device --------------------------------------------------------------------------------
    weights = mem.weight_bytes(pc.total, q.bits_per_weight) / tp
    kv = mem.kv_cache_bytes(model, n_in + n_out, b, kv_b) / kv_shard
    acts = mem.serving_activation_bytes(model, b, n_in)
    capacity = device.memory_gb * BYTES_PER_GB
    overhead = mem.serving_overhead_bytes(kind, capacity)
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
            "kv_dtype": kv_name,
            "kv_bytes_per_element": kv_b,
            "kv_bytes_per_token": mem.kv_cache_bytes_per_token(model, kv_b),
            "kv_tokens_per_sequence": "input_tokens + output_tokens",
            "engine_memory_utilization_frac": mem.ENGINE_MEMORY_UTILIZATION_FRAC.get(kind, 0.9),
            "prefill_chunk_tokens": mem.PREFILL_CHUNK_TOKENS,
        },
    )
    if np.any(~np.asarray(memory.fits)):
        need = float(np.max(memory.total_bytes)) / BYTES_PER_GB
        warnings.append(
            f"does not fit: up to {need:.1f} GB per device needed, {device.memory_gb:g} GB available; "
            "try a smaller quant, a smaller batch or context, kv_dtype='fp8', or more devices"
        )

    # --- weight bytes read per step (MoE reads only the experts the step's tokens route to) ------------------
    inactive = float(pc.total - pc.active)
    input_table = 0.0 if model.tied_embeddings else float(model.vocab_size * model.d_model)
    bytes_per_param = q.bits_per_weight / 8.0

    def weight_read_bytes(step_tokens):
        touched = (
            tm.moe_touched_frac(model.n_experts, model.n_experts_active, step_tokens) if model.is_moe else 0.0
        )
        return (pc.active - input_table + inactive * touched) * bytes_per_param / tp

    # --- prefill (TTFT) -----------------------------------------------------------------------------------
    prefill_tok = b * n_in
    chunks = np.ceil(prefill_tok / mem.PREFILL_CHUNK_TOKENS)
    prefill_compute_s = fl.prefill_flops(n_mm, model, n_in, b) / tp / peak
    prefill_mem_s = weight_read_bytes(np.minimum(prefill_tok, mem.PREFILL_CHUNK_TOKENS)) * chunks / bw
    tp_prefill_s = (
        2.0
        * model.n_layers
        * (
            tm.allreduce_time_s(prefill_tok * model.d_model * 2.0, tp, link, 0.0)
            + chunks * latency * (tp > 1)
        )
    )
    ttft_s = np.maximum(prefill_compute_s, prefill_mem_s) + chunks * layer_overhead_s + tp_prefill_s

    # --- decode (TPOT at the mean context) ----------------------------------------------------------------
    ctx = n_in + n_out / 2.0
    step_flops = b * fl.decode_flops_per_token(n_mm, model, ctx) / tp
    step_bytes = weight_read_bytes(b) + mem.kv_cache_bytes(model, ctx, b, kv_b) / kv_shard
    tp_decode_s = 2.0 * model.n_layers * tm.allreduce_time_s(b * model.d_model * 2.0, tp, link, latency)
    tpot_s = tm.roofline_time_s(step_flops, step_bytes, peak, bw) + layer_overhead_s + tp_decode_s
    is_memory_bound = step_bytes / bw >= step_flops / peak

    decode_tps = b / tpot_s
    prefill_tps = prefill_tok / ttft_s
    request_s = ttft_s + n_out * tpot_s
    out_tokens = b * n_out

    # --- power, energy, CO2e, cost ------------------------------------------------------------------------
    p_prefill = en.device_power_w(device.tdp_w, device.idle_w, en.PREFILL_ACTIVITY_FRAC)
    p_decode = en.device_power_w(device.tdp_w, device.idle_w, en.DECODE_ACTIVITY_FRAC)
    power = (p_prefill * ttft_s + p_decode * n_out * tpot_s) / request_s
    host = en.host_power_frac(device)
    kwh_per_batch = en.energy_kwh(power, host, tp, request_s / S_PER_H, pue_v)
    kwh_per_1m = kwh_per_batch / out_tokens * MEGA
    co2_per_1m = None if grid is None else en.co2e_kg(kwh_per_1m, grid)
    if price is not None:
        usd_per_h = price * tp
    elif onprem is not None:
        usd_per_h = onprem_usd_per_device_h(onprem, power * (1.0 + host), pue_v) * tp
    else:
        usd_per_h = None
    if usd_per_h is not None:
        cost_h = to_money(inp.finish(usd_per_h))
        cost_1m = to_money(inp.finish(usd_per_h * request_s / S_PER_H / out_tokens * MEGA))
    else:
        cost_h = cost_1m = None

    assumptions = {
        "model": model.id,
        "device": device.id,
        "quant": q.name,
        "compute_dtype": dtype,
        "peak_tflop_per_s": peak_tflop,
        "compute_peak_tflop_per_s": peak_used_tflop,
        "is_fp16_accumulate": fp16_acc,
        "fp16_accumulate": "fp16 matmuls of llama.cpp formats (GGUF, F16) accumulate in fp16 (cuBLAS "
        "CUBLAS_COMPUTE_16F), which GeForce runs at 2x its fp32-accumulate peak; bf16 and other engines' "
        "kernels accumulate in fp32",
        "layer_overhead_s": tm.DECODE_LAYER_OVERHEAD_S.get(kind, 0.0),
        "step_overhead_s": layer_overhead_s,
        "is_weight_only": weight_only,
        "tensor_parallel": inp.finish(tp),
        "batch": inp.finish(b),
        "input_tokens": inp.finish(n_in),
        "output_tokens": inp.finish(n_out),
        "params_total": pc.total,
        "params_active": pc.active,
        "matmul_params": n_mm,
        "bandwidth_efficiency_frac": tm.BANDWIDTH_EFFICIENCY_FRAC.get(kind, 0.6)
        * (tm.WEIGHT_ONLY_BANDWIDTH_FRAC if weight_only else 1.0),
        "compute_efficiency_frac": tm.COMPUTE_EFFICIENCY_FRAC.get(kind, 0.5)
        * (tm.WEIGHT_ONLY_COMPUTE_FRAC if weight_only else 1.0),
        "decode_context_tokens": inp.finish(ctx),
        "decode_is_memory_bound": inp.finish(is_memory_bound),
        "decode_step_bytes_per_device": inp.finish(step_bytes),
        "decode_step_flops_per_device": inp.finish(step_flops),
        "prefill_compute_s": inp.finish(prefill_compute_s),
        "prefill_memory_s": inp.finish(prefill_mem_s),
        "prefill_chunks": inp.finish(chunks),
        "tp_decode_comm_s": inp.finish(tp_decode_s),
        "tp_prefill_comm_s": inp.finish(tp_prefill_s),
        "request_batch_s": inp.finish(request_s),
        "decode_tokens_per_s_per_device": inp.finish(decode_tps / tp),
        "tokens_basis": "per 1M generated tokens; prefill time and energy are charged to them",
        "batching": "static: the batch's prompts prefill together, then decode in lockstep",
        "power_prefill_w": p_prefill,
        "power_decode_w": p_decode,
        "host_power_frac": host,
        "pue": inp.finish(pue_v),
        "pue_source": "given"
        if pue is not None
        else ("onprem profile" if onprem else "default 1.0 (IT only)"),
        "grid_gco2e_per_kwh": inp.finish(grid),
        "price_usd_per_device_h": inp.finish(price) if price is not None else None,
        "onprem": onprem.device_id if onprem is not None else None,
    }
    return ServeEstimate(
        memory=memory,
        memory_gb=inp.finish(memory.total_bytes / BYTES_PER_GB),
        fits=memory.fits,
        ttft_ms=inp.finish(ttft_s * MS_PER_S),
        tpot_ms=inp.finish(tpot_s * MS_PER_S),
        decode_tokens_per_s=inp.finish(decode_tps),
        prefill_tokens_per_s=inp.finish(prefill_tps),
        power_per_device_w=inp.finish(power),
        energy_per_1m_tokens_kwh=inp.finish(kwh_per_1m),
        co2e_per_1m_tokens_kg=inp.finish(co2_per_1m),
        cost_per_1m_tokens_usd=cost_1m,
        cost_per_hour_usd=cost_h,
        assumptions=assumptions,
        warnings=tuple(warnings),
    )
