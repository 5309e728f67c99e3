"""Fetchers, kept apart from the data (as SkyPilot keeps its ``data_fetchers``): public price and carbon sources ->
catalog CSV rows.

One module per kind of source; all of them are pure (text in, rows out). The I/O (downloads, the atomic write
into the user's catalog directory, the history of previous snapshots) is in :mod:`flopwise.catalog.fetch.shell`,
driven by ``flopwise catalog refresh``.

Sources (``SOURCES``), each with the files it reads in three modes:

- no ``--from``: the upstream URLs (a real fetch, one command);
- ``--from DIR`` or ``--from URL``: the same files laid out as the snapshot in ``shared/data/catalogs`` (``skypilot/
  v9-aws-vms.csv`` ...), from a folder or an HTTP server.

- ``azure-retail``: the Azure Retail Prices API, a second opinion on the SkyPilot-derived Azure rows (it writes
  nothing; the refresh reports where the two disagree by more than 1%), tested against the response examples
  Microsoft documents.
- ``aws-pricelist``: the AWS Price List (a saved ``GetProducts`` response, or the bulk EC2 price list file that
  needs no credentials), a second opinion on the SkyPilot-derived AWS on-demand rows in the same way; tested
  against the response examples AWS documents (AWS CLI reference and the SDK's examples).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REGION_GRIDS_PATH", "SOURCES", "Source", "SourceFile", "read_region_grids", "rows_to_csv"]

REGION_GRIDS_PATH = Path(__file__).resolve().parent / "region_grids.csv"

_SKY_RAW = "https://raw.githubusercontent.com/skypilot-org/skypilot-catalog/master/catalogs"
_SKY_BLOB = "https://github.com/skypilot-org/skypilot-catalog/blob"
_C_2C3D = "2c3d7ea7d76bf84cf80d382e946c1609571485fd"
_C_A5BE = "a5be53865774cac59df537ba1842e45ffc8be722"
_C_0987 = "098741e70562f65d7af1cceb81e33b284f742604"
_C_D9BF = "d9bf3aa4d21f5c1e1f3d8fde27adf0204c46fbc8"
_GCP_RAW = "https://raw.githubusercontent.com/GoogleCloudPlatform/region-carbon-info/main/data/yearly"
_GCP_BLOB = "https://github.com/GoogleCloudPlatform/region-carbon-info/blob"
#: the bulk EC2 price list file of us-east-1 (no credentials; several hundred MB): AWS Billing User Guide,
#: "Finding price list files" (https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/index.json lists them)
_AWS_PRICELIST = "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/us-east-1/index.json"
#: every pay-as-you-go virtual machine price (about 1,300 pages of 100 items); NextPageLink is followed
_AZURE_RETAIL = (
    "https://prices.azure.com/api/retail/prices?$filter=serviceName%20eq%20%27Virtual%20Machines%27"
    "%20and%20priceType%20eq%20%27Consumption%27"
)


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: where it sits in a snapshot folder, its upstream URL, and the exact origin of the
    snapshot copy (commit-pinned), which becomes ``source_url`` when read from a folder."""

    snapshot: str
    upstream: str | None
    origin: str
    required: bool = True
    year: int | None = None


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "skypilot" | "gcp-carbon" | "owid" | "azure-retail" | "aws-pricelist"
    files: tuple[SourceFile, ...]
    cloud: str = ""

    @property
    def second_opinion(self) -> bool:
        """A source that only compares its prices with the catalog's and writes nothing."""
        return self.kind in ("azure-retail", "aws-pricelist")

    @property
    def output(self) -> str:
        """The catalog file this source writes (relative to the catalog directory); "" for a second opinion."""
        if self.second_opinion:
            return ""
        return f"offerings/{self.cloud}.csv" if self.kind == "skypilot" else "regions.csv"


def _sky(cloud: str, version: str, commit: str, extracts: tuple[str, ...] = ()) -> Source:
    files = [
        SourceFile(
            f"skypilot/{version}-{cloud}-vms.csv",
            f"{_SKY_RAW}/{version}/{cloud}/vms.csv",
            f"{_SKY_BLOB}/{commit}/catalogs/{version}/{cloud}/vms.csv",
        )
    ]
    # the snapshot keeps some rows of the same vms.csv apart (CPU-only VMs; GCP's GPU machine-type host rows and
    # the N1 host rows that T4/V100/P100/P4 GPUs attach to);
    # upstream they are all in the one vms.csv, so these files have no upstream URL of their own
    for part in extracts:
        files.append(
            SourceFile(
                f"skypilot/{version}-{cloud}-vms-{part}.csv",
                None,
                f"{_SKY_BLOB}/{commit}/catalogs/{version}/{cloud}/vms.csv",
                required=False,
            )
        )
    return Source(f"skypilot-{cloud}", "skypilot", tuple(files), cloud)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        _sky("aws", "v9", _C_2C3D, ("cpu",)),
        _sky("gcp", "v9", _C_2C3D, ("cpu", "gpuhosts", "n1hosts")),
        _sky("azure", "v6", _C_0987),
        _sky("oci", "v9", _C_A5BE),
        _sky("lambda", "v9", _C_2C3D),
        _sky("cudo", "v9", _C_D9BF),
        _sky("nebius", "v9", _C_D9BF),
        _sky("fluidstack", "v9", _C_2C3D),
        Source(
            "gcp-carbon",
            "gcp-carbon",
            (
                SourceFile(
                    "carbon/gcp-region-carbon-2025.csv",
                    f"{_GCP_RAW}/2025.csv",
                    f"{_GCP_BLOB}/74d9bf818f1c6ea5111e26f2d1d4d4c788169129/data/yearly/2025.csv",
                    year=2025,
                ),
                SourceFile(
                    "carbon/gcp-region-carbon-2024.csv",
                    f"{_GCP_RAW}/2024.csv",
                    f"{_GCP_BLOB}/df9271436a28ea128a34e111f58de5b03e4dc757/data/yearly/2024.csv",
                    year=2024,
                ),
            ),
        ),
        Source(
            "azure-retail",
            "azure-retail",
            (
                SourceFile(
                    "azure-retail/prices.json",
                    _AZURE_RETAIL,
                    "https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices",
                ),
            ),
            "azure",
        ),
        Source(
            "aws-pricelist",
            "aws-pricelist",
            (
                SourceFile(
                    "aws-pricelist/prices.json",
                    _AWS_PRICELIST,
                    "https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_pricing_GetProducts.html",
                ),
            ),
            "aws",
        ),
        Source(
            "owid-carbon",
            "owid",
            (
                SourceFile(
                    "carbon/owid-carbon-intensity-elec.csv",
                    "https://ourworldindata.org/grapher/carbon-intensity-electricity.csv"
                    "?v=1&csvType=full&useColumnShortNames=false",
                    "https://github.com/twsaf1-sys/math_331_cryptocurrency_project/blob/"
                    "7149bf49f9cf7031d71e6293ef4af0c3419cf98f/carbon-intensity-electricity.csv",
                ),
            ),
        ),
    )
}


@dataclass(frozen=True)
class RegionGrid:
    """A region's fixed facts (name, country, PUE) and the grid whose intensity it takes."""

    id: str
    name: str
    country: str
    grid: str  # "gcp:<region>" or "country:<ISO2>"
    pue: str
    aliases: str
    pue_note: str


def read_region_grids(path: Path = REGION_GRIDS_PATH) -> dict[str, RegionGrid]:
    """The region registry: every region a source may name, keyed by region id."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {r["id"]: RegionGrid(**r) for r in csv.DictReader(handle)}


def rows_to_csv(columns: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    """CSV text (LF line ends) of *rows* under the header *columns*."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return out.getvalue()
