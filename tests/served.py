"""A real ``flopwise serve --workers N`` in child processes for tests: the database bootstrapped with an admin
token, the server started on a free loopback port and waited for until ``/api/v1/health`` answers, and stopped
(terminate, then kill) when the block ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

#: run the CLI in a fresh interpreter (the installed script may not be on PATH)
CLI = "import sys; from flopwise.cli.main import run; sys.argv = ['flopwise', *sys.argv[1:]]; run()"


def flopwise(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=120
    )


@contextmanager
def served(
    database_url: str, log_dir: Path, *, workers: int = 2, options: tuple[str, ...] = ()
) -> Iterator[tuple[str, str]]:
    """(base URL ``http://127.0.0.1:PORT``, admin token) of a running ``flopwise serve --workers N [options]``;
    its output (startup and errors on stderr, the access log on stdout) goes to ``log_dir / "serve.log"``."""
    env = {**os.environ, "FLOPWISE_DATABASE_URL": database_url}
    boot = flopwise("admin", "bootstrap", env=env)
    assert boot.returncode == 0, boot.stderr
    token = boot.stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = log_dir / "serve.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--workers", str(workers), "--port", str(port), *options],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()
            time.sleep(0.2)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
