"""Power, energy and CO2e terms.

Model: device power ``P = P_idle + (P_TDP - P_idle) * activity``. In serving the activity follows what the device
does in each phase (:func:`load_activity_frac`: memory-bandwidth and compute utilization, fitted per device
generation on published NVML measurements); training keeps a fixed share. Energy is reported at three boundaries
(:func:`energy_boundaries_kwh`): device (GPU) only, node (device + host share) and facility (node x PUE);
CO2e = kWh * grid intensity at each boundary.
Every function accepts plain floats or numpy arrays (broadcasting).
"""

from __future__ import annotations

from flopwise.catalog.types import Device
from flopwise.units import G_PER_KG, KILO

__all__ = [
    "BOUNDARIES",
    "DECODE_ACTIVITY_FRAC",
    "LOAD_POWER_COEFFS",
    "DEFAULT_PUE",
    "HOST_POWER_FRAC",
    "PREFILL_ACTIVITY_FRAC",
    "TRAIN_ACTIVITY_FRAC",
    "co2e_kg",
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

#: Load-dependent power of a serving phase: ``activity = clip(k_mem * u_mem + k_compute * u_compute, 0, 1)`` where
#: ``u_mem`` is the bytes the device moves over (its datasheet bandwidth x the phase time) and ``u_compute`` the
#: FLOPs it runs over (its dense datasheet peak x the phase time); both come from the serving roofline, so the
#: fixed per-step overhead and the tensor-parallel all-reduce (time in which the device waits) lower them, and a
#: tensor-parallel split lowers per-device power as measured (ML.ENERGY v3: Llama 4 Maverick on 8 H100 at batch 8
#: draws 231 W per GPU, Llama 3.1 8B on one H100 486 W). DRAM traffic and Tensor Core activity are the two largest
#: dynamic power terms of a GPU (Hong & Kim 2010, "An integrated GPU power and performance model", ISCA; Leng et
#: al. 2013, GPUWattch, ISCA): the linear form follows them. Fitted (least squares on the activity each measured
#: average power implies, flopwise.validation.energy.fit_power_coeffs) per generation on the published NVML
#: measurements of src/flopwise/validation/data/cases_energy.csv; a generation without a measured case takes
#: "default" (the Hopper fit) and the answer says so. Keys: generation -> (k_mem, k_compute).
LOAD_POWER_COEFFS = {
    "hopper": (0.661, 4.124),
    "default": (0.661, 4.124),
}
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


def load_power_coeffs(device: Device) -> tuple[tuple[float, float], str]:
    """``((k_mem, k_compute), basis)`` for *device*: its generation's fit, or the default with the basis saying
    so."""
    from flopwise.estimate.timing import device_generation

    gen = device_generation(device)
    if gen in LOAD_POWER_COEFFS and gen != "default":
        return LOAD_POWER_COEFFS[gen], f"fitted on published {gen} measurements"
    return LOAD_POWER_COEFFS["default"], f"no published measurement for {gen}: the default (hopper) fit"


def load_activity_frac(mem_util, compute_util, coeffs: tuple[float, float]):
    """Activity share of the idle-to-TDP range from the utilizations of a phase (see LOAD_POWER_COEFFS):
    ``clip(k_mem * mem_util + k_compute * compute_util, 0, 1)``. Floats or numpy arrays."""
    import numpy as np

    k_mem, k_compute = coeffs
    return np.clip(k_mem * np.asarray(mem_util) + k_compute * np.asarray(compute_util), 0.0, 1.0)


def energy_boundaries_kwh(device_kwh, host_frac: float, pue) -> dict:
    """Energy at the three boundaries from the device (GPU) energy: ``device``; ``node = device x (1 +
    host_frac)`` (HOST_POWER_FRAC, sourced there); ``facility = node x PUE``."""
    node = device_kwh * (1.0 + host_frac)
    return {"device": device_kwh, "node": node, "facility": node * pue}
