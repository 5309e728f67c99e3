"""The non-NVIDIA device files: every required id is there, spot values match the datasheets, derived
values follow the rule their note states, and every name and alias resolves to its own device.

Files: devices/{amd,intel,google,aws,apple,cpu,edge}.csv under flopwise/catalog/data.
"""

from __future__ import annotations

import math
from urllib.parse import urlparse

import pytest

from flopwise.catalog import Catalog, Device
from flopwise.catalog.loader import BUILTIN_DATA_DIR, CatalogData, read_catalog_dir, read_devices

#: relative tolerance for a value copied from a datasheet (they print 3-5 significant digits)
DATASHEET_RTOL = 1e-3
#: relative tolerance where the brief or the datasheet rounds (e.g. Gaudi 2 "2.46 TB/s" for 2457.6 GB/s)
ROUNDED_RTOL = 1e-2

DEVICES_DIR = BUILTIN_DATA_DIR / "devices"
FILES = ("amd.csv", "intel.csv", "google.csv", "aws.csv", "apple.csv", "cpu.csv", "edge.csv")

REQUIRED_IDS = {
    "amd.csv": {"mi210", "mi250x", "mi300x", "mi325x", "mi355x", "radeon-rx-7900-xtx"},
    "intel.csv": {"gaudi2", "gaudi3"},
    "google.csv": {"tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e"},
    "aws.csv": {"trainium1", "trainium2", "inferentia2"},
    "apple.csv": {
        "apple-m1-8c",
        "apple-m1-pro-16c",
        "apple-m1-max-32c",
        "apple-m1-ultra-64c",
        "apple-m2-10c",
        "apple-m2-pro-19c",
        "apple-m2-max-38c",
        "apple-m2-ultra-76c",
        "apple-m3-10c",
        "apple-m3-pro-18c",
        "apple-m3-max-40c",
        "apple-m4-10c",
        "apple-m4-pro-20c",
        "apple-m4-max-40c",
        "apple-m1-max-24c",
        "apple-m2-max-30c",
        "apple-m3-max-30c",
        "apple-m4-max-32c",
        "apple-m2-ultra-60c",
        "apple-m3-ultra-80c",
    },
    "cpu.csv": {
        "xeon-8480plus",
        "xeon-8592plus",
        "xeon-6980p",
        "epyc-9654",
        "epyc-9965",
        "epyc-9755",
        "graviton3",
        "graviton4",
        "grace",
        "ryzen-9-7950x",
        "ryzen-9-9950x",
        "core-i9-13900k",
        "core-i9-14900k",
    },
    "edge.csv": {"jetson-agx-orin-64gb", "jetson-orin-nano-8gb", "raspberry-pi-5-8gb", "snapdragon-8-elite"},
}

#: the publisher each file's rows must link to (datasheets, not third-party summaries)
SOURCE_DOMAINS = {
    "amd.csv": ("amd.com",),
    "intel.csv": ("intel.com",),
    "google.csv": ("cloud.google.com",),
    "aws.csv": ("awsdocs-neuron.readthedocs-hosted.com", "aws.amazon.com"),
    "apple.csv": ("apple.com",),
    "cpu.csv": ("intel.com", "amd.com", "aws.amazon.com", "nvidia.com", "amperecomputing.com"),
    "edge.csv": ("nvidia.com", "raspberrypi.com", "qualcomm.com", "apple.com"),
}


def _read(name: str) -> list[Device]:
    return [device for device, _path, _line in read_devices(DEVICES_DIR / name)]


@pytest.fixture(scope="module")
def mine() -> dict[str, Device]:
    """The devices of the seven files, by id."""
    return {d.id: d for name in FILES for d in _read(name)}


@pytest.fixture(scope="module")
def builtin() -> dict[str, Device]:
    """Every built-in device (all devices/*.csv, ids unique across files); offerings are not involved."""
    return dict(read_catalog_dir(BUILTIN_DATA_DIR).devices)


# ------------------------------------------------------------------------------------------ presence


@pytest.mark.parametrize("name", FILES)
def test_file_holds_its_required_ids(name: str) -> None:
    ids = {d.id for d in _read(name)}
    assert REQUIRED_IDS[name] <= ids, f"{name} lacks {sorted(REQUIRED_IDS[name] - ids)}"


def test_required_ids_are_in_the_builtin_catalog(builtin: dict[str, Device]) -> None:
    required = set().union(*REQUIRED_IDS.values())
    assert required <= builtin.keys(), sorted(required - builtin.keys())


@pytest.mark.parametrize("name", FILES)
def test_rows_cite_the_vendor_and_explain_themselves(name: str) -> None:
    for d in _read(name):
        for url in d.source_url.split("|"):
            host = urlparse(url.strip()).hostname or ""
            assert any(host == dom or host.endswith("." + dom) for dom in SOURCE_DOMAINS[name]), (d.id, url)
        assert d.note, d.id
        assert d.retrieved, d.id


# ------------------------------------------------------------------------------- datasheet spot values

# (device id, field, expected, rtol, where the figure is printed)
SPOT_VALUES = [
    # AMD Instinct MI300X product page / CDNA 3 whitepaper: 192 GB HBM3, 5.3 TB/s, 750 W,
    # bf16 1307.4 dense (2614.9 is the sparse headline), fp8 2614.9 dense, TF32 653.7.
    ("mi300x", "memory_gb", 192, DATASHEET_RTOL, "amd.com MI300X"),
    ("mi300x", "memory_bandwidth_gb_per_s", 5300, DATASHEET_RTOL, "amd.com MI300X"),
    ("mi300x", "peak_bf16_tflop_per_s", 1307.4, DATASHEET_RTOL, "amd.com MI300X"),
    ("mi300x", "sparse_bf16_tflop_per_s", 2614.9, DATASHEET_RTOL, "amd.com MI300X"),
    ("mi300x", "peak_fp8_tflop_per_s", 2614.9, DATASHEET_RTOL, "amd.com MI300X"),
    ("mi300x", "peak_tf32_tflop_per_s", 653.7, DATASHEET_RTOL, "amd.com MI300X"),
    ("mi300x", "tdp_w", 750, DATASHEET_RTOL, "amd.com MI300X"),
    ("mi325x", "memory_gb", 256, DATASHEET_RTOL, "amd.com MI325X"),
    ("mi325x", "memory_bandwidth_gb_per_s", 6000, DATASHEET_RTOL, "amd.com MI325X"),
    ("mi325x", "tdp_w", 1000, DATASHEET_RTOL, "amd.com MI325X"),
    ("mi355x", "memory_gb", 288, DATASHEET_RTOL, "amd.com MI355X"),
    ("mi355x", "memory_bandwidth_gb_per_s", 8000, DATASHEET_RTOL, "amd.com MI355X"),
    ("mi250x", "peak_bf16_tflop_per_s", 383.0, DATASHEET_RTOL, "amd.com MI250X"),
    ("mi250x", "memory_gb", 128, DATASHEET_RTOL, "amd.com MI250X"),
    ("mi210", "peak_bf16_tflop_per_s", 181.0, DATASHEET_RTOL, "amd.com MI210"),
    ("mi210", "memory_gb", 64, DATASHEET_RTOL, "amd.com MI210"),
    ("radeon-rx-7900-xtx", "memory_bandwidth_gb_per_s", 960, DATASHEET_RTOL, "amd.com RX 7900 XTX"),
    ("radeon-rx-7900-xtx", "peak_fp32_tflop_per_s", 61.4, DATASHEET_RTOL, "amd.com RX 7900 XTX"),
    # cloud.google.com/tpu/docs/v5e: 197 bf16 TFLOPs, 394 int8 TOPs, 16 GB HBM2 at 819 GBps.
    ("tpu-v5e", "peak_bf16_tflop_per_s", 197, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v5e"),
    ("tpu-v5e", "peak_int8_tflop_per_s", 394, ROUNDED_RTOL, "cloud.google.com/tpu/docs/v5e"),
    ("tpu-v5e", "memory_gb", 16, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v5e"),
    ("tpu-v5e", "memory_bandwidth_gb_per_s", 819, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v5e"),
    ("tpu-v4", "peak_bf16_tflop_per_s", 275, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v4"),
    ("tpu-v4", "memory_bandwidth_gb_per_s", 1200, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v4"),
    ("tpu-v4", "tdp_w", 192, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v4 measured max power"),
    ("tpu-v5p", "peak_bf16_tflop_per_s", 459, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v5p"),
    ("tpu-v5p", "memory_bandwidth_gb_per_s", 2765, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v5p"),
    ("tpu-v6e", "peak_bf16_tflop_per_s", 918, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v6e"),
    ("tpu-v6e", "peak_int8_tflop_per_s", 1836, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v6e"),
    ("tpu-v6e", "memory_gb", 32, DATASHEET_RTOL, "cloud.google.com/tpu/docs/v6e"),
    # Intel Gaudi 2: 96 GB HBM2E at 2.46 TB/s (6 stacks x 409.6 GB/s); MME bf16 432, fp8 865.
    ("gaudi2", "memory_gb", 96, DATASHEET_RTOL, "intel.com Gaudi 2"),
    ("gaudi2", "memory_bandwidth_gb_per_s", 2460, ROUNDED_RTOL, "intel.com Gaudi 2"),
    ("gaudi2", "peak_bf16_tflop_per_s", 432, DATASHEET_RTOL, "Gaudi 3 whitepaper comparison"),
    ("gaudi2", "peak_fp8_tflop_per_s", 865, DATASHEET_RTOL, "Gaudi 3 whitepaper comparison"),
    ("gaudi3", "memory_gb", 128, DATASHEET_RTOL, "Gaudi 3 whitepaper"),
    ("gaudi3", "memory_bandwidth_gb_per_s", 3700, DATASHEET_RTOL, "Gaudi 3 whitepaper"),
    (
        "gaudi3",
        "peak_bf16_tflop_per_s",
        1835 * 1.6 / 1.75,
        DATASHEET_RTOL,
        "Gaudi 3 whitepaper at the 1.6 GHz shipping MME clock",
    ),
    # AWS Neuron architecture docs, per chip.
    ("trainium2", "peak_bf16_tflop_per_s", 667, DATASHEET_RTOL, "Neuron docs Trainium2"),
    ("trainium2", "peak_fp8_tflop_per_s", 1299, DATASHEET_RTOL, "Neuron docs Trainium2"),
    ("trainium2", "memory_gb", 96, DATASHEET_RTOL, "Neuron docs Trainium2"),
    ("trainium2", "memory_bandwidth_gb_per_s", 2900, DATASHEET_RTOL, "Neuron docs Trainium2"),
    ("trainium1", "peak_bf16_tflop_per_s", 190, DATASHEET_RTOL, "Neuron docs Trainium"),
    ("trainium1", "memory_gb", 32, DATASHEET_RTOL, "Neuron docs Trainium"),
    ("trainium1", "memory_bandwidth_gb_per_s", 820, DATASHEET_RTOL, "Neuron docs Trainium"),
    ("inferentia2", "peak_bf16_tflop_per_s", 190, DATASHEET_RTOL, "Neuron docs Inferentia2"),
    ("inferentia2", "memory_gb", 32, DATASHEET_RTOL, "Neuron docs Inferentia2"),
    ("inferentia2", "memory_bandwidth_gb_per_s", 820, DATASHEET_RTOL, "Neuron docs Inferentia2"),
    # Apple newsroom: M2 Ultra 76-core GPU 27.2 TFLOPS, 800 GB/s, up to 192 GB.
    ("apple-m2-ultra-76c", "memory_bandwidth_gb_per_s", 800, DATASHEET_RTOL, "apple.com M2 Ultra"),
    ("apple-m2-ultra-76c", "peak_fp32_tflop_per_s", 27.2, DATASHEET_RTOL, "apple.com M2 Ultra"),
    ("apple-m2-ultra-76c", "memory_gb", 192, DATASHEET_RTOL, "apple.com M2 Ultra"),
    ("apple-m1-8c", "peak_fp32_tflop_per_s", 2.6, DATASHEET_RTOL, "apple.com M1"),
    ("apple-m1-max-32c", "peak_fp32_tflop_per_s", 10.4, DATASHEET_RTOL, "apple.com M1 Max"),
    ("apple-m2-max-38c", "peak_fp32_tflop_per_s", 13.6, DATASHEET_RTOL, "apple.com M2 Max"),
    ("apple-m3-ultra-80c", "memory_gb", 512, DATASHEET_RTOL, "apple.com M3 Ultra"),
    # Jetson AGX Orin 64GB: 204.8 GB/s, 275 sparse int8 TOPS (GPU + DLA) -> 137.5 dense, 60 W.
    ("jetson-agx-orin-64gb", "memory_bandwidth_gb_per_s", 204.8, DATASHEET_RTOL, "nvidia.com Jetson Orin"),
    ("jetson-agx-orin-64gb", "sparse_int8_tflop_per_s", 275, DATASHEET_RTOL, "nvidia.com Jetson Orin"),
    ("jetson-agx-orin-64gb", "peak_int8_tflop_per_s", 137.5, DATASHEET_RTOL, "half the sparse headline"),
    ("jetson-orin-nano-8gb", "memory_gb", 8, DATASHEET_RTOL, "nvidia.com Jetson Orin"),
    # Raspberry Pi 5: LPDDR4X-4267 on a 32-bit bus; 4x Cortex-A76 at 2.4 GHz.
    ("raspberry-pi-5-8gb", "memory_bandwidth_gb_per_s", 17.07, ROUNDED_RTOL, "4267 MT/s x 4 B"),
    ("raspberry-pi-5-8gb", "peak_fp32_tflop_per_s", 0.1536, DATASHEET_RTOL, "4 x 16 FLOP x 2.4 GHz"),
    ("snapdragon-8-elite", "memory_bandwidth_gb_per_s", 85, ROUNDED_RTOL, "LPDDR5X-10667 x 8 B"),
]


@pytest.mark.parametrize(("device_id", "field", "expected", "rtol", "where"), SPOT_VALUES)
def test_spot_value(
    mine: dict[str, Device], device_id: str, field: str, expected: float, rtol: float, where: str
) -> None:
    value = getattr(mine[device_id], field)
    assert value is not None, f"{device_id}.{field} is empty ({where})"
    assert math.isclose(value, expected, rel_tol=rtol), (
        f"{device_id}.{field} = {value}, {where} says {expected}"
    )


def test_mi300x_headline_is_sparse_and_peaks_are_dense(mine: dict[str, Device]) -> None:
    d = mine["mi300x"]
    assert d.sparse_bf16_tflop_per_s == pytest.approx(2 * d.peak_bf16_tflop_per_s, rel=DATASHEET_RTOL)
    assert d.peak_bf16_tflop_per_s < 2000, "peak_* must be dense, not AMD's 2614.9 sparse headline"


def test_unsupported_types_are_empty(mine: dict[str, Device]) -> None:
    # CDNA2 has no TF32 or FP8; CDNA4 dropped TF32; TPUs have no fp8 in their docs; Apple GPUs have no int8 path.
    assert mine["mi250x"].peak_tf32_tflop_per_s is None
    assert mine["mi250x"].peak_fp8_tflop_per_s is None
    assert mine["mi355x"].peak_tf32_tflop_per_s is None
    assert mine["tpu-v5e"].peak_fp8_tflop_per_s is None
    assert mine["apple-m2-ultra-76c"].peak_int8_tflop_per_s is None
    assert mine["core-i9-13900k"].peak_bf16_tflop_per_s is None  # no AVX-512 BF16 on Raptor Lake
    assert mine["raspberry-pi-5-8gb"].peak_bf16_tflop_per_s is None  # Cortex-A76 predates Armv8.6 BF16


# ----------------------------------------------------------------------------------------------- Apple

# Apple's published unified-memory bandwidth per variant, GB/s.
APPLE_BANDWIDTH_GB_PER_S = {
    "apple-m1-8c": 68.25,
    "apple-m1-pro-16c": 200,
    "apple-m1-max-24c": 400,
    "apple-m1-max-32c": 400,
    "apple-m1-ultra-64c": 800,
    "apple-m2-10c": 100,
    "apple-m2-pro-19c": 200,
    "apple-m2-max-30c": 400,
    "apple-m2-max-38c": 400,
    "apple-m2-ultra-60c": 800,
    "apple-m2-ultra-76c": 800,
    "apple-m3-10c": 100,
    "apple-m3-pro-18c": 150,
    "apple-m3-max-30c": 300,
    "apple-m3-max-40c": 400,
    "apple-m3-ultra-80c": 819,
    "apple-m4-10c": 120,
    "apple-m4-pro-20c": 273,
    "apple-m4-max-32c": 410,
    "apple-m4-max-40c": 546,
}


@pytest.mark.parametrize(("device_id", "expected"), sorted(APPLE_BANDWIDTH_GB_PER_S.items()))
def test_apple_bandwidth_per_variant(mine: dict[str, Device], device_id: str, expected: float) -> None:
    assert mine[device_id].memory_bandwidth_gb_per_s == pytest.approx(expected, rel=DATASHEET_RTOL)


def test_apple_rows_are_consistent() -> None:
    rows = _read("apple.csv")
    by_chip: dict[str, list[Device]] = {}
    for d in rows:
        assert d.kind == "soc" and d.segment == "apple", d.id
        # Apple GPUs run fp16 (and bf16) at the fp32 rate.
        assert d.peak_fp16_tflop_per_s == d.peak_fp32_tflop_per_s == d.peak_bf16_tflop_per_s, d.id
        assert d.interconnect == "none" and d.interconnect_gb_per_s == 0, d.id
        chip, cores = d.id.rsplit("-", 1)
        assert cores.endswith("c") and cores[:-1].isdigit(), d.id
        by_chip.setdefault(chip, []).append(d)
    for chip, variants in by_chip.items():
        variants.sort(key=lambda d: int(d.id.rsplit("-", 1)[1][:-1]))
        # more GPU cores never means fewer FLOPS, less bandwidth or less power in the same chip
        for small, big in zip(variants, variants[1:], strict=False):
            assert small.peak_fp32_tflop_per_s < big.peak_fp32_tflop_per_s, chip
            assert small.memory_bandwidth_gb_per_s <= big.memory_bandwidth_gb_per_s, chip
            assert small.tdp_w <= big.tdp_w, chip
        # FLOPS per GPU core stays within one generation's clock range (1.2-1.8 GHz x 256 FLOP/clk)
        for d in variants:
            cores = int(d.id.rsplit("-", 1)[1][:-1])
            ghz = d.peak_fp32_tflop_per_s * 1000 / (cores * 256)
            assert 1.2 <= ghz <= 1.8, (d.id, ghz)


# ------------------------------------------------------------------------------------------------- CPUs

# (id, cores, clock GHz stated in the note, AMX present)
INTEL_AMX = [("xeon-8480plus", 56, 2.0), ("xeon-8592plus", 64, 1.9), ("xeon-6980p", 128, 2.0)]


@pytest.mark.parametrize(("device_id", "cores", "ghz"), INTEL_AMX)
def test_xeon_amx_peaks_follow_the_amx_spec(
    mine: dict[str, Device], device_id: str, cores: int, ghz: float
) -> None:
    """Intel AMX: 1024 bf16 FLOP and 2048 int8 OP per cycle per core; AVX-512: 2 FMA x 16 fp32 lanes x 2."""
    d = mine[device_id]
    assert d.peak_bf16_tflop_per_s == pytest.approx(cores * 1024 * ghz / 1000, rel=DATASHEET_RTOL)
    assert d.peak_int8_tflop_per_s == pytest.approx(cores * 2048 * ghz / 1000, rel=DATASHEET_RTOL)
    assert d.peak_fp32_tflop_per_s == pytest.approx(cores * 64 * ghz / 1000, rel=DATASHEET_RTOL)
    assert "AMX" in d.note and f"{ghz} GHz" in d.note


# (id, memory channels, MT/s): bandwidth = channels x MT/s x 8 bytes
CPU_MEMORY = [
    ("xeon-8480plus", 8, 4800),
    ("xeon-8592plus", 8, 5600),
    ("xeon-6980p", 12, 6400),
    ("epyc-9654", 12, 4800),
    ("epyc-9965", 12, 6000),
    ("epyc-9755", 12, 6000),
    ("graviton3", 8, 4800),
    ("graviton4", 12, 5600),
    ("ryzen-9-7950x", 2, 5200),
    ("ryzen-9-9950x", 2, 5600),
    ("core-i9-13900k", 2, 5600),
    ("core-i9-14900k", 2, 5600),
]


@pytest.mark.parametrize(("device_id", "channels", "mts"), CPU_MEMORY)
def test_cpu_memory_bandwidth_is_channels_times_rate(
    mine: dict[str, Device], device_id: str, channels: int, mts: int
) -> None:
    assert mine[device_id].memory_bandwidth_gb_per_s == pytest.approx(
        channels * mts * 8 / 1000, rel=DATASHEET_RTOL
    )


def test_cpu_rows_are_derived_and_have_no_fabric() -> None:
    for d in _read("cpu.csv"):
        assert d.kind == "cpu" and d.segment in ("server-cpu", "desktop-cpu"), d.id
        assert d.basis == "derived" and "GHz" in d.note, d.id
        assert d.interconnect == "none" and d.interconnect_gb_per_s == 0, d.id
        assert d.idle_w < d.tdp_w, d.id


def test_tpus_are_per_chip_on_ici() -> None:
    for d in _read("google.csv"):
        assert d.kind == "tpu" and d.interconnect == "ici" and d.interconnect_gb_per_s > 0, d.id
        assert "per chip" in d.note.lower(), d.id


# ------------------------------------------------------------------------------------------- resolution


@pytest.fixture(scope="module")
def catalog(builtin: dict[str, Device]) -> Catalog:
    return Catalog(CatalogData(devices=dict(builtin)))


def test_every_name_and_alias_resolves_to_its_own_device(catalog: Catalog, mine: dict[str, Device]) -> None:
    for d in mine.values():
        for label in (d.id, d.name, *d.aliases):
            assert catalog.device(label).id == d.id, (label, d.id)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("AMD Instinct MI300X", "mi300x"),
        ("TPU v5e", "tpu-v5e"),
        ("Trillium", "tpu-v6e"),
        ("Gaudi 2", "gaudi2"),
        ("Apple M2 Max (38-core GPU)", "apple-m2-max-38c"),
        ("Apple M2 Max 30-core GPU", "apple-m2-max-30c"),
        ("M3 Max", "apple-m3-max-40c"),
        ("M1", "apple-m1-8c"),
        ("Xeon 8480+", "xeon-8480plus"),
        ("Jetson AGX Orin", "jetson-agx-orin-64gb"),
        ("Raspberry Pi 5", "raspberry-pi-5-8gb"),
    ],
)
def test_common_names(catalog: Catalog, query: str, expected: str) -> None:
    assert catalog.device(query).id == expected
