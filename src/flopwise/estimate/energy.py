"""Power, energy and CO2e terms.

Model: device power ``P = P_idle + (P_TDP - P_idle) * activity`` with an activity share per phase; host power
is a share of device power; facility energy multiplies by PUE; CO2e = kWh * grid intensity.
Every function accepts plain floats or numpy arrays (broadcasting).
"""

from __future__ import annotations

from flopwise.catalog.types import Device
from flopwise.units import G_PER_KG, KILO

__all__ = [
    "DECODE_ACTIVITY_FRAC",
    "DEFAULT_PUE",
    "HOST_POWER_FRAC",
    "PREFILL_ACTIVITY_FRAC",
    "TRAIN_ACTIVITY_FRAC",
    "co2e_kg",
    "device_power_w",
    "energy_kwh",
    "host_power_frac",
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
