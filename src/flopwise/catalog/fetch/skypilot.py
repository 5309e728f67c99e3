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
the accelerator (FPGAs, Radeon, Inferentia 1, Gaudi 1, Quadro RTX 6000,
A800 PCIe), for fractional GPUs (AWS g6f/gr6f), multi-host TPU pod slices (the planner sizes pods itself from
the per-host slice), and TPU rows priced 700.0 (SkyPilot's placeholder for a TPU not sold in that region).

GCP GPUs are composed as SkyPilot's own ``sky/catalog/gcp_catalog.py`` composes them (``_ACC_INSTANCE_TYPE_DICTS``
and ``list_accelerators``): the GPU rows (empty InstanceType) price the accelerators alone, the machine-type rows
(a2-highgpu-Ng, a2-megagpu-16g, a2-ultragpu-Ng, a3-highgpu-Ng, a3-megagpu-8g, a3-ultragpu-8g, a4-highgpu-8g,
g2-standard-N; empty AcceleratorName) price the host VM, and the instance costs host + GPUs, zone by zone, on
demand and spot alike. The offering is the machine type (``gcp:a3-highgpu-8g:us-central1``). SkyPilot lists the
A4 host at 0.0 because Google prices the B200 SKU with the VM included (skypilot-org/skypilot#8125). A GPU row with
no host row in its zone (and a host row with no GPU row) yields no offering and is counted.

GPUs that Google attaches to an N1 VM (T4, V100, P100, P4) are composed as ``list_accelerators`` in the same
``gcp_catalog.py`` composes them for ``sky show-gpus``: per zone, the host is the cheapest ``n1-standard``/
``n1-highmem``/``n1-highcpu`` row with at least ``_NUM_ACC_TO_NUM_CPU[gpu][count]`` vCPUs (T4 1/2/4 GPUs: 4/8/48;
V100 and P100: 8 per GPU; others: 8 per GPU) and at least 4 GiB of memory per such vCPU
(``_DEFAULT_GPU_MEMORY_CPU_RATIO``); the price is host + GPUs on demand, and host spot + GPU spot when both are
listed. The offering is named after the host and the GPUs (``gcp:n1-highmem-4+1xT4:us-central1``). SkyPilot's
P100 (GCP, and OCI's GPU2 shapes, 16 GB in both sources) is the PCIe 16GB part, its P4 the Tesla P4.
Azure's K80 (NC-series) counts one GK210 GPU, half a Tesla K80 board ("1 GPU = one-half K80 card", Azure's
sizes-previous-gen page), so it maps to the per-GPU row ``tesla-k80-gk210``; likewise its M60 (NV, NVv3: NV6 and
NV12s_v3 count 1 at one price, NV12 counts 2) counts one GM204 GPU, half a Tesla M60 board: ``tesla-m60-gm204``.


A provider that publishes its preemptible price as a fixed rule, not a market, gets its spot price derived from the
on-demand price where the source has none (:data:`PREEMPTIBLE_RULES`): OCI bills preemptible capacity at 50% of
the on-demand rate "regardless of shape or region" and sells it on virtual machine shapes only, not bare metal. The
row's note says the price is derived from that rule and cites it. Nebius sells preemptible VMs only on its B300,
B200, H200 and H100 platforms (https://docs.nebius.com/compute/virtual-machines/preemptible), which the source
already prices; its L40S platforms have no preemptible capacity, so no spot price is derived for them.

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
from flopwise.catalog.fetch.table import FetchError, Record, read_table

__all__ = [
    "CLOUD_PROVIDERS",
    "GCP_GPU_MACHINES",
    "PREEMPTIBLE_RULES",
    "ParseResult",
    "PreemptibleRule",
    "SPOT_RULE_NOTE",
    "device_for",
    "parse_vms",
]

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
    "T4g": "t4g",
    "V100-32GB": "v100-sxm2-32gb",
    "P100": "p100-pcie-16gb",
    "P4": "tesla-p4",
    "K80": "tesla-k80-gk210",
    "M60": "tesla-m60-gm204",
    "A6000": "rtx-a6000",
    "RTXA6000": "rtx-a6000",
    "RTXA5000": "rtx-a5000",
    "RTXPRO6000": "rtx-pro-6000-blackwell",
    "Trainium": "trainium1",
    "Trainium2": "trainium2",
    "Inferentia2": "inferentia2",
}


#: GCP machine types that carry GPUs, from SkyPilot's ``_ACC_INSTANCE_TYPE_DICTS`` (sky/catalog/gcp_catalog.py):
#: machine type -> (SkyPilot accelerator name, GPUs per VM). g2-standard-4 to -32 all carry one L4.
GCP_GPU_MACHINES: dict[str, tuple[str, int]] = {
    "a2-highgpu-1g": ("A100", 1),
    "a2-highgpu-2g": ("A100", 2),
    "a2-highgpu-4g": ("A100", 4),
    "a2-highgpu-8g": ("A100", 8),
    "a2-megagpu-16g": ("A100", 16),
    "a2-ultragpu-1g": ("A100-80GB", 1),
    "a2-ultragpu-2g": ("A100-80GB", 2),
    "a2-ultragpu-4g": ("A100-80GB", 4),
    "a2-ultragpu-8g": ("A100-80GB", 8),
    "g2-standard-4": ("L4", 1),
    "g2-standard-8": ("L4", 1),
    "g2-standard-12": ("L4", 1),
    "g2-standard-16": ("L4", 1),
    "g2-standard-32": ("L4", 1),
    "g2-standard-24": ("L4", 2),
    "g2-standard-48": ("L4", 4),
    "g2-standard-96": ("L4", 8),
    "a3-highgpu-1g": ("H100", 1),
    "a3-highgpu-2g": ("H100", 2),
    "a3-highgpu-4g": ("H100", 4),
    "a3-highgpu-8g": ("H100", 8),
    "a3-megagpu-8g": ("H100-MEGA", 8),
    "a3-ultragpu-8g": ("H200", 8),
    "a4-highgpu-8g": ("B200", 8),
}
_GCP_GPU_NAMES = {name for name, _ in GCP_GPU_MACHINES.values()}

#: GPUs Google attaches to N1 VMs, and the host vCPUs SkyPilot asks for per GPU count: ``_NUM_ACC_TO_NUM_CPU`` in
#: sky/catalog/gcp_catalog.py ("DEFAULT" covers P4 and any other N1 GPU). The host also needs
#: ``GCP_N1_GIB_PER_VCPU`` GiB per such vCPU (``_DEFAULT_GPU_MEMORY_CPU_RATIO``) and comes from these families
#: (``_DEFAULT_HOST_VM_FAMILY``).
GCP_N1_GPU_VCPUS: dict[str, dict[int, int]] = {
    "V100": {1: 8, 2: 16, 4: 32, 8: 64},
    "T4": {1: 4, 2: 8, 4: 48},
    "P100": {1: 8, 2: 16, 4: 32, 8: 64},
    "DEFAULT": {1: 8, 2: 16, 4: 32, 8: 64, 16: 128},
}
GCP_N1_GPUS = ("T4", "V100", "P100", "P4")
GCP_N1_HOST_FAMILIES = ("n1-standard", "n1-highmem", "n1-highcpu")
GCP_N1_GIB_PER_VCPU = 4


#: how a row's note begins its account of a spot price derived from a PreemptibleRule (the CLI marks such prices)
SPOT_RULE_NOTE = "spot derived from the provider's published preemptible discount"


@dataclass(frozen=True)
class PreemptibleRule:
    """A provider's published, fixed preemptible discount and the instance types it applies to."""

    discount_frac: Decimal
    instance_prefixes: tuple[str, ...]
    price_url: str
    eligibility_url: str
    eligibility: str

    def applies(self, instance_type: str) -> bool:
        return instance_type.startswith(self.instance_prefixes)

    def spot(self, on_demand: Decimal) -> Decimal:
        return on_demand * (1 - self.discount_frac)

    def note(self) -> str:
        return (
            f"{SPOT_RULE_NOTE}: on-demand x "
            f"(1 - {_money(self.discount_frac)}) ({self.price_url}); {self.eligibility} ({self.eligibility_url})"
        )


#: provider -> its published preemptible rule. OCI: "Pricing for preemptible instances is simple: Always 50% off
#: your on-demand instance rates" ... "regardless of shape or region" (Oracle, "Announcing GA of Oracle preemptible
#: instances on VM shapes"), and "Preemptible capacity does not support bare metal instances, burstable instances,
#: or instances that have a minimum billing time" (OCI documentation, "Preemptible Instances"): VM.* shapes only.
PREEMPTIBLE_RULES: dict[str, PreemptibleRule] = {
    "oci": PreemptibleRule(
        discount_frac=Decimal("0.5"),
        instance_prefixes=("VM.",),
        price_url="https://blogs.oracle.com/cloud-infrastructure/announcing-ga-of-oracle-preemptible-instances-vm-shapes",
        eligibility_url="https://docs.oracle.com/iaas/Content/Compute/Concepts/preemptible.htm",
        eligibility="preemptible capacity is sold on VM shapes, not on bare metal (BM.*) shapes",
    ),
}
_SUSPECT = "the source prices these GPUs higher as spot than on demand"


@dataclass(frozen=True)
class _ZonePrice:
    price: Decimal | None
    spot: Decimal | None
    line: int
    location: str


@dataclass(frozen=True)
class _GcpHost:
    vcpus: int
    mem_gib: float
    zone: _ZonePrice


@dataclass
class ParseResult:
    """Offering rows (dicts keyed by the catalog's OFFERING_COLUMNS) and the skipped source lines by reason."""

    rows: list[dict[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    source_lines: int = 0
    #: rows whose spot price was derived from a provider's published preemptible rule (PREEMPTIBLE_RULES)
    derived_spot: int = 0
    #: GCP parts waiting to be composed by :func:`finish`: (accelerator, count, region, zone) -> price, and
    #: (machine type, region, zone) -> host, with the source_url of the file each came from
    gcp_gpus: dict[tuple[str, int, str, str], tuple[_ZonePrice, str]] = field(default_factory=dict)
    gcp_hosts: dict[tuple[str, str, str], tuple[_GcpHost, str]] = field(default_factory=dict)
    #: N1 host rows per (region, zone), in source order: machine type -> (host, source_url)
    gcp_n1_hosts: dict[tuple[str, str], dict[tuple[str], tuple[_GcpHost, str]]] = field(default_factory=dict)


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
        if cloud == "gcp" and _gcp_part(rec, name, instance_type, region, price, spot, source_url, res):
            continue
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


def _gcp_part(
    rec: Record,
    name: str,
    instance_type: str,
    region: str,
    price: Decimal | None,
    spot: Decimal | None,
    source_url: str,
    res: ParseResult,
) -> bool:
    """Keep a GCP GPU row or GPU machine-type (host) row for :func:`finish` to compose; True when it was one."""
    if instance_type in GCP_GPU_MACHINES and not name:
        vcpus_f = rec.number("vCPUs")
        mem_gib = rec.number("MemoryGiB")
        if vcpus_f is None or mem_gib is None:
            raise rec.fail("vCPUs", "is empty for a GPU machine type; the source must list vCPUs and MemoryGiB")
        key = (instance_type, region, _zone(rec))
        host = _GcpHost(int(vcpus_f), mem_gib, _ZonePrice(price, spot, rec.line, rec.location))
        _keep_once(res.gcp_hosts, key, (host, source_url), rec, host.zone)
        return True
    if not name and instance_type.startswith(GCP_N1_HOST_FAMILIES):
        vcpus_f = rec.number("vCPUs")
        mem_gib = rec.number("MemoryGiB")
        if vcpus_f is None or mem_gib is None:
            raise rec.fail("vCPUs", "is empty for an N1 host; the source must list vCPUs and MemoryGiB")
        host = _GcpHost(int(vcpus_f), mem_gib, _ZonePrice(price, spot, rec.line, rec.location))
        zone_hosts = res.gcp_n1_hosts.setdefault((region, _zone(rec)), {})
        _keep_once(zone_hosts, (instance_type,), (host, source_url), rec, host.zone)
        return True
    if name and not instance_type and not name.startswith("tpu-"):
        if name not in _GCP_GPU_NAMES and (name not in GCP_N1_GPUS or device_for("gcp", name, "") is None):
            res.skipped["accelerator with no catalog device"] += 1
            return True
        count_f = rec.number("AcceleratorCount")
        if count_f is None or count_f != int(count_f) or count_f < 1:
            raise rec.fail("AcceleratorCount", f"{rec.text('AcceleratorCount')!r} is not a whole GPU count")
        zp = _ZonePrice(price, spot, rec.line, rec.location)
        _keep_once(res.gcp_gpus, (name, int(count_f), region, _zone(rec)), (zp, source_url), rec, zp)
        return True
    return False


def _zone(rec: Record) -> str:
    zone = rec.cells.get("AvailabilityZone", "").strip()
    if not zone:
        raise rec.fail("AvailabilityZone", "is empty; GCP prices are composed zone by zone")
    return zone


def _keep_once(store: dict, key: tuple, value: tuple, rec: Record, zp: _ZonePrice) -> None:
    """Store *value* under *key*; an exact repeat (the GCP source has 154) is fine, a different price is not."""
    seen = store.get(key)
    if seen is None:
        store[key] = value
        return
    old = seen[0].zone if isinstance(seen[0], _GcpHost) else seen[0]
    if (old.price, old.spot) != (zp.price, zp.spot):
        raise rec.fail(
            "Price",
            f"{zp.price}/{zp.spot} differs from {old.price}/{old.spot} on line {old.line} for the same "
            f"{' '.join(str(k) for k in key)}; a zone has one price",
        )


def _compose_gcp(acc: dict[tuple[str, str], _Acc], result: ParseResult) -> None:
    """GCP GPU machine types priced as host VM + GPUs per zone (SkyPilot's composition), into *acc*."""
    gpu_zones_used: set[tuple[str, int, str, str]] = set()
    for (machine, region, zone), (host, url) in sorted(result.gcp_hosts.items()):
        acc_name, count = GCP_GPU_MACHINES[machine]
        gpu_key = (acc_name, count, region, zone)
        gpu = result.gcp_gpus.get(gpu_key)
        if gpu is None:
            result.skipped["GCP GPU machine type with no GPU price in its zone"] += 1
            continue
        gpu_zones_used.add(gpu_key)
        gp = gpu[0]
        hp = host.zone
        on_demand = hp.price + gp.price if hp.price is not None and gp.price is not None else None
        spot = hp.spot + gp.spot if hp.spot is not None and gp.spot is not None else None
        device_id = device_for("gcp", acc_name, machine)
        assert device_id is not None, acc_name  # every name in GCP_GPU_MACHINES has a device
        entry = acc.get((machine, region))
        if entry is None:
            ram = (Decimal(str(host.mem_gib)) * _GIB_TO_GB).quantize(Decimal("0.1"))
            note = (
                f"host {machine} + {count} {acc_name} GPU(s), priced apart in the source and added zone by zone "
                f"as SkyPilot's gcp_catalog does; ram_gb converted from {host.mem_gib:g} GiB"
            )
            if hp.price == 0:
                note += (
                    "; the source lists the host at 0.0, the GPU price includes the VM "
                    "(skypilot-org/skypilot#8125)"
                )
            entry = acc[(machine, region)] = _Acc(
                machine, region, device_id, count, host.vcpus, ram, on_demand, hp.line, [], 0, note, url
            )
        _add_zone(entry, machine, zone, region, on_demand, spot, hp)
        if gp.price is not None and gp.spot is not None and gp.spot > gp.price and _SUSPECT not in entry.extra_note:
            entry.extra_note += (
                f"; {_SUSPECT} ({acc_name} x{count}: on-demand {_money(gp.price)}, spot {_money(gp.spot)} "
                "in the source), so the on-demand total is likely not the list price; treat it as approximate"
            )
    for gpu_key, (gp, url) in result.gcp_gpus.items():
        if gpu_key[0] in GCP_N1_GPUS and _compose_gcp_n1(acc, result, gpu_key, gp, url):
            gpu_zones_used.add(gpu_key)
    unused = [k for k in result.gcp_gpus if k not in gpu_zones_used]
    if unused:
        result.skipped["GCP GPU with no host machine-type row in its zone"] += len(unused)


def _gcp_n1_host(
    result: ParseResult, acc_name: str, count: int, region: str, zone: str
) -> tuple[str, _GcpHost] | None:
    """SkyPilot's host for *count* x *acc_name* in *zone* (``list_accelerators._get_host_instance_type``): the
    cheapest N1 row with enough vCPUs and memory; the first such row in source order on a tie (pandas idxmin)."""
    table = GCP_N1_GPU_VCPUS.get(acc_name, GCP_N1_GPU_VCPUS["DEFAULT"])
    cpus = table.get(count)
    if cpus is None:
        return None
    best: tuple[str, _GcpHost] | None = None
    best_price: Decimal | None = None
    for (machine,), (host, _url) in result.gcp_n1_hosts.get((region, zone), {}).items():
        price = host.zone.price
        if price is None or host.vcpus < cpus or host.mem_gib < cpus * GCP_N1_GIB_PER_VCPU:
            continue
        if best_price is None or price < best_price:
            best, best_price = (machine, host), price
    return best


def _compose_gcp_n1(
    acc: dict[tuple[str, str], _Acc],
    result: ParseResult,
    gpu_key: tuple[str, int, str, str],
    gp: _ZonePrice,
    url: str,
) -> bool:
    """One zone of an N1-attached GPU: host + GPUs into *acc*; False when the zone has no host that fits."""
    acc_name, count, region, zone = gpu_key
    if gp.price is None:
        return False
    picked = _gcp_n1_host(result, acc_name, count, region, zone)
    if picked is None:
        return False
    machine, host = picked
    hp = host.zone
    assert hp.price is not None  # _gcp_n1_host only picks priced hosts
    on_demand = hp.price + gp.price
    spot = hp.spot + gp.spot if hp.spot is not None and gp.spot is not None else None
    name = f"{machine}+{count}x{acc_name}"
    entry = acc.get((name, region))
    if entry is None:
        device_id = device_for("gcp", acc_name, "")
        assert device_id is not None, acc_name  # checked when the GPU row was kept
        ram = (Decimal(str(host.mem_gib)) * _GIB_TO_GB).quantize(Decimal("0.1"))
        note = (
            f"{machine} host + {count} {acc_name} GPU(s) attached, priced apart in the source and added zone by "
            f"zone as SkyPilot's gcp_catalog.list_accelerators does (the cheapest N1 host with at least "
            f"{host_cpus(acc_name, count)} vCPUs and {GCP_N1_GIB_PER_VCPU} GiB per vCPU); "
            f"ram_gb converted from {host.mem_gib:g} GiB"
        )
        entry = acc[(name, region)] = _Acc(
            name, region, device_id, count, host.vcpus, ram, on_demand, hp.line, [], 0, note, url
        )
    _add_zone(entry, name, zone, region, on_demand, spot, hp)
    return True


def _add_zone(
    entry: _Acc, name: str, zone: str, region: str, on_demand: Decimal | None, spot: Decimal | None, hp: _ZonePrice
) -> None:
    """Count one more zone of a GCP host + GPUs offering (and its spot price); its on-demand price must be the
    one the region's other zones list."""
    if entry.on_demand != on_demand:
        raise FetchError(
            "skypilot-gcp",
            hp.location,
            hp.line,
            "Price",
            f"{name} in {zone} costs {on_demand} on demand (host + GPUs) but {entry.on_demand} in another "
            f"zone of {region.split(':', 1)[1]}; on-demand prices must agree across the zones of a region",
        )
    entry.zones += 1
    if spot is not None:
        entry.spots.append(spot)


def host_cpus(acc_name: str, count: int) -> int:
    """The host vCPUs SkyPilot asks for with *count* x *acc_name* on an N1 VM (``_NUM_ACC_TO_NUM_CPU``)."""
    return GCP_N1_GPU_VCPUS.get(acc_name, GCP_N1_GPU_VCPUS["DEFAULT"])[count]


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
    if result.gcp_hosts or result.gcp_gpus:
        acc = dict(acc)
        _compose_gcp(acc, result)
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
        rule = PREEMPTIBLE_RULES.get(provider)
        if spot is None and e.on_demand is not None and rule is not None and rule.applies(instance_type):
            spot = rule.spot(e.on_demand)
            notes.append(rule.note())
            result.derived_spot += 1
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
