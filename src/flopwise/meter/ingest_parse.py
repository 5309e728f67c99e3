"""Parsing an ingest input: which parser reads each source, and how its input rows are counted
(read, rolled up into another record, expanded into several) so a run reconciles. DCGM scrapes are timed and
identified here (``--scraped-at``, the samples' own timestamps, or the file's content)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwise import vocab
from flopwise.errors import IngestError, InputError
from flopwise.meter.cloud_exports import parse_aws_cur, parse_azure_cost_export, parse_oci_cost_report
from flopwise.meter.dcgm import DcgmScrape, dcgm_usage, parse_dcgm_scrape
from flopwise.meter.focus import ParseReport, parse_focus, parse_focus_parquet
from flopwise.meter.ingest_io import (
    Progress,
    _decode_guard,
    _is_url,
    _LineCounter,
    _open_path,
    _text_lines,
)
from flopwise.meter.nvidia_smi import parse_nvidia_smi
from flopwise.meter.opencost import parse_opencost_allocation
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.meter.sacct import parse_sacct
from flopwise.store.types import utcnow

if TYPE_CHECKING:
    import httpx

    from flopwise.catalog import Catalog
    from flopwise.meter.ingest import IngestOptions

#: sources ``flopwise ingest`` understands (``nvml`` records arrive from the agent, not from a file)
INGEST_SOURCE_NAMES = vocab.FILE_SOURCES


@dataclass
class _Parsed:
    """A parser's record stream and, once it is consumed, how to count its input rows."""

    records: Iterator[UsageRecord]
    rejected: list[RejectedRow]
    rows_read: Callable[[], int]
    rolled_up: Callable[[], int] = lambda: 0
    expanded: Callable[[], int] = lambda: 0
    closer: Any = None
    #: whether a known key with other values is a restatement (False: keys made from content, whose only
    #: possible difference is a guessed time, e.g. a DCGM scrape timed by its file's mtime)
    restate: bool = True


class _SacctCounts:
    def __init__(self) -> None:
        self.job_lines: set[int] = set()
        self.step_lines = 0
        self.records = 0

    def watch(self, records: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
        for rec in records:
            self.records += 1
            line = rec.x_extra.get("source_line")
            if isinstance(line, int) and line not in self.job_lines:
                self.job_lines.add(line)
                self.step_lines += len(rec.x_extra.get("step_lines") or ())
            yield rec


def _parse(
    source: str,
    target: str,
    *,
    catalog: Catalog,
    options: IngestOptions,
    client: httpx.Client | None,
    progress: Progress | None,
) -> _Parsed:
    rejected: list[RejectedRow] = []
    if source == "focus" and not _is_url(target) and target.endswith(".parquet"):
        report = ParseReport()
        records = parse_focus_parquet(
            target, catalog=catalog, assume_tz=options.assume_tz or "UTC", report=report, rejected=rejected
        )
        return _Parsed(records, rejected, lambda: report.rows_read)
    if source == "dcgm":
        return _parse_dcgm(target, catalog=catalog, options=options, client=client, progress=progress)
    lines, closer = _text_lines(target, client, progress)
    lines = _decode_guard(lines, target)
    if source in ("focus", "aws-cur", "azure", "oci"):
        report = ParseReport()
        parser = {
            "focus": parse_focus,
            "aws-cur": parse_aws_cur,
            "azure": parse_azure_cost_export,
            "oci": parse_oci_cost_report,
        }[source]
        kwargs: dict[str, Any] = {"delimiter": options.delimiter} if source == "focus" else {}
        # FOCUS: "all date/time values are in UTC" (FOCUS 1.0, Date/Time Format): a zone-less timestamp is UTC
        # unless --assume-tz says otherwise (the official 1.0 sample writes "2024-09-18 22:00:00")
        tz = options.assume_tz or ("UTC" if source == "focus" else None)
        records = parser(
            lines,
            path=target,
            catalog=catalog,
            assume_tz=tz,
            report=report,
            rejected=rejected,
            **kwargs,
        )
        return _Parsed(records, rejected, lambda: report.rows_read, closer=closer)
    if source == "slurm":
        counts = _SacctCounts()
        records = counts.watch(
            parse_sacct(
                lines,
                rejected=rejected,
                path=target,
                fields=options.fields,
                delimiter=options.delimiter,
                cluster=options.cluster,
                catalog=catalog,
                assume_tz=options.assume_tz,
            )
        )
        return _Parsed(
            records,
            rejected,
            rows_read=lambda: len(counts.job_lines) + counts.step_lines + len({r.line for r in rejected}),
            rolled_up=lambda: counts.step_lines,
            expanded=lambda: counts.records - len(counts.job_lines),
            closer=closer,
        )
    if source == "nvidia-smi":
        counter = _LineCounter(lines)
        produced = [0]

        def watch(recs: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
            for rec in recs:
                produced[0] += 1
                yield rec

        records = watch(
            parse_nvidia_smi(
                counter,
                rejected=rejected,
                path=target,
                fields=options.fields,
                assume_tz=options.assume_tz,
                interval_s=options.interval_s,
                catalog=catalog,
            )
        )

        # nvidia-smi repeats its header line at each start; those lines are not rows
        def rows() -> int:
            return counter.count - counter.repeats_of_first if options.fields is None else counter.count

        def rolled() -> int:
            return max(0, rows() - produced[0] - len({r.line for r in rejected}))

        return _Parsed(records, rejected, rows, rolled, closer=closer)
    if source == "opencost":
        report = ParseReport()

        def opencost() -> Iterator[UsageRecord]:
            text = "".join(lines)
            yield from parse_opencost_allocation(
                text,
                path=target,
                catalog=catalog,
                assume_tz=options.assume_tz,
                currency=options.currency,
                report=report,
                rejected=rejected,
            )

        return _Parsed(opencost(), rejected, lambda: report.rows_read, closer=closer)
    raise InputError("source", source, f"choose one of {', '.join(INGEST_SOURCE_NAMES)}")


def _parse_dcgm(
    target: str,
    *,
    catalog: Catalog,
    options: IngestOptions,
    client: httpx.Client | None,
    progress: Progress | None,
) -> _Parsed:
    """A DCGM exporter scrape, metered over the interval before it.

    When it was taken: ``--scraped-at``; else, for a URL, now; else the samples' own timestamps (Prometheus text
    may end a sample with milliseconds since the epoch: the latest one); else the file's modification time. In
    that last case the records' identity is the scrape's content (a SHA-256 of its sample lines), not the time,
    so a copied or ``touch``-ed scrape is the same charge again (unchanged, or a restatement of its period),
    never a second one.
    """
    import hashlib

    rejected: list[RejectedRow] = []
    content_key = False
    if options.scraped_at is not None:
        scraped_at = options.scraped_at
    elif _is_url(target):
        scraped_at = utcnow()
    else:
        stamped = _latest_sample_time(target)
        if stamped is not None:
            scraped_at = stamped
        else:
            if not Path(target).exists():
                raise IngestError(target, None, "no such file; check the path")
            scraped_at = datetime.fromtimestamp(Path(target).stat().st_mtime, tz=UTC)
            content_key = True
    lines, closer = _text_lines(target, client, progress)
    digest = hashlib.sha256()

    def hashed(source: Iterable[str]) -> Iterator[str]:
        for line in source:
            text = line.strip()
            if text and not text.startswith("#"):
                digest.update(text.encode())
                digest.update(b"\n")
            yield line

    counter = _LineCounter(hashed(_decode_guard(lines, target)), comment="#")
    produced = [0]

    def records() -> Iterator[UsageRecord]:
        from dataclasses import replace

        scrape = parse_dcgm_scrape(
            counter, scraped_at=scraped_at, rejected=rejected, path=target, catalog=catalog
        )
        before = _held_scrape(scrape, options.scrape_interval_s)
        content = digest.hexdigest()[:32]
        for rec in dcgm_usage([before, scrape]):
            produced[0] += 1
            if content_key:
                when = rec.charge_period_start.isoformat()
                if rec.source_key.endswith(when):
                    rec = replace(rec, source_key=f"{rec.source_key[: -len(when)]}scrape-{content}")
            yield rec

    def rolled() -> int:
        return max(0, counter.count - produced[0] - len({r.line for r in rejected}))

    return _Parsed(records(), rejected, lambda: counter.count, rolled, closer=closer, restate=not content_key)


def _latest_sample_time(target: str) -> datetime | None:
    """The latest sample timestamp of a Prometheus text file (None when no sample carries one, or unreadable)."""
    from flopwise.meter.dcgm import parse_prometheus_text

    try:
        fh = _open_path(Path(target), None)
    except IngestError:
        return None
    latest = None
    try:
        with fh:
            for sample in parse_prometheus_text(fh, rejected=[], path=target):
                if sample.timestamp_ms is not None and (latest is None or sample.timestamp_ms > latest):
                    latest = sample.timestamp_ms
    except (UnicodeDecodeError, OSError, EOFError):
        return None  # the real read reports it
    return None if latest is None else datetime.fromtimestamp(latest / 1000, tz=UTC)


def _held_scrape(scrape: DcgmScrape, interval_s: float) -> DcgmScrape:
    """The scrape *interval_s* before *scrape* with its readings held (power and utilization as now, no energy
    counter), so a single scrape meters ``power x interval`` over the interval before it (as Prometheus's
    ``avg_over_time`` of a gauge scraped once per interval does)."""
    from dataclasses import replace

    held = {key: replace(r, energy_mj=None) for key, r in scrape.gpus.items()}
    return replace(scrape, scraped_at=scrape.scraped_at - timedelta(seconds=interval_s), gpus=held)
