"""OpenCost allocation API JSON -> UsageRecords, one per allocation (pod, container or aggregate) and window.

The input is the body of ``GET /allocation/compute`` (or ``/allocation``), as documented at
https://www.opencost.io/docs/integrations/api: ``{"code": 200, "data": [ {name: allocation, ...}, ... ]}``,
one mapping per ``step`` of the window. Each allocation carries ``start``/``end`` (or ``window``),
costs per resource (``cpuCost``, ``gpuCost``, ``ramCost``, ``pvCost``, ``networkCost``,
``loadBalancerCost``, ``sharedCost``, ``externalCost``, ``totalCost``), ``gpuCount``/``gpuHours``, and
``properties`` (cluster, node, namespace, pod, container, controller, labels, annotations, providerID).
Newer OpenCost adds ``gpuAllocation`` (gpuModel, isGPUShared, gpuUsageAverage, gpuRequestAverage).

OpenCost's costs are allocated, not invoiced: ``totalCost`` goes to both ``billed_cost`` and
``effective_cost`` and the per-resource parts stay in ``x_extra``. Costs are read from the JSON text as
Decimal, never through float. The special allocations ``__idle__``, ``__unallocated__`` and
``__unmounted__`` are kept (idle GPU cost is cost) and flagged in ``x_extra["x_OpenCostSpecial"]``.
See docs/ingest/opencost.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from flopwise.errors import IngestError
from flopwise.meter.bounds import check_device_count, check_money
from flopwise.meter.focus import (
    JOB_ID_TAGS,
    REQUEST_ID_TAGS,
    KeyDeduper,
    ParseReport,
    RowContext,
    RowError,
    canonical_key,
    format_timestamp,
    parse_timestamp,
    resolve_tz,
)
from flopwise.meter.record import RejectedRow, UsageRecord

if TYPE_CHECKING:
    from flopwise.catalog import Catalog

__all__ = ["OPENCOST_COST_FIELDS", "parse_opencost_allocation", "parse_opencost_file"]

#: per-resource cost fields of an allocation, kept in x_extra (USD unless OpenCost is set to another currency)
OPENCOST_COST_FIELDS = (
    "cpuCost", "cpuCostAdjustment", "gpuCost", "gpuCostAdjustment", "ramCost", "ramCostAdjustment", "pvCost",
    "pvCostAdjustment", "networkCost", "networkCostAdjustment", "loadBalancerCost",
    "loadBalancerCostAdjustment", "sharedCost", "externalCost",
)  # fmt: skip
_SPECIAL = {"__idle__": "idle", "__unallocated__": "unallocated", "__unmounted__": "unmounted"}
_PROPERTY_FIELDS = (
    "cluster",
    "node",
    "namespace",
    "pod",
    "container",
    "controller",
    "controllerKind",
    "providerID",
)
#: providerID scheme -> FOCUS ProviderName (Kubernetes cloud-provider node providerID formats)
_PROVIDERS = {"aws": "AWS", "gce": "Google Cloud", "azure": "Microsoft", "oci": "Oracle", "ocid1": "Oracle"}


def _number(alloc: Mapping[str, Any], name: str) -> Decimal | None:
    value = alloc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise RowError(f"{name} {value!r} is not a number")
    value = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not value.is_finite():
        raise RowError(f"{name} {value!r} is not a finite number")
    return value


def _nonnegative(alloc: Mapping[str, Any], name: str) -> Decimal | None:
    value = _number(alloc, name)
    if value is not None and value < 0:
        raise RowError(f"{name} {value} is negative")
    return value


def _period(alloc: Mapping[str, Any], tz: tzinfo | None) -> tuple[datetime, datetime]:
    window = alloc.get("window") if isinstance(alloc.get("window"), Mapping) else {}
    start_text = alloc.get("start") or window.get("start")
    end_text = alloc.get("end") or window.get("end")
    if not isinstance(start_text, str) or not isinstance(end_text, str):
        raise RowError("the allocation has no start/end (nor window.start/window.end)")
    start = parse_timestamp("start", start_text, tz)
    end = parse_timestamp("end", end_text, tz)
    if end <= start:
        raise RowError(f"end {end_text!r} is not after start {start_text!r}")
    return start, end


def _provider(provider_id: str | None) -> str:
    if not provider_id:
        return "Kubernetes"
    scheme = provider_id.split(":", 1)[0].split(".", 1)[0].lower()
    return _PROVIDERS.get(scheme, "Kubernetes")


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in value.items()}


def _first(tags: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    # OpenCost sanitizes label names (- . / -> _), so look up both spellings
    lowered = {k.lower(): v for k, v in tags.items()}
    for key in keys:
        for spelling in (key, key.replace("-", "_").replace(":", "_").replace("/", "_")):
            if spelling in lowered:
                return lowered[spelling]
    return None


def record_from_allocation(
    name: str, alloc: Mapping[str, Any], ctx: RowContext, currency: str
) -> UsageRecord:
    """One UsageRecord from one allocation. Raises RowError with the reason when a value is bad."""
    if not isinstance(alloc, Mapping):
        raise RowError(f"allocation {name!r} is not a JSON object")
    start, end = _period(alloc, ctx.assume_tz)
    total = _number(alloc, "totalCost")
    if total is None:
        raise RowError("totalCost is missing")
    if total < 0:
        raise RowError(f"totalCost {total} is negative")
    gpu_hours = _nonnegative(alloc, "gpuHours")
    gpu_count = _nonnegative(alloc, "gpuCount")
    try:
        check_money(total, "totalCost")
        if gpu_count is not None:
            check_device_count(float(gpu_count), "gpuCount")
    except ValueError as err:
        raise RowError(str(err)) from None
    props = alloc.get("properties") if isinstance(alloc.get("properties"), Mapping) else {}
    labels = _str_map(props.get("labels"))
    extra: dict[str, Any] = {"x_AllocationName": name}
    for field_name in OPENCOST_COST_FIELDS:
        value = _number(alloc, field_name)
        if value is not None:
            extra[field_name] = format(value, "f")
    for field_name in ("cpuCoreHours", "ramByteHours", "minutes"):
        value = _nonnegative(alloc, field_name)
        if value is not None:
            extra[field_name] = format(value, "f")
    for field_name in _PROPERTY_FIELDS:
        value = props.get(field_name)
        if isinstance(value, str) and value:
            extra[f"k8s_{field_name}"] = value
    annotations = _str_map(props.get("annotations"))
    if annotations:
        extra["k8s_annotations"] = annotations
    if name in _SPECIAL:
        extra["x_OpenCostSpecial"] = _SPECIAL[name]

    device: dict[str, Any] = {}
    gpu = alloc.get("gpuAllocation") if isinstance(alloc.get("gpuAllocation"), Mapping) else {}
    if (gpu_hours or 0) > 0 or (gpu_count or 0) > 0:
        hours = (end - start).total_seconds() / 3600.0
        device["x_device_hours"] = (
            float(gpu_hours) if gpu_hours is not None else float(gpu_count or 0) * hours
        )
        device["x_device_count"] = (
            float(gpu_count) if gpu_count is not None else device["x_device_hours"] / hours
        )
        model = gpu.get("gpuModel")
        if isinstance(model, str) and model:
            device["x_device_type"] = ctx.device_id(model)
        usage, request = _nonnegative(gpu, "gpuUsageAverage"), _nonnegative(gpu, "gpuRequestAverage")
        denominator = request if request else gpu_count
        if usage is not None and denominator:
            # averages in GPUs, as cpuCoreUsageAverage is in cores: utilization = used / allocated GPUs
            device["x_gpu_utilization"] = min(1.0, float(usage / denominator))
        if isinstance(gpu.get("isGPUShared"), bool):
            extra["x_IsGpuShared"] = gpu["isGPUShared"]

    cluster = props.get("cluster") if isinstance(props.get("cluster"), str) else ""
    identity = {
        "name": name,
        "cluster": cluster,
        "start": format_timestamp(start),
        "end": format_timestamp(end),
    }
    namespace = props.get("namespace")
    return UsageRecord(
        source="opencost",
        source_key=ctx.dedupe(canonical_key("opencost", identity)),
        charge_period_start=start,
        charge_period_end=end,
        billed_cost=total,
        effective_cost=total,
        billing_currency=currency,
        provider_name=_provider(props.get("providerID")),
        resource_id=name,
        service_category="Compute",
        tags=labels,
        x_job_id=_first(labels, ("job-name", "batch.kubernetes.io/job-name", *JOB_ID_TAGS)),
        x_request_id=_first(labels, REQUEST_ID_TAGS),
        x_account=namespace if isinstance(namespace, str) and namespace else None,
        x_extra=extra,
        **device,
    )


def _load(source: str | bytes | IO[str] | IO[bytes] | Mapping[str, Any], path: str) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    try:
        if isinstance(source, str | bytes):
            return json.loads(source, parse_float=Decimal)
        return json.load(source, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        line = getattr(err, "lineno", None)
        raise IngestError(
            path, line, f"not JSON ({err}); expected an OpenCost /allocation response"
        ) from None


def _allocation_sets(body: Any, path: str) -> list[Mapping[str, Any]]:
    if isinstance(body, list):  # the "data" array alone (Kubecost exporters, jq '.data' of a response)
        body = {"data": body}
    if not isinstance(body, Mapping) or "data" not in body:
        raise IngestError(
            path,
            None,
            'not an OpenCost allocation response: expected a JSON object with "data": [ {...} ] or the array of allocation sets itself',
        )
    code = body.get("code")
    if code is not None and code != 200:
        message = body.get("message") or body.get("status") or ""
        raise IngestError(
            path, None, f"the OpenCost response reports code {code} {message!r}; nothing to ingest"
        )
    data = body["data"]
    if data is None:
        return []
    if isinstance(data, Mapping):
        data = data.get("sets", [data]) if "sets" in data else [data]
    if not isinstance(data, list):
        raise IngestError(
            path, None, f'"data" is a {type(data).__name__}; expected a list of allocation sets'
        )
    sets = []
    for item in data:
        if isinstance(item, Mapping) and isinstance(item.get("allocations"), Mapping):
            item = item["allocations"]
        if item is None:
            continue
        if not isinstance(item, Mapping):
            raise IngestError(
                path, None, f'"data" holds a {type(item).__name__}; expected name -> allocation objects'
            )
        sets.append(item)
    return sets


def parse_opencost_allocation(
    source: str | bytes | IO[str] | IO[bytes] | Mapping[str, Any],
    *,
    path: str = "<input>",
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    currency: str = "USD",
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
) -> Iterator[UsageRecord]:
    """UsageRecords (``source="opencost"``) from an OpenCost allocation response.

    *source*: the JSON text, an open file, or the already-decoded object (decoded with
    ``parse_float=Decimal`` to keep costs exact). The response is one JSON document, so it is decoded
    whole; ask OpenCost for a window with ``step`` to keep each response small. RejectedRow.line is the
    allocation's 1-based position in the response. *catalog* resolves ``gpuAllocation.gpuModel`` to a
    device id. *currency*: OpenCost's configured currency (it does not say in the response).

    Raises IngestError when the input is not JSON, not an allocation response, or reports a non-200 code.
    """
    report = ParseReport.begin(report, rejected, path, "opencost")
    report.version = "allocation"
    body = _load(source, path)
    ctx = RowContext("opencost", resolve_tz(assume_tz), catalog, None, KeyDeduper())
    position = 0
    for allocations in _allocation_sets(body, path):
        for name, alloc in allocations.items():
            position += 1
            report.rows_read += 1
            try:
                record = record_from_allocation(str(name), alloc, ctx, currency)
            except RowError as err:
                report.reject(position, f"allocation {name!r}: {err}", json.dumps(alloc, default=str)[:500])
                continue
            report.records += 1
            yield record


def parse_opencost_file(
    path: str | os.PathLike[str],
    *,
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    currency: str = "USD",
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
) -> Iterator[UsageRecord]:
    """UsageRecords from an OpenCost allocation response saved to a file."""
    p = Path(path)
    if not p.exists():
        raise IngestError(str(p), None, "no such file")
    with p.open("rb") as fh:
        body = _load(fh, str(p))
    yield from parse_opencost_allocation(
        body,
        path=str(p),
        catalog=catalog,
        assume_tz=assume_tz,
        currency=currency,
        report=report,
        rejected=rejected,
    )
