"""What the enforcement benches share: percentiles and their printed lines, a uvicorn server on a free loopback
port in a thread, and a flopwise app on a SQLite file with one org, team, project and admin token."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, values: list[float]) -> str:
    return f"  {label:<44} p50 {statistics.median(values) * 1e3:7.2f} ms  p99 {pct(values, 0.99) * 1e3:7.2f} ms"


def delta(label: str, base: list[float], arm: list[float]) -> str:
    return (f"  {label:<44} p50 {(statistics.median(arm) - statistics.median(base)) * 1e3:+7.2f} ms  "
            f"p99 {(pct(arm, 0.99) - pct(base, 0.99)) * 1e3:+7.2f} ms")  # fmt: skip


def serve(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def flopwise_app(tmp: Path) -> tuple[Any, str, int]:
    """(app, admin token, project id) on ``tmp/fw.db``."""
    from flopwise.server import Settings, create_app
    from flopwise.server.auth import mint_token
    from flopwise.store import ApiToken, Organization, Project, RoleBinding, Team, User, write_session

    app = create_app(Settings(database_url=f"sqlite:///{tmp / 'fw.db'}"))
    with write_session(app.state.db) as s:
        org = Organization(name="bench")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="t")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="p")
        user = User(org_id=org.id, name="ada")
        s.add_all([project, user])
        s.flush()
        s.add(RoleBinding(user_id=user.id, role="admin", scope_kind="org", scope_id=org.id))
        token, prefix, token_hash = mint_token()
        s.add(ApiToken(user_id=user.id, name="bench", prefix=prefix, token_hash=token_hash))
        project_id = project.id
    return app, token, project_id
