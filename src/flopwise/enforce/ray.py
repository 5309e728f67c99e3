"""Ray obeys flopwise: a gate in front of the Ray Jobs API of a Ray cluster's dashboard.

Ray has no admission hook, so the gate is a reverse proxy that users (and ``ray job submit --address``) talk to
instead of the dashboard. ``POST /api/jobs/`` is decided by flopwise first:

* the job's project and worst case come from its metadata: ``flopwise-project`` (project id),
  ``flopwise-max-hours`` (else the configuration's ``default_max_hours``) and ``flopwise-gpus`` (else the job's
  ``entrypoint_num_gpus``); the price from the configuration's accelerator;
* ``POST /api/v1/admission/decide`` (engine ``ray``, job id = the submission id, generated when the client gave
  none) through :class:`flopwise.client.FlopwiseClient`;
* admitted: the submission is forwarded with ``flopwise-admission=<submission id>`` added to its metadata;
  denied (or needing an approval: Ray has no wait verb): 400 with flopwise's reason, and nothing reaches Ray;
  flopwise unreachable (or too slow): 503, the submission fails closed, unless every budget covering the
  project is soft (last read of budgets at most 5 minutes old): then it is forwarded unchecked and logged.

Every other request is forwarded unchanged. :meth:`RayGate.settle_ended` (run every few seconds by the gate
command) commits running jobs, settles ended ones with their real run time from the Jobs API (``start_time``,
``end_time``), and releases jobs stopped before they started, or that Ray never accepted. What the gate admitted
and each job's phase are kept in a SQLite file (:class:`GateState`), so a restarted gate settles the jobs that
ended while it was down (Ray keeps ended jobs in its job table).

The gate only helps if users cannot reach Ray another way: see docs/enforce/ray.md for the bypass paths (the
dashboard port itself, the GCS port, Ray Client on 10001) and the network settings that close them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from flopwise.enforce._client import SoftBudgets, borrowed
from flopwise.enforce._config import config_decimal, config_mapping
from flopwise.errors import FlopwiseError, InputError

__all__ = ["GateState", "RayConfig", "RayGate", "admission_body", "create_gate_app", "load_config"]

log = logging.getLogger("flopwise.enforce.ray")

ENGINE = "ray"
PROJECT_KEY = "flopwise-project"
HOURS_KEY = "flopwise-max-hours"
GPUS_KEY = "flopwise-gpus"
ADMISSION_KEY = "flopwise-admission"
_CONFIG_KEYS = ("device", "usd_per_h", "default_max_hours")
_ENDED = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class RayConfig:
    """The cluster's GPU (catalog device id) and its price per GPU-hour; optional default run length."""

    device: str
    usd_per_h: Decimal
    default_max_hours: Decimal | None = None



def load_config(data: Mapping[str, Any], *, source: str = "config") -> RayConfig:
    data = config_mapping(data, _CONFIG_KEYS, source=source, expected="device and usd_per_h")
    for key in ("device", "usd_per_h"):
        if key not in data:
            raise InputError(f"{source}.{key}", None, "is required")
    hours = data.get("default_max_hours")
    return RayConfig(
        str(data["device"]),
        config_decimal(data["usd_per_h"], f"{source}.usd_per_h", "a price"),
        None if hours is None else config_decimal(hours, f"{source}.default_max_hours", "hours", positive=True),
    )


def admission_body(job: Mapping[str, Any], config: RayConfig, submission_id: str) -> dict[str, Any] | None:
    """The ``/admission/decide`` body for a Ray job submission; None for a job that asks for no GPUs."""
    meta = job.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise InputError("metadata", meta, "give metadata as a mapping of strings")
    gpus_text = meta.get(GPUS_KEY, job.get("entrypoint_num_gpus"))
    gpus = Decimal(0) if gpus_text in (None, "") else config_decimal(gpus_text, f"metadata.{GPUS_KEY}", "a GPU count")
    if gpus == 0:
        return None
    if gpus != gpus.to_integral_value():
        raise InputError(f"metadata.{GPUS_KEY}", str(gpus_text), "give a whole number of GPUs")
    project = meta.get(PROJECT_KEY)
    if project is None or not re.fullmatch(r"[1-9][0-9]{0,17}", str(project)):
        raise InputError(f"metadata.{PROJECT_KEY}", project,
                         "give the flopwise project id: --metadata-json '{\"flopwise-project\": \"7\", ...}'")  # fmt: skip
    hours_text = meta.get(HOURS_KEY)
    if hours_text is None:
        if config.default_max_hours is None:
            raise InputError(f"metadata.{HOURS_KEY}", None, "give the most hours the job may run, e.g. \"12\"")
        hours = config.default_max_hours
    else:
        hours = config_decimal(hours_text, f"metadata.{HOURS_KEY}", "hours", positive=True)
    return {
        "engine": ENGINE,
        "engine_job_id": submission_id,
        "project_id": int(str(project)),
        "device": config.device,
        "device_count": int(gpus),
        "max_duration_h": str(hours),
        "usd_per_device_h": str(config.usd_per_h),
    }


class GateState:
    """The jobs the gate admitted and their phase (``admitted``, ``committed``, ``settled``, ``released``), in a
    SQLite file (``:memory:`` when none is given), so a restarted gate settles the jobs that ended while it was
    down. One connection, serialized by a lock (submissions and the settlement loop run in different threads)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        import sqlite3

        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS ray_jobs (submission_id TEXT PRIMARY KEY, "
                             "gpus INTEGER NOT NULL, phase TEXT NOT NULL, updated_at REAL NOT NULL)")  # fmt: skip

    def put(self, submission_id: str, gpus: int, phase: str = "admitted") -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO ray_jobs VALUES (?, ?, ?, ?)",
                             (submission_id, gpus, phase, time.time()))  # fmt: skip

    def set_phase(self, submission_id: str, phase: str) -> None:
        with self._lock:
            self._db.execute("UPDATE ray_jobs SET phase = ?, updated_at = ? WHERE submission_id = ?",
                             (phase, time.time(), submission_id))  # fmt: skip

    def get(self, submission_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT gpus, phase FROM ray_jobs WHERE submission_id = ?",
                                   (submission_id,)).fetchone()  # fmt: skip
        return None if row is None else {"gpus": int(row[0]), "phase": str(row[1])}

    def pending(self) -> dict[str, dict[str, Any]]:
        """Jobs admitted or running: submission id -> {gpus, phase}."""
        with self._lock:
            rows = self._db.execute("SELECT submission_id, gpus, phase FROM ray_jobs "
                                    "WHERE phase IN ('admitted', 'committed')").fetchall()  # fmt: skip
        return {str(r[0]): {"gpus": int(r[1]), "phase": str(r[2])} for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RayGate:
    """What the gate does besides forwarding: decide a submission, and settle the jobs it admitted."""

    def __init__(self, client: Any, config: RayConfig, upstream: Any, state: GateState | None = None,
                 soft: SoftBudgets | None = None) -> None:  # fmt: skip
        # *client*: a FlopwiseClient shared by every call (connections kept alive), or a factory of them;
        # *soft*: the fail-open rule (unreachable flopwise lets a job through only if its budgets are all soft)
        self.client, self.config, self.upstream = client, config, upstream
        self.state = state if state is not None else GateState()
        self.soft = soft if soft is not None else SoftBudgets()

    def decide(self, job: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        """(status, message, job to forward): 200 to forward, else the refusal's status and message."""
        submission_id = str(job.get("submission_id") or f"raysubmit_fw{uuid.uuid4().hex[:16]}")
        body = admission_body(job, self.config, submission_id)
        if body is None:
            return 200, "", job
        from flopwise.client import ServerError, ServerUnreachableError

        try:
            with borrowed(self.client) as fw:
                result = fw.call("POST", "/admission/decide", json_body=body)
                self.soft.maybe_refresh(fw)
        except ServerUnreachableError as exc:
            if self.soft.all_soft(body["project_id"]):
                log.warning("ray job %s: flopwise unreachable; every budget of project %s is soft: let through "
                            "unchecked (%s)", submission_id, body["project_id"], exc)  # fmt: skip
                return 200, "", job
            return 503, f"flopwise: cannot decide, so the submission fails closed: {exc}", job
        except ServerError as exc:
            return (400 if exc.status < 500 else 502), f"flopwise: {exc}", job
        if not result["admitted"]:
            return 400, "flopwise: " + "; ".join(result.get("reasons") or ["denied"]), job
        forwarded = {**job, "submission_id": submission_id,
                     "metadata": {**(job.get("metadata") or {}), ADMISSION_KEY: submission_id}}  # fmt: skip
        self.state.put(submission_id, body["device_count"])
        return 200, "", forwarded

    def not_forwarded(self, submission_id: str, why: str) -> None:
        """Ray refused (or never got) a submission flopwise admitted: release its reservation."""
        if (self.state.get(submission_id) or {}).get("phase") != "admitted":
            return
        try:
            with borrowed(self.client) as fw:
                fw.call("POST", f"/admission/{ENGINE}/{submission_id}/release")
            self.state.set_phase(submission_id, "released")
        except FlopwiseError as exc:  # the next settlement pass finds no such Ray job and releases it
            log.warning("ray job %s (%s): release failed: %s", submission_id, why, exc)

    def settle_ended(self) -> list[str]:
        """Commit started jobs, settle ended ones from their real run time, release those that never ran; the
        submission ids settled or released."""
        pending = self.state.pending()
        if not pending:
            return []
        jobs = self.upstream.get("/api/jobs/").json()
        done: list[str] = []
        known = {info.get("submission_id") for info in jobs}
        with borrowed(self.client) as fw:
            for sid, entry in pending.items():
                if sid in known or entry["phase"] != "admitted":
                    continue
                try:  # admitted, but Ray has no such job (its submission failed): nothing ran
                    fw.call("POST", f"/admission/{ENGINE}/{sid}/release")
                    self.state.set_phase(sid, "released")
                    done.append(sid)
                except FlopwiseError as exc:
                    log.warning("ray job %s: %s", sid, exc)
            for info in jobs:
                sid = info.get("submission_id")
                if sid not in pending:
                    continue
                entry = pending[sid]
                try:
                    started = info.get("start_time")
                    if entry["phase"] == "admitted" and started and info.get("status") != "PENDING":
                        fw.call("POST", f"/admission/{ENGINE}/{sid}/commit")
                        entry["phase"] = "committed"
                        self.state.set_phase(sid, "committed")
                    if info.get("status") in _ENDED:
                        if entry["phase"] == "committed" and info.get("end_time") and started:
                            # 6 decimal places (3.6 ms): the precision the server keeps amounts to
                            hours = (Decimal(int(info["end_time"]) - int(started)) / Decimal(3_600_000)).quantize(
                                Decimal(1).scaleb(-6)
                            )
                            fw.call("POST", f"/admission/{ENGINE}/{sid}/settle", json_body={
                                "actual_duration_h": str(hours),
                                "device_hours": str(hours * entry["gpus"]),
                                "cost_usd": str((hours * entry["gpus"] * self.config.usd_per_h).quantize(
                                    Decimal("0.000001"))),
                            })  # fmt: skip
                            entry["phase"] = "settled"
                            self.state.set_phase(sid, "settled")
                        else:
                            fw.call("POST", f"/admission/{ENGINE}/{sid}/release")
                            entry["phase"] = "released"
                            self.state.set_phase(sid, "released")
                        done.append(sid)
                except FlopwiseError as exc:
                    log.warning("ray job %s: %s", sid, exc)
        return done


_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
                "content-length", "content-encoding"}  # fmt: skip


def create_gate_app(gate: RayGate) -> Any:
    """The gate: ``POST /api/jobs/`` decided by flopwise, everything else forwarded to the dashboard."""
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse, Response

    app = FastAPI(title="flopwise Ray Jobs gate", docs_url=None, redoc_url=None, openapi_url=None)

    def forward(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Response:
        import httpx

        send = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            r = gate.upstream.request(method, path + (f"?{query}" if query else ""), headers=send, content=body)
        except httpx.TransportError as exc:
            return PlainTextResponse(
                f"flopwise gate: the Ray dashboard at {gate.upstream.base_url} cannot be reached ({exc})",
                status_code=502,
            )
        keep = {k: v for k, v in r.headers.items() if k.lower() not in _HOP_HEADERS}
        return Response(r.content, status_code=r.status_code, headers=keep)

    async def submit_raw(request: Request) -> Response:
        import anyio.to_thread

        raw = await request.body()
        try:
            job = json.loads(raw)
            if not isinstance(job, dict):
                raise ValueError("not a JSON object")
            status, message, forwarded = await anyio.to_thread.run_sync(gate.decide, job)
        except (ValueError, InputError) as exc:
            return PlainTextResponse(f"flopwise: {exc}", status_code=400)
        if status != 200:
            return PlainTextResponse(message, status_code=status)
        response = await anyio.to_thread.run_sync(
            forward, "POST", "/api/jobs/", request.url.query, dict(request.headers), json.dumps(forwarded).encode()
        )
        sid = forwarded.get("submission_id")
        if response.status_code >= 400 and sid:
            await anyio.to_thread.run_sync(gate.not_forwarded, str(sid), f"Ray answered {response.status_code}")
        return response

    async def passthrough(request: Request) -> Response:
        import anyio.to_thread

        raw = await request.body()
        return await anyio.to_thread.run_sync(
            forward, request.method, request.url.path, request.url.query, dict(request.headers), raw
        )

    # plain Starlette routes: the handlers take the raw request (no FastAPI parameter parsing)
    app.add_route("/api/jobs/", submit_raw, methods=["POST"], include_in_schema=False)
    app.add_route("/{path:path}", passthrough, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"],
                  include_in_schema=False)  # fmt: skip

    return app
