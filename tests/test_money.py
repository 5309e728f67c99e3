"""One money module: Decimal, one rounding rule (half-even), floats refused where money enters."""

from __future__ import annotations

import ast
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from flopwise import money
from flopwise.errors import InputError
from flopwise.units import CENT, MICRO_USD, PRICE_STEP

SRC = Path(__file__).resolve().parents[1] / "src" / "flopwise"


@pytest.mark.parametrize("bad", [0.1, 12.5, True, float("nan")])
def test_money_entering_refuses_floats_and_booleans(bad):
    with pytest.raises(InputError, match=r"budget: .*Decimal"):
        money.to_money(bad, "budget")


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", Decimal("1e40"), "1e400", None])
def test_money_entering_refuses_what_is_not_a_finite_amount(bad):
    with pytest.raises(InputError, match="price"):
        money.to_money(bad, "price")


def test_one_rounding_rule_half_even():
    assert money.to_money("0.125") == Decimal("0.12")
    assert money.to_money("0.135") == Decimal("0.14")
    assert money.to_money(" 7 ") == Decimal("7.00")
    assert money.to_money(3, step=PRICE_STEP) == Decimal("3.0000")
    assert money.quantize(Decimal("2.0000005"), MICRO_USD) == Decimal("2.000000")
    assert money.quantize(Decimal("2.0000015"), MICRO_USD) == Decimal("2.000002")


def test_computed_floats_go_through_repr():
    assert money.from_float(0.1 + 0.2) == Decimal("0.30")
    assert money.from_float(2.675) == Decimal("2.68")  # repr 2.675, half-even at the cent: 2.68
    assert money.from_float(Decimal("1.005")) == Decimal("1.00")
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InputError, match="cost_usd"):
            money.from_float(bad, "cost_usd")
    arr = money.from_floats(np.array([[1.234, 5.678]]))
    assert arr.shape == (1, 2) and arr.dtype == object and arr.tolist() == [[Decimal("1.23"), Decimal("5.68")]]


def test_every_conversion_site_uses_the_one_rule():
    """estimate.cost, plan.serve, plan.fleet, catalog pricing, meter.costing and the store all agree."""
    from flopwise.catalog.pricing import price_per_device_h
    from flopwise.estimate.cost import to_money as estimate_money
    from flopwise.meter.costing import _money as costing_money
    from flopwise.plan.fleet import _cents
    from flopwise.plan.fleet import _money as fleet_money
    from flopwise.plan.serve import _money as serve_money
    from flopwise.store import to_money as store_money

    assert estimate_money(0.125) == serve_money(0.125) == Decimal("0.12")
    assert _cents(Decimal("0.125")) == "0.12"
    assert fleet_money(12.29125) == Decimal("12.2912")  # a price per hour: PRICE_STEP, half-even
    assert fleet_money("12.29125") == Decimal("12.2912")
    assert costing_money(0.0000025) == store_money("0.0000025") == Decimal("0.000002")
    with pytest.raises(ValueError, match="amount"):
        store_money(0.5)

    class _Offer:
        on_demand_usd_per_h = Decimal("98.32")
        device_count = 8

    assert price_per_device_h(_Offer(), "on-demand") == Decimal("12.2900")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cost_usd"):
        estimate_money(float("nan"))


_UNIT_NAMES = {
    "G_PER_KG", "CENT", "W_PER_KW", "J_PER_KWH", "S_PER_H", "S_PER_DAY", "H_PER_YEAR", "KILO", "MICRO_USD",
    "PRICE_STEP", "MJ_PER_J", "MW_PER_W", "MILLIJOULES_PER_J", "MILLIWATTS_PER_W", "BYTES_PER_MB", "BYTES_PER_GB",
    "BYTES_PER_GIB", "H_PER_MONTH",
}  # fmt: skip


def test_unit_constants_and_money_steps_live_only_in_units():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "units.py" or path.name == "alerts.py":  # alerts quantizes a fraction, not money
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.lstrip("_") in _UNIT_NAMES:
                        offenders.append(f"{path.relative_to(SRC)}: {target.id}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Decimal"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in ("0.01", "0.0001")
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: Decimal({node.args[0].value!r})")
    assert offenders == []
    assert Decimal("0.01") == CENT
