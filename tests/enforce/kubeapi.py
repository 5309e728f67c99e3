"""A Kubernetes API server emulator for Kueue's kinds, as a real HTTP server on loopback (test fixture).

What it does as kube-apiserver does (https://kubernetes.io/docs/reference/using-api/api-concepts/):

* ``/apis/kueue.x-k8s.io/v1beta2/[namespaces/NS/]PLURAL[/NAME[/status]]`` for workloads (namespaced),
  clusterqueues, resourceflavors, cohorts and admissionchecks (cluster-scoped);
* GET (one object, or a list whose ``metadata.resourceVersion`` is the store's), POST (create: 409
  AlreadyExists; ``uid``, ``resourceVersion``, ``generation``, ``creationTimestamp`` set; status dropped, as
  with a status subresource), PUT (replace: 409 Conflict on a stale ``resourceVersion``), PATCH with
  ``application/merge-patch+json`` only (RFC 7386; 415 otherwise; 409 on a stale ``resourceVersion`` in the
  patch), DELETE; on the main resource changes to ``status`` are ignored, on ``/status`` everything but
  ``status`` is;
* list + watch: ``?watch=1&resourceVersion=N`` streams newline-delimited ``{"type", "object"}`` events after N
  (ADDED, MODIFIED, DELETED), ends after ``timeoutSeconds``; a version older than the compacted history is an
  ERROR event carrying a 410 Status ("too old resource version"), as the apiserver sends;
* every write is validated with ``jsonschema`` against Kueue's published v1beta2 schemas (tests/data/kueue/,
  the JSON-schema form of Kueue's generated CRDs, see tests/data/README.md): AdmissionCheck, ClusterQueue, Cohort
  and ResourceFlavor whole; Workload's ``status`` whole and its ``spec`` as an open object (the published spec
  embeds a full PodTemplateSpec, 0.6 MB, that flopwise never writes), plus the ObjectMeta rules the apiserver
  applies to any object (name an RFC 1123 subdomain, label and annotation keys qualified names, label values,
  annotations <= 256 KiB) and the schemas' CEL rules (``x-kubernetes-validations``, transition rules on
  updates). Field validation is strict (unknown fields are 422, not pruned, as with
  ``fieldValidation=Strict``); errors are ``Status`` objects (``{"kind": "Status", "code", "reason", "message"}``).

Not emulated: authentication, label/field selectors, server-side apply, strategic merge patch, defaulting.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
from cel_expr_python import cel

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "kueue"
SCHEMA_FILES = {"AdmissionCheck": "admissioncheck_v1beta2.json", "ClusterQueue": "clusterqueue_v1beta2.json",
                "Cohort": "cohort_v1beta2.json", "ResourceFlavor": "resourceflavor_v1beta2.json"}  # fmt: skip
WORKLOAD_STATUS_FILE = "workload_v1beta2.status.json"
PREFIX = "/apis/kueue.x-k8s.io/v1beta2"
KINDS = {"workloads": ("Workload", True), "clusterqueues": ("ClusterQueue", False),
         "resourceflavors": ("ResourceFlavor", False), "cohorts": ("Cohort", False),
         "admissionchecks": ("AdmissionCheck", False)}  # fmt: skip


def _strict(schema: Any) -> Any:
    """Unknown fields are errors: ``additionalProperties: false`` on every closed object schema.

    The published JSON schemas already carry it on every nested object; only the document root lacks it.
    """
    if isinstance(schema, dict):
        if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):  # fmt: skip
            schema["additionalProperties"] = False
        for v in list(schema.values()):
            _strict(v)
    elif isinstance(schema, list):
        for v in schema:
            _strict(v)
    return schema


def load_schemas() -> dict[str, Any]:
    """Kueue's published v1beta2 schema per kind (Workload: the published ``status``, an open ``spec``)."""
    kinds = {kind: json.loads((SCHEMAS / name).read_text(encoding="utf-8")) for kind, name in SCHEMA_FILES.items()}
    status = json.loads((SCHEMAS / WORKLOAD_STATUS_FILE).read_text(encoding="utf-8"))
    kinds["Workload"] = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object"}, "status": status}}  # fmt: skip
    return kinds


def load_validators() -> dict[str, jsonschema.protocols.Validator]:
    kinds = load_schemas()
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return "T" in value

    return {kind: jsonschema.Draft202012Validator(_strict(copy.deepcopy(s)), format_checker=checker)
            for kind, s in kinds.items()}  # fmt: skip


# ObjectMeta rules the apiserver applies to every custom resource whatever its schema (which leaves
# ``metadata`` an open object): k8s.io/apimachinery pkg/util/validation (IsDNS1123Subdomain, IsQualifiedName,
# IsValidLabelValue) and pkg/api/validation/objectmeta.go (ValidateAnnotations: 256 KiB in all).
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
ANNOTATIONS_MAX_BYTES = 256 * 1024


def _subdomain(value: str) -> bool:
    return len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if "/" in key and not (prefix and _subdomain(prefix)):
        return False
    return 0 < len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None


def _meta_errors(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return []
    errors = []
    name = meta.get("name")
    if isinstance(name, str) and name and not _subdomain(name):
        errors.append(f"metadata.name: Invalid value {name!r}: a lowercase RFC 1123 subdomain is required")
    labels = meta.get("labels") or {}
    for k, v in labels.items() if isinstance(labels, dict) else ():
        if not _qualified_name(k):
            errors.append(f"metadata.labels: Invalid value {k!r}: not a qualified name")
        if not isinstance(v, str) or (v and not (len(v) <= 63 and _QUALIFIED_NAME.fullmatch(v))):
            errors.append(f"metadata.labels.{k}: Invalid value {v!r}: not a valid label value")
    annotations = meta.get("annotations") or {}
    for k, v in annotations.items() if isinstance(annotations, dict) else ():
        if not _qualified_name(k.lower()):
            errors.append(f"metadata.annotations: Invalid value {k!r}: not a qualified name")
        if not isinstance(v, str):
            errors.append(f"metadata.annotations.{k}: Invalid value {v!r}: must be a string")
    if isinstance(annotations, dict) and sum(
            len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items()) > ANNOTATIONS_MAX_BYTES:
        errors.append("metadata.annotations: Too long: must have at most 262144 bytes")
    return errors


# The schemas' ``x-kubernetes-validations`` (CEL rules) as the apiserver runs them
# (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-rules):
# each rule with ``self`` bound to the value at its node; a rule naming ``oldSelf`` is a transition rule, run only
# on an update where the old value exists (list items correlated by their x-kubernetes-list-map-keys). CEL is
# Google's C++ implementation (cel-expr-python), the language kube-apiserver evaluates with cel-go.
_CEL = cel.NewEnv(variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN})
_CEL_COMPILED: dict[str, Any] = {}


def _rule_errors(schema: Any, value: Any, old: Any, path: str, out: list[str]) -> None:
    if not isinstance(schema, dict) or value is None:
        return
    for rule in schema.get("x-kubernetes-validations") or ():
        text = rule["rule"]
        transition = "oldSelf" in text
        if transition and old is None:
            continue
        expr = _CEL_COMPILED.get(text)
        if expr is None:
            expr = _CEL_COMPILED[text] = _CEL.compile(text)
        try:
            result = expr.eval(data={"self": value, "oldSelf": old} if transition else {"self": value})
            ok, why = result.value() is True, rule.get("message") or f"failed rule: {text}"
        except Exception as exc:  # an evaluation error (no such key, ...) refuses the object, as the apiserver does
            ok, why = False, f"{rule.get('message') or text}: {exc}"
        if not ok:
            out.append(f"{path or '<root>'}: Invalid value: {why}")
    if isinstance(value, dict):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            _rule_errors(sub, v, old.get(k) if isinstance(old, dict) else None, f"{path}.{k}" if path else k, out)
    elif isinstance(value, list):
        keys = schema.get("x-kubernetes-list-map-keys")
        olds = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)} if (
            keys and isinstance(old, list)) else {}  # fmt: skip
        for i, v in enumerate(value):
            prior = olds.get(tuple(v.get(k) for k in keys)) if keys and isinstance(v, dict) else None
            _rule_errors(schema.get("items"), v, prior, f"{path}[{i}]", out)


def validate(validators: dict[str, Any], obj: Any, old: Any = None) -> list[str]:
    """Schema, CEL-rule and ObjectMeta errors of *obj* (by its kind; *old*: the stored object, on an update) as
    ``path: message`` strings; empty when valid."""
    v = validators.get(obj.get("kind") if isinstance(obj, dict) else None)
    if v is None:
        return [f"kind: unknown kind {obj.get('kind') if isinstance(obj, dict) else obj!r}"]
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
              for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]  # fmt: skip
    if not errors:
        _rule_errors(v.schema, obj, old, "", errors)
    return errors + _meta_errors(obj.get("metadata"))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class KubeEmulator:
    """The store, its event history and the HTTP server (``start()`` -> base URL)."""

    def __init__(self, *, history: int = 1000) -> None:
        self.validators = load_validators()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, object)
        self.rv = 100
        self.compacted = 100  # a watch from below this version is told 410 Gone
        self.history = history
        self.cond = threading.Condition()
        self.requests: list[tuple[str, str]] = []
        self.delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None

    # the store
    def _bump(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, plural, kind, copy.deepcopy(obj)))
        if len(self.events) > self.history:
            drop = self.events[: len(self.events) - self.history]
            self.compacted = drop[-1][0] + 1
            del self.events[: len(drop)]
        self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event history (as etcd compaction does): older watches get 410."""
        with self.cond:
            self.events.clear()
            self.compacted = self.rv + 1

    def get(self, plural: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        with self.cond:
            obj = self.objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def create(self, plural: str, obj: dict[str, Any], namespace: str = "", *, keep_status: bool = False
               ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        kind, namespaced = KINDS[plural]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return 422, _status(422, "Invalid", "metadata.name: Required value")
        if namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        ns = meta.get("namespace", "") if namespaced else ""
        if not keep_status:
            obj.pop("status", None)
        errors = validate(self.validators, obj)
        if errors:
            return 422, _status(422, "Invalid", f"{kind}.kueue.x-k8s.io {name!r} is invalid: " + "; ".join(errors))
        with self.cond:
            if (plural, ns, name) in self.objects:
                return 409, _status(409, "AlreadyExists", f'{plural}.kueue.x-k8s.io "{name}" already exists')
            meta.update(uid=str(uuid.uuid4()), generation=1,
                        creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
            self.objects[(plural, ns, name)] = obj
            self._bump(plural, "ADDED", obj)
            return 201, copy.deepcopy(obj)

    def update(self, plural: str, name: str, namespace: str, new: dict[str, Any], *, sub: str | None,
               expect_rv: str | None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        kind, _ = KINDS[plural]
        with self.cond:
            old = self.objects.get((plural, namespace, name))
            if old is None:
                return 404, _status(404, "NotFound", f'{plural}.kueue.x-k8s.io "{name}" not found')
            if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on {plural}.kueue.x-k8s.io '
                                    f'"{name}": the object has been modified; please apply your changes to the '
                                    'latest version and try again')  # fmt: skip
            if sub == "status":
                result = copy.deepcopy(old)
                if "status" in new:
                    result["status"] = new["status"]
                else:
                    result.pop("status", None)
            else:
                result = copy.deepcopy(new)
                result["status"] = copy.deepcopy(old.get("status"))
                if result["status"] is None:
                    result.pop("status")
                meta = result.setdefault("metadata", {})
                for k in ("uid", "creationTimestamp", "namespace", "name"):
                    if k in old["metadata"]:
                        meta[k] = old["metadata"][k]
                meta["generation"] = old["metadata"].get("generation", 1) + (
                    1 if new.get("spec") != old.get("spec") else 0)
            errors = validate(self.validators, result, old)
            if errors:
                return 422, _status(422, "Invalid", f"{kind}.kueue.x-k8s.io {name!r} is invalid: " + "; ".join(errors))
            if result == old:
                return 200, copy.deepcopy(old)
            self.objects[(plural, namespace, name)] = result
            self._bump(plural, "MODIFIED", result)
            return 200, copy.deepcopy(result)

    def delete(self, plural: str, name: str, namespace: str = "") -> tuple[int, dict[str, Any]]:
        with self.cond:
            obj = self.objects.pop((plural, namespace, name), None)
            if obj is None:
                return 404, _status(404, "NotFound", f'{plural}.kueue.x-k8s.io "{name}" not found')
            self._bump(plural, "DELETED", obj)
            return 200, copy.deepcopy(obj)

    def patch(self, plural: str, name: str, namespace: str, patch: Any, *, sub: str | None = None
              ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        current = self.get(plural, name, namespace)
        if current is None:
            return 404, _status(404, "NotFound", f'{plural}.kueue.x-k8s.io "{name}" not found')
        if not isinstance(patch, dict):
            return 400, _status(400, "BadRequest", "a merge patch is a JSON object")
        expect = (patch.get("metadata") or {}).get("resourceVersion")
        return self.update(plural, name, namespace, merge_patch(current, patch), sub=sub, expect_rv=expect)

    def listing(self, plural: str, namespace: str | None) -> dict[str, Any]:
        kind, _ = KINDS[plural]
        with self.cond:
            items = [copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items())
                     if p == plural and (namespace is None or ns == namespace)]  # fmt: skip
            return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": f"{kind}List",
                    "metadata": {"resourceVersion": str(self.rv)}, "items": items}  # fmt: skip

    def watch(self, plural: str, namespace: str | None, since: int, timeout_s: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        last = since
        while True:
            with self.cond:
                if last + 1 < self.compacted:
                    yield {"type": "ERROR", "object": _status(410, "Expired",
                                                              f"too old resource version: {last} ({self.compacted})")}
                    return
                batch = [(rv, t, o) for rv, p, t, o in self.events
                         if rv > last and p == plural
                         and (namespace is None or o["metadata"].get("namespace") == namespace)]  # fmt: skip
                if not batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self.cond.wait(min(left, 0.5))
                    continue
            for rv, t, o in batch:
                last = rv
                yield {"type": t, "object": o}
            if time.monotonic() >= deadline:
                return

    # the server
    def start(self) -> str:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[str, str | None, str | None, str | None, dict[str, list[str]]] | None:
                url = urlsplit(self.path)
                if not url.path.startswith(PREFIX + "/"):
                    return None
                parts = url.path[len(PREFIX) + 1:].split("/")
                namespace = None
                if parts[0] == "namespaces" and len(parts) >= 3:
                    namespace, parts = parts[1], parts[2:]
                plural = parts[0]
                if plural not in KINDS or len(parts) > 3 or (len(parts) == 3 and parts[2] != "status"):
                    return None
                if namespace is not None and not KINDS[plural][1]:
                    return None
                name = parts[1] if len(parts) > 1 else None
                return plural, namespace, name, parts[2] if len(parts) == 3 else None, parse_qs(url.query)

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                return json.loads(raw) if raw else None

            def _handle(self, method: str) -> None:
                emulator.requests.append((method, self.path))
                if emulator.delay_s:
                    time.sleep(emulator.delay_s)
                route = self._route()
                if route is None:
                    self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
                    return
                plural, namespace, name, sub, query = route
                ns = (namespace or "") if KINDS[plural][1] else ""
                try:
                    body = self._body() if method in ("POST", "PUT", "PATCH") else None
                except ValueError as exc:
                    self._send(400, _status(400, "BadRequest", f"invalid JSON: {exc}"))
                    return
                if method == "GET" and name is None and query.get("watch", ["0"])[0] in ("1", "true"):
                    self._watch(plural, namespace, query)
                    return
                if method == "GET":
                    if name is None:
                        self._send(200, emulator.listing(plural, namespace))
                        return
                    obj = emulator.get(plural, name, ns)
                    self._send(*(200, obj) if obj else (404, _status(404, "NotFound",
                                                                     f'{plural}.kueue.x-k8s.io "{name}" not found')))
                elif method == "POST" and name is None:
                    self._send(*emulator.create(plural, body or {}, ns))
                elif method == "PUT" and name:
                    expect = ((body or {}).get("metadata") or {}).get("resourceVersion")
                    self._send(*emulator.update(plural, name, ns, body or {}, sub=sub, expect_rv=expect))
                elif method == "PATCH" and name:
                    ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                    if ctype != "application/merge-patch+json":
                        self._send(415, _status(415, "UnsupportedMediaType",
                                                f"the body of the request was in an unknown format - accepted "
                                                f"media types include: application/merge-patch+json ({ctype})"))  # fmt: skip
                        return
                    self._send(*emulator.patch(plural, name, ns, body, sub=sub))
                elif method == "DELETE" and name:
                    self._send(*emulator.delete(plural, name, ns))
                else:
                    self._send(405, _status(405, "MethodNotAllowed", f"{method} is not supported here"))

            def _watch(self, plural: str, namespace: str | None, query: dict[str, list[str]]) -> None:
                since_text = query.get("resourceVersion", [""])[0]
                timeout_s = float(query.get("timeoutSeconds", ["30"])[0])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.close_connection = True

                def chunk(data: bytes) -> None:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                try:
                    if since_text in ("", "0"):  # from "any": the current objects as ADDED, then changes
                        listing = emulator.listing(plural, namespace)
                        for o in listing["items"]:
                            chunk(json.dumps({"type": "ADDED", "object": o}).encode() + b"\n")
                        since = int(listing["metadata"]["resourceVersion"])
                    else:
                        since = int(since_text)
                    for event in emulator.watch(plural, namespace, since, timeout_s):
                        chunk(json.dumps(event).encode() + b"\n")
                    chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

            def do_PATCH(self) -> None:  # noqa: N802
                self._handle("PATCH")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
