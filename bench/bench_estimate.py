"""Configurations per second of estimate_serve and estimate_train: one vectorized call over a grid of N
configurations vs a Python loop of N scalar calls, in one process.

Run: ``python bench/bench_estimate.py [N]`` (default N = 10000; the scalar loop runs on a sample and is
extrapolated per configuration).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from flopwise.catalog import load_catalog
from flopwise.estimate import estimate_serve, estimate_train
from flopwise.models import load_models

# the built-in catalog's H100 SXM and the registry's Llama 3.1 8B (the same records the CLI uses)
H100 = load_catalog().devices["h100-sxm"]
LLAMA31_8B = load_models().resolve("llama-3.1-8b")


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_serve(n: int, sample: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    batch = rng.integers(1, 257, n)
    n_in = rng.integers(16, 8193, n)
    n_out = rng.integers(16, 2049, n)
    price = rng.uniform(1.0, 5.0, n)
    t0 = time.perf_counter()
    estimate_serve(
        LLAMA31_8B,
        H100,
        batch=batch,
        input_tokens=n_in,
        output_tokens=n_out,
        price_usd_per_device_h=price,
        grid_gco2e_per_kwh=400.0,
    )
    vec_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(sample):
        estimate_serve(
            LLAMA31_8B,
            H100,
            batch=int(batch[i]),
            input_tokens=int(n_in[i]),
            output_tokens=int(n_out[i]),
            price_usd_per_device_h=float(price[i]),
            grid_gco2e_per_kwh=400.0,
        )
    loop_s = time.perf_counter() - t0
    return _rate(n, vec_s), _rate(sample, loop_s)


def bench_train(n: int, sample: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    tokens = 10.0 ** rng.uniform(9, 13, n)
    devices = 8.0 * rng.integers(1, 129, n)
    mfu = rng.uniform(0.2, 0.5, n)
    price = rng.uniform(1.0, 5.0, n)
    t0 = time.perf_counter()
    estimate_train(
        LLAMA31_8B,
        H100,
        tokens=tokens,
        device_count=devices,
        mfu_frac=mfu,
        price_usd_per_device_h=price,
        grid_gco2e_per_kwh=400.0,
    )
    vec_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(sample):
        estimate_train(
            LLAMA31_8B,
            H100,
            tokens=float(tokens[i]),
            device_count=int(devices[i]),
            mfu_frac=float(mfu[i]),
            price_usd_per_device_h=float(price[i]),
            grid_gco2e_per_kwh=400.0,
        )
    loop_s = time.perf_counter() - t0
    return _rate(n, vec_s), _rate(sample, loop_s)


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 10_000
    sample = min(n, 1000)
    print(f"grid of {n} configurations; scalar loop timed on {sample} of them")
    print(f"{'function':<16}{'vectorized cfg/s':>20}{'scalar loop cfg/s':>20}{'ratio':>10}")
    for name, fn in (("estimate_serve", bench_serve), ("estimate_train", bench_train)):
        vec, loop = fn(n, sample)
        print(f"{name:<16}{vec:>20,.0f}{loop:>20,.0f}{vec / loop:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
