"""Deliver budget alerts to webhooks: a signed JSON POST, bounded retries with backoff, the outcome recorded.

Each pending ``budget_alerts`` row is POSTed to every webhook channel (``alert_channels``) of its budget's
organization as JSON (:func:`alert_payload`), with headers

* ``X-Flopwise-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes under the channel's secret (the
  scheme GitHub uses for its webhooks, https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries);
  receivers recompute it and compare in constant time (:func:`verify_signature`);
* ``X-Flopwise-Delivery: <alert id>``: the same for every attempt, so a receiver can drop repeats;
* ``X-Flopwise-Event: budget.alert``.

A 2xx answer delivers. A 408, 429 or 5xx answer, or a transport error (refused, timeout), is retried up to
``max_attempts`` in all, waiting ``backoff_s x 2^(attempt-1)`` between tries. Any other 4xx is final (the
receiver refused this alert; retrying would not change that). The row records ``attempts``,
``delivery_status`` (``delivered`` when every channel accepted, else ``failed``) and ``delivered_at``. An
organization without a channel leaves its alerts ``pending`` (listed in the API, delivered once a channel is
added). HTTP happens outside any database transaction; the outcomes are written afterwards in one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Delivery",
    "alert_payload",
    "deliver_pending_alerts",
    "post_with_retries",
    "sign_payload",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Flopwise-Signature"
DELIVERY_HEADER = "X-Flopwise-Delivery"
EVENT_HEADER = "X-Flopwise-Event"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def sign_payload(secret: str, body: bytes) -> str:
    """``sha256=<hex of HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when *header* is the signature of *body* under *secret* (constant-time comparison)."""
    return header is not None and hmac.compare_digest(sign_payload(secret, body), header)


@dataclass(frozen=True)
class Delivery:
    """One alert's delivery to one channel: the outcome, the tries it took, the last HTTP status or error."""

    alert_id: int
    channel_id: int
    url: str
    is_delivered: bool
    attempts: int
    http_status: int | None
    error: str | None


def _money(value: Decimal) -> str:
    """A decimal string without trailing zeros: ``812.5``, ``1000``, ``0.8``."""
    return format(value.normalize(), "f")


def alert_payload(alert: Any, budget: Any) -> dict[str, Any]:
    """The JSON body for one alert (money and amounts as decimal strings, times in ISO 8601 UTC)."""
    used, limit = Decimal(alert.used_amount), Decimal(alert.limit_amount)
    return {
        "event": "budget.alert",
        "alert_id": alert.id,
        "budget": {
            "id": budget.id,
            "name": budget.name,
            "org_id": budget.org_id,
            "scope_kind": budget.scope_kind,
            "scope_id": budget.scope_id,
            "unit": budget.unit,
            "is_hard": budget.is_hard,
        },
        "threshold_frac": _money(Decimal(alert.threshold_frac)),
        "used_amount": _money(used),
        "limit_amount": _money(limit),
        "used_frac": _money((used / limit).quantize(Decimal("0.0001"))) if limit else None,
        "window_start": alert.window_start.isoformat(),
        "window_end": alert.window_end.isoformat() if alert.window_end else None,
        "crossed_at": alert.crossed_at.isoformat(),
        "message": (
            f"Budget {budget.name!r} ({budget.scope_kind} {budget.scope_id}) has used {_money(used)} of "
            f"{_money(limit)} {budget.unit}: past {Decimal(alert.threshold_frac) * 100:.0f}% of its limit."
        ),
    }


def post_with_retries(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    max_attempts: int = 3,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, int, int | None, str | None]:
    """POST *body* until a 2xx, a final 4xx or *max_attempts*; returns (delivered, attempts, status, error)."""
    import httpx

    status: int | None = None
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            sleep(backoff_s * 2 ** (attempt - 2))
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
            continue
        status = response.status_code
        if 200 <= status < 300:
            return True, attempt, status, None
        error = f"HTTP {status}"
        if status not in RETRY_STATUSES:
            return False, attempt, status, error + " (not retried)"
    return False, max_attempts, status, error


def deliver_pending_alerts(
    factory: sessionmaker[Session],
    client: httpx.Client,
    now: datetime,
    *,
    org_id: int | None = None,
    max_attempts: int = 3,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    include_failed: bool = False,
) -> list[Delivery]:
    """Deliver every pending alert (and failed ones with *include_failed*) to its organization's webhooks.

    Reads in one short transaction, posts with no transaction open, writes the outcomes in another. Returns one
    :class:`Delivery` per (alert, channel).
    """
    from sqlalchemy import select

    from flopwise.store import Budget, read_session, write_session
    from flopwise.store.ledger import AlertChannel, BudgetAlert

    states = ("pending", "failed") if include_failed else ("pending",)
    jobs: list[tuple[int, list[tuple[int, str, str | None]], bytes]] = []
    with read_session(factory) as session:
        stmt = (
            select(BudgetAlert, Budget)
            .join(Budget, Budget.id == BudgetAlert.budget_id)
            .where(BudgetAlert.delivery_status.in_(states))
            .order_by(BudgetAlert.id)
        )
        if org_id is not None:
            stmt = stmt.where(Budget.org_id == org_id)
        channels: dict[int, list[tuple[int, str, str | None]]] = {}
        for alert, budget in session.execute(stmt).all():
            if budget.org_id not in channels:
                channels[budget.org_id] = [
                    (c.id, c.url, c.secret)
                    for c in session.scalars(
                        select(AlertChannel)
                        .where(AlertChannel.org_id == budget.org_id, AlertChannel.kind == "webhook")
                        .order_by(AlertChannel.id)
                    )
                ]
            body = json.dumps(alert_payload(alert, budget), sort_keys=True).encode()
            jobs.append((alert.id, channels[budget.org_id], body))

    deliveries: list[Delivery] = []
    for alert_id, targets, body in jobs:
        for channel_id, url, secret in targets:
            headers = {
                "Content-Type": "application/json",
                DELIVERY_HEADER: str(alert_id),
                EVENT_HEADER: "budget.alert",
            }
            if secret:
                headers[SIGNATURE_HEADER] = sign_payload(secret, body)
            ok, attempts, status, error = post_with_retries(
                client, url, body, headers, max_attempts=max_attempts, backoff_s=backoff_s, sleep=sleep
            )
            deliveries.append(Delivery(alert_id, channel_id, url, ok, attempts, status, error))

    with write_session(factory) as session:
        for alert_id, targets, _ in jobs:
            if not targets:
                continue
            mine = [d for d in deliveries if d.alert_id == alert_id]
            row = session.get(BudgetAlert, alert_id)
            if row is None:
                continue
            row.attempts = (row.attempts or 0) + max(d.attempts for d in mine)
            if all(d.is_delivered for d in mine):
                row.delivery_status, row.delivered_at = "delivered", now
            else:
                row.delivery_status = "failed"
    return deliveries
