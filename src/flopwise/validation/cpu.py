"""CPU and edge decode runs with their thread counts (``data/cases_cpu.csv``) against ``estimate_serve`` on the
part of the CPU the threads use (:func:`flopwise.catalog.cpu.slice_for_threads`).

Two scores: the median |relative error| of decode tokens/s, and thread scaling: for each source x device x model
x quant with several thread counts, the error of the ratio ``rate(threads) / rate(fewest threads)``. Prompt
processing runs (``prefill_tokens_per_s``: compute-bound, so they show where threads land on a hybrid CPU's P and
E cores) are scored apart: their thread scaling is reported as ``prefill_scaling``; the decode scores and the
targets are decode only. Nothing here is
fitted to these cases (bandwidth vs cores comes from published STREAM-style measurements where
``catalog/data/cpu_bandwidth.csv`` has them, else from Little's law; hybrid P/E core speeds from datasheets;
llama.cpp's per-core kernel rates from other machines' published runs, ``catalog/data/cpu_kernels.csv``; the
efficiencies from the GPU/CPU calibration), so leave-one-source-out equals the in-sample score; both are reported.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median
from typing import Any

from flopwise.catalog.types import Device
from flopwise.errors import CatalogFileError

__all__ = ["CpuCase", "CpuValidation", "load_cpu_cases", "run_cpu_validation"]

CASES_PATH = Path(__file__).with_name("data") / "cases_cpu.csv"


CATEGORIES = ("decode_tokens_per_s", "prefill_tokens_per_s")


@dataclass(frozen=True)
class CpuCase:
    id: str
    category: str
    model: str
    device: str
    threads: int
    quant: str
    input_tokens: int
    output_tokens: int
    measured: float
    source_url: str
    #: the tested machine's DRAM peak where the source states it and it differs from the catalog device's (e.g.
    #: DDR5-6400 in a 13900K the catalog lists with DDR5-5600); None: the catalog's
    memory_gb_per_s: float | None = None


@dataclass(frozen=True)
class CpuValidation:
    rows: tuple[dict[str, Any], ...]
    scaling: tuple[dict[str, Any], ...]
    median_abs_rel_error: float
    scaling_median_abs_rel_error: float
    scaling_max_abs_rel_error: float
    prefill_scaling: tuple[dict[str, Any], ...] = ()
    prefill_median_abs_rel_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": list(self.rows),
            "thread_scaling": list(self.scaling),
            "prefill_thread_scaling": list(self.prefill_scaling),
            "prefill_median_abs_rel_error": self.prefill_median_abs_rel_error,
            "median_abs_rel_error": self.median_abs_rel_error,
            "leave_one_source_out_median_abs_rel_error": self.median_abs_rel_error,
            "scaling_median_abs_rel_error": self.scaling_median_abs_rel_error,
            "scaling_max_abs_rel_error": self.scaling_max_abs_rel_error,
            "fitted": "nothing (leave-one-source-out = in-sample)",
        }


def load_cpu_cases(path: Path = CASES_PATH) -> tuple[CpuCase, ...]:
    out = []
    with path.open(encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                out.append(
                    CpuCase(
                        row["id"],
                        row["category"],
                        row["model"],
                        row["device"],
                        int(row["threads"]),
                        row["quant"],
                        max(1, int(row["input_tokens"] or 0)),
                        max(1, int(row["output_tokens"] or 0)),
                        float(row["measured"]),
                        row["source_url"],
                        _tested_memory(row.get("memory_gb_per_s")),
                    )
                )
            except (KeyError, ValueError) as err:
                raise CatalogFileError(str(path), line, None, f"bad CPU case row: {err}") from None
            if row["category"] not in CATEGORIES:
                raise CatalogFileError(str(path), line, "category", f"must be one of {', '.join(CATEGORIES)}")
            if not row["source_url"].startswith("https://"):
                raise CatalogFileError(str(path), line, "source_url", "is not an https URL")
    return tuple(out)


def _tested_memory(text: str | None) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    v = float(text)
    if not v > 0:
        raise ValueError(f"memory_gb_per_s must be > 0 GB/s (or empty for the catalog's), got {text!r}")
    return v


def _as_tested(device: Device, case: CpuCase) -> Device:
    """*device* with the tested machine's DRAM peak where the case states one (the published run's memory, not
    the catalog's configuration); the CPU slice then scales from it, so a run limited by per-core throughput is
    unchanged and a bandwidth-bound one moves with the DRAM."""
    if case.memory_gb_per_s is None:
        return device
    return replace(device, memory_bandwidth_gb_per_s=case.memory_gb_per_s)


def run_cpu_validation(cases: tuple[CpuCase, ...] | None = None) -> CpuValidation:
    from flopwise.catalog import load_catalog
    from flopwise.catalog.cpu import slice_for_threads
    from flopwise.estimate import estimate_serve
    from flopwise.models import load_models, resolve_model

    cat = load_catalog()
    models = load_models()
    rows = []
    for c in cases if cases is not None else load_cpu_cases():
        part = slice_for_threads(_as_tested(cat.devices[c.device], c), c.threads)
        arch, _ = resolve_model(c.model, models)
        est = estimate_serve(
            arch, part.device, quant=c.quant, input_tokens=c.input_tokens, output_tokens=c.output_tokens
        )
        prefill = c.category == "prefill_tokens_per_s"
        e = float(est.prefill_tokens_per_s if prefill else est.decode_tokens_per_s)
        rows.append(
            {
                "id": c.id,
                "category": c.category,
                "device": c.device,
                "quant": c.quant,
                "model": c.model,
                "threads": c.threads,
                "measured": c.measured,
                "estimated": round(e, 3),
                "rel_error": round((e - c.measured) / c.measured, 4),
                "memory_gb_per_s": part.socket.memory_bandwidth_gb_per_s,
                "bandwidth_basis": "measured curve"
                if str(part.assumptions()["cpu_bandwidth_basis"]).startswith("measured")
                else "Little's-law fallback",
                "source_url": c.source_url,
            }
        )
    decode = [r for r in rows if r["category"] == "decode_tokens_per_s"]
    scaling = _scaling(decode)
    abs_err = [abs(r["rel_error"]) for r in decode]
    s_err = [abs(s["rel_error"]) for s in scaling] or [0.0]
    pp_rows = [r for r in rows if r["category"] == "prefill_tokens_per_s"]
    prefill = _scaling(pp_rows)
    pp_err = median(abs(r["rel_error"]) for r in pp_rows) if pp_rows else None
    return CpuValidation(
        tuple(rows), tuple(scaling), median(abs_err), median(s_err), max(s_err), tuple(prefill), pp_err
    )


def _scaling(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source x device x model x quant with several thread counts: the ratio to the fewest threads."""
    groups: dict[tuple[str, str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source_url"], r["device"], r["model"], r["quant"]), []).append(r)
    scaling = []
    for (_src, dev, model, _quant), rs in groups.items():
        if len({r["threads"] for r in rs}) < 2:
            continue
        base = min(rs, key=lambda r: r["threads"])
        for r in rs:
            if r is base:
                continue
            m = r["measured"] / base["measured"]
            e = r["estimated"] / base["estimated"]
            scaling.append(
                {
                    "device": dev,
                    "model": model,
                    "threads": r["threads"],
                    "vs_threads": base["threads"],
                    "measured_ratio": round(m, 3),
                    "estimated_ratio": round(e, 3),
                    "rel_error": round((e - m) / m, 4),
                }
            )
    return scaling
