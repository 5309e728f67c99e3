"""The imperative part of ``catalog refresh``: download or read the sources, write the catalog atomically.

Order of work, so that a bad source never leaves a half-written catalog:

1. read every file of every selected source (HTTP, or a folder) and parse it; any problem raises FetchError;
2. render the new CSVs into a temporary folder and load them with the catalog loader (references included);
3. only then, for each output file: move the current one into ``history/<its date>/`` and put the new one in
   place with a rename (``os.replace``: atomic on one file system); last, ``refresh.json`` records what was
   written, from where and when.

``refresh.json`` also tells :func:`flopwise.catalog.load_catalog` that these files replace the built-in files of
the same name as a whole (so an offering the source no longer lists disappears, instead of surviving from
the built-in catalog).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from flopwise.catalog.fetch import SOURCES, Source, SourceFile, read_region_grids, rows_to_csv
from flopwise.catalog.fetch.aws_pricelist import parse_price_list, region_names
from flopwise.catalog.fetch.azure_retail import SecondOpinion, compare, read_pages
from flopwise.catalog.fetch.carbon import parse_gcp_carbon, parse_owid
from flopwise.catalog.fetch.diff import CatalogDiff, diff_rows
from flopwise.catalog.fetch.regions import build_regions
from flopwise.catalog.fetch.skypilot import ParseResult, finish, parse_vms
from flopwise.catalog.fetch.table import FetchError
from flopwise.catalog.loader import OFFERING_COLUMNS, REFRESH_MANIFEST, REGION_COLUMNS
from flopwise.errors import InputError

__all__ = ["MANIFEST", "RefreshResult", "fetch_text", "refresh", "read_csv_rows"]

MANIFEST = REFRESH_MANIFEST
HISTORY = "history"
_TIMEOUT_S = 60


@dataclass
class SourceReport:
    name: str
    output: str
    rows: int
    source_lines: int
    skipped: dict[str, int]
    source_url: str


@dataclass
class RefreshResult:
    retrieved: str
    sources: list[SourceReport] = field(default_factory=list)
    diffs: dict[str, CatalogDiff] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    history: str | None = None
    #: second-opinion sources (azure-retail, aws-pricelist): what they said about the catalog's prices; they write nothing
    opinions: list[SecondOpinion] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return any(d.differs for d in self.diffs.values())

    def to_dict(self) -> dict:
        return {
            "retrieved": self.retrieved,
            "sources": [s.__dict__ for s in self.sources],
            "changes": {k: d.to_dict() for k, d in self.diffs.items()},
            "written": self.written,
            "history": self.history,
            "second_opinions": [o.to_dict() for o in self.opinions],
        }


def fetch_text(source: str, location: str) -> str:
    """The text at *location* (http(s) URL or file path). HTTP errors and short reads raise FetchError."""
    if location.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(location, timeout=_TIMEOUT_S) as resp:  # noqa: S310 (http(s) only)
                body = resp.read()
                expected = resp.headers.get("Content-Length")
        except http.client.IncompleteRead as err:
            raise FetchError(
                source,
                location,
                None,
                None,
                f"download truncated: {len(err.partial)} bytes received, {err.expected} missing; nothing was written",
            ) from None
        except urllib.error.HTTPError as err:
            err.close()  # the error carries the open response; unclosed, its socket warns when collected
            raise FetchError(
                source, location, None, None, f"HTTP {err.code} {err.reason}; nothing was written"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise FetchError(source, location, None, None, f"cannot be downloaded ({reason})") from None
        if expected is not None and expected.isdigit() and len(body) != int(expected):
            raise FetchError(
                source,
                location,
                None,
                None,
                f"download truncated: {len(body)} of {expected} bytes; nothing was written",
            )
    else:
        try:
            body = Path(location).read_bytes()
        except OSError as err:
            raise FetchError(source, location, None, None, f"cannot be read ({err.strerror})") from None
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FetchError(source, location, None, None, f"is not UTF-8 text ({err.reason})") from None


def _locate(source: Source, origin: str | None) -> list[tuple[str, str, SourceFile]]:
    """(location, source_url, SourceFile) per file of *source* that is to be read."""
    out = []
    for f in source.files:
        if origin is None:
            if f.upstream is None:
                continue
            out.append((f.upstream, f.upstream, f))
        elif origin.startswith(("http://", "https://")):
            url = origin.rstrip("/") + "/" + f.snapshot
            out.append((url, url, f))
        else:
            path = Path(origin) / f.snapshot
            if not path.is_file():
                if f.required:
                    raise FetchError(
                        source.name,
                        str(path),
                        None,
                        None,
                        "does not exist; --from must hold the snapshot layout",
                    )
                continue
            out.append((str(path), f.origin, f))
    return out


def _fetch_optional(source: Source, location: str, required: bool) -> str | None:
    try:
        return fetch_text(source.name, location)
    except FetchError as err:
        if not required and "HTTP 404" in str(err):
            return None
        raise


def read_csv_rows(path: Path) -> dict[str, dict[str, str]]:
    """Rows of a catalog CSV keyed by their first column (empty when the file is absent)."""
    import csv

    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        key = reader.fieldnames[0] if reader.fieldnames else "id"
        return {row[key]: row for row in reader}


def _render(
    sources: list[Source], origin: str | None, retrieved: str
) -> tuple[dict[str, str], list[SourceReport], list[SecondOpinion]]:
    registry = read_region_grids()
    outputs: dict[str, str] = {}
    reports: list[SourceReport] = []
    opinions: list[SecondOpinion] = []
    gcp_files: list[tuple[int, str, str, str]] = []
    owid: tuple[str, str, str] | None = None
    for source in sources:
        files = _locate(source, origin)
        if source.kind == "skypilot":
            acc: dict = {}
            result = ParseResult()
            url0 = files[0][1]
            for location, url, f in files:
                text = _fetch_optional(source, location, f.required)
                if text is None:
                    continue
                parse_vms(
                    source.cloud,
                    text,
                    source=source.name,
                    location=location,
                    known_regions=registry,
                    source_url=url,
                    into=acc,
                    result=result,
                )
            finish(source.cloud, acc, source_url=url0, retrieved=retrieved, result=result)
            outputs[source.output] = rows_to_csv(OFFERING_COLUMNS, result.rows)
            reports.append(
                SourceReport(
                    source.name,
                    source.output,
                    len(result.rows),
                    result.source_lines,
                    dict(result.skipped),
                    url0,
                )
            )
        elif source.kind == "azure-retail":
            location = files[0][0]
            opinions.append(read_pages(source.name, location, lambda loc, src=source: fetch_text(src.name, loc)))
        elif source.kind == "aws-pricelist":
            location = files[0][0]
            opinions.append(
                parse_price_list(
                    source.name,
                    location,
                    fetch_text(source.name, location),
                    regions=region_names((rid, reg.name) for rid, reg in registry.items()),
                    known_regions=registry,
                )
            )
        elif source.kind == "gcp-carbon":
            for location, url, f in files:
                year = f.year if f.year is not None else 0  # every Google carbon file names its year
                gcp_files.append((year, location, url, fetch_text(source.name, location)))
        else:
            location, url, _ = files[0]
            owid = (location, url, fetch_text(source.name, location))
    if gcp_files or owid:
        if not (gcp_files and owid):
            missing = "owid-carbon" if gcp_files else "gcp-carbon"
            raise InputError(
                "--source",
                missing,
                "regions need both carbon sources (gcp-carbon and owid-carbon); add the other",
            )
        gcp = parse_gcp_carbon(gcp_files)
        countries = parse_owid(*owid)
        rows = build_regions(registry, gcp, countries, retrieved)
        outputs["regions.csv"] = rows_to_csv(REGION_COLUMNS, rows)
        lines = sum(t.count("\n") for *_, t in gcp_files) + owid[2].count("\n")
        reports.append(
            SourceReport("gcp-carbon+owid-carbon", "regions.csv", len(rows), lines, {}, gcp_files[0][2])
        )
    return outputs, reports, opinions


def _validate(outputs: dict[str, str], target: Path | None) -> None:
    """Load the rendered files over the built-in catalog (as the real load would) before anything is written."""
    from flopwise.catalog import Catalog
    from flopwise.catalog.loader import read_builtin, read_catalog_dir

    with tempfile.TemporaryDirectory(prefix="flopwise-refresh-") as tmp:
        root = Path(tmp)
        if target is not None and target.is_dir():
            for sub in ("devices", "offerings"):
                if (target / sub).is_dir():
                    shutil.copytree(target / sub, root / sub, dirs_exist_ok=True)
            for name in ("onprem.csv", "regions.csv"):
                if (target / name).is_file():
                    shutil.copy2(target / name, root / name)
        for rel, text in outputs.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        user = read_catalog_dir(root)
        builtin = read_builtin().without_files(list(outputs))
        Catalog(builtin.merged_with(user))


def _rows_of(text: str) -> dict[str, dict[str, str]]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text, newline=""))
    return {row["id"]: row for row in reader}


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        return {"files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FetchError(
            "refresh", str(path), None, None, f"cannot be read ({err}); delete it and refresh"
        ) from None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else {"files": {}}


def refresh(
    target: Path | None,
    names: list[str] | None = None,
    origin: str | None = None,
    *,
    today: date | None = None,
    check: bool = False,
) -> RefreshResult:
    """Fetch *names* (default: every source) from *origin* (None: upstream; else a snapshot folder or base URL).

    With *check*, compare against the shipped (built-in) catalog and write nothing. Otherwise compare against
    what *target* holds now (falling back to the built-in file), keep the files being replaced under
    ``history/<date>/`` and write the new ones atomically.
    """
    from flopwise.catalog.loader import BUILTIN_DATA_DIR

    unknown = [n for n in names or [] if n not in SOURCES]
    if unknown:
        from flopwise.errors import suggest

        hint = suggest(unknown[0], SOURCES)
        raise InputError(
            "--source",
            unknown[0],
            (f"did you mean {hint[0]!r}? " if hint else "") + f"known sources: {', '.join(SOURCES)}",
        )
    retrieved = (today or date.today()).isoformat()
    # a second opinion (azure-retail, aws-pricelist) is read only when named: it writes nothing and a real fetch
    # is long
    default = [n for n, src in SOURCES.items() if not src.second_opinion]
    selected = [SOURCES[n] for n in (names or default)]
    outputs, reports, opinions = _render(selected, origin, retrieved)
    _validate(outputs, None if check else target)
    result = RefreshResult(retrieved, reports, opinions=opinions)
    for opinion in opinions:  # compared with the rows this refresh writes, else with what the catalog holds now
        rel = f"offerings/{SOURCES[opinion.source].cloud}.csv"
        if rel in outputs:
            rows = _rows_of(outputs[rel])
        elif not check and target is not None and (target / rel).is_file():
            rows = read_csv_rows(target / rel)
        else:
            rows = read_csv_rows(BUILTIN_DATA_DIR / rel)
        compare(opinion, rows)
    for rel, text in outputs.items():
        new = _rows_of(text)
        current = BUILTIN_DATA_DIR / rel
        if not check and target is not None and (target / rel).is_file():
            current = target / rel
        result.diffs[rel] = diff_rows(read_csv_rows(current), new, ignore=("retrieved",))
    if check or target is None:
        return result
    manifest = read_manifest(target)
    old_files = manifest["files"]
    replaced = [rel for rel in outputs if (target / rel).is_file()]
    if replaced:
        old_date = (
            max((old_files.get(rel, {}).get("retrieved", "") for rel in replaced), default="") or "unknown"
        )
        hist = target / HISTORY / old_date
        n = 1
        while hist.exists() and any((hist / rel).exists() for rel in replaced):
            n += 1
            hist = target / HISTORY / f"{old_date}.{n}"
        for rel in replaced:
            (hist / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target / rel, hist / rel)
        if (target / MANIFEST).is_file():
            shutil.copy2(target / MANIFEST, hist / MANIFEST)
        result.history = str(hist)
    for rel, text in outputs.items():
        _atomic_write(target / rel, text)
        result.written.append(str(target / rel))
    for rep in reports:
        old_files[rep.output] = {
            "source": rep.name,
            "retrieved": retrieved,
            "rows": rep.rows,
            "source_url": rep.source_url,
        }
    manifest["files"] = old_files
    _atomic_write(target / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return result
