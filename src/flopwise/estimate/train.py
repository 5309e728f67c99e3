"""estimate_train: memory, FLOPs, time, power, energy, CO2e and cost of training one model on one device type."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from flopwise.catalog.types import Device, OnPremProfile
from flopwise.errors import InputError, UnsupportedError
from flopwise.estimate import energy as en
from flopwise.estimate import flops as fl
from flopwise.estimate import memory as mem
from flopwise.estimate import timing as tm
from flopwise.estimate._inputs import Inputs, check_choice, check_int, jsonable
from flopwise.estimate.cost import onprem_usd_per_device_h, to_money
from flopwise.estimate.quant import NF4_DQ_BITS_PER_WEIGHT, TRAIN_PRECISIONS, resolve_compute_peak
from flopwise.models.params import count_params
from flopwise.models.types import ModelArch
from flopwise.units import BYTES_PER_GB, GIGA, S_PER_H, TERA

__all__ = [
    "DEVICES_PER_NODE",
    "GLOBAL_BATCH_TOKENS",
    "INTER_NODE_GB_PER_S",
    "TrainEstimate",
    "estimate_train",
]

METHODS = ("full", "lora", "qlora")
RECOMPUTE = ("none", "selective", "full")
OPTIMIZERS = ("adamw", "adamw-8bit", "sgd")

#: Devices per server; data-parallel traffic beyond one server crosses the scale-out network.
DEVICES_PER_NODE = 8
#: Scale-out bandwidth per device: one 400 Gb/s InfiniBand NDR / RoCE NIC per GPU = 50 GB/s (DGX H100 design,
#: 8 x ConnectX-7; https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html).
INTER_NODE_GB_PER_S = 50.0
#: Tokens per optimizer step assumed for gradient accumulation (Llama 2 used 4M tokens, arXiv:2307.09288 Sec. 2.2;
#: GPT-3 175B 3.2M, arXiv:2005.14165 Table 2.1): one step covers max(micro_batch * seq_len * dp, this) tokens.
GLOBAL_BATCH_TOKENS = 4.0e6


@dataclass(frozen=True)
class TrainEstimate:
    """The estimate of one training run (or a grid of them: numeric fields are arrays in vector mode).

    ``train_flops`` are model FLOPs (recomputation excluded); ``mfu_frac`` is the achieved model-FLOPs
    utilization of the whole run after recomputation and exposed communication; ``cost_usd`` is None when no price
    was given. ``steady_state_*`` are what a running job sustains per device (what benchmarks publish: model
    TFLOP/s, tokens/s, MFU), and ``goodput_frac`` the share of the whole run spent at that rate (restarts,
    checkpoints, evaluation and downtime take the rest): ``device_hours`` = steady-state time / goodput.
    """

    train_flops: Any
    device_hours: Any
    wall_clock_hours: Any
    memory: mem.MemoryEstimate
    memory_per_device_gb: Any
    fits: Any
    mfu_frac: Any
    power_per_device_w: Any
    energy_kwh: Any
    co2e_kg: Any
    cost_usd: Decimal | Any | None
    steady_state_tokens_per_s_per_device: Any = None
    steady_state_tflop_per_s_per_device: Any = None
    steady_state_mfu_frac: Any = None
    goodput_frac: Any = None
    device_energy_kwh: Any = None
    node_energy_kwh: Any = None
    facility_energy_kwh: Any = None
    co2e_kg_by_boundary: Any = None
    energy_boundary: str = "facility"
    assumptions: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists, Decimal as str)."""
        return jsonable(self)


def _steady_state(model_flops, tokens, recompute_ratio, peak_flop_per_s: float, steady_mfu: float) -> dict:
    """Per-device steady-state rates: model TFLOP/s = steady MFU x peak / recompute time ratio (recomputation
    beyond selective costs time but is not model FLOPs), tokens/s = that / model FLOPs per token."""
    mfu = steady_mfu / recompute_ratio
    flop_per_s = mfu * peak_flop_per_s
    return {"mfu": mfu, "tflop_per_s": flop_per_s / TERA, "tokens_per_s": flop_per_s / (model_flops / tokens)}


def _zero_stage(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().lower() == "fsdp":
        return 3
    return check_int(value, "zero_stage", 0, 3) if not isinstance(value, str) else _bad_zero(value)


def _bad_zero(value: Any) -> int:
    raise InputError("zero_stage", value, "use None, 0, 1, 2, 3 or 'fsdp'")


def _communication(
    model, device, *, pc, method, n_lora, precision, n_dev, dp, mp, tp, pp, mb, seq, tokens, stage,
    expert_parallel, compute_s, peak, model_flops, warnings,
) -> dict:  # fmt: skip
    """Expert/data/tensor-parallel traffic of a training run: what a device holds, the gradient all-reduce per
    step (only the part longer than a step's compute is added), the tensor-parallel all-reduces (inside the
    calibrated MFU; warned about when large) and the resulting wall time and achieved MFU."""
    # expert parallelism: routed experts spread over ep ranks of the data-parallel group (GShard, arXiv:2006.16668)
    routed = mem.routed_expert_params(model)
    if expert_parallel is None:
        ep = np.minimum(dp, model.n_experts) if model.is_moe else 1.0
    else:
        ep = float(check_int(expert_parallel, "expert_parallel", 1, max(model.n_experts, 1)))
        if np.any(np.asarray(dp) % ep != 0):
            raise InputError(
                "expert_parallel",
                expert_parallel,
                "must divide the data-parallel degree device_count / (tensor_parallel * pipeline_parallel)",
            )
    held = pc.total - routed + routed / ep  # parameters a device holds before tensor/pipeline/ZeRO splits
    n_trainable = held if method == "full" else n_lora
    grad_b = 4.0 if precision == "fp32" else 2.0
    intra_bps = device.interconnect_gb_per_s * GIGA
    dp_bps = np.where(
        np.asarray(n_dev) > DEVICES_PER_NODE,
        min(INTER_NODE_GB_PER_S * GIGA, intra_bps or 1.0),
        intra_bps or 1.0,
    )
    latency = tm.collective_latency_s(device)
    step_tokens = np.maximum(mb * seq * dp, GLOBAL_BATCH_TOKENS)
    steps = tokens / step_tokens
    zero3_factor = (
        1.5 if stage == 3 else 1.0
    )  # ZeRO-3 moves 3 Psi instead of 2 Psi (arXiv:1910.02054 Sec. 7.2.2)
    dp_comm_s = tm.allreduce_time_s(n_trainable * grad_b / mp, dp, dp_bps, latency) * zero3_factor
    step_compute_s = compute_s / steps
    exposed_dp_s = np.maximum(dp_comm_s - step_compute_s, 0.0) * steps
    tp_msg = mb * seq * model.d_model * 2.0
    tp_comm_step_s = 4.0 * model.n_layers / pp * tm.allreduce_time_s(tp_msg, tp, intra_bps or 1.0, latency)
    wall_s = compute_s + exposed_dp_s
    if np.any(tp_comm_step_s > 0.2 * step_compute_s):
        warnings.append(
            f"tensor-parallel all-reduces take over 20% of step compute on {device.interconnect}; "
            "the default MFU assumes NVLink-class links, so the time may be optimistic"
        )
    if np.any(exposed_dp_s > 0):
        warnings.append(
            "data-parallel gradient all-reduce is longer than a step's compute and is partly exposed "
            "(added to the time); a larger global batch or faster links would hide it"
        )
    achieved_mfu = model_flops / (wall_s * n_dev * peak)

    return {
        "routed": routed, "ep": ep, "held": held, "n_trainable": n_trainable, "grad_b": grad_b,
        "dp_comm_s": dp_comm_s, "exposed_dp_s": exposed_dp_s, "tp_comm_step_s": tp_comm_step_s,
        "wall_s": wall_s, "step_tokens": step_tokens, "achieved_mfu": achieved_mfu,
    }  # fmt: skip


def _train_memory(
    model, device, inp, *, stage, dp, precision, method, held, n_lora, n_trainable, grad_b, mp, optimizer, seq,
    mb, tp, pp, recompute, warnings,
) -> mem.MemoryEstimate:  # fmt: skip
    """Memory per device of a training run: weights, gradients and optimizer states after the ZeRO and
    tensor/pipeline splits, activations (Korthikanti et al. 2022) and the runtime overhead."""
    w_div, g_div, o_div = mem.zero_divisors(stage, dp)
    wbytes = TRAIN_PRECISIONS[precision]
    if method == "full":
        weights = mem.weight_bytes(held, wbytes * 8) / mp / w_div
    else:
        base_bits = NF4_DQ_BITS_PER_WEIGHT if method == "qlora" else (32.0 if precision == "fp32" else 16.0)
        weights = (mem.weight_bytes(held, base_bits) + mem.weight_bytes(n_lora, wbytes * 8)) / mp / w_div
    grads = mem.gradient_bytes(n_trainable, grad_b, g_div) / mp
    opt = mem.optimizer_bytes(n_trainable, optimizer, precision, o_div) / mp
    acts = mem.training_activation_bytes(model, seq, mb, tp, pp, recompute)
    overhead = mem.training_overhead_bytes(device.kind, weights + grads + opt + acts)
    capacity = device.memory_gb * BYTES_PER_GB
    memory = mem.MemoryEstimate.from_parts(
        weights_bytes=inp.finish(weights),
        kv_cache_bytes=inp.finish(0.0),
        activations_bytes=inp.finish(acts),
        gradients_bytes=inp.finish(grads),
        optimizer_bytes=inp.finish(opt),
        overhead_bytes=inp.finish(overhead),
        capacity_bytes=inp.finish(capacity),
        assumptions={
            "activations": f"Korthikanti et al. 2022 Table 2, recompute={recompute}, sequence parallel "
            "with tensor parallel, 1F1B pipeline (first stage holds L layers)",
            "weights_bits": 8 * wbytes if method == "full" else None,
            "optimizer_bytes_per_param": mem.optimizer_bytes_per_param(optimizer, precision),
            "zero_stage": stage,
            "data_parallel": inp.finish(dp),
            "overhead": "1 GiB runtime context + 5% allocator fragmentation",
        },
    )
    if np.any(~np.asarray(memory.fits)):
        need = float(np.max(memory.total_bytes)) / BYTES_PER_GB
        warnings.append(
            f"does not fit: up to {need:.1f} GB per device needed, {device.memory_gb:g} GB available; "
            "try zero_stage=3, more tensor_parallel/pipeline_parallel, recompute='full', "
            "method='lora'/'qlora' or more devices"
        )

    return memory


def _train_energy_cost(device, inp, *, wall_s, n_dev, pue_v, grid, price, onprem) -> dict:
    """Wall-clock and device-hours, power, energy (PUE included), CO2e and cost of a training run."""
    wall_h = wall_s / S_PER_H
    device_h = wall_h * n_dev
    power = en.device_power_w(device.tdp_w, device.idle_w, en.TRAIN_ACTIVITY_FRAC)
    host = en.host_power_frac(device)
    kwh = en.energy_kwh(power, host, n_dev, wall_h, pue_v)
    bounds = en.energy_boundaries_kwh(en.energy_kwh(power, 0.0, n_dev, wall_h, 1.0), host, pue_v)
    co2 = None if grid is None else en.co2e_kg(kwh, grid)
    if price is not None:
        cost = to_money(inp.finish(price * device_h))
    elif onprem is not None:
        cost = to_money(inp.finish(onprem_usd_per_device_h(onprem, power * (1.0 + host), pue_v) * device_h))
    else:
        cost = None

    return {
        "wall_h": wall_h, "device_h": device_h, "power": power, "host": host, "kwh": kwh, "co2": co2,
        "cost": cost, "bounds": bounds,
    }  # fmt: skip


def _numeric_inputs(
    tokens, device_count, seq_len, micro_batch, mfu_frac, goodput_frac, price_usd_per_device_h,
    grid_gco2e_per_kwh, pue, onprem,
) -> tuple:  # fmt: skip
    """Validated numbers of estimate_train (floats, or arrays that broadcast together) and their Inputs."""
    inp = Inputs()
    tokens = inp.num(tokens, "tokens", max_value=1e30)
    n_dev = inp.num(device_count, "device_count", max_value=1e7, integer=True)
    seq = inp.num(seq_len, "seq_len", max_value=1e8, integer=True)
    mb = inp.num(micro_batch, "micro_batch", max_value=1e6, integer=True)
    mfu_in = None if mfu_frac is None else inp.num(mfu_frac, "mfu_frac", max_value=1.0)
    goodput_in = None if goodput_frac is None else inp.num(goodput_frac, "goodput_frac", max_value=1.0)
    if mfu_in is not None and goodput_in is not None:
        raise InputError("goodput_frac", goodput_frac, "give mfu_frac (whole-run MFU) or goodput_frac, not both")
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
    return inp, tokens, n_dev, seq, mb, mfu_in, goodput_in, price, grid, pue_v


def _train_assumptions(model, device, inp, v: dict) -> dict:
    """The assumptions dict of a training estimate (*v*: estimate_train's intermediate values by name)."""
    (
        precision, dtype, peak_tflop, method, recompute, optimizer, stage, tp, pp, rank, n_lora, pc, ep, routed,
        n_mm, tokens, seq, mb, n_dev, mfu_base, mfu_note, recompute_ratio, model_flops, extra, dp_comm_s,
        tp_comm_step_s, exposed_dp_s, step_tokens, host, pue_v, pue, onprem, grid, price,
    ) = (
        v[k] for k in (
            "precision", "dtype", "peak_tflop", "method", "recompute", "optimizer", "stage", "tp", "pp", "rank",
            "n_lora", "pc", "ep", "routed", "n_mm", "tokens", "seq", "mb", "n_dev", "mfu_base", "mfu_note",
            "recompute_ratio", "model_flops", "extra", "dp_comm_s", "tp_comm_step_s", "exposed_dp_s",
            "step_tokens", "host", "pue_v", "pue", "onprem", "grid", "price",
        )
    )  # fmt: skip
    return (
        {
            "model": model.id,
            "device": device.id,
            "precision": precision,
            "compute_dtype": dtype,
            "peak_tflop_per_s": peak_tflop,
            "method": method,
            "recompute": recompute,
            "optimizer": optimizer,
            "zero_stage": stage,
            "tensor_parallel": tp,
            "pipeline_parallel": pp,
            "lora_rank": rank if n_lora else None,
            "lora_params": n_lora,
            "params_total": pc.total,
            "expert_parallel": inp.finish(ep) if model.is_moe else None,
            "routed_expert_params": routed,
            "params_active": pc.active,
            "matmul_params": n_mm,
            "tokens": inp.finish(tokens),
            "seq_len": inp.finish(seq),
            "micro_batch": inp.finish(mb),
            "device_count": inp.finish(n_dev),
            "mfu_frac_base": inp.finish(mfu_base),
            "mfu_source": mfu_note,
            "recompute_time_ratio": inp.finish(recompute_ratio),
            "hardware_flops": inp.finish(model_flops + extra),
            "dp_comm_per_step_s": inp.finish(dp_comm_s),
            "tp_comm_per_step_s": inp.finish(tp_comm_step_s),
            "exposed_dp_comm_s": inp.finish(exposed_dp_s),
            "comm_model": "gradient all-reduce overlapped with the backward pass (only the excess is added); "
            "tensor-parallel all-reduces are inside the calibrated MFU; gradient accumulation up to "
            f"{GLOBAL_BATCH_TOKENS:g} tokens per step",
            "tokens_per_step": inp.finish(step_tokens),
            "power_activity_frac": en.TRAIN_ACTIVITY_FRAC,
            "host_power_frac": host,
            "energy_boundary": "energy_kwh and co2e_kg are facility energy: device (GPU) energy x (1 + "
            "host_power_frac) x pue; device_energy_kwh and node_energy_kwh give the narrower boundaries",
            "pue": inp.finish(pue_v),
            "pue_source": "given"
            if pue is not None
            else ("onprem profile" if onprem else "default 1.0 (IT only)"),
            "grid_gco2e_per_kwh": inp.finish(grid),
            "price_usd_per_device_h": inp.finish(price) if price is not None else None,
            "onprem": onprem.device_id if onprem is not None else None,
        }
    )


def estimate_train(
    model: ModelArch,
    device: Device,
    *,
    tokens,
    device_count=1,
    precision: str = "bf16",
    method: str = "full",
    mfu_frac=None,
    seq_len=4096,
    micro_batch=1,
    zero_stage=None,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    recompute: str = "selective",
    optimizer: str = "adamw",
    lora_rank: int = 16,
    expert_parallel: int | None = None,
    price_usd_per_device_h=None,
    onprem: OnPremProfile | None = None,
    grid_gco2e_per_kwh=None,
    pue=None,
    goodput_frac=None,
) -> TrainEstimate:
    """Estimate a training run of *model* on *device_count* x *device* over *tokens* tokens.

    *goodput_frac* (0-1], when given, sets the whole run to steady-state time / goodput (e.g. 0.9: Llama 3 405B,
    ``timing.GOODPUT_LLAMA3_FRAC``); by default the whole run uses the MFU calibrated to published whole-run
    device-hours (``timing.DEFAULT_MFU``) and the implied goodput is reported.

    Numeric keywords (tokens, device_count, mfu_frac, seq_len, micro_batch, price_usd_per_device_h,
    grid_gco2e_per_kwh, pue) accept numpy arrays and broadcast. See docs/methodology.md, "Training".
    """
    # --- validate -----------------------------------------------------------------------------------------
    precision = check_choice(precision, "precision", tuple(TRAIN_PRECISIONS))
    method = check_choice(method, "method", METHODS)
    recompute = check_choice(recompute, "recompute", RECOMPUTE)
    optimizer = check_choice(optimizer, "optimizer", OPTIMIZERS)
    stage = _zero_stage(zero_stage)
    tp = check_int(tensor_parallel, "tensor_parallel", 1, 1024)
    pp = check_int(pipeline_parallel, "pipeline_parallel", 1, 1024)
    rank = check_int(lora_rank, "lora_rank", 1, 65536)
    if price_usd_per_device_h is not None and onprem is not None:
        raise InputError("onprem", onprem.device_id, "give either price_usd_per_device_h or onprem, not both")
    inp, tokens, n_dev, seq, mb, mfu_in, goodput_in, price, grid, pue_v = _numeric_inputs(
        tokens, device_count, seq_len, micro_batch, mfu_frac, goodput_frac, price_usd_per_device_h,
        grid_gco2e_per_kwh, pue, onprem,
    )  # fmt: skip
    mp = tp * pp
    dp = n_dev / mp
    if np.any(np.asarray(dp) != np.floor(dp)) or np.any(np.asarray(dp) < 1):
        raise InputError(
            "device_count", device_count, f"must be a multiple of tensor_parallel * pipeline_parallel = {mp}"
        )
    if np.any(np.asarray(n_dev) > 1) and device.interconnect_gb_per_s <= 0:
        raise UnsupportedError(
            f"device {device.id!r} has no interconnect in the catalog; multi-device training "
            "cannot be estimated for it (use device_count=1)"
        )
    if np.any(np.asarray(seq) > model.max_context):
        warn_ctx = f"seq_len exceeds {model.id}'s max_context {model.max_context}"
    else:
        warn_ctx = ""

    warnings: list[str] = [f"{model.id}: {feat} is not modelled" for feat in model.unmodelled]
    if warn_ctx:
        warnings.append(warn_ctx)
    assumptions: dict[str, Any] = {}

    # --- compute rate -------------------------------------------------------------------------------------
    dtype, peak_tflop = resolve_compute_peak(device, precision)
    if dtype != precision:
        warnings.append(f"{device.id} has no {precision} rate; costed at {dtype}")
    peak = peak_tflop * TERA

    # --- parameters and FLOPs -----------------------------------------------------------------------------
    pc = count_params(model)
    n_mm = fl.matmul_params(pc.non_embedding_active, model)
    n_lora = mem.lora_param_count(model, rank) if method != "full" else 0
    if method == "full":
        model_flops = fl.train_flops(n_mm, model, tokens, seq)
    else:
        model_flops = fl.lora_train_flops_per_token(n_mm, n_lora, model, seq) * tokens
    extra = fl.recompute_flops_per_token(n_mm, model, seq, recompute) * tokens
    extra_ref = fl.recompute_flops_per_token(n_mm, model, seq, "selective") * tokens
    recompute_ratio = (model_flops + extra) / (model_flops + extra_ref)

    steady_mfu, steady_note = tm.steady_state_mfu_frac(device, dtype)
    if goodput_in is not None:
        mfu_base = steady_mfu * goodput_in
        mfu_note = f"steady-state MFU x goodput_frac given by the caller ({steady_note})"
    elif mfu_in is None:
        mfu_base, mfu_note = tm.default_mfu_frac(device, pc.total, dtype)
    else:
        mfu_base, mfu_note = mfu_in, "given by the caller"
    compute_s = tm.train_time_s(model_flops * recompute_ratio, n_dev, peak, mfu_base)

    # --- communication, memory, power/energy/cost ---------------------------------------------------------
    cm = _communication(
        model, device, pc=pc, method=method, n_lora=n_lora, precision=precision, n_dev=n_dev, dp=dp, mp=mp,
        tp=tp, pp=pp, mb=mb, seq=seq, tokens=tokens, stage=stage, expert_parallel=expert_parallel,
        compute_s=compute_s, peak=peak, model_flops=model_flops, warnings=warnings,
    )  # fmt: skip
    routed, ep, held, n_trainable = cm["routed"], cm["ep"], cm["held"], cm["n_trainable"]
    dp_comm_s, exposed_dp_s, tp_comm_step_s = cm["dp_comm_s"], cm["exposed_dp_s"], cm["tp_comm_step_s"]
    wall_s, step_tokens, achieved_mfu = cm["wall_s"], cm["step_tokens"], cm["achieved_mfu"]
    memory = _train_memory(
        model, device, inp, stage=stage, dp=dp, precision=precision, method=method, held=held, n_lora=n_lora,
        n_trainable=n_trainable, grad_b=cm["grad_b"], mp=mp, optimizer=optimizer, seq=seq, mb=mb, tp=tp, pp=pp,
        recompute=recompute, warnings=warnings,
    )  # fmt: skip
    ec = _train_energy_cost(
        device, inp, wall_s=wall_s, n_dev=n_dev, pue_v=pue_v, grid=grid, price=price, onprem=onprem
    )
    wall_h, device_h, power, host, kwh, co2, cost = (
        ec["wall_h"], ec["device_h"], ec["power"], ec["host"], ec["kwh"], ec["co2"], ec["cost"]
    )

    assumptions.update(_train_assumptions(model, device, inp, locals()))
    if method == "qlora":
        warnings.append(
            "QLoRA dequantizes NF4 weights for every matmul; the time does not include that overhead"
        )
    if model.is_moe:
        warnings.append(
            "MoE: activation memory uses the dense formula; expert-parallel all-to-all traffic is not modelled"
        )

    steady = _steady_state(model_flops, tokens, recompute_ratio, peak, steady_mfu)
    assumptions.update(
        {
            "steady_state_mfu_source": steady_note,
            "goodput_source": "given by the caller"
            if goodput_in is not None
            else "implied: whole-run MFU (calibrated to published device-hours, or given) over the steady-state MFU",
            "goodput_reference": f"Llama 3 405B: >{tm.GOODPUT_LLAMA3_FRAC:.0%} effective training time "
            "(arXiv:2407.21783 Sec. 3.3.4); pass goodput_frac to use such a value",
        }
    )
    return TrainEstimate(
        steady_state_tokens_per_s_per_device=inp.finish(steady["tokens_per_s"]),
        steady_state_tflop_per_s_per_device=inp.finish(steady["tflop_per_s"]),
        steady_state_mfu_frac=inp.finish(steady["mfu"]),
        goodput_frac=inp.finish(np.minimum(achieved_mfu / steady["mfu"], 1.0)),
        train_flops=inp.finish(model_flops),
        device_hours=inp.finish(device_h),
        wall_clock_hours=inp.finish(wall_h),
        memory=memory,
        memory_per_device_gb=inp.finish(memory.total_bytes / BYTES_PER_GB),
        fits=memory.fits,
        mfu_frac=inp.finish(achieved_mfu),
        power_per_device_w=inp.finish(power),
        energy_kwh=inp.finish(kwh),
        co2e_kg=inp.finish(co2),
        cost_usd=cost,
        device_energy_kwh=inp.finish(ec["bounds"]["device"]),
        node_energy_kwh=inp.finish(ec["bounds"]["node"]),
        facility_energy_kwh=inp.finish(ec["bounds"]["facility"]),
        co2e_kg_by_boundary=None
        if grid is None
        else {k: inp.finish(en.co2e_kg(v, grid)) for k, v in ec["bounds"].items()},
        assumptions=assumptions,
        warnings=tuple(warnings),
    )
