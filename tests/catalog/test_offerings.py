"""Checks of the built-in cloud offerings and on-prem cost profiles (catalog/data/offerings/*.csv, onprem.csv)."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from flopwise.catalog.loader import BUILTIN_DATA_DIR, read_offerings, read_onprem, read_regions

OFFERINGS_DIR = BUILTIN_DATA_DIR / "offerings"
OFFERING_FILES = sorted(OFFERINGS_DIR.glob("*.csv"))
OFFERING_COLUMNS = [
    "id", "provider", "instance_type", "region", "device_id", "device_count", "vcpus", "ram_gb",
    "on_demand_usd_per_h", "spot_usd_per_h", "reserved_usd_per_h", "reserved_term", "source_url", "retrieved",
    "basis", "note",
]  # fmt: skip
ONPREM_COLUMNS = [
    "device_id", "purchase_usd", "server_overhead_frac", "lifetime_years", "electricity_usd_per_kwh", "pue",
    "source_url", "retrieved", "basis", "note",
]  # fmt: skip
#: the fixed device-id convention of the catalog (devices/*.csv must define exactly these)
_DEVICE_ID_TEXT = """v100-sxm2-16gb v100-sxm2-32gb v100-pcie-16gb t4 a10 a10g a40 a100-sxm-40gb a100-sxm-80gb a100-pcie-40gb
    a100-pcie-80gb a800-sxm-80gb l4 l40 l40s h100-sxm h100-pcie h100-nvl h800-sxm h20 h200-sxm h200-nvl gh200 b200
    gb200 b300 gb300 rtx-a4000 rtx-a5000 rtx-a6000 rtx-4000-ada rtx-5000-ada rtx-6000-ada rtx-pro-6000-blackwell
    rtx-3060 rtx-3060-ti rtx-3070 rtx-3070-ti rtx-3080-10gb rtx-3080-12gb rtx-3080-ti rtx-3090 rtx-3090-ti rtx-4060
    rtx-4060-ti-8gb rtx-4060-ti-16gb rtx-4070 rtx-4070-super rtx-4070-ti rtx-4070-ti-super rtx-4080 rtx-4080-super
    rtx-4090 rtx-5070 rtx-5070-ti rtx-5080 rtx-5090 jetson-agx-orin-64gb jetson-orin-nano-8gb mi210 mi250x mi300x
    mi325x mi355x radeon-rx-7900-xtx gaudi2 gaudi3 tpu-v4 tpu-v5e tpu-v5p tpu-v6e trainium1 trainium2 inferentia2
    apple-m1-8c apple-m1-pro-16c apple-m1-max-32c apple-m1-ultra-64c apple-m2-10c apple-m2-pro-19c apple-m2-max-38c
    apple-m2-ultra-76c apple-m3-10c apple-m3-pro-18c apple-m3-max-40c apple-m4-10c apple-m4-pro-20c apple-m4-max-40c
    apple-m1-max-24c apple-m2-max-30c apple-m3-max-30c apple-m4-max-32c apple-m2-ultra-60c apple-m3-ultra-80c
    apple-m3-ultra-60c
    xeon-8480plus xeon-8592plus xeon-6980p epyc-9654 epyc-9965 epyc-9755 graviton3 graviton4 grace ryzen-9-7950x
    ryzen-9-9950x core-i9-13900k core-i9-14900k raspberry-pi-5-8gb snapdragon-8-elite
    graviton2 ampere-altra-q80-30 xeon-8259cl snapdragon-8-gen-3-cpu apple-a17-pro-cpu p100-pcie-16gb tesla-p4
    tesla-k80-gk210 t4g tesla-m60-gm204"""
DEVICE_IDS = frozenset(_DEVICE_ID_TEXT.split())
GPU_CLOUDS = ("lambda", "coreweave", "nebius")
#: providers whose prices differ by region: each needs at least this many regions
REGIONAL_PROVIDERS = ("aws", "gcp", "azure")


@pytest.fixture(scope="module")
def offerings():
    rows = []
    for path in OFFERING_FILES:
        rows.extend(o for o, _, _ in read_offerings(path))
    return rows


@pytest.fixture(scope="module")
def onprem():
    return {p.device_id: p for p, _, _ in read_onprem(BUILTIN_DATA_DIR / "onprem.csv")}


@pytest.fixture(scope="module")
def region_ids():
    return {r.id for r, _, _ in read_regions(BUILTIN_DATA_DIR / "regions.csv")}


@pytest.mark.parametrize("path", OFFERING_FILES, ids=lambda p: p.name)
def test_offering_file_header_and_provider(path: Path):
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == OFFERING_COLUMNS
        rows = list(reader)
    providers = {row["provider"] for row in rows}
    if path.name == "hand-entered.csv":  # rows no fetcher covers, of any provider, each marked as such
        assert all(row["note"].startswith("hand-entered") for row in rows)
        return
    assert providers == {path.stem}, f"{path.name} must hold only provider {path.stem!r}"


def test_onprem_header():
    with (BUILTIN_DATA_DIR / "onprem.csv").open(encoding="utf-8", newline="") as f:
        assert csv.DictReader(f).fieldnames == ONPREM_COLUMNS


def test_at_least_60_offerings_with_unique_ids(offerings):
    assert len(offerings) >= 60
    dupes = [k for k, n in Counter(o.id for o in offerings).items() if n > 1]
    assert not dupes


def test_offering_id_is_provider_instance_region(offerings):
    for o in offerings:
        assert o.id == f"{o.provider}:{o.instance_type}:{o.region.split(':', 1)[1]}", o.id
        assert o.region.startswith(f"{o.provider}:"), o.id


def test_every_offering_has_a_positive_price_and_provenance(offerings):
    for o in offerings:
        prices = [p for p in (o.on_demand_usd_per_h, o.spot_usd_per_h, o.reserved_usd_per_h) if p is not None]
        assert prices, f"{o.id} has no price"
        assert all(isinstance(p, Decimal) and p > 0 for p in prices), o.id
        assert o.device_count >= 1 and o.vcpus >= 1 and o.ram_gb > 0, o.id
        assert o.source_url.startswith("https://"), o.id
        assert o.basis in ("datasheet", "measured", "derived"), o.id
        assert len(o.retrieved) == 10 and o.retrieved[4] == "-", o.id
        if o.reserved_usd_per_h is not None:
            assert o.reserved_term in ("1y", "3y"), o.id
            assert o.on_demand_usd_per_h is None or o.reserved_usd_per_h < o.on_demand_usd_per_h, o.id
        if o.spot_usd_per_h is not None:
            assert o.on_demand_usd_per_h is None or o.spot_usd_per_h < o.on_demand_usd_per_h, o.id
            assert o.basis in ("measured", "derived"), f"{o.id}: spot prices vary, basis must say so"


def test_offering_regions_exist(offerings, region_ids):
    missing = sorted({o.region for o in offerings} - region_ids)
    assert not missing, f"offering regions not in regions.csv: {missing}"


def test_offering_device_ids_follow_the_convention(offerings):
    unknown = sorted({o.device_id for o in offerings} - DEVICE_IDS)
    assert not unknown


def test_regional_clouds_have_at_least_three_regions(offerings):
    regions = defaultdict(set)
    for o in offerings:
        regions[o.provider].add(o.region)
    for provider in REGIONAL_PROVIDERS:
        assert len(regions[provider]) >= 3, (provider, regions[provider])


def test_gpu_clouds_have_at_least_three_rows(offerings):
    counts = Counter(o.provider for o in offerings)
    for provider in GPU_CLOUDS:
        assert counts[provider] >= 3, provider


def test_spot_checks(offerings):
    by_id = {o.id: o for o in offerings}
    # AWS p5.48xlarge: 8x H100 SXM, $55.04/h on-demand in us-east-1 (SkyPilot v9 catalog; was $98.32 before
    # AWS cut P5 prices in June 2025)
    p5 = by_id["aws:p5.48xlarge:us-east-1"]
    assert (p5.device_id, p5.device_count, p5.on_demand_usd_per_h) == ("h100-sxm", 8, Decimal("55.04"))
    assert p5.spot_usd_per_h is not None and p5.spot_usd_per_h < p5.on_demand_usd_per_h
    # AWS g5.xlarge: one A10G, dearer in Ireland than in N. Virginia
    assert by_id["aws:g5.xlarge:us-east-1"].on_demand_usd_per_h == Decimal("1.006")
    assert (
        by_id["aws:g5.xlarge:eu-west-1"].on_demand_usd_per_h
        > by_id["aws:g5.xlarge:us-east-1"].on_demand_usd_per_h
    )
    # GCP TPU v5e single-host slice of 8 chips: $1.20 per chip-hour on demand
    v5e = by_id["gcp:tpu-v5litepod-8:us-central1"]
    assert (v5e.device_count, v5e.on_demand_usd_per_h / v5e.device_count) == (8, Decimal("1.2"))
    # Lambda 8x H100 SXM at $3.99/GPU-h (SkyPilot v9 Lambda catalog)
    lam = by_id["lambda:gpu_8x_h100_sxm5:us-east-1"]
    assert lam.on_demand_usd_per_h / lam.device_count == Decimal("3.99")
    # Azure ND H100 v5 has 8 GPUs (the source says 12)
    assert by_id["azure:Standard_ND96isr_H100_v5:eastus"].device_count == 8


def test_h100_per_gpu_hour_is_plausible_everywhere(offerings):
    for o in offerings:
        if o.device_id == "h100-sxm" and o.on_demand_usd_per_h is not None:
            per_gpu = o.on_demand_usd_per_h / o.device_count
            # Azure West US lists ND H100 v5 at $127.816/h = $15.98 per GPU-hour
            assert Decimal("1.5") < per_gpu < Decimal("20"), o.id


def test_onprem_profiles_are_positive_and_plausible(onprem):
    assert len(onprem) >= 40
    for p in onprem.values():
        assert p.purchase_usd > 0, p.device_id
        assert 0 <= p.server_overhead_frac <= 1.5, p.device_id
        assert 2 <= p.lifetime_years <= 7, p.device_id
        assert Decimal("0.03") < p.electricity_usd_per_kwh < Decimal("0.5"), p.device_id
        assert 1.0 <= p.pue <= 2.0, p.device_id
        assert p.source_url.startswith("https://"), p.device_id
        assert p.basis in ("datasheet", "measured", "derived"), p.device_id
        assert p.note, p.device_id


def test_onprem_device_ids_follow_the_convention(onprem):
    assert not sorted(set(onprem) - DEVICE_IDS)


def test_onprem_covers_each_segment(onprem):
    for device_id in ("h100-sxm", "b200", "gaudi3", "rtx-6000-ada", "rtx-4090", "rtx-5090", "apple-m4-max-40c",
                      "epyc-9654", "xeon-8480plus", "ryzen-9-9950x", "jetson-orin-nano-8gb"):  # fmt: skip
        assert device_id in onprem, device_id


def test_onprem_spot_checks(onprem):
    # NVIDIA launch MSRPs
    assert onprem["rtx-4090"].purchase_usd == Decimal("1599")
    assert onprem["rtx-5090"].purchase_usd == Decimal("1999")
    # Intel Computex 2024: $125,000 per 8-accelerator Gaudi 3 kit
    assert onprem["gaudi3"].purchase_usd * 8 == Decimal("125000")
    # datacenter parts live in servers, consumer cards and Macs do not add a server
    assert onprem["h100-sxm"].server_overhead_frac > 0.2
    assert onprem["rtx-4090"].server_overhead_frac == 0
    assert onprem["apple-m4-max-40c"].server_overhead_frac == 0
    assert onprem["h100-sxm"].lifetime_years > onprem["rtx-4090"].lifetime_years


def test_device_ids_exist_in_the_loaded_catalog():
    if not list((BUILTIN_DATA_DIR / "devices").glob("*.csv")):
        pytest.skip("devices/*.csv not in the catalog yet; the loader's reference check cannot run")
    from flopwise.catalog import load_catalog

    cat = load_catalog()  # raises CatalogFileError when an offering or profile names an unknown device
    assert {o.device_id for o in cat.offerings} <= set(cat.devices)
    assert set(cat.onprem) <= set(cat.devices)
    assert cat.offerings_for("h100-sxm")
