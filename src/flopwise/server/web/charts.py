"""Vega-Lite chart specs for the dashboard, built by pure functions from plain rows (no I/O, no templates).

Every spec carries a ``title`` and a ``description`` (vega-embed renders the description as the SVG's
``aria-label``, and the page prints it as the chart's caption), inline ``data.values`` holding the very
numbers of the table shown beside the chart, and the Okabe-Ito colour-blind-safe palette (Okabe and Ito,
"Color Universal Design", 2008, https://jfly.uni-koeln.de/color/) with idle in grey.

Money reaches a chart as a float rounded to the cent (charts draw, tables and CSV keep the exact Decimal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

__all__ = [
    "IDLE_COLOR",
    "PALETTE",
    "SCHEMA",
    "bar_chart",
    "budget_bullets",
    "budget_burn",
    "calibration_scatter",
    "chart_number",
    "histogram",
    "memory_stack",
    "plan_scatter",
    "stacked_over_time",
]

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
#: Okabe-Ito, without its black (kept for text) and yellow (too light on white for thin marks)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
IDLE_COLOR = "#9E9E9E"
IDLE = "idle"
OTHER = "other"
_HEIGHT = 260


def chart_number(value: Any, places: int = 2) -> float:
    """A number for a chart: Decimal or float rounded to *places* (tables show the same rounding)."""
    if value is None:
        return 0.0
    return round(float(value), places)


def _base(title: str, description: str, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA,
        "title": title,
        "description": description,
        "width": "container",
        "height": _HEIGHT,
        "data": {"values": values},
        "config": {"font": "system-ui, sans-serif", "view": {"stroke": None}},
    }


def _colors(names: Sequence[str]) -> dict[str, Any]:
    """A colour scale with a fixed domain: the palette cycles over the groups, idle is grey."""
    range_ = [IDLE_COLOR if n == IDLE else PALETTE[i % len(PALETTE)] for i, n in enumerate(names)]
    return {"domain": list(names), "range": range_}


def top_groups(names_by_size: Sequence[str], limit: int) -> tuple[list[str], set[str]]:
    """The *limit* largest group names and the set folded into ``other`` (charts stay legible; tables keep all)."""
    keep = list(names_by_size[:limit])
    return keep, set(names_by_size[limit:])


def stacked_over_time(
    series: Iterable[Mapping[str, Any]],
    *,
    measure: str,
    unit: str,
    title: str,
    groups_by_size: Sequence[str],
    idle_measure: str | None = None,
    show_idle: bool = True,
    limit_line: float | None = None,
    limit_label: str = "budget",
    max_groups: int = 6,
) -> dict[str, Any]:
    """Stacked bars of *measure* per period and group; with *idle_measure* and *show_idle*, each group's idle
    share is taken out of its bar and stacked as one grey ``idle`` bar per period; *limit_line* draws a rule
    (e.g. the budget per period). Groups beyond *max_groups* are summed as ``other``.

    Rows need ``period``, ``group`` and the measures. Returns the spec; ``data.values`` is one row per
    (period, group) with ``value`` rounded to the cent.
    """
    keep, _folded = top_groups(groups_by_size, max_groups)
    kept = set(keep)
    cells: dict[tuple[str, str], float] = {}
    folded = False
    for row in series:
        group = row["group"] if row["group"] in kept else OTHER
        folded = folded or group == OTHER
        value = float(row[measure] or 0)
        if idle_measure and show_idle:
            idle = float(row[idle_measure] or 0)
            value -= idle
            cells[(row["period"], IDLE)] = cells.get((row["period"], IDLE), 0.0) + idle
        cells[(row["period"], group)] = cells.get((row["period"], group), 0.0) + value
    names = keep + ([OTHER] if folded else []) + ([IDLE] if idle_measure and show_idle else [])
    values = [
        {"period": p, "group": g, "value": round(v, 2)}
        for (p, g), v in sorted(cells.items(), key=lambda kv: (kv[0][0], names.index(kv[0][1])))
    ]
    periods = sorted({p for p, _ in cells})
    description = (
        f"{title}: stacked bars of {measure.replace('_', ' ')} ({unit}) per period for "
        f"{len(names)} groups ({', '.join(names[:8])}) over {len(periods)} periods"
        + (f" from {periods[0]} to {periods[-1]}" if periods else "; no data in this window")
        + (f"; the {limit_label} line is at {limit_line:,.2f} {unit} per period." if limit_line else ".")
    )
    bars = {
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": "period", "type": "ordinal", "title": "period (UTC)", "axis": {"labelAngle": -45}},
            "y": {"field": "value", "type": "quantitative", "title": unit, "stack": "zero"},
            "color": {"field": "group", "type": "nominal", "scale": _colors(names), "title": None,
                      "sort": names},
            "order": {"field": "order", "type": "quantitative"},
            "tooltip": [{"field": "period"}, {"field": "group"}, {"field": "value", "format": ",.2f"}],
        },
    }  # fmt: skip
    for v in values:
        v["order"] = names.index(v["group"])
    spec = _base(title, description, values)
    if limit_line:
        spec["layer"] = [
            bars,
            {
                "data": {"values": [{"limit": round(limit_line, 2), "label": limit_label}]},
                "mark": {"type": "rule", "color": "#D55E00", "strokeDash": [6, 3], "strokeWidth": 2},
                "encoding": {"y": {"field": "limit", "type": "quantitative"}},
            },
        ]
    else:
        spec.update(bars)
    return spec


def bar_chart(
    rows: Iterable[Mapping[str, Any]],
    *,
    label: str,
    measure: str,
    unit: str,
    title: str,
    color: str = PALETTE[0],
) -> dict[str, Any]:
    """Horizontal bars of *measure* per *label*, largest first."""
    values = [{"label": str(r[label]), "value": chart_number(r[measure])} for r in rows]
    values.sort(key=lambda v: -v["value"])
    description = f"{title}: " + (
        "; ".join(f"{v['label']} {v['value']:,.2f} {unit}" for v in values[:12]) or "no data in this window"
    )
    spec = _base(title, description, values)
    spec["height"] = max(60, 24 * len(values))
    spec.update(
        {
            "mark": {"type": "bar", "color": color},
            "encoding": {
                "y": {"field": "label", "type": "nominal", "sort": "-x", "title": None},
                "x": {"field": "value", "type": "quantitative", "title": unit},
                "tooltip": [{"field": "label"}, {"field": "value", "format": ",.2f"}],
            },
        }
    )
    return spec


def _pct(part: Decimal, whole: Decimal) -> float:
    return chart_number(part / whole * 100, 1) if whole > 0 else 0.0


def budget_bullets(budgets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Bullet bars: per budget, spent (committed + settled) and reserved as a percentage of its limit, with a
    tick at 100 %. Rows need ``name``, ``amount``, ``reserved``, ``committed``, ``settled``."""
    values = []
    for b in budgets:
        amount = Decimal(b["amount"])
        spent = Decimal(b["committed"]) + Decimal(b["settled"])
        reserved = Decimal(b["reserved"])
        values.append({"budget": b["name"], "part": "spent", "pct": _pct(spent, amount), "order": 0})
        values.append({"budget": b["name"], "part": "reserved", "pct": _pct(reserved, amount), "order": 1})
    names = list(dict.fromkeys(v["budget"] for v in values))
    description = "Budgets, spent and reserved as a percentage of each limit: " + (
        "; ".join(
            f"{n} {sum(v['pct'] for v in values if v['budget'] == n):.1f}% used"
            for n in names
        )
        or "no budgets"
    )
    spec = _base("Budgets: spent and reserved vs limit", description, values)
    spec["height"] = max(60, 30 * len(names))
    spec["layer"] = [
        {
            "mark": {"type": "bar", "height": 14},
            "encoding": {
                "y": {"field": "budget", "type": "nominal", "title": None, "sort": names},
                "x": {"field": "pct", "type": "quantitative", "title": "% of limit", "stack": "zero"},
                "color": {"field": "part", "type": "nominal", "title": None,
                          "scale": {"domain": ["spent", "reserved"], "range": [PALETTE[0], PALETTE[4]]}},
                "order": {"field": "order"},
                "tooltip": [{"field": "budget"}, {"field": "part"}, {"field": "pct", "format": ".1f"}],
            },
        },
        {
            "data": {"values": [{"limit": 100}]},
            "mark": {"type": "rule", "color": "#D55E00", "strokeWidth": 2},
            "encoding": {"x": {"field": "limit", "type": "quantitative"}},
        },
    ]  # fmt: skip
    return spec


def budget_burn(
    actual: Sequence[Mapping[str, Any]],
    forecast: Sequence[Mapping[str, Any]],
    *,
    limit: float,
    unit: str,
    name: str,
    exceed_on: str | None,
) -> dict[str, Any]:
    """Cumulative actual per day (solid), the straight-line forecast to the period end (dashed) and the limit
    (rule). Rows: ``{"day": "YYYY-MM-DD", "cumulative": number}``."""
    values = [{"day": r["day"], "cumulative": chart_number(r["cumulative"]), "series": "actual"} for r in actual]
    values += [
        {"day": r["day"], "cumulative": chart_number(r["cumulative"]), "series": "forecast"} for r in forecast
    ]
    last = values[len(actual) - 1]["cumulative"] if actual else 0.0
    end = forecast[-1] if forecast else None
    description = (
        f"Budget {name}: {last:,.2f} {unit} used of a {limit:,.2f} {unit} limit"
        + (f"; forecast {chart_number(end['cumulative']):,.2f} {unit} on {end['day']}" if end else "")
        + (f"; will exceed on {exceed_on}." if exceed_on else "; not forecast to exceed.")
    )
    spec = _base(f"{name}: cumulative use, forecast and limit", description, values)
    spec["layer"] = [
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "day", "type": "temporal", "title": "day (UTC)"},
                "y": {"field": "cumulative", "type": "quantitative", "title": unit},
                "color": {"field": "series", "type": "nominal", "title": None,
                          "scale": {"domain": ["actual", "forecast"], "range": [PALETTE[0], PALETTE[1]]}},
                "strokeDash": {"field": "series", "type": "nominal", "legend": None,
                               "scale": {"domain": ["actual", "forecast"], "range": [[1, 0], [6, 4]]}},
                "tooltip": [{"field": "day", "type": "temporal"}, {"field": "series"},
                            {"field": "cumulative", "format": ",.2f"}],
            },
        },
        {
            "data": {"values": [{"limit": chart_number(limit)}]},
            "mark": {"type": "rule", "color": "#D55E00", "strokeWidth": 2},
            "encoding": {"y": {"field": "limit", "type": "quantitative"}},
        },
    ]  # fmt: skip
    return spec


def histogram(bins: Sequence[Mapping[str, Any]], *, title: str) -> dict[str, Any]:
    """Device-hours per utilization bin (rows from ``store.explore.utilization_histogram``)."""
    values = [
        {"bin": f"{round(b['lo_frac'] * 100)}-{round(b['hi_frac'] * 100)}%", "lo": b["lo_frac"],
         "device_hours": chart_number(b["device_hours"])}
        for b in bins
    ]  # fmt: skip
    total = sum(v["device_hours"] for v in values)
    low = sum(v["device_hours"] for v in values if v["lo"] < 0.3)
    description = f"{title}: {total:,.2f} device-hours with a reported utilization" + (
        f", {low / total:.0%} of them below 30% busy." if total else "; none in this window."
    )
    spec = _base(title, description, values)
    spec.update(
        {
            "mark": {"type": "bar", "color": PALETTE[2]},
            "encoding": {
                "x": {"field": "bin", "type": "ordinal", "sort": None, "title": "GPU utilization"},
                "y": {"field": "device_hours", "type": "quantitative", "title": "device-hours"},
                "tooltip": [{"field": "bin"}, {"field": "device_hours", "format": ",.2f"}],
            },
        }
    )
    return spec


def memory_stack(parts: Mapping[str, float], *, device_gb: float, device: str) -> dict[str, Any]:
    """One stacked bar of the memory terms (GB) against the device's memory (rule)."""
    values = [
        {"term": k, "gb": chart_number(v), "order": i} for i, (k, v) in enumerate(parts.items()) if v
    ]
    total = sum(v["gb"] for v in values)
    description = (
        f"Memory per device on {device}: {total:,.2f} GB needed ("
        + ", ".join(f"{v['term']} {v['gb']:,.2f} GB" for v in values)
        + f") against {device_gb:,.2f} GB on the device; "
        + ("it fits." if total <= device_gb else "it does not fit.")
    )
    names = [v["term"] for v in values]
    spec = _base("Memory per device vs device memory", description, values)
    spec["height"] = 90
    spec["layer"] = [
        {
            "mark": {"type": "bar", "height": 30},
            "encoding": {
                "x": {"field": "gb", "type": "quantitative", "title": "GB", "stack": "zero"},
                "color": {"field": "term", "type": "nominal", "title": None, "scale": _colors(names),
                          "sort": names},
                "order": {"field": "order"},
                "tooltip": [{"field": "term"}, {"field": "gb", "format": ",.2f"}],
            },
        },
        {
            "data": {"values": [{"device_gb": chart_number(device_gb)}]},
            "mark": {"type": "rule", "color": "#D55E00", "strokeWidth": 3},
            "encoding": {"x": {"field": "device_gb", "type": "quantitative"}},
        },
    ]  # fmt: skip
    return spec


def plan_scatter(
    options: Sequence[Mapping[str, Any]],
    pareto: Sequence[Mapping[str, Any]],
    *,
    slo_ms: float | None,
    y: str = "ttft_p95_ms",
) -> dict[str, Any]:
    """Cost per hour vs a latency (*y*: ``ttft_p95_ms`` or ``tpot_p95_ms``) of each feasible option, the Pareto
    frontier on that latency (line) and its target *slo_ms*."""
    what = {"ttft_p95_ms": "TTFT p95", "tpot_p95_ms": "TPOT p95"}[y]
    values = [
        {"option": f"{o['count']}x {o['device']} {o['quant']} {o['pricing']}", "kind": "option",
         "cost_per_hour_usd": chart_number(o["cost_per_hour_usd"]), "latency_ms": o[y],
         "ttft_p95_ms": o["ttft_p95_ms"], "tpot_p95_ms": o["tpot_p95_ms"]}
        for o in options
    ]  # fmt: skip
    front = [
        {"option": f"{p['count']}x {p['device']} {p['quant']}", "kind": "frontier",
         "cost_per_hour_usd": chart_number(p["cost_per_hour_usd"]), "latency_ms": p[y]}
        for p in pareto
    ]  # fmt: skip
    description = (
        f"Serve plan: {len(values)} options meeting the targets, cost per hour against {what}"
        + (f"; {len(front)} on the Pareto frontier" if front else "")
        + (f"; the cheapest is {values[0]['option']} at ${values[0]['cost_per_hour_usd']:,.2f}/h" if values else "")
        + (f"; the {what} target is {slo_ms:,.0f} ms." if slo_ms else ".")
    )
    spec = _base(f"Plan: cost vs {what}", description, values)
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "point", "filled": True, "size": 70, "color": PALETTE[0]},
            "encoding": {
                "x": {"field": "cost_per_hour_usd", "type": "quantitative", "title": "USD per hour"},
                "y": {"field": "latency_ms", "type": "quantitative", "title": f"{what} (ms)"},
                "tooltip": [{"field": "option"}, {"field": "cost_per_hour_usd", "format": ",.2f"},
                            {"field": "ttft_p95_ms"}, {"field": "tpot_p95_ms"}],
            },
        },
    ]  # fmt: skip
    if front:
        layers.append(
            {
                "data": {"values": front},
                "mark": {"type": "line", "color": PALETTE[1], "point": True},
                "encoding": {
                    "x": {"field": "cost_per_hour_usd", "type": "quantitative"},
                    "y": {"field": "latency_ms", "type": "quantitative"},
                    "order": {"field": "cost_per_hour_usd"},
                },
            }
        )
    if slo_ms:
        layers.append(
            {
                "data": {"values": [{"slo": slo_ms}]},
                "mark": {"type": "rule", "color": "#D55E00", "strokeDash": [6, 3], "strokeWidth": 2},
                "encoding": {"y": {"field": "slo", "type": "quantitative"}},
            }
        )
    spec["layer"] = layers
    return spec


def calibration_scatter(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Estimated against actual device-hours per request, with the y = x line (a perfect estimate)."""
    values = [
        {"request": f"#{r['request_id']}", "estimated": chart_number(r["estimated_device_hours"]),
         "actual": chart_number(r["actual_device_hours"])}
        for r in rows
        if r.get("estimated_device_hours") is not None and r.get("actual_device_hours") is not None
    ]  # fmt: skip
    top = max([1.0] + [max(v["estimated"], v["actual"]) for v in values])
    description = f"Plan vs actual device-hours for {len(values)} requests with metered usage" + (
        "; points above the diagonal ran longer than estimated." if values else "; none yet."
    )
    spec = _base("Plan vs actual (device-hours)", description, values)
    spec["layer"] = [
        {
            "data": {"values": [{"estimated": 0, "actual": 0}, {"estimated": top, "actual": top}]},
            "mark": {"type": "line", "color": IDLE_COLOR, "strokeDash": [4, 4]},
            "encoding": {"x": {"field": "estimated", "type": "quantitative"},
                         "y": {"field": "actual", "type": "quantitative"}},
        },
        {
            "mark": {"type": "point", "filled": True, "size": 70, "color": PALETTE[5]},
            "encoding": {
                "x": {"field": "estimated", "type": "quantitative", "title": "estimated device-hours"},
                "y": {"field": "actual", "type": "quantitative", "title": "actual device-hours"},
                "tooltip": [{"field": "request"}, {"field": "estimated"}, {"field": "actual"}],
            },
        },
    ]  # fmt: skip
    return spec
