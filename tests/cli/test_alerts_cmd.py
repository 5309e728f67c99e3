"""`flopwise alerts deliver`: pending budget alerts reach a real webhook receiver on 127.0.0.1, signed."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

from typer.testing import CliRunner

from flopwise.cli.main import app
from flopwise.meter.alerts import SIGNATURE_HEADER, verify_signature
from flopwise.store import Budget, Organization, make_engine, make_session_factory, upgrade, write_session
from flopwise.store.ledger import AlertChannel, BudgetAlert

SECRET = "cli-secret"


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers[SIGNATURE_HEADER], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _seed(url: str, hook: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    with write_session(make_session_factory(engine)) as s:
        org = Organization(name="alerts-cli")
        s.add(org)
        s.flush()
        budget = Budget(org_id=org.id, name="gpu", scope_kind="org", scope_id=org.id, period="month", unit="usd",
                        amount=Decimal("1000"), alert_thresholds=["0.8"])  # fmt: skip
        s.add(budget)
        s.add(AlertChannel(org_id=org.id, kind="webhook", url=hook, secret=SECRET))
        s.flush()
        s.add(BudgetAlert(budget_id=budget.id, threshold_frac=Decimal("0.8"),
                          window_start=datetime(2025, 3, 1, tzinfo=UTC), window_end=datetime(2025, 4, 1, tzinfo=UTC),
                          crossed_at=datetime(2025, 3, 20, tzinfo=UTC), used_amount=Decimal("850"),
                          limit_amount=Decimal("1000"), delivery_status="pending", attempts=0))  # fmt: skip
    engine.dispose()


def test_alerts_deliver_to_a_loopback_webhook(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"sqlite:///{tmp_path / 'f.db'}"
        _seed(url, f"http://127.0.0.1:{server.server_address[1]}/hook")
        result = CliRunner().invoke(app, ["alerts", "deliver", "--database-url", url, "--json"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["is_delivered"] for d in data["deliveries"]] == [True]
    signature, body = _Receiver.received[-1]
    assert verify_signature(SECRET, body, signature)
    assert json.loads(body)["threshold_frac"] == "0.8"
