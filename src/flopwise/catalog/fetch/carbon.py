"""Grid carbon intensity sources -> one value per grid, newest year first.

- Google's region carbon files (https://github.com/GoogleCloudPlatform/region-carbon-info, ``data/yearly/<YEAR>.csv``,
  Apache-2.0): location-based average grid intensity of each Google Cloud region, gCO2e/kWh, and Google's CFE
  share. A region missing from the newest year falls back to the newest year that lists it, and says so.
- Our World in Data's "Carbon intensity of electricity" (Ember and the Energy Institute Statistical Review;
  https://ourworldindata.org/grapher/carbon-intensity-electricity, CC BY 4.0): gCO2/kWh of generation per
  country and year; the newest year of each country is used.

Every cloud region names its grid in ``region_grids.csv``: a Google region (``gcp:us-east4``) when one shares its
metro or national grid, else a country (``country:US``). So every region on one grid gets the same number (Nebius
eu-north1, Fluidstack Finland and GCP europe-north1 all read Google's europe-north1 value).
"""

from __future__ import annotations

from dataclasses import dataclass

from flopwise.catalog.fetch.table import FetchError, read_table

__all__ = ["GridValue", "ISO2_TO_ISO3", "parse_gcp_carbon", "parse_owid"]

GCP_COLUMNS = ("Google Cloud Region", "Google CFE", "Grid carbon intensity (gCO2eq / kWh)")
OWID_COLUMNS = ("Entity", "Code", "Year", "Carbon intensity of electricity - gCO2/kWh")
_MAX_GCO2E_PER_KWH = 1500.0

#: ISO 3166-1 alpha-2 -> alpha-3 for the countries the catalog uses (OWID keys countries by alpha-3)
ISO2_TO_ISO3 = {
    "AE": "ARE", "AR": "ARG", "AT": "AUT", "AU": "AUS", "BA": "BIH", "BD": "BGD", "BE": "BEL", "BG": "BGR",
    "BH": "BHR", "BO": "BOL", "BR": "BRA", "CA": "CAN", "CH": "CHE", "CL": "CHL", "CN": "CHN", "CO": "COL",
    "CR": "CRI", "CY": "CYP", "CZ": "CZE", "DE": "DEU", "DK": "DNK", "EC": "ECU", "EE": "EST", "EG": "EGY",
    "ES": "ESP", "FI": "FIN", "FR": "FRA", "GB": "GBR", "GE": "GEO", "GR": "GRC", "HK": "HKG", "HR": "HRV",
    "HU": "HUN", "ID": "IDN", "IE": "IRL", "IL": "ISR", "IN": "IND", "IR": "IRN", "IT": "ITA", "JP": "JPN",
    "KR": "KOR", "MX": "MEX", "NL": "NLD", "NO": "NOR", "PL": "POL", "QA": "QAT", "SA": "SAU", "SE": "SWE",
    "SG": "SGP", "SV": "SLV", "TW": "TWN", "US": "USA", "ZA": "ZAF",
}  # fmt: skip


@dataclass(frozen=True)
class GridValue:
    """One grid's intensity, the year it is for, and the exact file it came from."""

    gco2e_per_kwh: float
    year: int
    source_url: str
    detail: str = ""


def _intensity(rec, column: str) -> float:
    value = rec.number(column)
    if value is None:
        raise rec.fail(column, "is empty; every row needs an intensity")
    if value > _MAX_GCO2E_PER_KWH:
        raise rec.fail(
            column, f"{value:g} gCO2e/kWh is implausible (above {_MAX_GCO2E_PER_KWH:g}); check the unit"
        )
    return value


def parse_gcp_carbon(
    files: list[tuple[int, str, str, str]], source: str = "gcp-carbon"
) -> dict[str, GridValue]:
    """``{"gcp:<region>": GridValue}`` from Google's yearly files, given as ``(year, location, source_url, text)``.

    The newest year wins; a region absent from it keeps its newest earlier value.
    """
    out: dict[str, GridValue] = {}
    for year, location, url, text in sorted(files, key=lambda f: -f[0]):
        seen: set[str] = set()
        for rec in read_table(source, location, text, GCP_COLUMNS):
            region = rec.text("Google Cloud Region")
            if not region:
                raise rec.fail("Google Cloud Region", "is empty")
            if region in seen:
                raise rec.fail("Google Cloud Region", f"{region!r} is listed twice in one year")
            seen.add(region)
            value = _intensity(rec, "Grid carbon intensity (gCO2eq / kWh)")
            cfe = rec.number("Google CFE")
            if cfe is not None and cfe > 1:
                raise rec.fail("Google CFE", f"{cfe:g} is not a fraction in [0, 1]")
            key = f"gcp:{region}"
            if key not in out:
                detail = f"Google CFE {round((cfe or 0) * 100)}%"
                out[key] = GridValue(value, year, url, detail)
    return out


def parse_owid(
    location: str, source_url: str, text: str, source: str = "owid-carbon"
) -> dict[str, GridValue]:
    """``{ISO3: GridValue}`` with each country's newest year (aggregates without a code are ignored)."""
    out: dict[str, GridValue] = {}
    for rec in read_table(source, location, text, OWID_COLUMNS):
        code = rec.text("Code")
        if not code or code.startswith("OWID_"):
            continue
        raw_year = rec.text("Year")
        if not raw_year.isdigit():
            raise rec.fail("Year", f"{raw_year!r} is not a year")
        year = int(raw_year)
        value = _intensity(rec, "Carbon intensity of electricity - gCO2/kWh")
        if code not in out or year > out[code].year:
            out[code] = GridValue(round(value, 2), year, source_url, rec.text("Entity"))
    if not out:
        raise FetchError(
            source, location, None, None, "lists no country with a code; is this the right file?"
        )
    return out
