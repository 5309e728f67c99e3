"""Power, energy and CO2e terms.

Model: device power ``P = P_idle + (P_TDP - P_idle) * activity``. In serving the activity follows what the device
does in each phase (:func:`load_activity_frac`: watts per TB/s moved and per TFLOP/s run, fitted on published
NVML measurements); training keeps a fixed share. Energy is reported at three boundaries
(:func:`energy_boundaries_kwh`): device (GPU) only, node (device + host share) and facility (node x PUE);
CO2e = kWh * grid intensity at each boundary.
Every function accepts plain floats or numpy arrays (broadcasting).
"""

from __future__ import annotations

from flopwise.catalog.types import Device
from flopwise.units import G_PER_KG, KILO

__all__ = [
    "ANCHORED_GENERATIONS",
    "BOUNDARIES",
    "DECODE_ACTIVITY_FRAC",
    "DYNAMIC_POWER_W_PER_RATE",
    "DEFAULT_PUE",
    "HOST_POWER_FRAC",
    "PREFILL_ACTIVITY_FRAC",
    "TRAIN_ACTIVITY_FRAC",
    "co2e_kg",
    "dense_peak_tflop_per_s",
    "device_power_w",
    "energy_boundaries_kwh",
    "energy_kwh",
    "host_power_frac",
    "load_activity_frac",
    "load_power_coeffs",
]

#: Training keeps the accelerators near their power limit; 0.85 of the idle-to-TDP range. Derived: Patel et al.
#: 2024, "Characterizing Power Management Opportunities for LLMs in the Cloud" (ASPLOS '24,
#: doi:10.1145/3620666.3651329) measure training power close to TDP with dips at synchronization; published
#: energy reports (BLOOM, Luccioni et al. 2022 arXiv:2211.02001: 433 MWh; Llama 3 arXiv:2407.21783) assume TDP.
TRAIN_ACTIVITY_FRAC = 0.85
#: Prefill is compute-bound and draws near TDP; decode is memory-bound and draws well below (Patel et al. 2024;
#: Splitwise, Patel et al. 2023, arXiv:2311.18677, Sec. 3: token phase uses less power than prompt phase;
#: ML.ENERGY leaderboard https://ml.energy/leaderboard). Derived shares of the idle-to-TDP range.
PREFILL_ACTIVITY_FRAC = 0.9
DECODE_ACTIVITY_FRAC = 0.6

#: Load-dependent power of a serving phase, as dynamic watts per unit of work rate the device sustains:
#: ``P = P_idle + w_mem x (bytes moved per second, TB/s) + w_compute x (dense-peak-equivalent TFLOP/s)``, clipped
#: at TDP. ``bytes/s`` = the phase's memory-bandwidth utilization x the datasheet bandwidth; the compute rate =
#: its compute utilization (against the peak of the precision it runs) x the device's dense 16-bit peak, so a
#: matmul at the full FP8 peak counts as the full 16-bit peak (an FP8 FLOP costs about half the energy). Both
#: utilizations come from the serving roofline, so the fixed per-step overhead and the tensor-parallel all-reduce
#: (time in which the device waits) lower them, and a tensor-parallel split lowers per-device power as measured
#: (ML.ENERGY v3: Llama 4 Maverick on 8 H100 at batch 8 draws 231 W per GPU, Llama 3.1 8B on one H100 486 W).
#: Why per unit of rate and not per share of the idle-to-TDP range: DRAM traffic and Tensor Core activity are the
#: two largest dynamic power terms (Hong & Kim 2010, "An integrated GPU power and performance model", ISCA;
#: Leng et al. 2013, GPUWattch, ISCA) and each costs a roughly fixed energy per byte and per operation, so the
#: memory term is close across generations and sources (fitted alone: ML.ENERGY H100 135, ML.ENERGY A100 140,
#: LLM-Inference-Bench H100 141 W per TB/s; the two B200 cases 112).
#: Fitted (``flopwise.validation.energy.fit_power_rates``: non-negative least squares on relative error) on the
#: published NVML averages of src/flopwise/validation/data/cases_energy.csv: ML.ENERGY Leaderboard v3.0 (vLLM
#: 0.11.1 on H100: Llama 3.1 8B at 11 batch sizes 8-691, Qwen 3 14B at 8 from 8 to 253, Llama 3.1 70B on 4 GPUs
#: at 6 from 16 to 898, Llama 4 Maverick FP8 on 8 GPUs at 9 from 8 to 383;
#: https://ml.energy/leaderboard, data files in github.com/ml-energy/leaderboard public/data), Argonne's
#: LLM-Inference-Bench (vLLM on one H100 SXM, fp16, 1024 in / 1024 out: Llama 2 7B and Mistral 7B at batch 1, 16,
#: 32, 64; Chitty-Venkata et al. 2024, arXiv:2411.00136, github.com/argonne-lcf/LLM-Inference-Bench
#: docs/data/Power) and the ML.ENERGY leaderboard's 2024 runs (vLLM on A100-SXM4-40GB, 12 runs of 7 models on 1-8
#: GPUs, https://github.com/ml-energy/leaderboard/tree/2819ae1028ac6aa741179d3b8a5f902435da6b43/data/llm/chat).
#: Each measured generation's fit also gets a physical anchor that is no grading source
#: (``flopwise.validation.energy.power_anchors``): a compute-bound prefill (2048-token prompts, at the
#: estimator's own prefill utilizations on that device) draws the datasheet TDP, the power limit (dense matrix work
#: runs at the power limit: NVIDIA quotes HPL peak at the clock an A100 sustains at its power limit,
#: https://glennklockwood.com/garden/peak-FLOPS; the prompt phase draws near TDP, Splitwise Sec. 3 and Patel et al.
#: 2024), weighted as 11 cases by inverse variance (validation.energy.ANCHOR_WEIGHT). Without it only the ML.ENERGY
#: v3.0 H100 cases at large batch set the compute term (the A100 cases and the LLM-Inference-Bench cases, batch
#: <= 64, put it at 0) and a fit without that source missed its compute-heavy cases by up to -58% (H100
#: leave-one-source-out median 23.1%); the anchor alone implies 2.24 W per TFLOP/s on H100, the ML.ENERGY cases
#: alone 2.14, and with it H100 leave-one-source-out is 9.6%. The anchor joins a generation's fit where that
#: generation's cases alone put the anchor workload within 25% of TDP (validation.energy.ANCHOR_CONSISTENCY):
#: H100 -4%; A100 -76% (its one source stays at 200-244 W while the batch grows 5x), so A100 stays fitted on its
#: cases alone, and its compute term is not identified (a compute-bound A100 prefill at 95 W, no A100 draws that:
#: a second A100 source at high load is needed). A generation with at least 3 measured cases
#: (flopwise.validation.energy.MIN_CASES_PER_GENERATION) uses its own fit, any other the fit pooled over all
#: cases ("default", no anchor, which includes the two B200 cases of the ML.ENERGY v3.0 file: 667 W at batch 16,
#: 577 W at 511) and the answer says so. Keys: generation -> (w_mem W per TB/s, w_compute W per TFLOP/s).
#: Refitted after the serving step times changed (prefill launch time, p-norm decode step, engine efficiencies of
#: 2026-12-06, second pass): the utilizations the fit sees moved, the fitted rates with them; refitted with the
#: anchors (2026-12-06, third pass); refitted after vLLM's compute efficiency became per vendor backend (CUDA 0.29
#: instead of 0.285, engine_backends.csv, 2026-12-07).
DYNAMIC_POWER_W_PER_RATE = {
    "hopper": (119.23, 2.161),
    "ampere": (145.40, 0.592),
    "default": (128.35, 1.500),
}
#: generations whose fit includes the TDP anchor (the rule above; flopwise.validation.energy checks it)
ANCHORED_GENERATIONS = ("hopper",)
#: the three energy boundaries every answer reports, narrowest first
BOUNDARIES = ("device", "node", "facility")

#: Host (CPU, DRAM, NICs, fans) power as a share of accelerator power. Derived: DGX H100 is rated 10.2 kW max
#: for 8 x 700 W GPUs (https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html), i.e. up to
#: 0.8 x GPU power at full load; about half of that is drawn in practice, so 0.4 for datacenter accelerators;
#: 0.25 for workstation/consumer desktops; 0.1 for CPUs and SoCs whose package power already covers the compute.
HOST_POWER_FRAC = {
    "datacenter": 0.4,
    "workstation": 0.25,
    "consumer": 0.25,
    "edge": 0.1,
    "cpu": 0.1,
    "soc": 0.1,
}

#: PUE when the caller gives none: 1.0, i.e. IT energy only (the assumption is reported).
DEFAULT_PUE = 1.0


def host_power_frac(device: Device) -> float:
    """HOST_POWER_FRAC for *device* (by kind for CPUs/SoCs, else by segment)."""
    if device.kind in ("cpu", "soc"):
        return HOST_POWER_FRAC[device.kind]
    return HOST_POWER_FRAC.get(device.segment, HOST_POWER_FRAC["datacenter"])


def device_power_w(tdp_w: float, idle_w: float, activity_frac):
    """Average device power: ``idle_w + (tdp_w - idle_w) * activity_frac`` (linear utilization power model,
    Fan, Weber & Barroso 2007, "Power provisioning for a warehouse-sized computer", ISCA)."""
    return idle_w + (tdp_w - idle_w) * activity_frac


def energy_kwh(device_power, host_frac: float, device_count, hours, pue):
    """Facility energy: ``P_device * (1 + host_frac) * n_devices * hours * PUE / 1000`` (kWh)."""
    return device_power * (1.0 + host_frac) * device_count * hours * pue / KILO


def co2e_kg(kwh, grid_gco2e_per_kwh):
    """Operational emissions: ``kWh * gCO2e/kWh / 1000`` (GHG Protocol Scope 2 location-based; Luccioni et al.
    2022 arXiv:2211.02001 Sec. 4)."""
    return kwh * grid_gco2e_per_kwh / G_PER_KG


def dense_peak_tflop_per_s(device: Device) -> float:
    """The device's dense 16-bit peak (bf16, else fp16, else fp32), the compute scale of the power model."""
    for peak in (device.peak_bf16_tflop_per_s, device.peak_fp16_tflop_per_s, device.peak_fp32_tflop_per_s):
        if peak:
            return float(peak)
    return 0.0


def load_power_coeffs(device: Device) -> tuple[tuple[float, float], str]:
    """``((k_mem, k_compute), basis)`` for *device*: DYNAMIC_POWER_W_PER_RATE turned into shares of its
    idle-to-TDP range per unit of utilization, ``k_mem = w_mem x bandwidth_TB/s / (TDP - idle)`` and
    ``k_compute = w_compute x dense_peak_TFLOP/s / (TDP - idle)``, so ``load_activity_frac`` gives
    ``(P - idle) / (TDP - idle)``."""
    from flopwise.estimate.timing import device_generation

    gen = device_generation(device)
    if gen in DYNAMIC_POWER_W_PER_RATE and gen != "default":
        w_mem, w_compute = DYNAMIC_POWER_W_PER_RATE[gen]
        anchor = " and a compute-bound prefill at TDP" if gen in ANCHORED_GENERATIONS else ""
        basis = f"{w_mem:g} W per TB/s moved + {w_compute:g} W per TFLOP/s, fitted on published {gen} measurements{anchor}"
    else:
        w_mem, w_compute = DYNAMIC_POWER_W_PER_RATE["default"]
        basis = (
            f"{w_mem:g} W per TB/s moved + {w_compute:g} W per TFLOP/s: no published {gen} measurement, the fit "
            "pooled over the H100 and A100 ones (ML.ENERGY)"
        )
    span = max(device.tdp_w - device.idle_w, 1e-9)
    bw_tb_s = device.memory_bandwidth_gb_per_s / KILO
    return (w_mem * bw_tb_s / span, w_compute * dense_peak_tflop_per_s(device) / span), basis


def load_activity_frac(mem_util, compute_util, coeffs: tuple[float, float]):
    """Activity share of the idle-to-TDP range from the utilizations of a phase (see DYNAMIC_POWER_W_PER_RATE):
    ``clip(k_mem * mem_util + k_compute * compute_util, 0, 1)``. Floats or numpy arrays."""
    import numpy as np

    k_mem, k_compute = coeffs
    return np.clip(k_mem * np.asarray(mem_util) + k_compute * np.asarray(compute_util), 0.0, 1.0)


def energy_boundaries_kwh(device_kwh, host_frac: float, pue) -> dict:
    """Energy at the three boundaries from the device (GPU) energy: ``device``; ``node = device x (1 +
    host_frac)`` (HOST_POWER_FRAC, sourced there); ``facility = node x PUE``."""
    node = device_kwh * (1.0 + host_frac)
    return {"device": device_kwh, "node": node, "facility": node * pue}
