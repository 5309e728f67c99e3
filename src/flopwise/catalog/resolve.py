"""Forgiving name resolution for devices and regions.

Device names (``resolve_device``), in order:

1. **Exact**: the name, with case, spaces and punctuation ignored, equals a device's id, name or one of
   its aliases ("h100-sxm", "NVIDIA H100 SXM5 80GB", "Tesla T4").
2. **Tokens**: the name is split into tokens after dropping vendor and packaging words (NVIDIA, GeForce,
   Tesla, AMD, Apple, GPU, HBM3, GDDR6X, ...). ``sxm2``/``sxm4``/``sxm5`` read as ``sxm``; a memory size
   ("80GB") and a GPU core count ("38-core", "38c") become hints. A device is a candidate when every
   remaining token appears in its id, name or one alias. So "NVIDIA A100-SXM4-80GB" (nvidia-smi),
   "NVIDIA 4090 24GB", "TPU v5e" and "Apple M2 Max (38-core GPU)" all resolve.
3. **Default variant** when several candidates remain (the rule, applied in this order):

   - a memory hint keeps the candidates whose memory is within 10 % of it; if none is, the name is
     unknown for fixed-memory accelerators (``V100 PCIe 32GB`` is not in the catalog) and the hint is
     ignored for Apple, CPU and edge parts, whose memory is configured by the buyer;
   - a core-count hint keeps the candidates with that many GPU cores;
   - fewest extra tokens: "RTX 4070" is ``rtx-4070``, not ``rtx-4070-ti``; ``sxm`` does not count
     as extra, so **the SXM board is the default** when only the family is given ("H100" ->
     ``h100-sxm``, "H200" -> ``h200-sxm``; "H100 PCIe" and "H100 NVL" pick the others);
   - then the largest memory ("A100" -> ``a100-sxm-80gb``, "RTX 3080" -> ``rtx-3080-12gb``);
   - then the most GPU cores ("M2 Max" -> ``apple-m2-max-38c``).

   Candidates still tied are ambiguous: ``UnknownAcceleratorError`` lists them.

An unknown name raises ``UnknownAcceleratorError`` with up to three suggestions: close spellings
(``flopwise.errors.suggest``), then devices sharing tokens or substrings with the name ("h100-foo"
suggests the H100 boards).

Regions (``resolve_region``): exact id ("aws:us-east-1"); then the part after the provider prefix,
the name and aliases, first ignoring case only ("us-east-1" is AWS's, "us-east1" Google's), then also
ignoring punctuation ("France", "FR", "useast-1"). When the best tier matches regions of several
providers the name is ambiguous and ``UnknownRegionError`` lists the candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flopwise.catalog.types import Device, Region
from flopwise.errors import UnknownAcceleratorError, UnknownRegionError, suggest

__all__ = [
    "DEFAULT_FORM_TOKEN",
    "DeviceIndex",
    "PROVIDER_REGION_PREFIX",
    "normalize_name",
    "record_region",
    "resolve_device",
    "resolve_region",
]

#: FOCUS ProviderName (and common spellings) -> the provider prefix of catalog region ids
PROVIDER_REGION_PREFIX = {
    "aws": "aws",
    "amazon web services": "aws",
    "amazon": "aws",
    "microsoft": "azure",
    "azure": "azure",
    "microsoft azure": "azure",
    "google cloud": "gcp",
    "google": "gcp",
    "gcp": "gcp",
    "oracle": "oci",
    "oci": "oci",
    "lambda": "lambda",
    "coreweave": "coreweave",
    "nebius": "nebius",
}

#: the form-factor token that does not count as an extra: the SXM board is the default variant of a family
DEFAULT_FORM_TOKEN = "sxm"
_NOISE_WORDS = (
    "nvidia amd intel apple google amazon aws habana qualcomm geforce tesla quadro instinct cloud "
    "gpu gpus graphics card processor accelerator generation gen edition founders with the and "
    "hbm hbm2 hbm2e hbm3 hbm3e gddr5 gddr6 gddr6x gddr7 lpddr4x lpddr5 lpddr5x ddr4 ddr5 memory"
)
_NOISE = frozenset(_NOISE_WORDS.split())
#: words that name a kind or a product line, not one device: a name made only of these never picks a default
#: ("cpu" is not NVIDIA Grace, "tpu" is not TPU v4); the error lists the candidates
_GENERIC_WORDS = "cpu cpus tpu tpus npu soc rtx gtx radeon rx xeon epyc ryzen core jetson graviton arc pro max ultra"
_GENERIC = frozenset(_GENERIC_WORDS.split())
_KIND_WORDS = {"cpu": "cpu", "cpus": "cpu", "tpu": "tpu", "tpus": "tpu", "soc": "soc"}
#: how many candidates an ambiguous generic name lists
_GENERIC_LISTED = 8
_MEM_RE = re.compile(r"^(\d+(?:\.\d+)?)(gb|g|gib)$")
_CORES_RE = re.compile(r"^(\d+)(?:c|core|cores)$")
_SXM_RE = re.compile(r"^sxm\d?$")
_GLUED_PREFIX_RE = re.compile(r"^(rtx|gtx|tpu|rx)(\d.*)$")
_MEM_TOLERANCE_FRAC = 0.10
_FLEXIBLE_MEMORY_SEGMENTS = frozenset(("apple", "server-cpu", "desktop-cpu", "edge", "mobile"))


def normalize_name(text: str) -> str:
    """Lower case with everything but letters and digits removed ("NVIDIA A100-SXM4" -> "nvidiaa100sxm4")."""
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("+", "plus"))


@dataclass(frozen=True)
class _Parsed:
    tokens: frozenset[str]
    mem_gb: float | None
    cores: int | None


def _parse(text: str) -> _Parsed:
    raw = re.split(r"[^a-z0-9.]+", text.lower().replace("+", "plus"))
    tokens: list[str] = []
    mem_gb: float | None = None
    cores: int | None = None
    for i, tok in enumerate(t.strip(".") for t in raw):
        if not tok or tok in _NOISE:
            continue
        if (m := _MEM_RE.match(tok)) is not None:
            mem_gb = float(m.group(1))
            continue
        if (m := _CORES_RE.match(tok)) is not None:
            cores = int(m.group(1))
            continue
        if tok in ("core", "cores"):
            if tokens and tokens[-1].isdigit():
                cores = int(tokens.pop())
            continue
        if tok.isdigit() and i + 1 < len(raw) and raw[i + 1] in ("gb", "gib"):
            mem_gb = float(tok)
            continue
        if tok in ("gb", "gib"):
            continue
        if _SXM_RE.match(tok):
            tok = DEFAULT_FORM_TOKEN
        elif (m := _GLUED_PREFIX_RE.match(tok)) is not None:
            tokens.append(m.group(1))
            tok = m.group(2)
        tokens.append(tok)
    return _Parsed(frozenset(tokens), mem_gb, cores)


@dataclass(frozen=True)
class _Entry:
    device: Device
    labels: tuple[_Parsed, ...]
    cores: int | None


class DeviceIndex:
    """Lookup structures over a set of devices, built once per catalog."""

    def __init__(self, devices: Mapping[str, Device]) -> None:
        self.devices = devices
        self.exact: dict[str, set[str]] = {}
        self.entries: list[_Entry] = []
        for device in devices.values():
            labels = (device.id, device.name, *device.aliases)
            for label in labels:
                self.exact.setdefault(normalize_name(label), set()).add(device.id)
            parsed = tuple(_parse(label) for label in labels)
            cores = next((p.cores for p in parsed if p.cores is not None), None)
            self.entries.append(_Entry(device, parsed, cores))

    def resolve(self, name: str) -> Device:
        key = normalize_name(name)
        hits = self.exact.get(key, set())
        if len(hits) == 1:
            return self.devices[next(iter(hits))]
        if len(hits) > 1:
            raise _ambiguous_device(name, sorted(hits))
        query = _parse(name)
        if not query.tokens:
            raise UnknownAcceleratorError(name, self.suggestions(name))
        if query.tokens <= _GENERIC:
            self._refuse_generic(name, query)
        candidates: list[tuple[int, _Entry]] = []
        for entry in self.entries:
            extras = [
                len(label.tokens - query.tokens - {DEFAULT_FORM_TOKEN})
                for label in entry.labels
                if query.tokens <= label.tokens
            ]
            if extras:
                candidates.append((min(extras), entry))
        if not candidates:
            raise UnknownAcceleratorError(name, self.suggestions(name))
        if query.mem_gb is not None:
            fits = [c for c in candidates if _memory_matches(c[1], query.mem_gb)]
            if fits:
                candidates = fits
            elif not all(c[1].device.segment in _FLEXIBLE_MEMORY_SEGMENTS for c in candidates):
                raise UnknownAcceleratorError(name, [c[1].device.id for c in _ranked(candidates)][:3])
        if query.cores is not None:
            fits = [c for c in candidates if c[1].cores == query.cores]
            if not fits:
                raise UnknownAcceleratorError(name, [c[1].device.id for c in _ranked(candidates)][:3])
            candidates = fits
        ranked = _ranked(candidates)
        best = _rank_key(ranked[0])
        tied = [c[1].device.id for c in ranked if _rank_key(c) == best]
        if len(tied) > 1:
            raise _ambiguous_device(name, tied)
        return ranked[0][1].device

    def _refuse_generic(self, name: str, query: _Parsed) -> None:
        """A name made only of generic words (a kind or product line) is ambiguous unless one device matches."""
        kinds = {_KIND_WORDS[t] for t in query.tokens if t in _KIND_WORDS}
        ids = [
            e.device.id
            for e in self.entries
            if e.device.kind in kinds or any(query.tokens <= label.tokens for label in e.labels)
        ]
        if len(ids) == 1:
            return
        if not ids:
            raise UnknownAcceleratorError(name, self.suggestions(name))
        shown = ids[:_GENERIC_LISTED]
        more = f" (and {len(ids) - len(shown)} more)" if len(ids) > len(shown) else ""
        err = UnknownAcceleratorError(name, shown)
        err.args = (
            f"Ambiguous device {name!r}: it names a kind or product line, not one device; it matches "
            f"{', '.join(repr(i) for i in shown)}{more}. Give one of these ids "
            "(`flopwise catalog devices` lists all).",
        )
        raise err

    def suggestions(self, name: str, n: int = 3) -> list[str]:
        """Up to *n* device ids close to *name*: close spellings, then shared tokens and substrings."""
        out: list[str] = []
        labels: dict[str, str] = {}
        for entry in self.entries:
            for text in (entry.device.id, entry.device.name, *entry.device.aliases):
                labels.setdefault(text, entry.device.id)
        for hit in suggest(name, labels, n=n):
            out.append(labels[hit])
        query = _parse(name)
        key = normalize_name(name)
        scored: list[tuple[float, str]] = []
        for entry in self.entries:
            best = 0.0
            for label in entry.labels:
                if label.tokens and query.tokens:
                    overlap = len(label.tokens & query.tokens) / len(label.tokens | query.tokens)
                    best = max(best, overlap)
            device_key = normalize_name(entry.device.id)
            if len(key) >= 3 and (device_key in key or key in device_key):
                best = max(best, 0.5 + min(len(key), len(device_key)) / (2 * max(len(key), len(device_key))))
            if best > 0:
                scored.append((best, entry.device.id))
        scored.sort(key=lambda s: (-s[0], s[1]))
        for _, device_id in scored:
            out.append(device_id)
        unique = list(dict.fromkeys(out))
        return unique[:n]


def _memory_matches(entry: _Entry, mem_gb: float) -> bool:
    if abs(entry.device.memory_gb - mem_gb) <= _MEM_TOLERANCE_FRAC * mem_gb:
        return True
    return any(label.mem_gb == mem_gb for label in entry.labels)


def _rank_key(candidate: tuple[int, _Entry]) -> tuple[int, float, int]:
    extras, entry = candidate
    return (extras, -entry.device.memory_gb, -(entry.cores or 0))


def _ranked(candidates: list[tuple[int, _Entry]]) -> list[tuple[int, _Entry]]:
    return sorted(candidates, key=lambda c: (*_rank_key(c), c[1].device.id))


def _ambiguous_device(name: str, ids: list[str]) -> UnknownAcceleratorError:
    err = UnknownAcceleratorError(name, ids)
    err.args = (
        f"Ambiguous device {name!r}: it matches {', '.join(repr(i) for i in ids)}. Give one of these ids.",
    )
    return err


def resolve_device(devices: Mapping[str, Device], name: str, index: DeviceIndex | None = None) -> Device:
    """The device *name* refers to (see the module docstring for the rules). Raises UnknownAcceleratorError."""
    if name in devices:
        return devices[name]
    return (index or DeviceIndex(devices)).resolve(name)


# -------------------------------------------------------------------------------------------- regions


def _region_keys(region: Region) -> Iterable[str]:
    yield region.id
    yield region.id.split(":", 1)[1]
    yield region.name
    yield from region.aliases


def resolve_region(regions: Mapping[str, Region], name: str) -> Region:
    """The region *name* refers to: exact id, or a unique match on the id suffix, name or an alias.

    Raises UnknownRegionError with suggestions, or listing the candidates when the name is ambiguous.
    """
    if name in regions:
        return regions[name]
    key = normalize_name(name)
    if not key:
        raise UnknownRegionError(name, [])
    full = [r.id for r in regions.values() if normalize_name(r.id) == key]
    if len(full) == 1:
        return regions[full[0]]
    folded = name.strip().casefold()
    hits = sorted({r.id for r in regions.values() if any(k.casefold() == folded for k in _region_keys(r))})
    if len(hits) != 1:
        hits = sorted(
            {r.id for r in regions.values() if any(normalize_name(k) == key for k in _region_keys(r))}
        )
    if len(hits) == 1:
        return regions[hits[0]]
    if len(hits) > 1:
        err = UnknownRegionError(name, hits)
        err.args = (
            f"Ambiguous region {name!r}: it matches {', '.join(repr(h) for h in hits)}. "
            "Give the full id with its provider prefix.",
        )
        raise err
    labels: dict[str, str] = {}
    for region in regions.values():
        for k in _region_keys(region):
            labels.setdefault(k, region.id)
    out = [labels[s] for s in suggest(name, labels, n=6)]
    out += sorted(r.id for r in regions.values() if len(key) >= 3 and key in normalize_name(r.id))
    raise UnknownRegionError(name, list(dict.fromkeys(out))[:3])


def record_region(regions: Mapping[str, Region], provider: str | None, region_id: str | None) -> Region | None:
    """The catalog region of a usage record (FOCUS ProviderName and RegionId): ``<provider prefix>:<RegionId>``,
    then ``RegionId`` alone (``resolve_region``); None when the record names none or nothing resolves."""
    if not region_id:
        return None
    prefix = PROVIDER_REGION_PREFIX.get((provider or "").strip().lower())
    names = ([f"{prefix}:{region_id}"] if prefix and ":" not in region_id else []) + [region_id]
    for name in names:
        try:
            return resolve_region(regions, name)
        except UnknownRegionError:
            continue
    return None
