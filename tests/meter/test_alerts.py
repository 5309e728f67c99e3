"""Webhook delivery of budget alerts: httpx.MockTransport for the retry rules, and one real HTTP server on
127.0.0.1 started here, which checks the HMAC signature of what arrives. SQLite (the delivery logic does not
depend on the backend; test_burn covers raising alerts on both)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from sqlalchemy import select

from flopwise.meter.alerts import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    deliver_pending_alerts,
    post_with_retries,
    sign_payload,
    verify_signature,
)
from flopwise.store import (
    Budget,
    Organization,
    make_engine,
    make_session_factory,
    read_session,
    upgrade,
    write_session,
)
from flopwise.store.ledger import AlertChannel, BudgetAlert

NOW = datetime(2025, 3, 16, tzinfo=UTC)
SECRET = "s3cret-key"


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    url = "sqlite:///" + (tmp_path_factory.mktemp("alerts") / "flopwise.db").as_posix()
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def _alert(
    factory, url: str | None, *, secret: str | None = SECRET, thresholds=("0.8",)
) -> tuple[int, list[int]]:
    with write_session(factory) as s:
        org = Organization(name=f"alerts-{uuid.uuid4().hex[:8]}")
        s.add(org)
        s.flush()
        budget = Budget(org_id=org.id, name="gpu-month", scope_kind="org", scope_id=org.id, period="month",
                        unit="usd", amount=Decimal("1000"), alert_thresholds=["0.5", "0.8", "1.0"])  # fmt: skip
        s.add(budget)
        if url:
            s.add(AlertChannel(org_id=org.id, kind="webhook", url=url, secret=secret))
        s.flush()
        ids = []
        for t in thresholds:
            a = BudgetAlert(budget_id=budget.id, threshold_frac=Decimal(t), window_start=datetime(2025, 3, 1, tzinfo=UTC),
                            window_end=datetime(2025, 4, 1, tzinfo=UTC), crossed_at=NOW, used_amount=Decimal("812.50"),
                            limit_amount=Decimal("1000"), delivery_status="pending", attempts=0)  # fmt: skip
            s.add(a)
            s.flush()
            ids.append(a.id)
        return org.id, ids


def _row(factory, alert_id: int) -> tuple[str, int, datetime | None]:
    with read_session(factory) as s:
        a = s.scalars(select(BudgetAlert).where(BudgetAlert.id == alert_id)).one()
        return a.delivery_status, a.attempts, a.delivered_at


def test_signature_round_trip():
    body = b'{"a": 1}'
    sig = sign_payload(SECRET, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature(SECRET, body, sig)
    assert not verify_signature(SECRET, body + b" ", sig)
    assert not verify_signature("other", body, sig)
    assert not verify_signature(SECRET, body, None)


def test_5xx_is_retried_with_backoff_then_delivered_and_signed(factory):
    seen: list[httpx.Request] = []
    answers = iter([503, 502, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers))

    org_id, (alert_id,) = _alert(factory, "https://hooks.example.org/flopwise")
    sleeps: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        out = deliver_pending_alerts(factory, client, NOW, org_id=org_id, backoff_s=0.25, sleep=sleeps.append)
    assert [(d.is_delivered, d.attempts, d.http_status) for d in out] == [(True, 3, 200)]
    assert sleeps == [0.25, 0.5]
    assert _row(factory, alert_id) == ("delivered", 3, NOW)
    body = seen[-1].content
    assert all(r.content == body for r in seen)  # the same bytes each try
    assert verify_signature(SECRET, body, seen[-1].headers[SIGNATURE_HEADER])
    assert seen[-1].headers[DELIVERY_HEADER] == str(alert_id)
    payload = json.loads(body)
    assert payload["threshold_frac"] == "0.8" and payload["used_amount"] == "812.5"
    assert payload["budget"]["unit"] == "usd" and "past 80%" in payload["message"]
    # delivered alerts are not sent again
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert deliver_pending_alerts(factory, client, NOW, org_id=org_id) == []


def test_4xx_is_final_and_transport_errors_are_bounded(factory):
    calls = {"n": 0}

    def refuse(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(410)

    org_id, (alert_id,) = _alert(factory, "https://hooks.example.org/gone")
    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        (d,) = deliver_pending_alerts(factory, client, NOW, org_id=org_id, sleep=lambda s: None)
    assert (d.is_delivered, d.attempts, calls["n"]) == (False, 1, 1) and "not retried" in d.error
    assert _row(factory, alert_id)[:2] == ("failed", 1)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    ok, attempts, status, error = post_with_retries(
        httpx.Client(transport=httpx.MockTransport(down)),
        "http://x",
        b"{}",
        {},
        max_attempts=4,
        sleep=lambda s: None,
    )
    assert (ok, attempts, status) == (False, 4, None) and "ConnectError" in error
    # failed alerts are retried on request
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))) as client:
        (d,) = deliver_pending_alerts(factory, client, NOW, org_id=org_id, include_failed=True)
    assert d.is_delivered and _row(factory, alert_id)[:2] == ("delivered", 2)


def test_without_a_channel_alerts_stay_pending(factory):
    org_id, (alert_id,) = _alert(factory, None)
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client:
        assert deliver_pending_alerts(factory, client, NOW, org_id=org_id) == []
    assert _row(factory, alert_id) == ("pending", 0, None)


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = 1

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            ok = verify_signature(SECRET, body, self.headers.get(SIGNATURE_HEADER))
            self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


def test_real_loopback_webhook_receiver_verifies_every_alert(factory):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        org_id, ids = _alert(factory, url, thresholds=("0.5", "0.8"))
        with httpx.Client(timeout=5.0) as client:
            out = deliver_pending_alerts(factory, client, NOW, org_id=org_id, backoff_s=0.01)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert [(d.alert_id, d.is_delivered) for d in out] == [(ids[0], True), (ids[1], True)]
    assert out[0].attempts == 2 and out[1].attempts == 1  # the receiver's first answer was a 503
    got = [json.loads(body)["threshold_frac"] for _, body in _Receiver.received]
    assert got == ["0.5", "0.5", "0.8"]
    assert all(_row(factory, i)[0] == "delivered" for i in ids)
