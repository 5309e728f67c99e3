"""plan fleet: the spec parser, the integer program against brute force, inventory limits, infeasible fleets,
and one real run on the built-in catalog with examples/fleet.yaml."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml

from flopwise.errors import InputError
from flopwise.plan.fleet import (
    FleetCapacity,
    FleetSpec,
    parse_fleet_spec,
    solve_fleet,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE = ROOT / "examples" / "fleet.yaml"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ============================================================================================ spec


def _service(**kw):
    base = {"name": "chat", "model": "llama-3.1-8b", "rps": 5, "input_tokens": 1000, "output_tokens": 200}
    base.update(kw)
    return base


def test_parse_example_file():
    spec = parse_fleet_spec(_load(EXAMPLE))
    assert isinstance(spec, FleetSpec)
    assert [s.name for s in spec.services] == ["chat", "analyst", "summarize"]
    assert spec.services[0].model == "llama-3.1-8b"
    assert spec.services[1].ttft_p95_ms is not None
    assert spec.to_dict()["services"][2]["model"] == spec.services[2].model


def test_parse_defaults_and_inventory():
    spec = parse_fleet_spec(
        {
            "services": [_service(min_precision="FP8")],
            "inventory": {"devices": {"h100-sxm": 2}, "cost": "sunk"},
        }
    )
    assert spec.pricing == ("on-demand",)
    assert spec.providers is None and spec.regions is None and spec.max_devices == 8
    assert spec.services[0].min_precision == "fp8"
    assert spec.services[0].ttft_p95_ms is None
    assert spec.inventory is not None and spec.inventory.devices == (("h100-sxm", 2),)
    assert spec.inventory.cost_basis == "sunk"


def test_parse_fixture_names_the_bad_field():
    with pytest.raises(InputError) as err:
        parse_fleet_spec(_load(FIXTURES / "fleet-bad-rps.yaml"))
    assert err.value.field == "services[1].rps"
    assert "-2" in str(err.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "services"),
        ({"services": []}, "services"),
        ({"services": [_service(), _service()]}, "services[1].name"),
        ({"services": [_service(rps="fast")]}, "services[0].rps"),
        ({"services": [_service(rps=True)]}, "services[0].rps"),
        ({"services": [_service(input_tokens=10.5)]}, "services[0].input_tokens"),
        (
            {"services": [{"name": "x", "model": "m", "rps": 1, "input_tokens": 1}]},
            "services[0].output_tokens",
        ),
        ({"services": [_service(tpot_p95_ms=0)]}, "services[0].tpot_p95_ms"),
        ({"services": [_service(min_precision="int2")]}, "services[0].min_precision"),
        ({"services": [_service(rsp=3)]}, "services[0].rsp"),
        ({"services": [_service()], "pricing": ["spot", "cheap"]}, "pricing[1]"),
        ({"services": [_service()], "max_devices": 0}, "max_devices"),
        (
            {"services": [_service()], "inventory": {"devices": {"h100-sxm": -1}}},
            "inventory.devices.h100-sxm",
        ),
        (
            {"services": [_service()], "inventory": {"devices": {"h100-sxm": 1}, "cost": "free"}},
            "inventory.cost",
        ),
        ({"services": [_service()], "inventory": {"devices": {}}}, "inventory.devices"),
        ({"services": [_service()], "invntory": {}}, "invntory"),
        (["not", "a", "mapping"], "fleet file"),
    ],
)
def test_parse_errors_name_the_field(data, field):
    with pytest.raises(InputError) as err:
        parse_fleet_spec(data)
    assert err.value.field == field
    assert field in str(err.value)


def test_parse_unknown_key_suggests():
    with pytest.raises(InputError, match="did you mean 'rps'"):
        parse_fleet_spec({"services": [_service(rsp=3)]})


# ============================================================================================ ILP vs brute force


def brute_force(cap: FleetCapacity, cost: list[float], inventory: list[int]) -> float:
    """The cheapest fleet by trying every replica count per option that the inventory allows (<= 6 units per
    type), with units = ceil(devices / devices_per_unit). Returns inf when none serves every service."""
    bounds = [
        int(min(6, inventory[t] * cap.devices_per_unit[t] // d))
        for t, d in zip(cap.option_type, cap.option_devices, strict=True)
    ]
    grid = np.array(list(itertools.product(*[range(b + 1) for b in bounds])), dtype=np.int64)
    served = np.zeros((len(grid), cap.n_services))
    devices = np.zeros((len(grid), cap.n_types), dtype=np.int64)
    for k in range(cap.n_options):
        served[:, cap.option_service[k]] += grid[:, k] * cap.option_capacity_rps[k]
        devices[:, cap.option_type[k]] += grid[:, k] * cap.option_devices[k]
    units = -(-devices // cap.devices_per_unit)
    ok = np.all(served >= cap.demand_rps - 1e-9, axis=1) & np.all(units <= np.asarray(inventory), axis=1)
    if not ok.any():
        return math.inf
    return float((units[ok] @ np.asarray(cost)).min())


def random_fleet(rng: np.random.Generator, n_services: int, n_types: int, *, multi_option: bool):
    """A small random fleet: every (service, type) pair has an option with probability 0.75, some replicas span
    2 or 4 devices, some types come in 2- or 4-device units, inventories of 1 to 6 units."""
    option_service, option_type, option_devices, option_cap = [], [], [], []
    devices_per_unit = rng.choice([1, 1, 2, 4], size=n_types)
    for s in range(n_services):
        for t in range(n_types):
            if rng.random() > 0.75:
                continue
            configs = 2 if multi_option and rng.random() < 0.5 else 1
            for _ in range(configs):
                d = int(rng.choice([1, 1, 2, 4]))
                d = min(d, int(devices_per_unit[t]) if devices_per_unit[t] > 1 else d)
                option_service.append(s)
                option_type.append(t)
                option_devices.append(d)
                option_cap.append(round(float(rng.uniform(0.5, 6.0)) * d**0.8, 3))
    demand = np.round(rng.uniform(1.0, 12.0, size=n_services), 2)
    inventory = [int(v) for v in rng.integers(1, 7, size=n_types)]
    cost = [round(float(rng.uniform(0.3, 4.0)) * int(u), 3) for u in devices_per_unit]
    cap = FleetCapacity.from_arrays(
        demand, devices_per_unit, option_service, option_type, option_devices, option_cap
    )
    return cap, cost, inventory


CASES = [(s, t, seed) for s in (2, 3) for t in (2, 3, 4) for seed in range(3)]


@pytest.mark.parametrize(("n_services", "n_types", "seed"), CASES)
def test_ilp_equals_brute_force(n_services, n_types, seed):
    rng = np.random.default_rng(1000 * n_services + 10 * n_types + seed)
    cap, cost, inventory = random_fleet(rng, n_services, n_types, multi_option=n_services * n_types <= 6)
    if cap.n_options > 8:  # keep the exhaustive search under 7^8 points: drop the options past the 8th
        cap = FleetCapacity.from_arrays(
            cap.demand_rps,
            cap.devices_per_unit,
            cap.option_service[:8],
            cap.option_type[:8],
            cap.option_devices[:8],
            cap.option_capacity_rps[:8],
        )
    expected = brute_force(cap, cost, inventory)
    sol = solve_fleet(cap, cost, inventory)
    if math.isinf(expected):
        assert not sol.is_feasible
        assert sol.reason
        return
    assert sol.is_feasible and sol.is_optimal
    assert math.isclose(float(sol.usd_per_h), expected, rel_tol=1e-9, abs_tol=1e-9)
    _check_solution(cap, cost, inventory, sol)


def _check_solution(cap, cost, inventory, sol):
    replicas = np.asarray(sol.replicas)
    units = np.asarray(sol.units)
    # every service fully served, the split adds up to its demand, no replica over its capacity
    served = np.asarray(sol.served_rps)
    for s in range(cap.n_services):
        mine = cap.option_service == s
        assert np.dot(replicas[mine], cap.option_capacity_rps[mine]) >= cap.demand_rps[s] - 1e-9
        np.testing.assert_allclose(served[mine].sum(), cap.demand_rps[s], rtol=1e-12)
    assert np.all(served <= replicas * cap.option_capacity_rps + 1e-9)
    assert all(0 < u <= 1 + 1e-12 for u in sol.utilization_frac)
    # replicas fit in the units bought, and units respect the inventory
    used = np.zeros(cap.n_types)
    np.add.at(used, cap.option_type, replicas * cap.option_devices)
    assert np.all(used <= units * cap.devices_per_unit)
    if inventory is not None:
        assert np.all(units <= np.asarray(inventory))
    # the reported cost is the priced units, in Decimal
    assert isinstance(sol.usd_per_h, Decimal)
    assert math.isclose(float(sol.usd_per_h), float(units @ np.asarray(cost)), rel_tol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_single_type_baseline_equals_brute_force(seed):
    rng = np.random.default_rng(77 + seed)
    cap, cost, inventory = random_fleet(rng, 2, 3, multi_option=True)
    sol = solve_fleet(cap, cost, inventory)
    for t in range(cap.n_types):
        keep = cap.option_type == t
        only = FleetCapacity.from_arrays(
            cap.demand_rps,
            cap.devices_per_unit,
            cap.option_service[keep],
            cap.option_type[keep],
            cap.option_devices[keep],
            cap.option_capacity_rps[keep],
        )
        expected = brute_force(only, cost, inventory) if keep.any() else math.inf
        got = sol.single_type_usd_per_h[t] if sol.is_feasible else None
        if got is None:
            assert math.isinf(expected) or not sol.is_feasible
        else:
            assert math.isclose(float(got), expected, rel_tol=1e-9)
    if sol.is_feasible and sol.baseline is not None:
        assert sol.usd_per_h <= sol.baseline.usd_per_h
        assert sol.saving_frac is not None and 0.0 <= sol.saving_frac < 1.0
        assert sol.saving_usd_per_h == sol.baseline.usd_per_h - sol.usd_per_h


@pytest.mark.parametrize("seed", range(3))
def test_larger_fleet_is_valid_and_no_dearer_than_any_single_type(seed):
    """5 services x 12 types, unlimited cloud: beyond brute force, but the solution must still be a valid fleet
    and cost no more than any single type that can run everything."""
    rng = np.random.default_rng(500 + seed)
    cap, cost, _ = random_fleet(rng, 5, 12, multi_option=True)
    sol = solve_fleet(cap, cost)
    assert sol.is_feasible and sol.is_optimal
    _check_solution(cap, cost, None, sol)
    singles = [c for c in sol.single_type_usd_per_h if c is not None]
    assert all(sol.usd_per_h <= c for c in singles)
    if singles:
        assert sol.baseline.usd_per_h == min(singles)


def test_mix_beats_every_single_type():
    """Service A runs cheaply only on type 0, service B only on type 1: the mix costs 1 + 1, while either single
    type pays dearly for the service it is bad at (a Mélange-style complementarity)."""
    cap = FleetCapacity.from_matrix(
        [4.0, 4.0],
        [[4.0, 1.0], [1.0, 4.0]],
        service_names=["a", "b"],
        type_names=["t0", "t1"],
    )
    sol = solve_fleet(cap, [Decimal("1.00"), Decimal("1.00")])
    assert sol.usd_per_h == Decimal("2.00")
    assert sol.units == (1, 1)
    assert sol.baseline is not None and sol.baseline.usd_per_h == Decimal("5.00")
    assert sol.saving_usd_per_h == Decimal("3.00")
    assert math.isclose(sol.saving_frac, 0.6)
    assert sol.to_dict()["cost_per_hour_usd"] == "2.00"


def test_traffic_split_across_types_when_inventory_binds():
    """One service, a cheap type limited to 2 units: the rest of the traffic spills onto the dear type."""
    cap = FleetCapacity.from_matrix([10.0], [[3.0, 3.0]], type_names=["owned", "cloud"])
    sol = solve_fleet(cap, [0.1, 2.0], [2, None])
    assert sol.units == (2, 2)
    np.testing.assert_allclose(sol.served_rps, [5.0, 5.0])
    np.testing.assert_allclose(sol.utilization_frac, [10.0 / 12.0])
    assert sol.baseline is not None and sol.baseline.type_name == "cloud"
    assert sol.baseline.units == 4


def test_instance_granularity_packs_services_together():
    """Two services each need one device; an 8-device instance holds both, so the mix buys one instance."""
    cap = FleetCapacity.from_matrix([1.0, 1.0], [[2.0], [2.0]], devices_per_unit=[8])
    sol = solve_fleet(cap, [8.0])
    assert sol.units == (1,)
    assert sol.replicas == (1, 1)


def test_no_idle_replicas_reported():
    """Units that are paid for anyway (8-device instance) do not come back full of idle replicas."""
    cap = FleetCapacity.from_matrix([3.0], [[2.0]], devices_per_unit=[8])
    sol = solve_fleet(cap, [5.0])
    assert sol.replicas == (2,)


def test_infeasible_inventory_says_by_how_much():
    cap = FleetCapacity.from_matrix([20.0], [[3.0]], service_names=["chat"])
    sol = solve_fleet(cap, [1.0], [4])
    assert not sol.is_feasible
    assert sol.usd_per_h is None
    assert "'chat' needs 20 req/s" in sol.reason and "at most 12 req/s" in sol.reason


def test_infeasible_shared_inventory():
    cap = FleetCapacity.from_matrix([5.0, 5.0], [[5.0], [5.0]])
    sol = solve_fleet(cap, [1.0], [1])
    assert not sol.is_feasible
    assert "together" in sol.reason


def test_infeasible_service_without_options():
    cap = FleetCapacity.from_matrix([5.0, 5.0], [[5.0, 0.0], [0.0, 0.0]], service_names=["ok", "huge"])
    sol = solve_fleet(cap, [1.0, 1.0])
    assert not sol.is_feasible
    assert "'huge' has no hardware option" in sol.reason


def test_bad_solver_inputs():
    cap = FleetCapacity.from_matrix([5.0], [[5.0, 1.0]])
    with pytest.raises(InputError, match="cost"):
        solve_fleet(cap, [1.0])
    with pytest.raises(InputError, match="inventory"):
        solve_fleet(cap, [1.0, 1.0], [1])
    with pytest.raises(InputError, match="cost"):
        solve_fleet(cap, [1.0, -1.0])
    with pytest.raises(InputError, match="demand_rps"):
        FleetCapacity.from_matrix([0.0], [[5.0]])


# ============================================================================================ on the catalog


@pytest.fixture(scope="module")
def catalog():
    """The built-in catalog alone (no $FLOPWISE_CATALOG_DIR overrides)."""
    from flopwise.catalog import Catalog
    from flopwise.catalog.loader import read_builtin

    return Catalog(read_builtin())


@pytest.fixture(scope="module")
def example_plan(catalog):
    from flopwise.plan.fleet import plan_fleet

    return plan_fleet(parse_fleet_spec(_load(EXAMPLE)), catalog)


def test_example_fleet_on_builtin_catalog(example_plan):
    plan = example_plan
    sol = plan.solution
    assert sol.is_feasible and sol.is_optimal
    assert sol.saving_frac is not None and sol.saving_frac >= 0.0
    assert sol.usd_per_h <= sol.baseline.usd_per_h
    # the mix is no dearer than any single type that can run the whole fleet
    assert all(c is None or sol.usd_per_h <= c for c in sol.single_type_usd_per_h)
    d = plan.to_dict()
    # every service fully served, by replicas whose capacity covers its rate
    for svc, row in zip(plan.spec.services, d["services"], strict=True):
        assert row["assignment"], svc.name
        assert row["capacity_rps"] >= svc.rps
        assert math.isclose(sum(a["rps"] for a in row["assignment"]), svc.rps, rel_tol=1e-9)
        assert 0.0 < row["utilization_frac"] <= 1.0
    # the hardware rows add up to the total, and the month is 730 hours
    total = sum(Decimal(h["cost_per_unit_hour_usd"]) * h["units"] for h in d["hardware"])
    assert total == sol.usd_per_h
    assert Decimal(d["cost_per_month_usd"]) == (sol.usd_per_h * 730).quantize(Decimal("0.01"))
    # devices used by the assignment fit in the units bought, type by type
    for h in d["hardware"]:
        used = sum(a["devices"] for row in d["services"] for a in row["assignment"] if a["type"] == h["type"])
        assert 0 < used <= h["devices"]
    # tensor parallelism stays within one cloud instance
    types = {h["type"]: h for h in d["hardware"]}
    for row in d["services"]:
        for a in row["assignment"]:
            assert a["tensor_parallel"] <= types[a["type"]]["devices_per_unit"]
    assert d["baseline"]["units"] >= 1
    assert d["assumptions"]["candidates"] > 1000
    import json

    json.dumps(d)


def test_example_fleet_meets_slo_per_replica(example_plan, catalog):
    """Cross-check one assignment against plan serve's capacity table for the same configuration."""
    from flopwise.models import load_models
    from flopwise.plan.candidates import ServeWorkload, enumerate_serve_space
    from flopwise.plan.serve import replica_capacity

    svc = example_plan.spec.services[0]
    a = example_plan.to_dict()["services"][0]["assignment"][0]
    model = load_models().resolve(svc.model)
    wl = ServeWorkload(model, svc.rps, svc.input_tokens, svc.output_tokens, svc.ttft_p95_ms, svc.tpot_p95_ms)
    space = enumerate_serve_space(catalog, model, min_precision=svc.min_precision)
    same = [
        c
        for c in space.candidates
        if (c.device.id, c.device_count, c.quant) == (a["device"], a["tensor_parallel"], a["quant"])
    ]
    table = replica_capacity(wl, same[:1])
    assert math.isclose(float(table.capacity_rps[0]), a["capacity_rps_per_replica"], rel_tol=1e-9)


def test_inventory_is_used_and_respected(catalog):
    from flopwise.plan.fleet import plan_fleet

    spec = parse_fleet_spec(_load(FIXTURES / "fleet-inventory.yaml"))
    plan = plan_fleet(spec, catalog)
    d = plan.to_dict()
    assert plan.solution.is_feasible
    owned = [h for h in d["hardware"] if h["is_owned"]]
    assert len(owned) == 1 and owned[0]["device"] == "h100-sxm"
    # sunk cost: electricity only, well under a dollar an hour per H100
    assert Decimal(owned[0]["cost_per_unit_hour_usd"]) < Decimal("0.5")
    assert 1 <= owned[0]["units"] <= 2
    # 100 req/s is more than two H100s sustain, so the rest spills onto AWS (the only provider allowed)
    cloud = [h for h in d["hardware"] if not h["is_owned"]]
    assert cloud and all(h["provider"] == "aws" for h in cloud)
    assert plan.solution.saving_frac >= 0.0


def test_inventory_without_onprem_profile_is_an_input_error(catalog):
    from flopwise.plan.fleet import plan_fleet

    data = _load(FIXTURES / "fleet-inventory.yaml")
    data["inventory"]["devices"] = {"l4": 2}
    with pytest.raises(InputError) as err:
        plan_fleet(parse_fleet_spec(data), catalog)
    assert err.value.field == "inventory.devices.l4"
    assert "onprem.csv" in str(err.value)


def test_impossible_slo_says_why_and_how_far(catalog):
    from flopwise.plan.fleet import plan_fleet

    plan = plan_fleet(parse_fleet_spec(_load(FIXTURES / "fleet-impossible.yaml")), catalog)
    d = plan.to_dict()
    assert d["is_feasible"] is False
    assert d["cost_per_hour_usd"] is None and d["hardware"] == []
    assert "'chat-70b' has no hardware option" in d["reason"]
    assert "nearest for 'chat-70b'" in d["reason"] and "TPOT" in d["reason"]
    rejected = d["services"][0]["rejected"]
    assert rejected and rejected[0]["kind"] == "misses_slo" and rejected[0]["shortfall"] > 0


def test_unknown_model_is_reported(catalog):
    from flopwise.errors import UnknownModelError
    from flopwise.plan.fleet import plan_fleet

    spec = parse_fleet_spec({"services": [_service(model="llama-9-8b")]})
    with pytest.raises(UnknownModelError):
        plan_fleet(spec, catalog)


def test_owned_inventory_only_is_limited_by_it(catalog):
    """``pricing: []``: only the two owned H100s; 100 req/s is more than they sustain, and the answer says how
    much they can carry."""
    from flopwise.plan.fleet import plan_fleet

    data = _load(FIXTURES / "fleet-inventory.yaml")
    data["pricing"] = []
    plan = plan_fleet(parse_fleet_spec(data), catalog)
    assert not plan.solution.is_feasible
    assert "'chat' needs 100 req/s but the inventory can serve at most" in plan.solution.reason
    data["services"][0]["rps"] = 30
    plan = plan_fleet(parse_fleet_spec(data), catalog)
    assert plan.solution.is_feasible
    (row,) = plan.to_dict()["hardware"]
    assert row["is_owned"] and row["units"] <= 2
    assert plan.solution.saving_frac == 0.0  # one type only: the mix is the baseline


def test_empty_pricing_needs_an_inventory():
    with pytest.raises(InputError) as err:
        parse_fleet_spec({"services": [_service()], "pricing": []})
    assert err.value.field == "pricing"


def test_fleet_searches_engines():
    from pathlib import Path

    import yaml

    from flopwise.catalog import load_catalog
    from flopwise.plan.fleet import parse_fleet_spec, plan_fleet

    spec = parse_fleet_spec(yaml.safe_load(Path("examples/fleet.yaml").read_text(encoding="utf-8")))
    plan = plan_fleet(spec, load_catalog(), engines=["vllm", "trt-llm"]).to_dict()
    assert plan["assumptions"]["engines_searched"] == ["vllm", "trt-llm"]
    engines = {a["engine"] for s in plan["services"] for a in s["assignment"]}
    assert engines <= {"vllm", "trt-llm"} and engines
