"""What-ifs on a chosen serve option: each changes one thing and reports the saving against the option."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flopwise.catalog import load_catalog
from flopwise.models import load_models
from flopwise.plan import ServeWorkload, plan_serve
from flopwise.plan.whatif import what_ifs


@pytest.fixture(scope="module")
def setup():
    catalog = load_catalog()
    w = ServeWorkload(
        load_models().resolve("llama-3.1-8b"), 20.0, 1000, 200, ttft_p95_ms=1000.0, tpot_p95_ms=100.0
    )
    option = plan_serve(w, catalog, min_precision="bf16").options[0]
    return catalog, w, option


def test_what_ifs_report_savings_and_caveats(setup):
    catalog, w, option = setup
    items = what_ifs(option, w, catalog)
    names = {x.name for x in items}
    assert {"quantize", "spot", "reserved", "greener_region", "prefix_caching"} <= names
    for x in items:
        assert x.caveat
        x.to_dict()
        if x.option is not None:
            base = Decimal(str(option["cost_per_hour_usd"]))
            assert x.saving_usd_per_h == base - Decimal(str(x.option["cost_per_hour_usd"]))
    quant = next(x for x in items if x.name == "quantize")
    # bf16 chosen: a lower precision on the same device is never more expensive than the bf16 option
    assert quant.saving_frac is not None and quant.saving_frac >= 0
    green = next(x for x in items if x.name == "greener_region")
    assert green.option["co2e_per_1m_tokens_kg"] <= option["co2e_per_1m_tokens_kg"] + 1e-9
    assert green.option["quant"] == option["quant"]
