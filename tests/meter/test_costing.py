"""Costing usage that has no bill: catalog prices per device-hour, idle by utilization, energy and CO2e."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flopwise.catalog import load_catalog
from flopwise.errors import UnknownRegionError
from flopwise.estimate.cost import onprem_usd_per_device_h
from flopwise.estimate.energy import device_power_w, host_power_frac
from flopwise.meter.costing import (
    UNKNOWN_UTILIZATION_ACTIVITY_FRAC,
    Coster,
    CostingOptions,
    cost_usage,
)
from flopwise.meter.record import UsageRecord

CAT = load_catalog()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
RTOL = 1e-9


def rec(**kw) -> UsageRecord:
    base = {
        "source": "slurm",
        "source_key": "k",
        "charge_period_start": T0,
        "charge_period_end": T0 + timedelta(hours=1),
    }
    return UsageRecord(**(base | kw))


def test_billed_cost_is_the_cost_and_energy_is_estimated_for_a_gpu_instance():
    c = cost_usage(rec(billed_cost=Decimal("98.32"), billing_currency="USD", x_device_type="h100-sxm",
                       x_device_hours=8.0), CAT)  # fmt: skip
    assert (c.cost_usd, c.cost_basis) == (Decimal("98.320000"), "billed")
    assert c.energy_basis == "estimated"
    h100 = CAT.device("h100-sxm")
    expected = device_power_w(h100.tdp_w, h100.idle_w, UNKNOWN_UTILIZATION_ACTIVITY_FRAC) * 8 / 1000
    assert math.isclose(c.record.x_energy_kwh, expected, rel_tol=RTOL)


def test_other_currency_is_not_counted_as_usd():
    c = cost_usage(rec(billed_cost=Decimal("10"), billing_currency="EUR"), CAT)
    assert (c.cost_usd, c.cost_basis) == (None, "none")
    assert any("EUR" in a for a in c.assumptions)


def test_onprem_price_uses_the_profile_and_measured_power():
    h100 = CAT.device("h100-sxm")
    profile = CAT.onprem["h100-sxm"]
    c = cost_usage(rec(x_device_type="NVIDIA H100 80GB HBM3", x_device_hours=2.0, x_energy_kwh=1.0), CAT)
    assert (c.cost_basis, c.energy_basis) == ("catalog-onprem", "measured")
    wall_w = 1.0 * 1000 / 2.0 * (1 + host_power_frac(h100))
    rate = onprem_usd_per_device_h(profile, wall_w, profile.pue)
    assert math.isclose(float(c.cost_usd), rate * 2.0, rel_tol=1e-6)
    assert c.record.x_energy_kwh == 1.0


def test_no_onprem_profile_means_cheapest_on_demand_offering():
    dev = next(d for d in CAT.devices if d not in CAT.onprem and CAT.offerings_for(d))
    c = Coster(CAT).cost(rec(x_device_type=dev, x_device_hours=3.0))
    assert c.cost_basis == "catalog-cloud"
    cheapest = min(
        o.on_demand_usd_per_h / o.device_count for o in CAT.offerings_for(dev) if o.on_demand_usd_per_h
    )
    assert abs(c.usd_per_device_h - cheapest) < Decimal("0.0001")
    assert c.cost_usd == (c.usd_per_device_h * 3).quantize(Decimal("0.000001"))


def test_prefer_cloud_prices_an_owned_device_as_rented():
    c = Coster(CAT, CostingOptions(prefer_onprem=False)).cost(
        rec(x_device_type="h100-sxm", x_device_hours=1.0)
    )
    assert c.cost_basis == "catalog-cloud"


def test_idle_by_utilization_and_fractional_gpus():
    mig = rec(x_device_type="h100-sxm", x_device_count=1 / 7, x_device_hours=10 / 7, x_gpu_utilization=0.25)
    whole = rec(x_device_type="h100-sxm", x_device_count=1.0, x_device_hours=10.0, x_gpu_utilization=0.25)
    coster = Coster(CAT)
    a, b = coster.cost(mig), coster.cost(whole)
    assert math.isclose(float(a.cost_usd) * 7, float(b.cost_usd), rel_tol=1e-5)  # priced by their share
    assert math.isclose(b.idle_device_hours, 7.5, rel_tol=RTOL)
    assert b.idle_cost_usd == (b.cost_usd * Decimal("0.75")).quantize(Decimal("0.000001"))
    assert b.used_cost_usd == b.cost_usd - b.idle_cost_usd


def test_opencost_idle_allocation_is_idle_as_a_whole():
    c = cost_usage(rec(source="opencost", billed_cost=Decimal("4"), x_device_hours=2.0,
                       x_extra={"x_OpenCostSpecial": "idle"}), CAT)  # fmt: skip
    assert (c.idle_device_hours, c.idle_cost_usd) == (2.0, Decimal("4.000000"))


def test_nothing_to_price():
    c = cost_usage(rec(x_device_type="no-such-gpu", x_device_hours=1.0), CAT)
    assert (c.cost_usd, c.cost_basis, c.energy_basis, c.record.x_co2e_kg) == (None, "none", "none", None)


def test_co2e_from_the_record_region_then_the_default_region():
    region = CAT.region("aws:us-east-1")
    c = cost_usage(rec(provider_name="AWS", region_id="us-east-1", x_energy_kwh=10.0), CAT)
    assert c.region_id == "aws:us-east-1"
    assert math.isclose(
        c.record.x_co2e_kg, 10.0 * region.pue * region.grid_gco2e_per_kwh / 1000, rel_tol=RTOL
    )
    nl = CAT.region("country:NL")
    d = Coster(CAT, CostingOptions(default_region="country:NL")).cost(rec(x_energy_kwh=10.0))
    assert math.isclose(d.record.x_co2e_kg, 10.0 * nl.pue * nl.grid_gco2e_per_kwh / 1000, rel_tol=RTOL)
    assert cost_usage(rec(x_energy_kwh=10.0), CAT).record.x_co2e_kg is None


def test_unknown_default_region_fails_with_suggestions():
    with pytest.raises(UnknownRegionError):
        Coster(CAT, CostingOptions(default_region="country:Atlantis"))


@given(
    hours=st.floats(0, 1e4, allow_nan=False),
    util=st.one_of(st.none(), st.floats(-0.5, 1.5, allow_nan=False)),
    energy=st.one_of(st.none(), st.floats(0, 1e5, allow_nan=False)),
    device=st.sampled_from(["h100-sxm", "a100-sxm4-80gb", "v100", "unknown"]),
)
def test_nothing_comes_out_negative(hours, util, energy, device):
    c = Coster(CAT, CostingOptions(default_region="country:DE")).cost(
        rec(x_device_type=device, x_device_hours=hours, x_gpu_utilization=util, x_energy_kwh=energy)
    )
    for value in (
        c.cost_usd,
        c.idle_cost_usd,
        c.idle_device_hours,
        c.record.x_energy_kwh,
        c.record.x_co2e_kg,
    ):
        assert value is None or value >= 0
    if c.idle_device_hours is not None:
        assert c.idle_device_hours <= hours + 1e-9
    if c.idle_cost_usd is not None:
        assert c.idle_cost_usd <= c.cost_usd


def test_energy_over_a_vanishing_span_prices_at_the_assumed_power():
    """1 kWh in 5e-324 h is an infinite power: the on-prem rate falls back to the unknown-utilization power
    instead of overflowing to an infinite cost (hypothesis found it)."""
    h100 = CAT.device("h100-sxm")
    profile = CAT.onprem["h100-sxm"]
    c = cost_usage(rec(x_device_type="h100-sxm", x_device_hours=5e-324, x_energy_kwh=1.0), CAT)
    device_w = device_power_w(h100.tdp_w, h100.idle_w, UNKNOWN_UTILIZATION_ACTIVITY_FRAC)
    rate = onprem_usd_per_device_h(profile, device_w * (1 + host_power_frac(h100)), profile.pue)
    assert c.cost_basis == "catalog-onprem"
    assert math.isclose(float(c.usd_per_device_h), rate, rel_tol=1e-12)
    assert c.cost_usd == Decimal("0.000000")


def test_memoized_costing_gives_what_a_fresh_coster_gives():
    """One Coster memoizes devices, prices, regions and notes; every record still gets its own result."""
    coster = Coster(CAT, CostingOptions(default_region="country:DE"))
    records = [
        rec(x_device_type=device, x_device_hours=hours, x_gpu_utilization=util, x_energy_kwh=energy)
        for device in ("h100-sxm", "a100-sxm4-80gb", "unknown")
        for hours in (0.0, 1.5)
        for util in (None, 0.4)
        for energy in (None, 2.0)
    ]
    for r in records * 2:
        assert coster.cost(r) == cost_usage(r, CAT, CostingOptions(default_region="country:DE"))


def test_a_record_with_nothing_computed_is_passed_through_unchanged():
    r = rec(billed_cost=Decimal("1"), billing_currency="USD")
    c = cost_usage(r, CAT)
    assert c.record is r and c.energy_basis == "none" and c.record.x_co2e_kg is None
    r2 = rec(x_device_type="h100-sxm", x_device_hours=1.0)
    c2 = cost_usage(r2, CAT, CostingOptions(default_region="country:DE"))
    assert c2.record is not r2 and r2.x_energy_kwh is None  # the input is never modified
    assert c2.record.x_energy_kwh > 0 and c2.record.x_co2e_kg > 0 and c2.record.source_key == r2.source_key
