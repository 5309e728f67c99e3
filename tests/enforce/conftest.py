"""Fixtures for the enforcement adapters: a real Slurm lab (session-scoped; skipped, with the reason, where this
machine lacks Slurm, root or MariaDB: .ci/run installs them) and an in-process flopwise server reached through
the real client over an ASGI transport."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import slurmlab  # noqa: E402

from asgi_transport import AsgiSyncTransport  # noqa: E402


@dataclass(frozen=True)
class Server:
    app: Any
    transport: AsgiSyncTransport
    org_id: int
    admin_token: str
    approver_token: str

    def client(self, token: str | None = None) -> Any:
        from flopwise.client import FlopwiseClient

        return FlopwiseClient(url="http://testserver", token=token or self.admin_token, transport=self.transport)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A flopwise server on a SQLite file with one organization and an admin token."""
    from flopwise.server import Settings, create_app
    from flopwise.server.auth import mint_token
    from flopwise.store import ApiToken, Organization, RoleBinding, User, write_session

    db = tmp_path_factory.mktemp("enforce-db") / "fw.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}"))
    with write_session(app.state.db) as s:
        org = Organization(name="acme")
        s.add(org)
        s.flush()
        tokens = []
        for name, role in (("ada", "admin"), ("grace", "approver")):
            user = User(org_id=org.id, name=name, email=f"{name}@example.org")
            s.add(user)
            s.flush()
            s.add(RoleBinding(user_id=user.id, role=role, scope_kind="org", scope_id=org.id))
            token, prefix, token_hash = mint_token()
            s.add(ApiToken(user_id=user.id, name=f"{name}-enforce", prefix=prefix, token_hash=token_hash))
            tokens.append(token)
        org_id = org.id
    transport = AsgiSyncTransport(app)
    try:
        yield Server(app, transport, org_id, *tokens)
    finally:
        transport.shutdown()
        app.state.engine.dispose()


@pytest.fixture(scope="session")
def slurm_cache_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enforce-cache") / "slurm-cache.lua"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, slurm_cache_path: Path) -> Iterator[slurmlab.SlurmLab]:
    """A real single-node Slurm with flopwise's job_submit.lua installed, reading *slurm_cache_path*."""
    missing = slurmlab.missing_tools()
    if missing:
        pytest.skip(f"real Slurm lab needs {', '.join(missing)} (installed by .ci/run)")
    from flopwise.enforce.slurm import render_plugin

    # world-readable (slurm.conf must be readable by the unprivileged user some tests submit as), so not under
    # pytest's private tmp_path
    root = Path(tempfile.mkdtemp(prefix="fwslurm", dir="/tmp"))
    root.chmod(0o755)
    the_lab = slurmlab.start_lab(root, job_submit_lua=render_plugin(slurm_cache_path))
    try:
        yield the_lab
    finally:
        the_lab.stop()
        shutil.rmtree(root, ignore_errors=True)
