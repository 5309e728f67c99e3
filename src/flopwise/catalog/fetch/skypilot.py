"""SkyPilot's published catalogs (``catalogs/v<N>/<cloud>/vms.csv``) -> offering rows, on-demand and spot per region.

Source: https://github.com/skypilot-org/skypilot-catalog (Apache-2.0), which SkyPilot's own ``data_fetchers``
regenerate from each cloud's price API. Columns are read by header name (their set and order differ between
clouds). One offering is written per (instance type, region):

- on-demand price: the source's ``Price``, which is the same in every zone of a region (a region whose zones
  disagree is an error, never averaged);
- spot price: the lowest ``SpotPrice`` over the region's zones (AWS and GCP list spot per zone), because a user
  who asks for spot can pick the zone. A spot price above the on-demand price (seen for GCP A100-80GB) or equal to it (Azure ND H100 v5) is not
  used, and the row's note says so.

Rows are skipped, and counted by reason in :class:`ParseResult.skipped`, when the catalog has no device for
the accelerator (K80, M60, P100, P4, FPGAs, Radeon, Inferentia 1, Gaudi 1, Graviton2 T4g, Quadro RTX 6000,
A800 PCIe), for fractional GPUs (AWS g6f/gr6f), multi-host TPU pod slices (the planner sizes pods itself from
the per-host slice), TPU rows priced 700.0 (SkyPilot's placeholder for a TPU not sold in that region), and GCP
GPU rows: SkyPilot prices GCP accelerators apart from the host VM (the a2/a3/g2 machine-type rows carry no
AcceleratorName), so a GPU row alone would under-price the instance.

CPU-only rows become CPU offerings with their vCPU count: an instance of whole sockets counts them
(c7g.16xlarge = 1 Graviton3, c7i.48xlarge = 2 Xeon Sapphire Rapids sockets); a smaller one is one device with
fewer vCPUs than the socket (c7g.xlarge = 4 of Graviton3's 64 vCPUs), which :mod:`flopwise.catalog.cpu` turns
into the cores it holds (2 vCPUs per core on x86, 1 on Graviton and Ampere). Burstable families (t3, t4g) carry
their CPU-credit baseline in the note (AWS, "Key concepts for burstable performance instances",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/burstable-credits-baseline-concepts.html).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from flopwise.catalog.cpu import BURSTABLE_BASELINE_FRAC, burstable_note
from flopwise.catalog.fetch.table import Record, read_table

__all__ = ["CLOUD_PROVIDERS", "ParseResult", "device_for", "parse_vms"]

#: SkyPilot cloud folder -> flopwise provider slug
CLOUD_PROVIDERS = {
    "aws": "aws",
    "gcp": "gcp",
    "azure": "azure",
    "oci": "oci",
    "lambda": "lambda",
    "cudo": "cudo",
    "nebius": "nebius",
    "fluidstack": "fluidstack",
}

REQUIRED_COLUMNS = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "Price",
    "SpotPrice",
    "Region",
)

_GIB_TO_GB = Decimal("1.073741824")
#: SkyPilot writes 700.0 for TPU slices it cannot price in a region (README of the extract; seen 72 times)
_TPU_PLACEHOLDER_USD = Decimal("700")

#: Host vCPUs and RAM (GB) per TPU chip, from the TPU VM host shapes in https://cloud.google.com/tpu/docs
#: (the source leaves vCPUs/MemoryGiB empty for TPUs); chips per single-host slice; TensorCores per chip in names.
_TPU = {
    # name prefix: (device id, TensorCores per chip counted in the slice name, max chips on one host, vCPU, GB)
    "tpu-v4-": ("tpu-v4", 2, 4, 60, Decimal("101.75")),
    "tpu-v5p-": ("tpu-v5p", 2, 4, 52, Decimal("112")),
    "tpu-v5litepod-": ("tpu-v5e", 1, 8, 24, Decimal("48")),
    "tpu-v6e-": ("tpu-v6e", 1, 8, 44, Decimal("176")),
}

#: CPU-only instance families kept as CPU offerings: family -> (device id, vCPUs per socket). AWS sells c7i/m7i
#: on a 48-core Sapphire Rapids part (Xeon 8488C) and GCP c3 on 44 cores per socket, so their socket is 96 / 88
#: vCPUs; the catalog's closest device (the 56-core 8480+) stands in for both. t3 runs on Skylake-SP or Cascade
#: Lake Xeon Platinum 8000 parts (AWS), the catalog's 24-core Xeon 8259CL stands in; t2a is Ampere Altra (GCP).
#: GCP n2 runs on Cascade Lake (up to 80 vCPUs, 2.8 GHz base / 3.4 GHz all-core turbo) or Ice Lake, and e2 on
#: whichever Skylake/Broadwell/Haswell Xeon or EPYC Rome/Milan host GCP picks (https://cloud.google.com/compute/
#: docs/cpu-platforms): the 24-core Cascade Lake 8259CL (48 vCPUs a socket) stands in for both, so n2/e2 sizes up
#: to 32 vCPUs are slices of one socket, n2-standard-48/96 whole sockets, and 64/80/128 (not whole sockets) are
#: skipped and counted.
CPU_FAMILIES = {
    "aws": {
        "c7g": ("graviton3", 64),
        "m7g": ("graviton3", 64),
        "r7g": ("graviton3", 64),
        "c8g": ("graviton4", 96),
        "c7i": ("xeon-8480plus", 96),
        "m7i": ("xeon-8480plus", 96),
        "t4g": ("graviton2", 64),
        "t3": ("xeon-8259cl", 48),
    },
    "gcp": {
        "c3-standard": ("xeon-8480plus", 88),
        "t2a-standard": ("ampere-altra-q80-30", 80),
        "n2-standard": ("xeon-8259cl", 48),
        "e2-standard": ("xeon-8259cl", 48),
        # shared-core e2 (fractional vCPU bursting to 2; not in the v9 extract, mapped for catalogs that have it)
        "e2-micro": ("xeon-8259cl", 48),
        "e2-small": ("xeon-8259cl", 48),
        "e2-medium": ("xeon-8259cl", 48),
    },
}


def _family(cloud: str, instance_type: str) -> str:
    if cloud == "aws":
        return instance_type.split(".", 1)[0]
    return re.sub(r"-\d+(-lssd|-metal)?$", "", instance_type)


def device_for(cloud: str, accelerator: str, instance_type: str) -> str | None:
    """The catalog device id for SkyPilot's *accelerator* on *instance_type*, or None when the catalog has none.

    The accelerator name alone is ambiguous for a few parts, told apart by the instance type: Azure NC A100 v4
    carries A100 PCIe 80GB and NC H100 v5 the H100 NVL; Lambda's ``gpu_1x_h100_pcie`` is H100 PCIe and its
    ``gpu_{1,2,4}x_a100`` (no ``sxm``) are A100 PCIe 40GB; Cudo's ``*-pcie``/``*-pci`` A100 are PCIe 80GB and its
    V100 and Azure NCv3's are PCIe 16GB.
    """
    it = instance_type.lower()
    if accelerator == "A100":
        if cloud == "cudo":
            return "a100-pcie-80gb"
        if cloud == "lambda" and "sxm" not in it and not it.startswith("gpu_8x"):
            return "a100-pcie-40gb"
        return "a100-sxm-40gb"
    if accelerator == "A100-80GB":
        return "a100-pcie-80gb" if cloud == "azure" and it.startswith("standard_nc") else "a100-sxm-80gb"
    if accelerator == "H100":
        if cloud == "azure" and it.startswith("standard_nc"):
            return "h100-nvl"
        if "pcie" in it:
            return "h100-pcie"
        return "h100-sxm"
    if accelerator == "V100":
        return "v100-pcie-16gb" if cloud in ("azure", "cudo") else "v100-sxm2-16gb"
    return _SIMPLE.get(accelerator)


_SIMPLE = {
    "H100-MEGA": "h100-sxm",
    "H100-SXM": "h100-sxm",
    "H100-NVLINK": "h100-sxm",
    "H200": "h200-sxm",
    "B200": "b200",
    "B300": "b300",
    "GH200": "gh200",
    "A10G": "a10g",
    "A10": "a10",
    "A40": "a40",
    "L4": "l4",
    "L40S": "l40s",
    "T4": "t4",
    "V100-32GB": "v100-sxm2-32gb",
    "A6000": "rtx-a6000",
    "RTXA6000": "rtx-a6000",
    "RTXA5000": "rtx-a5000",
    "RTXPRO6000": "rtx-pro-6000-blackwell",
    "Trainium": "trainium1",
    "Trainium2": "trainium2",
    "Inferentia2": "inferentia2",
}


@dataclass
class ParseResult:
    """Offering rows (dicts keyed by the catalog's OFFERING_COLUMNS) and the skipped source lines by reason."""

    rows: list[dict[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    source_lines: int = 0


@dataclass
class _Acc:
    instance_type: str
    region: str
    device_id: str
    count: int
    vcpus: int
    ram_gb: Decimal
    on_demand: Decimal | None
    on_demand_line: int
    spots: list[Decimal]
    zones: int
    extra_note: str
    source_url: str = ""


def _money(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def parse_vms(
    cloud: str,
    text: str,
    *,
    source: str,
    location: str,
    known_regions: Iterable[str],
    source_url: str = "",
    into: dict[tuple[str, str], _Acc] | None = None,
    result: ParseResult | None = None,
) -> ParseResult:
    """Parse one SkyPilot ``vms.csv`` of *cloud*. Rows of several files of one cloud (the accelerator extract and
    the CPU extract) are merged by passing the same *into* and *result*; call :func:`finish` after the last one.

    Every line is validated (price not "N/A" nor negative, region known) before any skip, so a broken row
    never hides behind a skipped accelerator. *source_url* is recorded on the rows this file contributes
    (``finish`` falls back to its own *source_url*).
    """
    provider = CLOUD_PROVIDERS[cloud]
    regions = set(known_regions)
    acc: dict[tuple[str, str], _Acc] = into if into is not None else {}
    res = result if result is not None else ParseResult()
    for rec in read_table(source, location, text, REQUIRED_COLUMNS):
        res.source_lines += 1
        region_code = rec.text("Region")
        if not region_code:
            raise rec.fail("Region", "is empty; every row needs its region")
        region = f"{provider}:{region_code}"
        if region not in regions:
            raise rec.fail(
                "Region",
                f"{region_code!r} is a region code never seen for {provider}; add it with its country and grid to "
                "flopwise/catalog/fetch/region_grids.csv (or fix the source)",
            )
        price = rec.price("Price")
        spot = rec.price("SpotPrice")
        name = rec.text("AcceleratorName")
        instance_type = rec.text("InstanceType")
        kept = _classify(cloud, rec, name, instance_type, price, res)
        if kept is None:
            continue
        instance_type, device_id, count, vcpus, ram_gb, note = kept
        key = (instance_type, region)
        entry = acc.get(key)
        if entry is None:
            entry = acc[key] = _Acc(
                instance_type,
                region,
                device_id,
                count,
                vcpus,
                ram_gb,
                price,
                rec.line,
                [],
                0,
                note,
                source_url,
            )
        elif entry.on_demand != price:
            raise rec.fail(
                "Price",
                f"{price} differs from {entry.on_demand} on line {entry.on_demand_line} for {instance_type} in "
                f"{region_code}; on-demand prices must agree across the zones of a region",
            )
        entry.zones += 1
        if spot is not None:
            entry.spots.append(spot)
    return res


def _classify(
    cloud: str, rec: Record, name: str, instance_type: str, price: Decimal | None, res: ParseResult
) -> tuple[str, str, int, int, Decimal, str] | None:
    """(instance_type, device_id, device_count, vcpus, ram_gb, note) of a kept row, or None (counted skip)."""
    vcpus_f = rec.number("vCPUs")
    mem_gib = rec.number("MemoryGiB")
    if not name:
        families = CPU_FAMILIES.get(cloud, {})
        fam = families.get(_family(cloud, instance_type))
        if fam is None:
            res.skipped["CPU family with no catalog device"] += 1
            return None
        device_id, per_socket = fam
        if vcpus_f is None or mem_gib is None:
            raise rec.fail("vCPUs", "is empty for a CPU instance; the source must list vCPUs and MemoryGiB")
        vcpus = int(vcpus_f)
        ram = (Decimal(str(mem_gib)) * _GIB_TO_GB).quantize(Decimal("0.1"))
        if vcpus < per_socket:
            note = f"{vcpus} of the {per_socket} vCPUs of one socket; ram_gb converted from {mem_gib:g} GiB"
            base = BURSTABLE_BASELINE_FRAC.get(instance_type)
            if base is not None:
                note += "; " + burstable_note(instance_type)
            return instance_type, device_id, 1, vcpus, ram, note
        if vcpus % per_socket:
            res.skipped["CPU size that is not whole sockets"] += 1
            return None
        note = f"{vcpus // per_socket} socket(s) of {per_socket} vCPUs; ram_gb converted from {mem_gib:g} GiB"
        return instance_type, device_id, vcpus // per_socket, vcpus, ram, note
    if name.startswith("tpu-"):
        prefix = next((p for p in _TPU if name.startswith(p)), None)
        if prefix is None:
            res.skipped["accelerator with no catalog device"] += 1
            return None
        device_id, cores, host_chips, vcpu_chip, gb_chip = _TPU[prefix]
        size = int(name[len(prefix) :])
        chips = max(size // cores, 1)
        if chips > host_chips:
            res.skipped["multi-host TPU pod slice"] += 1
            return None
        if price == _TPU_PLACEHOLDER_USD:
            res.skipped["TPU placeholder price 700.0"] += 1
            return None
        note = (
            f"{chips} chip(s); host {vcpu_chip} vCPU and {gb_chip} GB per chip from the TPU VM shapes "
            "(https://cloud.google.com/tpu/docs), as the source leaves them empty"
        )
        return name, device_id, chips, vcpu_chip * chips, gb_chip * chips, note
    gpu_id = device_for(cloud, name, instance_type)
    if gpu_id is None:
        res.skipped["accelerator with no catalog device"] += 1
        return None
    device_id = gpu_id
    if cloud == "gcp":
        res.skipped["GCP GPU priced without its host VM"] += 1
        return None
    count_f = rec.number("AcceleratorCount")
    if count_f is None or count_f < 1 or count_f != int(count_f):
        res.skipped["fractional GPU"] += 1
        return None
    if instance_type.endswith("_Promo"):
        res.skipped["Azure promotional price"] += 1
        return None
    count = int(count_f)
    if cloud == "azure" and instance_type == "Standard_ND96isr_H100_v5":
        count = 8  # the source says 12; the VM has 8 H100 SXM (learn.microsoft.com ND H100 v5 series)
    if vcpus_f is None or mem_gib is None:
        raise rec.fail("vCPUs", "is empty; the source must list vCPUs and MemoryGiB for a GPU instance")
    ram = (Decimal(str(mem_gib)) * _GIB_TO_GB).quantize(Decimal("0.1"))
    note = f"ram_gb converted from {mem_gib:g} GiB"
    if count_f != count:
        note += f"; AcceleratorCount {count_f:g} in the source, corrected to {count}"
    return instance_type, gpu_id, count, int(vcpus_f), ram, note


def finish(
    provider: str,
    acc: Mapping[tuple[str, str], _Acc],
    *,
    source_url: str,
    retrieved: str,
    result: ParseResult,
) -> ParseResult:
    """Turn the per-region accumulators into offering rows (sorted by id)."""
    for (instance_type, region), e in sorted(acc.items()):
        spot = min(e.spots) if e.spots else None
        notes = [e.extra_note]
        if spot is not None and e.on_demand is not None and spot >= e.on_demand:
            notes.append(f"source spot {_money(spot)} is not below on-demand, not used")
            spot = None
        elif spot is not None and len(e.spots) > 1:
            notes.append(f"spot = lowest of {len(e.spots)} zone prices at fetch time")
        elif spot is not None:
            notes.append("spot = the source's spot price at fetch time")
        if e.on_demand is None and spot is None:
            result.skipped["no price"] += 1
            continue
        result.rows.append(
            {
                "id": f"{provider}:{instance_type}:{region.split(':', 1)[1]}",
                "provider": provider,
                "instance_type": instance_type,
                "region": region,
                "device_id": e.device_id,
                "device_count": str(e.count),
                "vcpus": str(e.vcpus),
                "ram_gb": _money(e.ram_gb),
                "on_demand_usd_per_h": _money(e.on_demand) if e.on_demand is not None else "",
                "spot_usd_per_h": _money(spot) if spot is not None else "",
                "reserved_usd_per_h": "",
                "reserved_term": "",
                "source_url": e.source_url or source_url,
                "retrieved": retrieved,
                # a spot price is a market price at fetch time (and a minimum over zones): derived, not listed
                "basis": "derived" if spot is not None else "datasheet",
                "note": "; ".join(n for n in notes if n),
            }
        )
    return result
