"""The ingestion pipeline: open a file or URL, parse it, cost each record and write it to the usage ledger.

::

    engine = make_engine(url); upgrade(engine)
    result = ingest_source(make_session_factory(engine), "slurm", "sacct.txt", catalog=load_catalog(),
                           options=IngestOptions(assume_tz="UTC", cluster="hb"))
    assert result.reconciles

Steps (docs/ingest/index.md):

1. **Open** a path (``.gz`` is decompressed; FOCUS ``.parquet`` goes to pyarrow) or an ``http(s)://`` URL through
   an injected ``httpx.Client`` (a DCGM exporter's ``/metrics``, OpenCost's ``/allocation``). Text is streamed
   line by line; the bytes read so far are reported to *progress*.
2. **Parse** with the source's parser (:data:`PARSERS`), which yields :class:`UsageRecord` s and fills a list
   of :class:`RejectedRow` (line number and reason).
3. **Cost** each record with :class:`flopwise.meter.costing.Coster` (billed cost, or the catalog's price per
   device-hour; energy measured or estimated; CO2e; idle).
4. **Write** batches of *batch_size* records, each in its own short write transaction (the server's writers
   are never blocked for long), straight through the DBAPI connection with ``ON CONFLICT (source_key) DO
   NOTHING``: on SQLite one prepared ``INSERT`` through ``executemany``, the new rows counted by the connection's
   ``total_changes``; on PostgreSQL ``COPY`` into a temporary staging table and one ``INSERT ... SELECT``, the
   new rows counted by its rowcount. The rest of the batch are duplicates.
5. **Record** the run (``ingest_runs``) and its rejects (``ingest_rejects``). A file that cannot be understood at
   all (:class:`~flopwise.errors.IngestError`) fails the run: the records already written by this run are
   deleted, the run is marked ``failed`` with the one message, and nothing half-written remains.

Reconciliation (checked by :attr:`IngestResult.reconciles`)::

    rows_read == records_inserted + records_duplicate + rows_rejected + rows_rolled_up - records_expanded

``rows_rolled_up``: input rows folded into another row's record (Slurm job steps, the metric lines of one GPU
in a DCGM scrape, the samples of one GPU-interval in an nvidia-smi log); ``records_expanded``: records beyond
the first made from one input row (a compressed Slurm job-array line such as ``123_[1-3]``).
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import update

from flopwise.errors import IngestError, InputError
from flopwise.meter.cloud_exports import parse_aws_cur, parse_azure_cost_export, parse_oci_cost_report
from flopwise.meter.costing import Coster, CostingOptions
from flopwise.meter.dcgm import DcgmScrape, dcgm_usage, parse_dcgm_scrape
from flopwise.meter.focus import ParseReport, parse_focus, parse_focus_parquet
from flopwise.meter.ledger_write import (
    DEFAULT_BATCH_SIZE,
    Attributor,
    BatchCounts,
    costed_row,
    ingest_records,
    undo_run,
)
from flopwise.meter.nvidia_smi import parse_nvidia_smi
from flopwise.meter.opencost import parse_opencost_allocation
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.meter.sacct import parse_sacct
from flopwise.store.ledger import IngestReject, IngestRun
from flopwise.store.session import write_session
from flopwise.store.types import utcnow

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.orm import Session, sessionmaker

    from flopwise.catalog import Catalog

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SCRAPE_INTERVAL_S",
    "INGEST_SOURCE_NAMES",
    "IngestInterrupted",
    "IngestOptions",
    "IngestResult",
    "costed_row",
    "ingest_records",
    "close_stale_runs",
    "ingest_source",
]

#: sources ``flopwise ingest`` understands (``nvml`` records arrive from the agent, not from a file)
INGEST_SOURCE_NAMES = ("slurm", "focus", "aws-cur", "azure", "oci", "dcgm", "nvidia-smi", "opencost")
#: dcgm-exporter's default collection interval (``-c 30000`` ms): the span a scrape's readings stand for
DEFAULT_SCRAPE_INTERVAL_S = 30.0
#: rejects kept in the IngestResult (all of them go to ingest_rejects)
_RESULT_REJECTS = 50
_RAW_MAX = 500

Progress = Callable[[int, "int | None"], None]


class IngestInterrupted(KeyboardInterrupt):  # noqa: N818 - a KeyboardInterrupt, named like the event
    """Ctrl-C (or SIGTERM, which the CLI turns into it) stopped run *run_id*; what it wrote was undone."""

    def __init__(self, run_id: int) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def _owner() -> str:
    """This process as ``host:pid`` (kept on a running run, to tell a live one from one whose process died)."""
    import socket

    return f"{socket.gethostname()[:180]}:{os.getpid()}"


def _process_gone(owner: str | None) -> bool:
    """Whether *owner* (``host:pid``) names a process of this host that no longer exists."""
    import socket

    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname()[:180] or not pid.isdigit():
        return False  # another machine's run: only it can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def close_stale_runs(factory: sessionmaker[Session]) -> list[int]:
    """Close the ``running`` runs whose ingesting process is gone (killed with -9, the machine rebooted): undo
    what each wrote, mark it ``interrupted`` with the reason. Returns their ids. Runs of live processes, of other
    hosts and of the usage API (no owner) are left alone."""
    from sqlalchemy import select

    with write_session(factory) as session:
        stale = [
            (run_id, owner)
            for run_id, owner in session.execute(
                select(IngestRun.id, IngestRun.owner).where(IngestRun.status == "running")
            )
            if _process_gone(owner)
        ]
    closed = []
    for run_id, owner in stale:
        with write_session(factory) as session:
            still = session.scalar(select(IngestRun.status).where(IngestRun.id == run_id).with_for_update())
            if still != "running":
                continue
            undo_run(session, run_id)
            session.execute(
                update(IngestRun)
                .where(IngestRun.id == run_id)
                .values(
                    finished_at=utcnow(),
                    status="interrupted",
                    message=f"its process ({owner}) ended without finishing (killed?); what it wrote was "
                    "undone - ingest the input again",
                )
            )
        closed.append(run_id)
    return closed


@dataclass(frozen=True)
class IngestOptions:
    """How to read one input. Every field is optional; the parsers say when one is needed.

    *assume_tz*: IANA zone of zone-less timestamps (sacct, nvidia-smi; FOCUS reads them as UTC, as the FOCUS
    spec says its timestamps are, unless this is given). *cluster*: the
    Slurm cluster name when sacct output has no Cluster field. *fields*: sacct's ``--format`` list or nvidia-smi's
    ``--query-gpu`` list for header-less output. *delimiter*: sacct/CSV delimiter when it cannot be sniffed.
    *region*: the catalog region of usage that names none (CO2e of on-prem usage). *scraped_at*: when a DCGM
    scrape file was taken (default: its samples' own timestamps, else the file's modification time with the
    scrape's content as its identity); *scrape_interval_s*: the span the first scrape
    of a run stands for. *interval_s*: nvidia-smi aggregation interval. *batch_size*: records per write
    transaction. *actor*: who runs the ingest (kept on the run and on the history of every row it restates).
    """

    assume_tz: str | None = None
    cluster: str | None = None
    fields: Sequence[str] | str | None = None
    delimiter: str | None = None
    region: str | None = None
    prefer_onprem: bool = True
    currency: str = "USD"
    scraped_at: datetime | None = None
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S
    interval_s: float = 3600.0
    batch_size: int = DEFAULT_BATCH_SIZE
    actor: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError("batch_size", self.batch_size, "give a positive number of records per batch")
        if self.scrape_interval_s <= 0:
            raise InputError("scrape_interval_s", self.scrape_interval_s, "give a positive number of seconds")
        if self.scraped_at is not None and self.scraped_at.tzinfo is None:
            raise InputError("scraped_at", self.scraped_at.isoformat(), "give a time with a zone, e.g. ...Z")


@dataclass(frozen=True)
class IngestResult:
    """The counts of one run (as stored in ``ingest_runs``), its first rejects and, if it failed, why."""

    run_id: int
    source: str
    path: str
    status: str  # ok | partial | failed | interrupted
    rows_read: int
    records_inserted: int
    records_duplicate: int  # unchanged: already in the ledger with the same values
    rows_rejected: int
    rows_rolled_up: int
    records_expanded: int = 0
    message: str | None = None
    rejects: tuple[RejectedRow, ...] = field(default=())
    cost_usd: str = "0"  # of the inserted records only
    device_hours: float = 0.0
    energy_kwh: float = 0.0
    records_replaced: int = 0  # restated: already in the ledger with other values, now replaced
    restated_cost_usd: str = "0"  # the change the replacements made to the ledger's cost (new - old)
    touched: frozenset[datetime] = field(default=frozenset(), repr=False, compare=False)

    @property
    def records_unchanged(self) -> int:
        return self.records_duplicate

    @property
    def reconciles(self) -> bool:
        """Every input row is a record (new, replaced or unchanged), a reject, or folded into another row's."""
        return self.rows_read == (
            self.records_inserted
            + self.records_replaced
            + self.records_duplicate
            + self.rows_rejected
            + self.rows_rolled_up
            - self.records_expanded
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "path": self.path,
            "status": self.status,
            "rows_read": self.rows_read,
            "records_inserted": self.records_inserted,
            "records_replaced": self.records_replaced,
            "records_unchanged": self.records_duplicate,
            "records_duplicate": self.records_duplicate,
            "rows_rejected": self.rows_rejected,
            "rows_rolled_up": self.rows_rolled_up,
            "records_expanded": self.records_expanded,
            "reconciles": self.reconciles,
            "message": self.message,
            "cost_usd": self.cost_usd,
            "restated_cost_usd": self.restated_cost_usd,
            "device_hours": self.device_hours,
            "energy_kwh": self.energy_kwh,
            "rejects": [{"line": r.line, "reason": r.reason} for r in self.rejects],
        }


# --- opening inputs ---------------------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """A raw binary stream that counts the bytes read through it (for the progress bar)."""

    def __init__(self, raw: IO[bytes], progress: Progress | None, total: int | None) -> None:
        self._raw = raw
        self._progress = progress
        self._total = total
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.bytes_read += n
        if self._progress is not None and n:
            self._progress(self.bytes_read, self._total)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _open_path(path: Path, progress: Progress | None) -> IO[str]:
    if not path.exists():
        raise IngestError(str(path), None, "no such file; check the path")
    if path.is_dir():
        raise IngestError(str(path), None, "is a directory; give a file")
    counting = _CountingReader(open(path, "rb"), progress, path.stat().st_size)  # noqa: SIM115 - closed by caller
    buffered: IO[bytes] = io.BufferedReader(counting, buffer_size=1 << 20)
    if path.suffix == ".gz":
        buffered = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")


def _url_lines(client: httpx.Client, url: str, progress: Progress | None) -> Iterator[str]:
    import httpx

    try:
        with client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise IngestError(
                    url, None, f"the server answered HTTP {response.status_code}; check the URL"
                )
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            decoder = codecs.getincrementaldecoder("utf-8-sig")()
            done, pending = 0, ""
            for chunk in response.iter_bytes():
                done += len(chunk)
                pending += decoder.decode(chunk)
                *complete, pending = pending.splitlines(keepends=True) or [""]
                if pending.endswith(("\n", "\r")):
                    complete, pending = [*complete, pending], ""
                yield from complete
                if progress is not None:
                    progress(done, total)
            pending += decoder.decode(b"", final=True)
            if pending:
                yield pending
    except httpx.HTTPError as err:
        raise IngestError(
            url, None, f"could not fetch it ({type(err).__name__}: {err}); is the server up?"
        ) from None


def _text_lines(
    target: str, client: httpx.Client | None, progress: Progress | None
) -> tuple[Iterable[str], Any]:
    """The lines of *target* and the object to close afterwards (None for URLs)."""
    if _is_url(target):
        if client is None:
            raise IngestError(
                target, None, "reading a URL needs an HTTP client; pass http_client=httpx.Client()"
            )
        return _url_lines(client, target, progress), None
    fh = _open_path(Path(target), progress)
    return fh, fh


def _decode_guard(lines: Iterable[str], path: str) -> Iterator[str]:
    import zlib

    try:
        yield from lines
    except UnicodeDecodeError as err:
        raise IngestError(
            path, None, f"not UTF-8 text ({err.reason}); is it a binary or compressed file?"
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        what = "it ends early (truncated?)" if isinstance(err, EOFError) else str(err)
        raise IngestError(
            path, None, f"not a readable gzip file: {what}; check it with `gzip -t {path}`"
        ) from None


class _LineCounter:
    """Counts the non-blank, non-comment lines that pass through (the input rows of DCGM and nvidia-smi)."""

    def __init__(self, lines: Iterable[str], comment: str | None = None) -> None:
        self._lines = lines
        self._comment = comment
        self.count = 0
        self.repeats_of_first = 0
        self._first: str | None = None

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            text = line.strip()
            if text and not (self._comment and text.startswith(self._comment)):
                self.count += 1
                if self._first is None:
                    self._first = text
                if text == self._first:
                    self.repeats_of_first += 1
            yield line


# --- parsing ----------------------------------------------------------------------------------------------


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


def _write_rejects(
    factory: sessionmaker[Session], run_id: int, rejected: list[RejectedRow], start: int
) -> None:
    for i in range(start, len(rejected), DEFAULT_BATCH_SIZE):
        chunk = rejected[i : i + DEFAULT_BATCH_SIZE]
        with write_session(factory) as session:
            session.execute(
                IngestReject.__table__.insert(),
                [
                    {
                        "ingest_run_id": run_id,
                        "line": r.line,
                        "reason": r.reason,
                        "raw": (r.raw or "")[:_RAW_MAX],
                    }
                    for r in chunk
                ],
            )


def ingest_source(
    factory: sessionmaker[Session],
    source: str,
    target: str | os.PathLike[str],
    *,
    catalog: Catalog,
    options: IngestOptions | None = None,
    http_client: httpx.Client | None = None,
    progress: Progress | None = None,
    attribute: Attributor | None = None,
) -> IngestResult:
    """Ingest one file or URL of *source* (one of :data:`INGEST_SOURCE_NAMES`) into the ledger.

    Returns the run's :class:`IngestResult`; a run whose input cannot be understood at all has status
    ``failed``, its message, and nothing of it left in the ledger. A charge already in the ledger with other
    values (a restatement) is replaced, its old values kept as history
    (:mod:`flopwise.meter.ledger_write`). *progress* is called with (bytes read, total bytes or None).
    *attribute* maps a record to (org_id, team_id, project_id); without it records are stored unattributed
    (NULL), to be attributed by rules later. Raises InputError for an unknown *source* and UnknownRegionError
    for an unknown ``options.region``; other unexpected errors (and Ctrl-C) propagate after what the run wrote
    is undone and the run is marked ``failed`` (``interrupted`` for Ctrl-C).
    """
    options = options or IngestOptions()
    if source not in INGEST_SOURCE_NAMES:
        raise InputError("source", source, f"choose one of {', '.join(INGEST_SOURCE_NAMES)}")
    target = os.fspath(target)
    coster = Coster(
        catalog, CostingOptions(default_region=options.region, prefer_onprem=options.prefer_onprem)
    )
    close_stale_runs(factory)
    with write_session(factory) as session:
        run = IngestRun(
            source=source, path=target[:4000], status="running", actor=options.actor, owner=_owner()
        )
        session.add(run)
        session.flush()
        run_id = run.id

    parsed: _Parsed | None = None
    try:
        parsed = _parse(
            source, target, catalog=catalog, options=options, client=http_client, progress=progress
        )
        _inserted, _unchanged, totals = ingest_records(
            factory,
            parsed.records,
            coster=coster,
            run_id=run_id,
            batch_size=options.batch_size,
            attribute=attribute,
            restate=parsed.restate,
            actor=options.actor,
        )
    except IngestError as err:
        rejected = parsed.rejected if parsed is not None else []
        return _fail(factory, run_id, source, target, str(err), rejected)
    except KeyboardInterrupt:
        _fail(
            factory, run_id, source, target, "interrupted (Ctrl-C); nothing of it was kept", [], "interrupted"
        )
        raise IngestInterrupted(run_id) from None
    except BaseException as err:
        _fail(factory, run_id, source, target, f"unexpected error: {type(err).__name__}: {err}", [])
        raise
    finally:
        if parsed is not None and parsed.closer is not None:
            parsed.closer.close()

    counts: BatchCounts = totals["counts"]
    rejected = parsed.rejected
    _write_rejects(factory, run_id, rejected, 0)
    result = IngestResult(
        run_id=run_id,
        source=source,
        path=target,
        status="partial" if rejected else "ok",
        rows_read=parsed.rows_read(),
        records_inserted=counts.inserted,
        records_duplicate=counts.unchanged,
        rows_rejected=len({r.line for r in rejected}),
        rows_rolled_up=parsed.rolled_up(),
        records_expanded=parsed.expanded(),
        rejects=tuple(rejected[:_RESULT_REJECTS]),
        cost_usd=str(counts.cost_usd),
        device_hours=counts.device_hours,
        energy_kwh=counts.energy_kwh,
        records_replaced=counts.replaced,
        restated_cost_usd=str(counts.restated_cost_usd),
        touched=frozenset(counts.touched),
    )
    with write_session(factory) as session:
        session.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(
                finished_at=utcnow(),
                rows_read=result.rows_read,
                records_inserted=result.records_inserted,
                records_replaced=result.records_replaced,
                records_duplicate=result.records_duplicate,
                rows_rejected=result.rows_rejected,
                rows_rolled_up=result.rows_rolled_up,
                status=result.status,
                message=None if result.reconciles else "input rows and ledger records do not reconcile",
            )
        )
    return result


def _fail(
    factory: sessionmaker[Session],
    run_id: int,
    source: str,
    target: str,
    message: str,
    rejected: list[RejectedRow],
    status: str = "failed",
) -> IngestResult:
    """Undo what the run wrote (restated rows get their values back), keep its rejects, mark it *status*."""
    with write_session(factory) as session:
        undo_run(session, run_id)
    _write_rejects(factory, run_id, rejected, 0)
    with write_session(factory) as session:
        session.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(finished_at=utcnow(), status=status, message=message, rows_rejected=len(rejected))
        )
    return IngestResult(
        run_id=run_id,
        source=source,
        path=target,
        status=status,
        rows_read=0,
        records_inserted=0,
        records_duplicate=0,
        rows_rejected=len(rejected),
        rows_rolled_up=0,
        message=message,
        rejects=tuple(rejected[:_RESULT_REJECTS]),
    )
