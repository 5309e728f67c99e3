"""CPU topology, slices by threads and vCPUs, and the bad inputs around them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flopwise.catalog import load_catalog
from flopwise.catalog.cpu import (
    bandwidth_frac,
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
