"""Chart specs are data: built by pure functions, checked here without a browser."""

from __future__ import annotations

from decimal import Decimal

from flopwise.server.web import charts


def _series() -> list[dict]:
    return [
        {"period": "2026-01-01", "group": "research", "cost_usd": Decimal("100.004"), "idle_cost_usd": Decimal("20")},
        {"period": "2026-01-01", "group": "applied", "cost_usd": Decimal("50"), "idle_cost_usd": Decimal("5")},
        {"period": "2026-01-02", "group": "research", "cost_usd": Decimal("80"), "idle_cost_usd": Decimal("0")},
        {"period": "2026-01-02", "group": "platform", "cost_usd": Decimal("1"), "idle_cost_usd": None},
    ]


def test_stacked_idle_is_taken_out_and_sums_are_kept() -> None:
    spec = charts.stacked_over_time(
        _series(), measure="cost_usd", unit="USD", title="Spend", groups_by_size=["research", "applied", "platform"],
        idle_measure="idle_cost_usd", limit_line=90.0,
    )
    values = spec["data"]["values"]
    by = {(v["period"], v["group"]): v["value"] for v in values}
    assert by[("2026-01-01", "research")] == 80.0 and by[("2026-01-01", "idle")] == 25.0
    assert by[("2026-01-02", "platform")] == 1.0
    # the bars of a period add up to that period's cost (idle is moved, not dropped)
    assert sum(v for (p, _), v in by.items() if p == "2026-01-01") == 150.0
    # idle is grey, last in the legend; the budget rule is a layer with its value
    color = spec["layer"][0]["encoding"]["color"]["scale"]
    assert color["domain"][-1] == "idle" and color["range"][-1] == charts.IDLE_COLOR
    assert spec["layer"][1]["data"]["values"][0]["limit"] == 90.0
    assert "2026-01-01 to 2026-01-02" in spec["description"] and spec["title"] == "Spend"


def test_stacked_hidden_idle_and_folding_into_other() -> None:
    spec = charts.stacked_over_time(
        _series(), measure="cost_usd", unit="USD", title="t", groups_by_size=["research", "applied", "platform"],
        idle_measure="idle_cost_usd", show_idle=False, max_groups=1,
    )
    groups = {v["group"] for v in spec["data"]["values"]}
    assert groups == {"research", "other"}  # no idle bar, the small groups folded
    assert "layer" not in spec and spec["mark"]["type"] == "bar"
    other = sum(v["value"] for v in spec["data"]["values"] if v["group"] == "other")
    assert other == 51.0


def test_palette_is_colour_blind_safe_okabe_ito() -> None:
    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    assert set(charts.PALETTE) <= okabe_ito


def test_empty_series_says_so() -> None:
    spec = charts.stacked_over_time([], measure="cost_usd", unit="USD", title="t", groups_by_size=[])
    assert spec["data"]["values"] == [] and "no data in this window" in spec["description"]


def test_budget_bullets_percentages() -> None:
    spec = charts.budget_bullets(
        [{"name": "a", "amount": Decimal("200"), "reserved": Decimal("50"), "committed": Decimal("20"),
          "settled": Decimal("80")},
         {"name": "zero", "amount": Decimal("0"), "reserved": Decimal("1"), "committed": 0, "settled": 0}]
    )
    rows = {(v["budget"], v["part"]): v["pct"] for v in spec["data"]["values"]}
    assert rows == {("a", "spent"): 50.0, ("a", "reserved"): 25.0, ("zero", "spent"): 0.0, ("zero", "reserved"): 0.0}
    assert spec["layer"][1]["data"]["values"] == [{"limit": 100}]
    assert "a 75.0% used" in spec["description"]


def test_budget_burn_forecast_and_exceed_date() -> None:
    spec = charts.budget_burn(
        [{"day": "2026-01-01", "cumulative": Decimal(10)}, {"day": "2026-01-02", "cumulative": Decimal(30)}],
        [{"day": "2026-01-02", "cumulative": Decimal(30)}, {"day": "2026-01-31", "cumulative": Decimal(465)}],
        limit=400.0, unit="usd", name="b", exceed_on="2026-01-27",
    )
    series = [(v["series"], v["cumulative"]) for v in spec["data"]["values"]]
    assert series == [("actual", 10.0), ("actual", 30.0), ("forecast", 30.0), ("forecast", 465.0)]
    assert "will exceed on 2026-01-27" in spec["description"]
    assert spec["layer"][1]["data"]["values"] == [{"limit": 400.0}]


def test_histogram_bar_memory_plan_and_calibration_specs() -> None:
    bins = [{"lo_frac": i / 10, "hi_frac": (i + 1) / 10, "device_hours": float(i), "records": i} for i in range(10)]
    hist = charts.histogram(bins, title="u")
    assert [v["bin"] for v in hist["data"]["values"]][:2] == ["0-10%", "10-20%"]
    assert sum(v["device_hours"] for v in hist["data"]["values"]) == 45.0
    bars = charts.bar_chart([{"t": "x", "h": 1.234}, {"t": "y", "h": 5}], label="t", measure="h", unit="h", title="b")
    assert [v["label"] for v in bars["data"]["values"]] == ["y", "x"]  # largest first
    mem = charts.memory_stack({"weights": 16.0, "kv cache": 0.0, "overhead": 4.0}, device_gb=24.0, device="L4")
    assert [v["term"] for v in mem["data"]["values"]] == ["weights", "overhead"] and "it fits" in mem["description"]
    over = charts.memory_stack({"weights": 30.0}, device_gb=24.0, device="L4")
    assert "does not fit" in over["description"]
    plan = charts.plan_scatter(
        [{"count": 1, "device": "gh200", "quant": "fp8", "pricing": "on-demand", "cost_per_hour_usd": Decimal("1.49"),
          "ttft_p95_ms": 110.0, "tpot_p95_ms": 23.0}],
        [{"count": 1, "device": "gh200", "quant": "fp8", "cost_per_hour_usd": Decimal("1.49"), "ttft_p95_ms": 110.0}],
        slo_ms=1000.0,
    )
    assert plan["layer"][2]["data"]["values"] == [{"slo": 1000.0}] and "$1.49/h" in plan["description"]
    assert plan["data"]["values"][0]["latency_ms"] == 110.0 and "TTFT p95 target is 1,000 ms" in plan["description"]
    tpot = charts.plan_scatter(
        [{"count": 1, "device": "gh200", "quant": "fp8", "pricing": "on-demand", "cost_per_hour_usd": Decimal("1.49"),
          "ttft_p95_ms": 110.0, "tpot_p95_ms": 23.0}], [], slo_ms=100.0, y="tpot_p95_ms",
    )
    assert tpot["data"]["values"][0]["latency_ms"] == 23.0 and tpot["title"] == "Plan: cost vs TPOT p95"
    assert [layer["mark"]["type"] for layer in tpot["layer"]] == ["point", "rule"]  # no empty frontier layer
    cal = charts.calibration_scatter(
        [{"request_id": 7, "estimated_device_hours": 10, "actual_device_hours": 12},
         {"request_id": 8, "estimated_device_hours": None, "actual_device_hours": 3}]
    )
    assert cal["layer"][1]["mark"]["type"] == "point" and len(cal["data"]["values"]) == 1


def test_every_builder_gives_title_description_and_schema() -> None:
    specs = [
        charts.stacked_over_time(_series(), measure="cost_usd", unit="USD", title="t", groups_by_size=["research"]),
        charts.budget_bullets([]),
        charts.histogram([], title="h"),
        charts.bar_chart([], label="a", measure="b", unit="u", title="t"),
        charts.calibration_scatter([]),
        charts.plan_scatter([], [], slo_ms=None),
        charts.memory_stack({}, device_gb=1.0, device="d"),
        charts.budget_burn([], [], limit=1.0, unit="usd", name="n", exceed_on=None),
    ]
    for spec in specs:
        assert spec["$schema"] == charts.SCHEMA
        assert spec["title"] and spec["description"] and "values" in spec["data"]
