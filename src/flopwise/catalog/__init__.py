"""The hardware catalog: devices, cloud offerings, on-prem cost profiles and regions, with forgiving lookup.

::

    from flopwise.catalog import load_catalog
    cat = load_catalog()                 # built-in data, plus FLOPWISE_CATALOG_DIR overrides when set
    cat.device("NVIDIA H100 80GB HBM3")  # -> Device(id="h100-sxm", ...)
    cat.region("us-east-1")              # -> Region(id="aws:us-east-1", ...)

Standard library only; loading the built-in catalog imports no numpy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from types import MappingProxyType

from flopwise.catalog.loader import (
    BUILTIN_DATA_DIR,
    CATALOG_DIR_ENV,
    CATALOG_SCHEMA_VERSION,
    CatalogData,
    read_builtin,
    read_catalog_dir,
    refreshed_files,
)
from flopwise.catalog.resolve import DeviceIndex, resolve_region
from flopwise.catalog.types import DEVICE_KINDS, DTYPES, Device, Offering, OnPremProfile, Region

__all__ = [
    "BUILTIN_DATA_DIR",
    "CATALOG_DIR_ENV",
    "CATALOG_SCHEMA_VERSION",
    "DEVICE_KINDS",
    "DTYPES",
    "Catalog",
    "Device",
    "OnPremProfile",
    "Offering",
    "Region",
    "load_catalog",
]


class Catalog:
    """A validated, read-only catalog. Build it with :func:`load_catalog`."""

    __slots__ = ("_device_index", "devices", "offerings", "onprem", "regions", "sources")

    def __init__(self, data: CatalogData, sources: tuple[str, ...] = ()) -> None:
        data.check_references()
        self.devices: Mapping[str, Device] = MappingProxyType(dict(data.devices))
        self.offerings: tuple[Offering, ...] = tuple(sorted(data.offerings.values(), key=lambda o: o.id))
        self.onprem: Mapping[str, OnPremProfile] = MappingProxyType(dict(data.onprem))
        self.regions: Mapping[str, Region] = MappingProxyType(dict(data.regions))
        #: the directories read, built-in first
        self.sources = sources
        self._device_index: DeviceIndex | None = None

    def device(self, name: str) -> Device:
        """The device called *name*: an id ("h100-sxm"), a marketing or driver name ("NVIDIA H100 80GB HBM3",
        "GeForce RTX 4090", "Tesla T4") or a family ("H100" -> the SXM board). See ``catalog.resolve``.

        Raises UnknownAcceleratorError with up to three suggestions.
        """
        if name in self.devices:
            return self.devices[name]
        if self._device_index is None:
            self._device_index = DeviceIndex(self.devices)
        return self._device_index.resolve(name)

    def region(self, name: str) -> Region:
        """The region called *name*: "aws:us-east-1", "us-east-1" (when only one provider has it), "France", "FR".

        Raises UnknownRegionError (with suggestions, or the candidates when ambiguous).
        """
        return resolve_region(self.regions, name)

    def offerings_for(self, device: str) -> list[Offering]:
        """Offerings whose device is *device* (an id or any name ``device()`` accepts), ordered by id."""
        device_id = device if device in self.devices else self.device(device).id
        return [o for o in self.offerings if o.device_id == device_id]

    def __repr__(self) -> str:
        return (
            f"Catalog(devices={len(self.devices)}, offerings={len(self.offerings)}, "
            f"onprem={len(self.onprem)}, regions={len(self.regions)})"
        )


_BUILTIN_CATALOG: list[Catalog] = []


def load_catalog(catalog_dir: str | os.PathLike[str] | None = None, as_of: date | None = None) -> Catalog:
    """The built-in catalog, overridden and extended by *catalog_dir* (or ``$FLOPWISE_CATALOG_DIR`` when
    *catalog_dir* is None).

    The override directory has the layout of ``catalog/data``; a row whose id (``device_id`` in
    ``onprem.csv``) equals a built-in one replaces it, new ids add. Every file is validated, and so are
    the references between them after the merge. The built-in catalog alone is cached per process.

    With *as_of*, each file that ``catalog refresh`` keeps history for is read as it was on that date: the
    newest snapshot retrieved on or before it (current files or ``history/<date>/``), so a plan can answer
    "what did this cost in March". A date older than every snapshot raises InputError naming the oldest.

    Raises CatalogFileError naming the file, line and field of the first bad value.
    """
    if catalog_dir is None:
        catalog_dir = os.environ.get(CATALOG_DIR_ENV) or None
    if as_of is not None:
        return _load_as_of(catalog_dir, as_of)
    builtin = read_builtin()
    if catalog_dir is None:
        if not _BUILTIN_CATALOG:
            _BUILTIN_CATALOG.append(Catalog(builtin, (str(BUILTIN_DATA_DIR),)))
        return _BUILTIN_CATALOG[0]
    user = read_catalog_dir(catalog_dir)
    replaced = list(refreshed_files(catalog_dir))
    if replaced:
        builtin = builtin.without_files(replaced)
    return Catalog(builtin.merged_with(user), (str(BUILTIN_DATA_DIR), str(Path(catalog_dir))))


def _snapshot_dates(root: Path) -> dict[str, list[tuple[str, Path]]]:
    """``{relpath: [(retrieved, folder)]}`` over the current files and every ``history/*`` snapshot of *root*."""
    out: dict[str, list[tuple[str, Path]]] = {}
    folders = [root]
    if (root / "history").is_dir():
        folders += sorted(p for p in (root / "history").iterdir() if p.is_dir())
    for folder in folders:
        for rel, info in refreshed_files(folder).items():
            if (folder / rel).is_file() and isinstance(info, dict) and info.get("retrieved"):
                out.setdefault(rel, []).append((str(info["retrieved"]), folder))
    return out


def _load_as_of(catalog_dir: str | os.PathLike[str] | None, as_of: date) -> Catalog:
    from flopwise.catalog.loader import read_offerings, read_regions
    from flopwise.errors import InputError

    day = as_of.isoformat()
    builtin = read_builtin()
    if catalog_dir is None:
        _check_not_newer(builtin, day)
        return load_catalog(None)
    root = Path(catalog_dir)
    data = builtin.merged_with(read_catalog_dir(root)) if root.is_dir() else builtin
    for rel, versions in sorted(_snapshot_dates(root).items()):
        usable = [v for v in versions if v[0] <= day]
        if not usable:
            first = min(v[0] for v in versions)
            raise InputError(
                "--as-of", day, f"the oldest snapshot of {rel} is from {first}; give a later date"
            )
        _, folder = max(usable, key=lambda v: v[0])
        data = data.without_files([rel])  # the built-in and the current copy alike
        reader = read_regions if rel == "regions.csv" else read_offerings
        kind, target = ("region", data.regions) if rel == "regions.csv" else ("offering", data.offerings)
        for record, path, line in reader(folder / rel):
            target[record.id] = record  # type: ignore[assignment]  # regions with regions, offerings with offerings
            data.origins[(kind, record.id)] = (path, line)
    _check_not_newer(data, day)
    return Catalog(data, (str(BUILTIN_DATA_DIR), str(root)))


def _check_not_newer(data: CatalogData, day: str) -> None:
    """Refuse an as-of answer built on prices or intensities retrieved after *day* (no silent substitution)."""
    from flopwise.errors import InputError

    newer: dict[str, int] = {}
    for kind, records in (("offering", data.offerings), ("region", data.regions)):
        for key, record in records.items():
            if record.retrieved > day:
                path = Path(data.origins[(kind, key)][0])
                label = f"{path.parent.name}/{path.name}" if path.parent.name == "offerings" else path.name
                newer[label] = newer.get(label, 0) + 1
    if newer:
        files = ", ".join(f"{name} ({n} rows)" for name, n in sorted(newer.items()))
        raise InputError(
            "--as-of",
            day,
            f"these files hold prices or intensities retrieved after it and no older snapshot: {files}; "
            "refresh them into your catalog directory (--catalog DIR) so that history starts, or give a later date",
        )
