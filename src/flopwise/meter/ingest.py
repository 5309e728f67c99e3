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
import json
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import JSON, delete, select, update

from flopwise import vocab
from flopwise.errors import IngestError, InputError
from flopwise.meter.cloud_exports import parse_aws_cur, parse_azure_cost_export, parse_oci_cost_report
from flopwise.meter.costing import CostedUsage, Coster, CostingOptions
from flopwise.meter.dcgm import DcgmScrape, dcgm_usage, parse_dcgm_scrape
from flopwise.meter.focus import ParseReport, parse_focus, parse_focus_parquet
from flopwise.meter.nvidia_smi import parse_nvidia_smi
from flopwise.meter.opencost import parse_opencost_allocation
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.meter.sacct import parse_sacct
from flopwise.store.ledger import IngestReject, IngestRun, UsageRecordRow
from flopwise.store.models import ComputeRequest
from flopwise.store.session import write_session
from flopwise.store.types import UTCDateTime, utcnow

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.orm import Session, sessionmaker

    from flopwise.catalog import Catalog

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SCRAPE_INTERVAL_S",
    "INGEST_SOURCE_NAMES",
    "IngestOptions",
    "IngestResult",
    "costed_row",
    "ingest_records",
    "ingest_source",
]

#: sources ``flopwise ingest`` understands (``nvml`` records arrive from the agent, not from a file)
INGEST_SOURCE_NAMES = vocab.FILE_SOURCES
DEFAULT_BATCH_SIZE = 5000
#: dcgm-exporter's default collection interval (``-c 30000`` ms): the span a scrape's readings stand for
DEFAULT_SCRAPE_INTERVAL_S = 30.0
#: rejects kept in the IngestResult (all of them go to ingest_rejects)
_RESULT_REJECTS = 50
_RAW_MAX = 500

#: where a record's attribution comes from: (org_id, team_id, project_id) or None for unattributed
Attributor = Callable[[UsageRecord], "tuple[int | None, int | None, int | None] | None"]
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class IngestOptions:
    """How to read one input. Every field is optional; the parsers say when one is needed.

    *assume_tz*: IANA zone of zone-less timestamps (sacct, nvidia-smi, the FOCUS sample data). *cluster*: the
    Slurm cluster name when sacct output has no Cluster field. *fields*: sacct's ``--format`` list or nvidia-smi's
    ``--query-gpu`` list for header-less output. *delimiter*: sacct/CSV delimiter when it cannot be sniffed.
    *region*: the catalog region of usage that names none (CO2e of on-prem usage). *scraped_at*: when a DCGM
    scrape file was taken (default: the file's modification time); *scrape_interval_s*: the span the first scrape
    of a run stands for. *interval_s*: nvidia-smi aggregation interval. *batch_size*: records per write
    transaction.
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
    status: str  # ok | partial | failed
    rows_read: int
    records_inserted: int
    records_duplicate: int
    rows_rejected: int
    rows_rolled_up: int
    records_expanded: int = 0
    message: str | None = None
    rejects: tuple[RejectedRow, ...] = field(default=())
    cost_usd: str = "0"
    device_hours: float = 0.0
    energy_kwh: float = 0.0

    @property
    def reconciles(self) -> bool:
        """Every input row is a record (new or duplicate), a reject, or folded into another row's record."""
        return self.rows_read == (
            self.records_inserted
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
            "records_duplicate": self.records_duplicate,
            "rows_rejected": self.rows_rejected,
            "rows_rolled_up": self.rows_rolled_up,
            "records_expanded": self.records_expanded,
            "reconciles": self.reconciles,
            "message": self.message,
            "cost_usd": self.cost_usd,
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
    try:
        yield from lines
    except UnicodeDecodeError as err:
        raise IngestError(
            path, None, f"not UTF-8 text ({err.reason}); is it a binary or compressed file?"
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
            target, catalog=catalog, assume_tz=options.assume_tz, report=report, rejected=rejected
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
        records = parser(
            lines,
            path=target,
            catalog=catalog,
            assume_tz=options.assume_tz,
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
    rejected: list[RejectedRow] = []
    lines, closer = _text_lines(target, client, progress)
    counter = _LineCounter(_decode_guard(lines, target), comment="#")
    if options.scraped_at is not None:
        scraped_at = options.scraped_at
    elif _is_url(target):
        scraped_at = utcnow()
    else:
        scraped_at = datetime.fromtimestamp(Path(target).stat().st_mtime, tz=UTC)
    produced = [0]

    def records() -> Iterator[UsageRecord]:
        scrape = parse_dcgm_scrape(
            counter, scraped_at=scraped_at, rejected=rejected, path=target, catalog=catalog
        )
        before = _held_scrape(scrape, options.scrape_interval_s)
        for rec in dcgm_usage([before, scrape]):
            produced[0] += 1
            yield rec

    def rolled() -> int:
        return max(0, counter.count - produced[0] - len({r.line for r in rejected}))

    return _Parsed(records(), rejected, lambda: counter.count, rolled, closer=closer)


def _held_scrape(scrape: DcgmScrape, interval_s: float) -> DcgmScrape:
    """The scrape *interval_s* before *scrape* with its readings held (power and utilization as now, no energy
    counter), so a single scrape meters ``power x interval`` over the interval before it (as Prometheus's
    ``avg_over_time`` of a gauge scraped once per interval does)."""
    from dataclasses import replace

    held = {key: replace(r, energy_mj=None) for key, r in scrape.gpus.items()}
    return replace(scrape, scraped_at=scrape.scraped_at - timedelta(seconds=interval_s), gpus=held)


# --- writing ----------------------------------------------------------------------------------------------


#: the ``usage_records`` columns ingestion writes, in the order of the tuples :func:`_row_values` builds
_COLUMNS: tuple[str, ...] = (
    "source",
    "source_key",
    "charge_period_start",
    "charge_period_end",
    "billed_cost",
    "effective_cost",
    "list_cost",
    "cost_usd",
    "cost_basis",
    "billing_currency",
    "provider_name",
    "region_id",
    "resource_id",
    "service_category",
    "sku_id",
    "tags",
    "x_device_type",
    "x_device_count",
    "x_device_hours",
    "x_gpu_utilization",
    "x_energy_kwh",
    "energy_basis",
    "x_co2e_kg",
    "idle_device_hours",
    "idle_cost_usd",
    "x_job_id",
    "x_request_id",
    "x_user",
    "x_account",
    "x_extra",
    "org_id",
    "team_id",
    "project_id",
    "request_id",
    "ingest_run_id",
    "ingested_at",
)
_ORG, _TEAM, _PROJECT, _REQUEST = (
    _COLUMNS.index(c) for c in ("org_id", "team_id", "project_id", "request_id")
)
_X_REQUEST_ID = _COLUMNS.index("x_request_id")
#: a staging table per write transaction (PostgreSQL): COPY fills it, one INSERT ... SELECT moves it
_PG_STAGE = "flopwise_ingest_stage"
#: the least SQLite page cache an ingesting connection gets (memory is taken only as pages are read)
_SQLITE_CACHE_BYTES = 64 * 2**20


def _row_values(
    costed: CostedUsage,
    run_id: int | None,
    ingested_at: datetime,
    owner: tuple[int | None, int | None, int | None] | None,
) -> list[Any]:
    """The ``usage_records`` values of one costed record, in :data:`_COLUMNS` order (Python values)."""
    r = costed.record
    org_id, team_id, project_id = owner if owner is not None else (None, None, None)
    return [
        r.source,
        r.source_key,
        r.charge_period_start,
        r.charge_period_end,
        r.billed_cost,
        r.effective_cost,
        r.list_cost,
        costed.cost_usd,
        costed.cost_basis,
        r.billing_currency,
        r.provider_name,
        r.region_id,
        r.resource_id,
        r.service_category,
        r.sku_id,
        r.tags,
        r.x_device_type,
        r.x_device_count,
        r.x_device_hours,
        r.x_gpu_utilization,
        r.x_energy_kwh,
        costed.energy_basis,
        r.x_co2e_kg,
        costed.idle_device_hours,
        costed.idle_cost_usd,
        r.x_job_id,
        r.x_request_id,
        r.x_user,
        r.x_account,
        r.x_extra,
        org_id,
        team_id,
        project_id,
        None,
        run_id,
        ingested_at,
    ]


def costed_row(costed: CostedUsage, run_id: int | None) -> dict[str, Any]:
    """The ``usage_records`` column values of one costed record (for the ORM: ``UsageRecordRow(**row)``)."""
    row = dict(zip(_COLUMNS, _row_values(costed, run_id, utcnow(), None), strict=True))
    row["tags"] = dict(row["tags"])
    row["x_extra"] = dict(row["x_extra"])
    return row


def _link_requests(session: Session, rows: list[list[Any]]) -> None:
    """Set ``request_id`` where ``x_request_id`` names an existing compute request by its integer id, and only when
    the row is not already attributed to another organization than the request's (no cross-organization links)."""
    wanted = {int(rid) for r in rows if (rid := r[_X_REQUEST_ID]) and str(rid).isdigit()}
    if not wanted:
        return
    org_of = dict(
        session.execute(
            select(ComputeRequest.id, ComputeRequest.org_id).where(ComputeRequest.id.in_(wanted))
        ).all()
    )
    for r in rows:
        rid = r[_X_REQUEST_ID]
        if rid and str(rid).isdigit() and int(rid) in org_of and r[_ORG] in (None, org_of[int(rid)]):
            r[_REQUEST] = int(rid)


class _Writer:
    """Writes batches of :data:`_COLUMNS` rows with ``ON CONFLICT (source_key) DO NOTHING`` on the session's
    own DBAPI connection, counting the rows that were new.

    * SQLite: one prepared ``INSERT`` through ``executemany``; the new rows are the connection's
      ``total_changes`` difference (a row skipped by ``DO NOTHING`` changes nothing).
    * PostgreSQL: ``COPY`` into a temporary staging table (dropped at commit), then one
      ``INSERT INTO usage_records SELECT ... ON CONFLICT (source_key) DO NOTHING``, whose rowcount is the new rows.

    Values go through the columns' own bind processors (``Money``, ``UTCDateTime``, ``JSON``: the same checks
    and storage formats as the ORM), looked up once per dialect.
    """

    def __init__(self, session: Session) -> None:
        dialect = session.get_bind().dialect
        self.dialect = dialect.name
        table = UsageRecordRow.__table__
        self.processors: list[tuple[int, Callable[[Any], Any]]] = []
        serializer = getattr(dialect, "_json_serializer", None) or json.dumps  # make_engine(json_serializer=)
        for i, name in enumerate(_COLUMNS):
            column_type = table.c[name].type
            proc = column_type.dialect_impl(dialect).bind_processor(dialect)
            if isinstance(column_type, JSON):
                proc = _json_processor(serializer)  # SQLite and COPY's text format both take JSON as text
            elif isinstance(column_type, UTCDateTime) and proc is not None:
                proc = _utc_processor(proc, self.dialect)
            if proc is not None:
                self.processors.append((i, proc))
        names = ", ".join(_COLUMNS)
        if self.dialect == "sqlite":
            marks = ", ".join("?" for _ in _COLUMNS)
            self.sql = (
                f"INSERT INTO usage_records ({names}) VALUES ({marks}) ON CONFLICT (source_key) DO NOTHING"
            )
        else:
            self.stage_sql = (
                f"CREATE TEMPORARY TABLE {_PG_STAGE} ON COMMIT DROP AS "
                f"SELECT {names} FROM usage_records WITH NO DATA"
            )
            self.copy_sql = f"COPY {_PG_STAGE} ({names}) FROM STDIN"
            self.sql = (
                f"INSERT INTO usage_records ({names}) SELECT {names} FROM {_PG_STAGE} "
                "ON CONFLICT (source_key) DO NOTHING"
            )

    def _processed(self, rows: list[list[Any]]) -> list[list[Any]]:
        procs = self.processors
        for row in rows:
            for i, proc in procs:
                value = row[i]
                if value is not None:
                    row[i] = proc(value)
        return rows

    def write(self, session: Session, rows: list[list[Any]]) -> int:
        """Insert *rows* in the session's transaction; returns how many were new."""
        connection = session.connection().connection.driver_connection
        rows = self._processed(rows)
        if self.dialect == "sqlite":
            _ensure_sqlite_cache(connection)
            before = connection.total_changes
            connection.executemany(self.sql, rows)
            return int(connection.total_changes - before)
        with connection.cursor() as cursor:
            cursor.execute(self.stage_sql)
            with cursor.copy(self.copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self.sql)
            return int(cursor.rowcount)


def _ensure_sqlite_cache(connection: Any) -> None:
    """Give the connection at least :data:`_SQLITE_CACHE_BYTES` of page cache (never less than it has).

    SQLite's default cache is 2 MiB; once the ledger's indexes outgrow it (a few hundred thousand records), every
    insert into the ``source_key`` index, whose keys arrive in hash order, reads its pages back from the OS.
    """
    pages = connection.execute("PRAGMA cache_size").fetchone()[0]
    cache_bytes = -pages * 1024 if pages < 0 else pages * connection.execute("PRAGMA page_size").fetchone()[0]
    if cache_bytes < _SQLITE_CACHE_BYTES:
        connection.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_BYTES // 1024}")


def _json_processor(serializer: Callable[[Any], str]) -> Callable[[Any], str]:
    """The JSON text of a value (``{}`` for the common empty dict without calling the serializer)."""

    def process(value: Any) -> str:
        return "{}" if value == {} else serializer(value)

    return process


def _utc_processor(generic: Callable[[Any], Any], dialect: str) -> Callable[[Any], Any]:
    """``UTCDateTime``'s bind processor with a fast path for datetimes already in UTC (what every parser makes):
    on SQLite the same ``YYYY-MM-DD HH:MM:SS.ffffff`` text SQLAlchemy stores, on PostgreSQL the value itself.
    Anything else (another zone, naive: refused) goes through *generic*. The fast path is used only if it gives
    exactly what *generic* gives on a sample."""
    if dialect == "sqlite":

        def process(value: Any) -> Any:
            if isinstance(value, datetime) and value.tzinfo is UTC:
                return value.replace(tzinfo=None).isoformat(" ", "microseconds")
            return generic(value)

    else:

        def process(value: Any) -> Any:
            if isinstance(value, datetime) and value.tzinfo is UTC:
                return value
            return generic(value)

    sample = datetime(2025, 1, 2, 3, 4, 5, 60708, tzinfo=UTC)
    return process if process(sample) == generic(sample) else generic


def _write_batch(factory: sessionmaker[Session], rows: list[list[Any]]) -> int:
    """Insert one batch in its own write transaction; returns how many rows were new."""
    with write_session(factory) as session:
        _link_requests(session, rows)
        return _writer(session).write(session, rows)


_WRITERS: weakref.WeakKeyDictionary[Any, _Writer] = weakref.WeakKeyDictionary()


def _writer(session: Session) -> _Writer:
    dialect = session.get_bind().dialect
    writer = _WRITERS.get(dialect)
    if writer is None:
        writer = _WRITERS[dialect] = _Writer(session)
    return writer


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


def ingest_records(
    factory: sessionmaker[Session],
    records: Iterable[UsageRecord],
    *,
    coster: Coster,
    run_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    attribute: Attributor | None = None,
) -> tuple[int, int, dict[str, Any]]:
    """Cost and write *records* in batches (idempotent on ``source_key``): (inserted, duplicate, totals).

    The building block of :func:`ingest_source`, and what the NVML agent's pushes go through.
    """
    inserted = duplicate = 0
    cost_total = Decimal(0)
    device_hours = energy_kwh = 0.0
    rows: list[list[Any]] = []
    ingested_at = utcnow()
    for record in records:
        costed = coster.cost(record)
        rows.append(_row_values(costed, run_id, ingested_at, attribute(record) if attribute else None))
        if costed.cost_usd is not None:
            cost_total += costed.cost_usd
        device_hours += record.x_device_hours or 0.0
        energy_kwh += costed.record.x_energy_kwh or 0.0
        if len(rows) >= batch_size:
            new = _write_batch(factory, rows)
            inserted, duplicate = inserted + new, duplicate + len(rows) - new
            rows, ingested_at = [], utcnow()
    if rows:
        new = _write_batch(factory, rows)
        inserted, duplicate = inserted + new, duplicate + len(rows) - new
    totals: dict[str, Any] = {"cost_usd": cost_total, "device_hours": device_hours, "energy_kwh": energy_kwh}
    return inserted, duplicate, totals


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
    ``failed``, its message, and no records left in the ledger. *progress* is called with (bytes read, total
    bytes or None). *attribute* maps a record to (org_id, team_id, project_id); without it records are stored
    unattributed (NULL), to be attributed by rules later. Raises InputError for an unknown *source* and
    UnknownRegionError for an unknown ``options.region``; other unexpected errors propagate after the run is
    marked failed and its records removed.
    """
    options = options or IngestOptions()
    source = vocab.ingest_source(source, allowed=INGEST_SOURCE_NAMES)
    target = os.fspath(target)
    coster = Coster(
        catalog, CostingOptions(default_region=options.region, prefer_onprem=options.prefer_onprem)
    )
    with write_session(factory) as session:
        run = IngestRun(source=source, path=target[:4000], status="running")
        session.add(run)
        session.flush()
        run_id = run.id

    parsed: _Parsed | None = None
    try:
        parsed = _parse(
            source, target, catalog=catalog, options=options, client=http_client, progress=progress
        )
        inserted, duplicate, totals = ingest_records(
            factory,
            parsed.records,
            coster=coster,
            run_id=run_id,
            batch_size=options.batch_size,
            attribute=attribute,
        )
    except IngestError as err:
        rejected = parsed.rejected if parsed is not None else []
        return _fail(factory, run_id, source, target, str(err), rejected)
    except BaseException as err:
        _fail(factory, run_id, source, target, f"unexpected error: {type(err).__name__}: {err}", [])
        raise
    finally:
        if parsed is not None and parsed.closer is not None:
            parsed.closer.close()

    rejected = parsed.rejected
    _write_rejects(factory, run_id, rejected, 0)
    result = IngestResult(
        run_id=run_id,
        source=source,
        path=target,
        status="partial" if rejected else "ok",
        rows_read=parsed.rows_read(),
        records_inserted=inserted,
        records_duplicate=duplicate,
        rows_rejected=len({r.line for r in rejected}),
        rows_rolled_up=parsed.rolled_up(),
        records_expanded=parsed.expanded(),
        rejects=tuple(rejected[:_RESULT_REJECTS]),
        cost_usd=str(totals["cost_usd"]),
        device_hours=totals["device_hours"],
        energy_kwh=totals["energy_kwh"],
    )
    with write_session(factory) as session:
        session.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(
                finished_at=utcnow(),
                rows_read=result.rows_read,
                records_inserted=result.records_inserted,
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
) -> IngestResult:
    """Remove what the run wrote, keep its rejects, mark it failed with *message*."""
    with write_session(factory) as session:
        session.execute(delete(UsageRecordRow).where(UsageRecordRow.ingest_run_id == run_id))
    _write_rejects(factory, run_id, rejected, 0)
    with write_session(factory) as session:
        session.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(finished_at=utcnow(), status="failed", message=message, rows_rejected=len(rejected))
        )
    return IngestResult(
        run_id=run_id,
        source=source,
        path=target,
        status="failed",
        rows_read=0,
        records_inserted=0,
        records_duplicate=0,
        rows_rejected=len(rejected),
        rows_rolled_up=0,
        message=message,
        rejects=tuple(rejected[:_RESULT_REJECTS]),
    )
