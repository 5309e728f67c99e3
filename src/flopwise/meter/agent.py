"""``flopwise agent``: sample the GPUs, aggregate per push interval, push usage records to the server.

The loop, one tick every ``interval_s``::

    flush: records the aggregator closed since the last tick -> POST /api/v1/usage (or the spool)
           then the spool, oldest batch first, when its backoff has elapsed
    sample: sampler.sample() (NVML live, or a recorded CSV replayed)
    aggregate: iter_aggregate_samples(..., interval_s=push_interval_s): one UsageRecord per GPU (and MIG
               device) per push interval, intervals aligned to multiples of push_interval_s since the epoch

Delivery: a batch goes straight to the server while the spool is empty; when the server is unreachable, times
out or answers 408/425/429/5xx, the batch is written to the spool (JSON lines, one file per batch, written to a
temporary name, fsync'd, renamed atomically) and every later batch queues behind it, so records reach the
server in the order they were produced. The spool is retried oldest first with exponential backoff (with
jitter). A 401/403 keeps the batch in the spool and stops the agent with the server's reason (a wrong token
must not lose data); any other 4xx is a batch the server will never accept: it is dropped with the reason
logged, never retried forever. Records carry their ``source_key`` (``nvml:<host>:<gpu uuid>:<period start>``)
and the server's intake is idempotent on it, so a batch re-sent after a lost answer is counted as duplicate,
not twice. The spool is bounded (``max_spool_bytes``): past the bound the oldest batches are dropped with a
warning that says how many records were lost and how to raise the bound.

The network is only reached through the injected ``httpx.Client`` (tests pass ``httpx.MockTransport`` or an
in-process ASGI app); time through the injected ``sleep`` and ``clock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flopwise.errors import FlopwiseError, InputError
from flopwise.meter.nvml import GpuSample, GpuSampler, iter_aggregate_samples
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.units import BYTES_PER_MB

if TYPE_CHECKING:
    import httpx

__all__ = [
    "USAGE_PATH",
    "Agent",
    "AgentConfig",
    "AgentStats",
    "PushOutcome",
    "Spool",
    "default_spool_dir",
    "open_sampler",
    "record_to_json",
    "usage_url",
]

log = logging.getLogger("flopwise.agent")

#: the server's usage intake, relative to the server URL
USAGE_PATH = "/api/v1/usage"
#: statuses that mean "try again later": timeout, too early, rate limited; and every 5xx
_RETRY_STATUSES = frozenset({408, 425, 429})
_AUTH_STATUSES = frozenset({401, 403})
_SPOOL_SUFFIX = ".jsonl"
_TMP_PREFIX = ".tmp-"
_LOCK_NAME = ".lock"
_BAD_SUFFIX = ".bad"
_DEFAULT_MAX_SPOOL_BYTES = 100_000_000


def usage_url(server_url: str) -> str:
    """The intake URL of *server_url* (``https://host`` or ``https://host/api/v1`` both work)."""
    base = server_url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise InputError("server", server_url, "give the server's URL, e.g. https://flopwise.example.org")
    if base.endswith("/api/v1"):
        base = base[: -len("/api/v1")]
    return base + USAGE_PATH


def default_spool_dir(
    server_url: str, env: Mapping[str, str] | None = None, platform: str | None = None
) -> Path:
    """The per-user state directory of the agent's spool for *server_url*.

    Linux and other Unix: ``$XDG_STATE_HOME/flopwise/agent/<server>`` (default ``~/.local/state``); macOS:
    ``~/Library/Application Support/flopwise/agent/<server>``; Windows: ``%LOCALAPPDATA%\\flopwise\\agent\\<server>``.
    ``<server>`` is the first 12 hex digits of sha256 of the intake URL, so batches spooled for one server
    are never sent to another.
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform.startswith("win"):
        local = env.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_STATE_HOME", "").strip()
        base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "state"
    digest = hashlib.sha256(usage_url(server_url).encode()).hexdigest()[:12]
    return base / "flopwise" / "agent" / digest


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money stays exact on the wire
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(v) for v in value]
    return value


def record_to_json(record: UsageRecord) -> dict[str, Any]:
    """A UsageRecord as the JSON object the intake accepts: field names as in the dataclass, money as decimal
    strings, timestamps as ISO 8601 with their offset, non-finite floats as null."""
    return {f.name: _json_value(getattr(record, f.name)) for f in fields(record)}


@dataclass(frozen=True)
class AgentConfig:
    """What the agent needs besides its sampler and HTTP client.

    ``region_id`` (a catalog region such as ``country:NL``) is set on every record so the server can give it a
    CO2e from the grid intensity. ``max_gap_s`` (default: five sample intervals) is the longest pause between two samples of a GPU that is
    still integrated; a longer one (the host slept, the agent was stopped) is left out of the records.
    """

    server_url: str
    token: str
    spool_dir: Path
    interval_s: float = 10.0
    push_interval_s: float = 60.0
    max_spool_bytes: int = _DEFAULT_MAX_SPOOL_BYTES
    max_gap_s: float | None = None
    backoff_initial_s: float | None = None  # default: interval_s
    backoff_max_s: float = 300.0
    backoff_jitter_frac: float = 0.1
    request_timeout_s: float = 10.0
    batch_max_records: int = 1000
    source_prefix: str = field(default_factory=lambda: _hostname())
    region_id: str | None = None  # catalog region of this machine (e.g. "country:NL"), for CO2e

    def __post_init__(self) -> None:
        for name in ("interval_s", "push_interval_s", "backoff_max_s", "request_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(name, value, "give a positive number of seconds")
        if self.push_interval_s < self.interval_s:
            raise InputError(
                "push_interval_s",
                self.push_interval_s,
                f"push at most as often as you sample: give at least interval_s={self.interval_s:g}",
            )
        if self.max_spool_bytes <= 0:
            raise InputError("max_spool_bytes", self.max_spool_bytes, "give a positive number of bytes")
        if self.batch_max_records < 1:
            raise InputError("batch_max_records", self.batch_max_records, "give at least 1")
        if not 0 <= self.backoff_jitter_frac < 1:
            raise InputError("backoff_jitter_frac", self.backoff_jitter_frac, "give a fraction in [0, 1)")
        if not self.token.strip():
            raise InputError("token", self.token, "give the API token the server issued (fw_...)")
        usage_url(self.server_url)  # validates the URL

    @property
    def url(self) -> str:
        return usage_url(self.server_url)


def _hostname() -> str:
    import socket

    return socket.gethostname() or "localhost"


@dataclass
class AgentStats:
    """What one run did. ``records_delivered`` counts records the server acknowledged (inserted or duplicate)."""

    ticks: int = 0
    samples: int = 0
    records: int = 0
    records_delivered: int = 0
    records_inserted: int = 0
    records_duplicate: int = 0
    records_rejected_by_server: int = 0
    batches_spooled: int = 0
    batches_dropped: int = 0
    records_dropped: int = 0
    push_failures: int = 0
    samples_rejected: int = 0

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class PushOutcome:
    """The server's answer to one batch: ``ok`` (acknowledged), ``retry`` (unreachable, timeout, 408/425/429,
    5xx), ``auth`` (401/403: the token is refused) or ``drop`` (any other 4xx: the server will never take it)."""

    kind: Literal["ok", "retry", "auth", "drop"]
    status: int | None
    message: str
    inserted: int = 0
    duplicate: int = 0
    rejected: int = 0


class Spool:
    """Batches waiting for the server: one JSON-lines file per batch in *directory*, oldest first by name.

    A batch is written to a temporary file, flushed and fsync'd, then renamed into place (and the directory
    fsync'd), so a crash leaves either the whole batch or none of it; leftover temporary files are removed
    when the spool opens. :meth:`lock` takes an exclusive lock so two agents never drain the same spool.
    """

    def __init__(self, directory: Path, max_bytes: int = _DEFAULT_MAX_SPOOL_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._seq = 0
        self._lock_fd: int | None = None
        #: batches and records dropped to keep the spool under its bound (the agent adds them to its stats)
        self.dropped_batches = 0
        self.dropped_records = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                "spool_dir",
                str(self.directory),
                f"it cannot be created ({exc.strerror}); pick a writable one",
            ) from exc
        for leftover in self.directory.glob(_TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def lock(self) -> None:
        """Take the spool's lock; InputError if another agent holds it."""
        path = self.directory / _LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks in the stdlib; one agent per spool is documented
            self._lock_fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(
                "spool_dir",
                str(self.directory),
                "another flopwise agent is using this spool; stop it or give this one its own --spool-dir",
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def batches(self) -> list[Path]:
        """Spooled batch files, oldest first."""
        return sorted(p for p in self.directory.glob("*" + _SPOOL_SUFFIX) if not p.name.startswith("."))

    def __len__(self) -> int:
        return len(self.batches())

    def size_bytes(self) -> int:
        total = 0
        for p in self.batches():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def records(self) -> int:
        """How many records are spooled (reads every file; for status and tests)."""
        return sum(len(self.read(p)) for p in self.batches())

    def append(self, records: list[dict[str, Any]]) -> Path:
        """Write one batch durably and return its file; then enforce the size bound (oldest dropped first)."""
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid():07d}-{self._seq:06d}{_SPOOL_SUFFIX}"
        final = self.directory / name
        tmp = self.directory / (_TMP_PREFIX + name)
        data = "".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in records)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self._fsync_dir()
        self._enforce_bound(keep=final)
        return final

    def _fsync_dir(self) -> None:
        if not hasattr(os, "O_DIRECTORY"):
            return
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _enforce_bound(self, keep: Path) -> None:
        total = self.size_bytes()
        if total <= self.max_bytes:
            return
        dropped_batches = dropped_records = 0
        for path in self.batches():
            if total <= self.max_bytes or path == keep:
                break
            size = path.stat().st_size
            dropped_records += len(self.read(path))
            self.remove(path)
            total -= size
            dropped_batches += 1
        if dropped_batches:
            self.dropped_batches += dropped_batches
            self.dropped_records += dropped_records
            log.warning(
                "spool %s is over its bound of %.1f MB: dropped the %d oldest batches (%d records), which are "
                "lost; the server has not taken batches for a while. Check the server, or raise --max-spool-mb",
                self.directory,
                self.max_bytes / BYTES_PER_MB,
                dropped_batches,
                dropped_records,
            )

    def read(self, path: Path) -> list[dict[str, Any]]:
        """The records of one batch file. A file that does not parse (disk damage) is renamed ``*.bad``,
        logged, and read as empty, so one damaged file cannot block the queue."""
        try:
            with open(path, encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            bad = path.with_name(path.name + _BAD_SUFFIX)
            with contextlib.suppress(OSError):
                os.replace(path, bad)
            log.error("spool file %s cannot be read (%s); moved aside to %s", path, exc, bad.name)
            return []

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _error_text(response: httpx.Response) -> str:
    """The server's one-line error (``{"error": ...}``) with its field messages, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict) and body.get("error"):
        errs = body.get("errors") or []
        detail = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errs[:5] if isinstance(e, dict))
        return f"{body['error']}" + (f" ({detail})" if detail and detail not in str(body["error"]) else "")
    return str(body)[:300]


class Agent:
    """Samples *sampler* every ``interval_s``, aggregates per ``push_interval_s`` and pushes to the server.

    *client* is the only way to the network; build it with ``timeout=config.request_timeout_s`` (the CLI
    does), since a push that hangs holds up sampling. *sleep* waits between ticks (default: an event wait that
    :meth:`stop` interrupts); *clock* is a monotonic clock in seconds for the retry backoff. With
    ``time_from_samples=True`` (replays) the agent never sleeps and its clock is the samples' own timestamps.
    """

    def __init__(
        self,
        sampler: GpuSampler,
        client: httpx.Client,
        config: AgentConfig,
        *,
        sleep: Callable[[float], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_from_samples: bool = False,
        catalog: Any = None,
        rng: Callable[[], float] = random.random,
        rejected: list[RejectedRow] | None = None,
    ) -> None:
        self.sampler = sampler
        self.client = client
        self.config = config
        self.spool = Spool(config.spool_dir, config.max_spool_bytes)
        self.stats = AgentStats()
        #: samples that could not be used (bad replay rows, samples out of order); share it with the sampler
        self.rejected: list[RejectedRow] = [] if rejected is None else rejected
        self.catalog = catalog
        self._stop = threading.Event()
        self._sleep = sleep if sleep is not None else self._stop.wait
        self._clock = clock
        self._time_from_samples = time_from_samples
        self._rng = rng
        self._pending: list[UsageRecord] = []
        self._failures = 0
        self._next_attempt_s = -math.inf
        self._sample_time_s: float | None = None
        self._refusal: PushOutcome | None = None
        self._sampler_error: FlopwiseError | None = None

    # --- control ---------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: it stops sampling, closes the open intervals and flushes (signal-safe)."""
        self._stop.set()

    def _now_s(self) -> float:
        if self._time_from_samples:
            return self._sample_time_s if self._sample_time_s is not None else 0.0
        return self._clock()

    # --- the loop --------------------------------------------------------------------------------------------

    def run(self, *, once: bool = False, max_ticks: int | None = None) -> AgentStats:
        """Run until :meth:`stop`, the end of a replay, *max_ticks* samples, or (``once``) one push interval.

        The open intervals are closed and flushed on the way out, and the spool is given one last try, so a
        clean stop leaves nothing in memory. Raises InputError when the server refuses the token (the batch
        stays spooled) or another agent holds the spool; a sampler error (NVML lost the GPU, a replay file that
        is not a sample CSV) is raised after what was measured before it has been pushed or spooled.
        """
        self.spool.lock()
        try:
            records = iter_aggregate_samples(
                self._samples(once=once, max_ticks=max_ticks),
                self.config.push_interval_s,
                max_gap_s=self.config.max_gap_s or 5 * self.config.interval_s,
                source="nvml",
                source_prefix=self.config.source_prefix,
                rejected=self.rejected,
                path="<agent>",
                catalog=self.catalog,
            )
            for record in records:
                if self.config.region_id and not record.region_id:
                    record = replace(record, region_id=self.config.region_id)
                self._pending.append(record)
                self.stats.records += 1
            self._flush(final=True)
        finally:
            self._close_stats()
            self.spool.unlock()
        if self._sampler_error is not None:
            raise self._sampler_error
        if self._refusal is not None:
            raise InputError(
                "token",
                self.config.token[:10] + "...",
                f"the server at {self.config.url} refused it ({self._refusal.status}: {self._refusal.message}); "
                f"the records are kept in {self.spool.directory} and will be sent once the agent runs with the "
                "token of a member of the organization",
            )
        return self.stats

    def _close_stats(self) -> None:
        self.stats.samples_rejected = len(self.rejected)
        self.stats.batches_dropped += self.spool.dropped_batches
        self.stats.records_dropped += self.spool.dropped_records
        self.spool.dropped_batches = self.spool.dropped_records = 0

    def _samples(self, *, once: bool, max_ticks: int | None) -> Iterator[GpuSample]:
        first_ts: datetime | None = None
        deadline = self._clock()
        while not self._stop.is_set():
            self._flush(final=False)
            try:
                batch = self.sampler.sample()
            except (
                FlopwiseError
            ) as exc:  # NVML failed (GPU lost, driver unloaded), a replay file that is not one
                self._sampler_error = exc
                log.error("sampling failed (%s); stopping after pushing what was measured", exc)
                return
            if not batch:
                log.info("the sampler has no more samples (end of the recording)")
                return
            self.stats.ticks += 1
            self.stats.samples += len(batch)
            ts = max(s.timestamp for s in batch)
            first_ts = first_ts or ts
            self._sample_time_s = ts.timestamp()
            yield from batch
            if once and (ts - first_ts).total_seconds() >= self.config.push_interval_s:
                return
            if max_ticks is not None and self.stats.ticks >= max_ticks:
                return
            if not self._time_from_samples:
                deadline += self.config.interval_s
                self._sleep(max(0.0, deadline - self._clock()))

    # --- delivery --------------------------------------------------------------------------------------------

    def _flush(self, *, final: bool) -> None:
        """Send what the aggregator closed, then drain the spool when due (always once more when *final*)."""
        if self._pending:
            encoded = [record_to_json(r) for r in self._pending]
            self._pending.clear()
            n = self.config.batch_max_records
            for chunk in (encoded[i : i + n] for i in range(0, len(encoded), n)):
                if self._refusal is not None or len(self.spool) or not self._due():
                    self._spool(chunk)  # keep the order: behind what is already waiting
                    continue
                outcome = self.push(chunk)
                if outcome.kind == "retry":
                    self._spool(chunk)
                    self._schedule_retry(outcome)
                elif outcome.kind == "auth":
                    self._spool(chunk)
                    self._refused(outcome)
        if self._refusal is None and len(self.spool) and (final or self._due()):
            self._drain()

    def _due(self) -> bool:
        return self._now_s() >= self._next_attempt_s

    def _spool(self, chunk: list[dict[str, Any]]) -> None:
        path = self.spool.append(chunk)
        self.stats.batches_spooled += 1
        log.info("spooled %d records to %s (%d batches waiting)", len(chunk), path.name, len(self.spool))

    def _drain(self) -> None:
        for path in self.spool.batches():
            chunk = self.spool.read(path)
            if not chunk:
                self.spool.remove(path)
                continue
            outcome = self.push(chunk)
            if outcome.kind == "retry":
                self._schedule_retry(outcome)
                return
            if outcome.kind == "auth":
                self._refused(outcome)
                return
            self.spool.remove(path)  # acknowledged, or dropped for good (4xx, reason logged)
        if self._failures:
            log.info("the server is reachable again; the spool is empty")
        self._failures = 0
        self._next_attempt_s = -math.inf

    def _schedule_retry(self, outcome: PushOutcome) -> None:
        self._failures += 1
        self.stats.push_failures += 1
        base = self.config.backoff_initial_s or self.config.interval_s
        delay = min(base * 2 ** (self._failures - 1), self.config.backoff_max_s)
        delay *= 1 + self.config.backoff_jitter_frac * (2 * self._rng() - 1)
        self._next_attempt_s = self._now_s() + delay
        log.warning(
            "cannot push to %s (%s); %d batches spooled in %s, next try in %.0f s",
            self.config.url,
            outcome.message,
            len(self.spool),
            self.spool.directory,
            delay,
        )

    def _refused(self, outcome: PushOutcome) -> None:
        """The token was refused: stop sampling, keep everything in the spool, and fail the run at its end."""
        self._refusal = outcome
        self._stop.set()
        log.error("the server at %s refused the token (%s); stopping", self.config.url, outcome.message)

    def push(self, records: list[dict[str, Any]]) -> PushOutcome:
        """POST one batch; classify the answer (see :class:`PushOutcome`) and keep the counts."""
        import httpx

        try:
            response = self.client.post(
                self.config.url,
                json={"records": records},
                headers={"Authorization": f"Bearer {self.config.token}"},
            )
        except httpx.HTTPError as exc:  # connection refused, DNS, timeout, broken connection
            return PushOutcome(
                "retry", None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            )
        status = response.status_code
        if response.is_success:
            try:
                body = response.json()
                inserted, duplicate = int(body["inserted"]), int(body["duplicate"])
                rejected = int(body.get("rejected", 0))
            except (ValueError, KeyError, TypeError):
                return PushOutcome(
                    "retry", status, f"the server answered {status} without the intake's counts; is "
                    f"{self.config.url} a flopwise server?",
                )  # fmt: skip
            self.stats.records_delivered += inserted + duplicate
            self.stats.records_inserted += inserted
            self.stats.records_duplicate += duplicate
            self.stats.records_rejected_by_server += rejected
            if rejected:
                for item in (body.get("rejects") or [])[:10]:
                    log.warning("the server rejected a record: %s", item)
            return PushOutcome("ok", status, "ok", inserted, duplicate, rejected)
        message = _error_text(response)
        if status >= 500 or status in _RETRY_STATUSES:
            return PushOutcome("retry", status, f"HTTP {status}: {message}")
        if status in _AUTH_STATUSES:
            return PushOutcome("auth", status, message)
        self.stats.batches_dropped += 1
        self.stats.records_dropped += len(records)
        log.error(
            "the server refused a batch of %d records with HTTP %d: %s; dropped (it would be refused again)",
            len(records),
            status,
            message,
        )
        return PushOutcome("drop", status, message)


def open_sampler(replay: Path | None, *, rejected: list[RejectedRow] | None = None) -> GpuSampler:
    """A ReplaySampler over *replay* (a recorded sample CSV), else an NvmlSampler of every GPU.

    Raises UnsupportedError ("no NVIDIA driver ...") on a machine without a driver, InputError for a replay
    file that cannot be opened.
    """
    from flopwise.meter.nvml import NvmlSampler, ReplaySampler

    if replay is None:
        return NvmlSampler()
    try:
        fh = open(replay, encoding="utf-8", newline="")  # noqa: SIM115 - read lazily by the sampler
    except OSError as exc:
        raise InputError("replay", str(replay), f"it cannot be read ({exc.strerror})") from exc
    sampler = ReplaySampler(fh, path=str(replay), rejected=rejected)
    sampler.close = fh.close  # type: ignore[method-assign]
    return sampler
