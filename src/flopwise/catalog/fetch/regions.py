"""Region rows from the region registry and the carbon sources: one intensity per grid, newest year first."""

from __future__ import annotations

from collections.abc import Mapping

from flopwise.catalog.fetch import RegionGrid
from flopwise.catalog.fetch.carbon import ISO2_TO_ISO3, GridValue
from flopwise.catalog.fetch.table import FetchError

__all__ = ["build_regions"]


def _grid_value(
    grid: str, gcp: Mapping[str, GridValue], owid: Mapping[str, GridValue]
) -> tuple[GridValue, str] | None:
    if grid.startswith("gcp:"):
        value = gcp.get(grid)
        return (value, f"Google {value.year} location-based grid intensity of {grid}") if value else None
    iso2 = grid.split(":", 1)[1]
    iso3 = ISO2_TO_ISO3.get(iso2)
    value = owid.get(iso3) if iso3 else None
    if value is None:
        return None
    return (
        value,
        f"Ember/Energy Institute {value.year} carbon intensity of electricity of {value.detail} (via OWID)",
    )


def build_regions(
    registry: Mapping[str, RegionGrid],
    gcp: Mapping[str, GridValue],
    owid: Mapping[str, GridValue],
    retrieved: str,
) -> list[dict[str, str]]:
    """One regions.csv row per registry entry, its intensity read from its grid (see carbon.py).

    A grid that no source lists raises FetchError naming the region, never a guessed value.
    """
    rows = []
    for region_id, r in sorted(registry.items()):
        found = _grid_value(r.grid, gcp, owid)
        if found is None:
            source = "gcp-carbon" if r.grid.startswith("gcp:") else "owid-carbon"
            raise FetchError(
                source,
                "region_grids.csv",
                None,
                "grid",
                f"{region_id} reads its intensity from {r.grid}, which the fetched files do not list; "
                "point it at another grid of the same country in region_grids.csv",
            )
        value, what = found
        own = region_id == r.grid
        note = what if own else f"grid of {r.grid}: {what}"
        if value.detail and r.grid.startswith("gcp:"):
            note += f"; {value.detail}"
        rows.append(
            {
                "id": region_id,
                "provider": region_id.split(":", 1)[0],
                "name": r.name,
                "country": r.country,
                "grid_gco2e_per_kwh": f"{value.gco2e_per_kwh:g}",
                "pue": r.pue,
                "aliases": r.aliases,
                "source_url": value.source_url,
                "retrieved": retrieved,
                "basis": "datasheet" if own else "derived",
                "note": f"{note}; {r.pue_note}" if r.pue_note else note,
            }
        )
    return rows
