"""CPU topology, slices by threads and vCPUs, and the bad inputs around them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flopwise.catalog import load_catalog
from flopwise.catalog.cpu import (
    bandwidth_frac,
    cpu_slice,
    cpu_topologies,
    cpu_topology,
    slice_for_threads,
    slice_for_vcpus,
)
from flopwise.cli.main import app
from flopwise.errors import InputError

runner = CliRunner()


def test_every_topology_row_names_a_catalog_device_with_sources():
    cat = load_catalog()
    for device_id, topo in cpu_topologies().items():
        assert device_id in cat.devices, device_id
        assert topo.source_url.startswith("https://") and topo.note
        assert topo.hw_threads >= topo.cores
        # one core never draws more than its socket's peak
        assert topo.core_bandwidth_gb_per_s < cat.devices[device_id].memory_bandwidth_gb_per_s


def test_smt_counted_honestly():
    assert cpu_topology("xeon-8480plus").cloud_vcpus_per_core == 2
    assert cpu_topology("graviton3").cloud_vcpus_per_core == 1
    cat = load_catalog()
    assert slice_for_vcpus(cat.devices["xeon-8480plus"], 4).cores == 2
    assert slice_for_vcpus(cat.devices["graviton3"], 4).cores == 4


def test_bandwidth_saturates_and_compute_scales_linearly():
    cat = load_catalog()
    g3 = cat.devices["graviton3"]
    topo = cpu_topology("graviton3")
    fracs = [bandwidth_frac(topo, g3.memory_bandwidth_gb_per_s, n) for n in (1, 4, 16, 32, 64)]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    # a quarter of the cores draws well over a quarter of the bandwidth
    assert fracs[2] > 0.6
    part = slice_for_threads(g3, 16)
    assert part.device.peak_bf16_tflop_per_s == pytest.approx(g3.peak_bf16_tflop_per_s / 4)
    assert part.device.id == "graviton3@16c"
    assert slice_for_threads(g3, 64).device is g3


def test_desktop_bandwidth_is_drawn_by_a_few_cores():
    cat = load_catalog()
    d = cat.devices["ryzen-9-7950x"]
    assert bandwidth_frac(cpu_topology(d.id), d.memory_bandwidth_gb_per_s, 4) > 0.9


@pytest.mark.parametrize(
    ("device", "threads", "needle"),
    [
        ("graviton3", 0, "1 or more"),
        ("graviton3", 65, "64 hardware threads"),
        ("xeon-8480plus", 113, "112 hardware threads"),
        ("h100-sxm", 4, "is a GPU"),
    ],
)
def test_bad_threads(device, threads, needle):
    with pytest.raises(InputError, match=needle):
        slice_for_threads(load_catalog().devices[device], threads)


def test_smt_siblings_add_no_compute():
    d = load_catalog().devices["ryzen-9-7950x"]
    assert slice_for_threads(d, 32).device is d
    assert slice_for_threads(d, 20).cores == 16


def test_cli_threads_serve_and_errors():
    out = runner.invoke(
        app,
        [
            "estimate",
            "serve",
            "-m",
            "llama-3.2-1b",
            "-d",
            "graviton3",
            "--quant",
            "Q4_0",
            "--threads",
            "4",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["device"] == "graviton3@4c"
    assert d["assumptions"]["cpu"]["cpu_cores_used"] == 4
    full = json.loads(
        runner.invoke(
            app, ["estimate", "serve", "-m", "llama-3.2-1b", "-d", "graviton3", "--quant", "Q4_0", "--json"]
        ).output
    )
    assert full["tpot_ms"] < d["tpot_ms"]
    for args in (["--threads", "0"], ["--threads", "65"]):
        bad = runner.invoke(app, ["estimate", "serve", "-m", "llama-3.2-1b", "-d", "graviton3", *args])
        assert bad.exit_code == 2 and "threads" in bad.output
    gpu = runner.invoke(app, ["estimate", "serve", "-m", "llama-3.2-1b", "-d", "h100-sxm", "--threads", "4"])
    assert gpu.exit_code == 2 and "GPU" in gpu.output
    train = runner.invoke(
        app,
        [
            "estimate",
            "train",
            "-m",
            "llama-3.2-1b",
            "-d",
            "graviton3",
            "--tokens",
            "1e6",
            "--threads",
            "8",
            "--json",
        ],
    )
    assert train.exit_code == 0, train.output
    assert json.loads(train.output)["device"] == "graviton3@8c"


def test_owned_machine_is_priced_at_its_energy_only():
    args = [
        "estimate",
        "serve",
        "-m",
        "llama-3.2-1b",
        "-d",
        "core-i9-13900k",
        "--threads",
        "8",
        "--quant",
        "Q4_K_M",
    ]
    owned = json.loads(runner.invoke(app, [*args, "--owned", "--json"]).output)
    bought = json.loads(runner.invoke(app, [*args, "--pricing", "onprem", "--json"]).output)
    assert owned["price"]["pricing"] == "onprem"
    assert float(owned["cost_per_1m_tokens_usd"]) < float(bought["cost_per_1m_tokens_usd"])
    assert not any("matmuls costed at" in w for w in owned["warnings"])  # GGUF ints run at the int8 rate
    # a phone has no on-prem profile: energy at the EIA residential average
    phone = runner.invoke(
        app, ["estimate", "serve", "-m", "llama-3.2-1b", "-d", "apple-a17-pro-cpu", "--owned", "--json"]
    )
    assert phone.exit_code == 0 and json.loads(phone.output)["price"]["source_url"].startswith(
        "https://www.eia.gov"
    )
    bad = runner.invoke(app, [*args, "--owned", "--pricing", "spot"])
    assert bad.exit_code == 2 and "owned" in bad.output


def test_bandwidth_curve_runs_through_the_published_points():
    from flopwise.catalog.cpu import _measured_bandwidth, bandwidth_curve

    for dev in ("graviton2", "graviton4"):
        curve = bandwidth_curve(dev)
        assert len(curve) >= 2 and all(p.source_url.startswith("https://") for p in curve)
        for p in curve:  # the measured points themselves
            assert _measured_bandwidth(curve, p.cores) == pytest.approx(p.gb_per_s, rel=1e-6)
        values = [_measured_bandwidth(curve, n) for n in range(1, cpu_topology(dev).cores + 1)]
        assert values == sorted(values)  # never falls with cores
        # saturating between the points: above the straight line through them, below proportional scaling
        a, b = curve[0], curve[1]
        mid = (a.cores + b.cores) // 2
        line = a.gb_per_s + (b.gb_per_s - a.gb_per_s) * (mid - a.cores) / (b.cores - a.cores)
        assert line < _measured_bandwidth(curve, mid) <= a.gb_per_s * mid / a.cores
    # Graviton2 (Arm learning path, c6g.16xlarge): one core 20.9 GB/s of 169.6 all-core
    g2 = load_catalog().devices["graviton2"]
    frac1 = bandwidth_frac(cpu_topology("graviton2"), g2.memory_bandwidth_gb_per_s, 1)
    assert frac1 == pytest.approx(20.9 / 169.6, rel=1e-6)


def test_families_without_a_published_curve_fall_back_to_littles_law_and_say_so():
    cat = load_catalog()
    part = slice_for_threads(cat.devices["ryzen-9-7950x"], 4)
    assert part.assumptions()["cpu_bandwidth_basis"].startswith("derived (fallback")
    part = slice_for_threads(cat.devices["graviton4"], 4)
    assert part.assumptions()["cpu_bandwidth_basis"].startswith("measured: 1 core(s) 37 GB/s")


def test_raptor_lake_draws_its_bandwidth_with_a_few_cores_as_published():
    # i9-14900KF memcpy: one core 32 GB/s, all 32 threads 63 GB/s (JustVugg/colibri#537); the 13900K is the same
    # silicon. The Little's-law fallback (exp through the DRAM peak) had 4 cores at 80% and 8 at 96%.
    cat = load_catalog()
    for dev in ("core-i9-13900k", "core-i9-14900k"):
        d = cat.devices[dev]
        topo = cpu_topology(dev)
        fracs = {n: bandwidth_frac(topo, d.memory_bandwidth_gb_per_s, n) for n in (1, 2, 4, 8, 24)}
        assert fracs[1] == pytest.approx(32.0 / 63.0, rel=1e-6)
        assert 0.9 < fracs[4] < fracs[8] < fracs[24] == 1.0
        part = slice_for_threads(d, 4)
        assert part.assumptions()["cpu_bandwidth_basis"].startswith("measured: 1 core(s) 32 GB/s")


def test_llama_cpp_decode_on_4_p_cores_is_kernel_bound_and_on_8_bandwidth_bound():
    from flopwise.estimate import estimate_serve
    from flopwise.models import load_models, resolve_model

    cat = load_catalog()
    arch, _ = resolve_model("llama-2-7b", load_models())
    d = cat.devices["core-i9-13900k"]
    four, eight = (
        estimate_serve(arch, slice_for_threads(d, t).device, quant="q4_0", input_tokens=1, output_tokens=128)
        for t in (4, 8)
    )
    assert four.assumptions["decode_is_memory_bound"] is False
    assert eight.assumptions["decode_is_memory_bound"] is True
    # 4 x 42.3 GFLOP/s over 13.3 GFLOP per token: 12.7 tokens/s (llama-bench on this CPU: 12.65)
    assert float(four.decode_tokens_per_s) == pytest.approx(12.7, rel=0.03)
    assert float(eight.decode_tokens_per_s) > 1.1 * float(four.decode_tokens_per_s)


def test_hybrid_threads_fill_p_cores_first_and_warn_beyond_them():
    cat = load_catalog()
    d = cat.devices["core-i9-13900k"]
    topo = cpu_topology(d.id)
    assert topo.fast_cores == 8 and topo.core_tiers == ((8, 96.0), (16, pytest.approx(35.2)))
    p8 = slice_for_threads(d, 8)
    # 8 P-cores hold 768 of the 1331 GFLOP/s (datasheet base clocks), not 8/24 of it
    assert p8.compute_frac == pytest.approx(768 / (768 + 16 * 35.2))
    assert p8.warnings == ()
    p16 = slice_for_threads(d, 16)
    # ggml splits rows evenly: 16 threads go at the E-core pace, slower than 8 P-cores alone
    assert p16.compute_frac == pytest.approx(16 * 35.2 / (768 + 16 * 35.2))
    assert p16.compute_frac < p8.compute_frac
    assert p16.warnings and "beyond its 8 performance cores" in p16.warnings[0] and "-t 8" in p16.warnings[0]
    # all cores of a hybrid CPU is still a slice (the E-core pace), with the warning
    all24 = slice_for_threads(d, 24)
    assert all24.device is not d and all24.compute_frac < 1.0 and all24.warnings
    # phones: the 6 big cores, the 2 little ones beyond
    s = cat.devices["snapdragon-8-gen-3-cpu"]
    assert cpu_topology(s.id).fast_cores == 6
    assert slice_for_threads(s, 6).warnings == () and slice_for_threads(s, 8).warnings


def test_hybrid_tiers_add_up_to_the_device_peak():
    cat = load_catalog()
    for dev, topo in cpu_topologies().items():
        if topo.core_tiers:
            total_tflop = sum(n * v for n, v in topo.core_tiers) / 1000
            assert total_tflop == pytest.approx(cat.devices[dev].peak_fp32_tflop_per_s, rel=0.02), dev


def test_cli_warns_when_threads_spill_onto_e_cores():
    out = runner.invoke(
        app,
        ["estimate", "serve", "--model", "llama-2-7b", "--device", "core-i9-13900k", "--threads", "16",
         "--quant", "q4_0", "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert any("performance cores" in w for w in data["warnings"])


# ------------------------------------------------------------------------------ per-core kernel rates


def test_kernel_rates_are_the_published_runs_per_core():
    """Each row's GFLOP/s per core is its published tokens/s x flopwise's FLOPs per token / threads (1%)."""
    import csv

    from flopwise.catalog.cpu import _KERNEL_TABLE, kernel_rates
    from flopwise.estimate import flops as fl
    from flopwise.models import load_models, resolve_model
    from flopwise.models.params import count_params

    assert kernel_rates()
    with _KERNEL_TABLE.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            assert row["source_url"].startswith("https://") and row["source_location"]
            arch, _ = resolve_model(row["ref_model"], load_models())
            n_mm = fl.matmul_params(count_params(arch).non_embedding_active, arch)
            if row["phase"] == "prefill":
                per_token = float(fl.prefill_flops(n_mm, arch, 512, 1)) / 512
            else:
                per_token = float(fl.decode_flops_per_token(n_mm, arch, 64))
            derived = float(row["ref_tokens_per_s"]) * per_token / int(row["ref_threads"]) / 1e9
            assert float(row["gflop_per_s_per_core"]) == pytest.approx(derived, rel=0.01), row["isa"]


def test_kernel_compute_counts_fast_core_equivalents():
    from flopwise.catalog.cpu import kernel_compute

    cat = load_catalog()
    k13 = cat.devices["core-i9-13900k"]
    four = kernel_compute(slice_for_threads(k13, 4).device, "q4_0")
    sixteen = kernel_compute(slice_for_threads(k13, 16).device, "q4_0")
    assert four is not None and sixteen is not None
    assert four.fast_core_equivalents == 4
    # 16 threads: 8 P + 8 E cores, all at the E-core pace (ggml's even split): 16 x 35.2 / 96
    assert sixteen.fast_core_equivalents == pytest.approx(16 * 35.2 / 96)
    assert four.prefill_flop_per_s == pytest.approx(4 * 65.5e9)
    # decode (matrix x vector) at the published 256-bit Q4_0 dot-product rate, below the prefill one: 4 x 42.3
    assert four.decode_flop_per_s == pytest.approx(4 * 42.3e9) and "42.3 for decode" in four.basis
    # a format with a prefill run but no decode run keeps the prefill rate (an upper bound) and says so
    q8 = kernel_compute(slice_for_threads(k13, 4).device, "q8_0")
    assert q8 is not None and "no published decode run" in q8.basis
    assert q8.decode_flop_per_s == q8.prefill_flop_per_s == pytest.approx(4 * 76.4e9)
    # AVX-512 parts have a published decode (matrix x vector) rate below the prefill one
    xeon = kernel_compute(cpu_slice(cat.devices["xeon-8480plus"], 8).device, "q4_0")
    assert xeon is not None and xeon.decode_flop_per_s == pytest.approx(8 * 42.3e9)
    assert xeon.decode_flop_per_s < xeon.prefill_flop_per_s
    # a GGUF format without its own run takes Q4_0's, and says so
    k4 = kernel_compute(slice_for_threads(k13, 4).device, "q4_k_m")
    assert k4 is not None and k4.prefill_flop_per_s == four.prefill_flop_per_s
    assert "q4_0's rate standing in for q4_k_m" in k4.basis
    # no run for the ISA class (ARM), or not a CPU: None (peak x efficiency stays)
    assert kernel_compute(cat.devices["raspberry-pi-5-8gb"], "q4_0") is None
    assert kernel_compute(cat.devices["h100-sxm"], "q4_0") is None


def test_serve_prefill_on_a_cpu_runs_at_the_kernel_rate():
    from flopwise.estimate import estimate_serve
    from flopwise.models import load_models, resolve_model

    cat = load_catalog()
    arch, _ = resolve_model("llama-2-7b", load_models())
    part = slice_for_threads(cat.devices["core-i9-13900k"], 4).device
    est = estimate_serve(arch, part, quant="q4_0", input_tokens=512, output_tokens=1)
    assert "65.5 GFLOP/s per core" in est.assumptions["cpu_kernel_rates"]
    # 4 P-cores x 65.5 GFLOP/s over 13.3 GFLOP per prompt token: about 19.7 tokens/s (llama-bench: 22.44)
    assert float(est.prefill_tokens_per_s) == pytest.approx(19.7, rel=0.05)
    bf16 = estimate_serve(arch, part, quant="bf16", input_tokens=512, output_tokens=1)
    assert "cpu_kernel_rates" not in bf16.assumptions
