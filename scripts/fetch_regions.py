#!/usr/bin/env python3
"""Build ``src/flopwise/catalog/data/regions.csv`` from the upstream grid-carbon files plus hand-entered rows.

Standalone fetcher (never imported by the flopwise package). Inputs, read from a directory that holds copies of
the upstream files (by default ``../shared/data/carbon`` next to the repository):

* ``cloud-region-impact.csv``  -- mlco2/codecarbon ``codecarbon/data/cloud/impact.csv`` (MIT): gCO2e/kWh per
  cloud region in its ``impact`` column.
* ``gcp-region-carbon-2024.csv`` -- GoogleCloudPlatform/region-carbon-info ``data/yearly/2024.csv``
  (Apache-2.0): Google's 2024 location-based grid carbon intensity and carbon-free-energy share per region.

Every AWS, GCP and Azure region found in those files is written. For GCP, Google's own 2024 grid figure wins over
codecarbon's. AWS and Azure regions that the files do not cover are written from a hand-kept table that maps each
region to the GCP region in the same metro or grid (or to a country row), basis=derived. GPU-cloud regions
(Lambda, CoreWeave, Nebius) map to their country grid, and ``country:XX`` rows come from Ember's 2023 carbon
intensity of electricity as published by Our World in Data.

Usage::

    python scripts/fetch_regions.py [--carbon-dir DIR] [--out PATH] [--check]

The output is deterministic: re-running on the same inputs reproduces the committed file byte for byte
(``--check`` exits 1 when the committed file differs).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CARBON_DIR = REPO.parent / "shared" / "data" / "carbon"
DEFAULT_OUT = REPO / "src" / "flopwise" / "catalog" / "data" / "regions.csv"

CODECARBON_FILE = "cloud-region-impact.csv"
GOOGLE_FILE = "gcp-region-carbon-2024.csv"
CODECARBON_URL = "https://github.com/mlco2/codecarbon/blob/master/codecarbon/data/cloud/impact.csv"
GOOGLE_URL = "https://github.com/GoogleCloudPlatform/region-carbon-info/blob/main/data/yearly/2024.csv"
OWID_URL = "https://ourworldindata.org/grapher/carbon-intensity-electricity"
#: date the upstream snapshots in shared/data/carbon and the OWID table were read
RETRIEVED = "2026-11-21"

COLUMNS = (
    "id",
    "provider",
    "name",
    "country",
    "grid_gco2e_per_kwh",
    "pue",
    "aliases",
    "source_url",
    "retrieved",
    "basis",
    "note",
)


@dataclass(frozen=True)
class ProviderPue:
    pue: float
    note: str


# Published fleet PUE per provider; GPU clouds and countries get a documented generic default.
PUE = {
    "gcp": ProviderPue(
        1.10,
        "PUE 1.10: Google fleet-wide average for 2023 "
        "(https://www.gstatic.com/gumdrop/sustainability/google-2024-environmental-report.pdf)",
    ),
    "aws": ProviderPue(
        1.15,
        "PUE 1.15: AWS global PUE for 2023 (https://sustainability.aboutamazon.com/2023-report)",
    ),
    "azure": ProviderPue(
        1.18,
        "PUE 1.18: Microsoft design PUE of current Azure datacenters "
        "(https://www.microsoft.com/en-us/corporate-responsibility/sustainability/report)",
    ),
    "default": ProviderPue(
        1.56,
        "PUE 1.56: Uptime Institute Global Data Center Survey 2024 industry average "
        "(https://uptimeinstitute.com/resources/research-and-reports/uptime-institute-global-data-center-survey-results-2024)",
    ),
}

# codecarbon's impact.csv misspells one region id; map it to the real one so it merges with Google's row.
REGION_ID_FIXES = {("gcp", "me-cenrtal1"): "me-central1"}

# ISO 3166-1 alpha-2 country of each GCP region (codecarbon gives alpha-3 and files Hong Kong under China).
GCP_COUNTRY = {
    "africa-south1": "ZA",
    "asia-east1": "TW",
    "asia-east2": "HK",
    "asia-northeast1": "JP",
    "asia-northeast2": "JP",
    "asia-northeast3": "KR",
    "asia-south1": "IN",
    "asia-south2": "IN",
    "asia-southeast1": "SG",
    "asia-southeast2": "ID",
    "australia-southeast1": "AU",
    "australia-southeast2": "AU",
    "europe-central2": "PL",
    "europe-north1": "FI",
    "europe-north2": "SE",
    "europe-southwest1": "ES",
    "europe-west1": "BE",
    "europe-west2": "GB",
    "europe-west3": "DE",
    "europe-west4": "NL",
    "europe-west6": "CH",
    "europe-west8": "IT",
    "europe-west9": "FR",
    "europe-west10": "DE",
    "europe-west12": "IT",
    "me-central1": "QA",
    "me-central2": "SA",
    "me-west1": "IL",
    "northamerica-northeast1": "CA",
    "northamerica-northeast2": "CA",
    "northamerica-south1": "MX",
    "southamerica-east1": "BR",
    "southamerica-west1": "CL",
    "us-central1": "US",
    "us-central2": "US",
    "us-east1": "US",
    "us-east2": "US",
    "us-east4": "US",
    "us-east5": "US",
    "us-south1": "US",
    "us-west1": "US",
    "us-west2": "US",
    "us-west3": "US",
    "us-west4": "US",
}

ISO3_TO_ISO2 = {
    "USA": "US", "CAN": "CA", "MEX": "MX", "BRA": "BR", "CHL": "CL", "GBR": "GB", "IRL": "IE", "FRA": "FR",
    "DEU": "DE", "NLD": "NL", "BEL": "BE", "CHE": "CH", "ITA": "IT", "ESP": "ES", "SWE": "SE", "FIN": "FI",
    "NOR": "NO", "POL": "PL", "AUT": "AT", "JPN": "JP", "KOR": "KR", "IND": "IN", "SGP": "SG", "IDN": "ID",
    "AUS": "AU", "ZAF": "ZA", "TWN": "TW", "CHN": "CN", "HKG": "HK", "QAT": "QA", "SAU": "SA", "ISR": "IL",
    "ARE": "AE", "BHR": "BH",
}  # fmt: skip

# Ember yearly electricity data, 2023 lifecycle carbon intensity of generation, as tabulated by Our World in Data.
# (country code, name, gCO2e/kWh)
COUNTRIES = (
    ("AR", "Argentina", 354),
    ("AT", "Austria", 111),
    ("AU", "Australia", 549),
    ("BA", "Bosnia and Herzegovina", 600),
    ("BD", "Bangladesh", 691),
    ("BE", "Belgium", 138),
    ("BG", "Bulgaria", 335),
    ("BO", "Bolivia", 532),
    ("BR", "Brazil", 98),
    ("CA", "Canada", 170),
    ("CL", "Chile", 291),
    ("CN", "China", 582),
    ("CO", "Colombia", 260),
    ("CR", "Costa Rica", 53),
    ("CY", "Cyprus", 534),
    ("CZ", "Czechia", 450),
    ("DE", "Germany", 381),
    ("DK", "Denmark", 152),
    ("EC", "Ecuador", 150),
    ("EE", "Estonia", 417),
    ("EG", "Egypt", 570),
    ("ES", "Spain", 174),
    ("FI", "Finland", 79),
    ("FR", "France", 56),
    ("GB", "United Kingdom", 238),
    ("GE", "Georgia", 168),
    ("GR", "Greece", 337),
    ("HR", "Croatia", 205),
    ("HU", "Hungary", 204),
    ("IE", "Ireland", 291),
    ("IN", "India", 713),
    ("IR", "Iran", 655),
    ("IT", "Italy", 331),
    ("JP", "Japan", 485),
    ("KR", "South Korea", 432),
    ("NL", "Netherlands", 268),
    ("NO", "Norway", 30),
    ("PL", "Poland", 662),
    ("SE", "Sweden", 41),
    ("SV", "El Salvador", 271),
    ("US", "United States", 369),
    ("ZA", "South Africa", 708),
)

# AWS and Azure regions not covered by the input files: (id, name, country, grid source, aliases, where).
# The grid source is a GCP region in the same metro or grid ("gcp:...") or a country row ("country:XX").
DERIVED_CLOUD_REGIONS = (
    ("aws:us-east-1", "AWS US East (N. Virginia)", "US", "gcp:us-east4", "US East (N. Virginia)", "Ashburn, VA"),
    ("aws:us-east-2", "AWS US East (Ohio)", "US", "gcp:us-east5", "US East (Ohio)", "Columbus, OH"),
    ("aws:us-west-1", "AWS US West (N. California)", "US", "gcp:us-west2", "US West (N. California)",
     "California (CAISO grid)"),
    ("aws:us-west-2", "AWS US West (Oregon)", "US", "gcp:us-west1", "US West (Oregon)", "Oregon"),
    ("aws:ca-central-1", "AWS Canada (Central)", "CA", "gcp:northamerica-northeast1", "Canada (Central)",
     "Montreal, QC"),
    ("aws:sa-east-1", "AWS South America (Sao Paulo)", "BR", "gcp:southamerica-east1",
     "South America (Sao Paulo)", "Sao Paulo"),
    ("aws:eu-west-1", "AWS Europe (Ireland)", "IE", "country:IE", "Europe (Ireland)", "Ireland"),
    ("aws:eu-west-2", "AWS Europe (London)", "GB", "gcp:europe-west2", "Europe (London)", "London"),
    ("aws:eu-west-3", "AWS Europe (Paris)", "FR", "gcp:europe-west9", "Europe (Paris)", "Paris"),
    ("aws:eu-central-1", "AWS Europe (Frankfurt)", "DE", "gcp:europe-west3", "Europe (Frankfurt)", "Frankfurt"),
    ("aws:eu-central-2", "AWS Europe (Zurich)", "CH", "gcp:europe-west6", "Europe (Zurich)", "Zurich"),
    ("aws:eu-north-1", "AWS Europe (Stockholm)", "SE", "gcp:europe-north2", "Europe (Stockholm)", "Stockholm"),
    ("aws:eu-south-1", "AWS Europe (Milan)", "IT", "gcp:europe-west8", "Europe (Milan)", "Milan"),
    ("aws:eu-south-2", "AWS Europe (Spain)", "ES", "gcp:europe-southwest1", "Europe (Spain)", "Spain"),
    ("aws:ap-northeast-1", "AWS Asia Pacific (Tokyo)", "JP", "gcp:asia-northeast1", "Asia Pacific (Tokyo)",
     "Tokyo"),
    ("aws:ap-northeast-2", "AWS Asia Pacific (Seoul)", "KR", "gcp:asia-northeast3", "Asia Pacific (Seoul)",
     "Seoul"),
    ("aws:ap-northeast-3", "AWS Asia Pacific (Osaka)", "JP", "gcp:asia-northeast2", "Asia Pacific (Osaka)",
     "Osaka"),
    ("aws:ap-south-1", "AWS Asia Pacific (Mumbai)", "IN", "gcp:asia-south1", "Asia Pacific (Mumbai)", "Mumbai"),
    ("aws:ap-southeast-1", "AWS Asia Pacific (Singapore)", "SG", "gcp:asia-southeast1",
     "Asia Pacific (Singapore)", "Singapore"),
    ("aws:ap-southeast-2", "AWS Asia Pacific (Sydney)", "AU", "gcp:australia-southeast1",
     "Asia Pacific (Sydney)", "Sydney"),
    ("aws:ap-southeast-3", "AWS Asia Pacific (Jakarta)", "ID", "gcp:asia-southeast2", "Asia Pacific (Jakarta)",
     "Jakarta"),
    ("aws:ap-southeast-4", "AWS Asia Pacific (Melbourne)", "AU", "gcp:australia-southeast2",
     "Asia Pacific (Melbourne)", "Melbourne"),
    ("aws:ap-east-1", "AWS Asia Pacific (Hong Kong)", "HK", "gcp:asia-east2", "Asia Pacific (Hong Kong)",
     "Hong Kong"),
    ("aws:af-south-1", "AWS Africa (Cape Town)", "ZA", "gcp:africa-south1", "Africa (Cape Town)",
     "South Africa (national Eskom grid)"),
    ("aws:il-central-1", "AWS Israel (Tel Aviv)", "IL", "gcp:me-west1", "Israel (Tel Aviv)", "Tel Aviv"),
    ("azure:eastus", "Azure East US", "US", "gcp:us-east4", "East US", "Virginia"),
    ("azure:eastus2", "Azure East US 2", "US", "gcp:us-east4", "East US 2", "Virginia"),
    ("azure:southcentralus", "Azure South Central US", "US", "gcp:us-south1", "South Central US",
     "Texas (ERCOT grid)"),
    ("azure:centralus", "Azure Central US", "US", "gcp:us-central1", "Central US", "Iowa"),
    ("azure:westus", "Azure West US", "US", "gcp:us-west2", "West US", "California (CAISO grid)"),
    ("azure:canadacentral", "Azure Canada Central", "CA", "gcp:northamerica-northeast2", "Canada Central",
     "Toronto"),
    ("azure:brazilsouth", "Azure Brazil South", "BR", "gcp:southamerica-east1", "Brazil South", "Sao Paulo"),
    ("azure:northeurope", "Azure North Europe", "IE", "country:IE", "North Europe", "Ireland"),
    ("azure:westeurope", "Azure West Europe", "NL", "gcp:europe-west4", "West Europe", "Netherlands"),
    ("azure:uksouth", "Azure UK South", "GB", "gcp:europe-west2", "UK South", "London"),
    ("azure:francecentral", "Azure France Central", "FR", "gcp:europe-west9", "France Central", "Paris"),
    ("azure:germanywestcentral", "Azure Germany West Central", "DE", "gcp:europe-west3", "Germany West Central",
     "Frankfurt"),
    ("azure:swedencentral", "Azure Sweden Central", "SE", "country:SE", "Sweden Central", "Sweden"),
    ("azure:switzerlandnorth", "Azure Switzerland North", "CH", "gcp:europe-west6", "Switzerland North",
     "Zurich"),
    ("azure:italynorth", "Azure Italy North", "IT", "gcp:europe-west8", "Italy North", "Milan"),
    ("azure:polandcentral", "Azure Poland Central", "PL", "gcp:europe-central2", "Poland Central", "Warsaw"),
    ("azure:spaincentral", "Azure Spain Central", "ES", "gcp:europe-southwest1", "Spain Central", "Madrid"),
    ("azure:japaneast", "Azure Japan East", "JP", "gcp:asia-northeast1", "Japan East", "Tokyo"),
    ("azure:koreacentral", "Azure Korea Central", "KR", "gcp:asia-northeast3", "Korea Central", "Seoul"),
    ("azure:centralindia", "Azure Central India", "IN", "gcp:asia-south1", "Central India",
     "Maharashtra (Indian national grid)"),
    ("azure:southeastasia", "Azure Southeast Asia", "SG", "gcp:asia-southeast1", "Southeast Asia", "Singapore"),
    ("azure:eastasia", "Azure East Asia", "HK", "gcp:asia-east2", "East Asia", "Hong Kong"),
    ("azure:australiaeast", "Azure Australia East", "AU", "gcp:australia-southeast1", "Australia East",
     "Sydney"),
    ("azure:southafricanorth", "Azure South Africa North", "ZA", "gcp:africa-south1", "South Africa North",
     "Johannesburg"),
    ("azure:qatarcentral", "Azure Qatar Central", "QA", "gcp:me-central1", "Qatar Central", "Doha"),
    ("azure:israelcentral", "Azure Israel Central", "IL", "gcp:me-west1", "Israel Central", "Israel"),
    ("azure:mexicocentral", "Azure Mexico Central", "MX", "gcp:northamerica-south1", "Mexico Central",
     "Queretaro"),
)  # fmt: skip

# GPU clouds: (id, name, country, grid source, aliases, note)
GPU_CLOUD_REGIONS = (
    ("lambda:us", "Lambda Cloud (US regions)", "US", "country:US", "lambda",
     "Lambda lists one on-demand price for all its US regions; "
     "grid = US national average"),
    ("coreweave:us", "CoreWeave (US regions)", "US", "country:US", "coreweave",
     "CoreWeave lists one on-demand price for its US regions; grid = US national average"),
    ("nebius:eu-north1", "Nebius eu-north1 (Mantsala, Finland)", "FI", "country:FI", "nebius-finland",
     "Nebius' own data centre in Mantsala, Finland; grid = Finland"),
    ("nebius:us-central1", "Nebius us-central1 (Kansas City)", "US", "country:US", "nebius-kansas-city",
     "Nebius colocation in Kansas City, Missouri; grid = US national average"),
    ("nebius:eu-west1", "Nebius eu-west1 (Paris)", "FR", "country:FR", "nebius-paris",
     "Nebius colocation in Paris; grid = France"),
)  # fmt: skip


def _num(value: float) -> str:
    """Format a number without a trailing '.0' and without float noise (e.g. 412.72, 366, 1.1)."""
    return f"{value:g}"


def read_codecarbon(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def read_google(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return {row["Google Cloud Region"].strip(): row for row in csv.DictReader(f)}


def build_regions(carbon_dir: Path) -> list[dict[str, str]]:
    """All region rows, sorted by id, as dicts keyed by COLUMNS (values are strings)."""
    codecarbon = read_codecarbon(carbon_dir / CODECARBON_FILE)
    google = read_google(carbon_dir / GOOGLE_FILE)
    google_intensity_col = "Grid carbon intensity (gCO2eq / kWh)"
    rows: dict[str, dict[str, str]] = {}

    def add(row: dict[str, str]) -> None:
        rows[row["id"]] = row

    # Cloud regions from codecarbon (all providers it covers); GCP is overwritten by Google's figure below.
    cc_by_id: dict[str, dict[str, str]] = {}
    for r in codecarbon:
        provider = r["provider"].strip().lower()
        if provider not in ("aws", "gcp", "azure"):
            continue
        region = r["region"].strip()
        region = REGION_ID_FIXES.get((provider, region), region)
        rid = f"{provider}:{region}"
        cc_by_id[rid] = r
        iso3 = r["countryIsoCode"].strip()
        country = GCP_COUNTRY.get(region) if provider == "gcp" else None
        country = country or ISO3_TO_ISO2.get(iso3, iso3)
        place = ", ".join(p for p in (r["city"].strip(), r["state"].strip(), r["country_name"].strip()) if p)
        note = f"codecarbon impact.csv ({place})"
        if region != r["region"].strip():
            note += f"; upstream spells the id {r['region'].strip()!r}"
        add(
            {
                "id": rid,
                "provider": provider,
                "name": f"{r['providerName'].strip()} {region} ({r['city'].strip() or place})",
                "country": country,
                "grid_gco2e_per_kwh": _num(float(r["impact"])),
                "pue": _num(PUE[provider].pue),
                "aliases": "",
                "source_url": CODECARBON_URL,
                "retrieved": RETRIEVED,
                "basis": "datasheet",
                "note": f"{note}; {PUE[provider].note}",
            }
        )

    for region, r in google.items():
        rid = f"gcp:{region}"
        location = r["Location"].strip()
        cfe = float(r["Google CFE"])
        note = f"Google 2024 location-based grid intensity; Google CFE {cfe:.0%}"
        if rid in cc_by_id:
            note += f"; codecarbon impact.csv gives {cc_by_id[rid]['impact'].strip()}"
        add(
            {
                "id": rid,
                "provider": "gcp",
                "name": f"Google Cloud {region} ({location})",
                "country": GCP_COUNTRY.get(region, ""),
                "grid_gco2e_per_kwh": _num(float(r[google_intensity_col])),
                "pue": _num(PUE["gcp"].pue),
                "aliases": "",
                "source_url": GOOGLE_URL,
                "retrieved": RETRIEVED,
                "basis": "datasheet",
                "note": f"{note}; {PUE['gcp'].note}",
            }
        )
    missing = [rid for rid, row in rows.items() if not row["country"]]
    if missing:
        raise SystemExit(f"fetch_regions: no country for {missing}; add them to GCP_COUNTRY in {__file__}")

    for code, name, intensity in COUNTRIES:
        add(
            {
                "id": f"country:{code}",
                "provider": "country",
                "name": name,
                "country": code,
                "grid_gco2e_per_kwh": _num(intensity),
                "pue": _num(PUE["default"].pue),
                "aliases": "",
                "source_url": OWID_URL,
                "retrieved": RETRIEVED,
                "basis": "datasheet",
                "note": "Ember 2023 lifecycle carbon intensity of electricity generation (via Our World in Data); "
                f"{PUE['default'].note}",
            }
        )

    def grid_of(source_id: str) -> tuple[str, str]:
        if source_id not in rows:
            raise SystemExit(f"fetch_regions: grid source {source_id!r} is not in the inputs")
        src = rows[source_id]
        return src["grid_gco2e_per_kwh"], src["source_url"]

    for rid, name, country, source_id, aliases, where in DERIVED_CLOUD_REGIONS:
        if rid in rows:  # covered by codecarbon: its figure stands
            continue
        provider = rid.split(":", 1)[0]
        grid, url = grid_of(source_id)
        add(
            {
                "id": rid,
                "provider": provider,
                "name": name,
                "country": country,
                "grid_gco2e_per_kwh": grid,
                "pue": _num(PUE[provider].pue),
                "aliases": aliases,
                "source_url": url,
                "retrieved": RETRIEVED,
                "basis": "derived",
                "note": f"not in the input files; grid of {source_id} (same metro/grid: {where}); "
                f"{PUE[provider].note}",
            }
        )

    for rid, name, country, source_id, aliases, note in GPU_CLOUD_REGIONS:
        grid, url = grid_of(source_id)
        add(
            {
                "id": rid,
                "provider": rid.split(":", 1)[0],
                "name": name,
                "country": country,
                "grid_gco2e_per_kwh": grid,
                "pue": _num(PUE["default"].pue),
                "aliases": aliases,
                "source_url": url,
                "retrieved": RETRIEVED,
                "basis": "derived",
                "note": f"{note} ({source_id}); provider publishes no fleet PUE: {PUE['default'].note}",
            }
        )
    return [rows[k] for k in sorted(rows)]


def render_csv(rows: list[dict[str, str]]) -> str:
    """The CSV text of *rows* (header + one line per row, LF line endings)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carbon-dir", type=Path, default=DEFAULT_CARBON_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from a fresh build")
    args = parser.parse_args(argv)
    text = render_csv(build_regions(args.carbon_dir))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale; run scripts/fetch_regions.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10)) - 1} regions to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
