"""Forgiving device and region names: marketing names, nvidia-smi/DCGM strings, families, and useful errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.catalog.resolve import normalize_name
from flopwise.errors import UnknownAcceleratorError, UnknownRegionError

DCGM_SCRAPE = (
    Path(__file__).resolve().parents[1]
    / "data"
    / "dcgm"
    / "h100x8-dcgm-exporter-scrape.prom"
)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _needs(cat, *ids: str) -> None:
    missing = [i for i in ids if i not in cat.devices]
    if missing:
        pytest.skip(f"built-in catalog lacks {', '.join(missing)}")


@pytest.mark.parametrize(
    ("name", "device_id"),
    [
        ("H100", "h100-sxm"),  # the SXM board is the default variant of a family
        ("h100-sxm", "h100-sxm"),
        ("H100 SXM5", "h100-sxm"),
        ("h100-sxm5", "h100-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("RTX 4090", "rtx-4090"),
        ("NVIDIA 4090 24GB", "rtx-4090"),
        ("GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("rtx4090", "rtx-4090"),
        ("A100", "a100-sxm-80gb"),  # then the largest memory
        ("A100 40GB", "a100-sxm-40gb"),
        ("A100 PCIe", "a100-pcie-80gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("Tesla T4", "t4"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA A10", "a10"),
        ("Tesla V100-SXM2-16GB", "v100-sxm2-16gb"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
        ("Tesla V100-PCIE-16GB", "v100-pcie-16gb"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA H200 NVL", "h200-nvl"),
        ("NVIDIA GH200 480GB", "gh200"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA RTX A6000", "rtx-a6000"),
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada"),
        ("RTX 4070", "rtx-4070"),  # fewest extra tokens: not the Ti or SUPER
        ("RTX 4070 Ti Super", "rtx-4070-ti-super"),
        ("RTX 4060 Ti 8GB", "rtx-4060-ti-8gb"),
        ("RTX 3080 10GB", "rtx-3080-10gb"),
        ("B200", "b200"),
        ("GB200", "gb200"),
        ("GB300", "gb300"),
    ],
)
def test_nvidia_names(cat, name, device_id):
    _needs(cat, device_id)
    assert cat.device(name).id == device_id


@pytest.mark.parametrize(
    ("name", "device_id"),
    [
        ("Apple M2 Max (38-core GPU)", "apple-m2-max-38c"),
        ("M2 Max", "apple-m2-max-38c"),  # the largest-core variant
        ("M2 Max 30c", "apple-m2-max-30c"),
        ("v5e", "tpu-v5e"),
        ("TPU v5e", "tpu-v5e"),
        ("MI300X", "mi300x"),
        ("AMD Instinct MI300X", "mi300x"),
    ],
)
def test_other_vendor_names(cat, name, device_id):
    _needs(cat, device_id)
    assert cat.device(name).id == device_id


def test_every_id_name_and_alias_resolves_to_itself(cat):
    for device in cat.devices.values():
        for label in (device.id, device.name, *device.aliases):
            assert cat.device(label).id == device.id, f"{label!r} of {device.id}"


def test_dcgm_model_names_resolve(cat):
    assert DCGM_SCRAPE.is_file(), f"sample file {DCGM_SCRAPE} is absent"
    names = set(re.findall(r'modelName="([^"]+)"', DCGM_SCRAPE.read_text(encoding="utf-8")))
    assert names
    for name in names:
        assert cat.device(name).id == "h100-sxm"


def test_unknown_device_suggests_close_ids(cat):
    with pytest.raises(UnknownAcceleratorError) as info:
        cat.device("h100-foo")
    err = info.value
    assert err.name == "h100-foo"
    assert "h100-sxm" in err.suggestions and len(err.suggestions) <= 3
    assert "Did you mean" in str(err) and "flopwise catalog devices" in str(err)


def test_unknown_device_substring_suggestions(cat):
    with pytest.raises(UnknownAcceleratorError) as info:
        cat.device("rtx 9090")
    assert set(info.value.suggestions) <= set(cat.devices)
    assert any(s.startswith("rtx-") for s in info.value.suggestions)


def test_memory_hint_that_fits_no_board_is_unknown(cat):
    # there is no 32 GB PCIe V100 in the catalog; do not silently pick the 16 GB one
    with pytest.raises(UnknownAcceleratorError) as info:
        cat.device("Tesla V100-PCIE-32GB")
    assert "v100-pcie-16gb" in info.value.suggestions


@pytest.mark.parametrize("name", ["", "   ", "NVIDIA", "gpu"])
def test_empty_or_vendor_only_names_are_unknown(cat, name):
    with pytest.raises(UnknownAcceleratorError):
        cat.device(name)


def test_normalize_name():
    assert normalize_name("NVIDIA A100-SXM4-80GB") == "nvidiaa100sxm480gb"
    assert normalize_name("Xeon 8480+") == "xeon8480plus"


# ------------------------------------------------------------------------------------ regions


def _needs_region(cat, *ids: str) -> None:
    missing = [i for i in ids if i not in cat.regions]
    if missing:
        pytest.skip(f"built-in catalog lacks regions {', '.join(missing)}")


@pytest.mark.parametrize(
    ("name", "region_id"),
    [
        ("aws:us-east-1", "aws:us-east-1"),
        ("ap-northeast-3", "aws:ap-northeast-3"),
        ("AP-NORTHEAST-3", "aws:ap-northeast-3"),
        ("FR", "country:FR"),
        ("fr", "country:FR"),
        ("France", "country:FR"),
        ("country:FR", "country:FR"),
        ("europe-west4", "gcp:europe-west4"),
    ],
)
def test_region_names(cat, name, region_id):
    _needs_region(cat, region_id)
    assert cat.region(name).id == region_id


def test_ambiguous_region_lists_candidates(cat):
    _needs_region(cat, "aws:us-east-1", "gcp:us-east1")
    with pytest.raises(UnknownRegionError, match="Ambiguous") as info:
        cat.region("useast-1")
    assert {"aws:us-east-1", "gcp:us-east1"} <= set(info.value.suggestions)


def test_region_code_of_two_providers_is_ambiguous(cat):
    # AWS and Lambda both name a region us-east-1: the bare code must not silently pick one
    _needs_region(cat, "aws:us-east-1", "lambda:us-east-1")
    with pytest.raises(UnknownRegionError, match="Ambiguous") as info:
        cat.region("us-east-1")
    assert {"aws:us-east-1", "lambda:us-east-1"} <= set(info.value.suggestions)


def test_unknown_region_suggests(cat):
    _needs_region(cat, "aws:us-east-1")
    with pytest.raises(UnknownRegionError) as info:
        cat.region("us-eats-1")
    assert "aws:us-east-1" in info.value.suggestions
    with pytest.raises(UnknownRegionError):
        cat.region("")
