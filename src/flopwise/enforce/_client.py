"""How an adapter holds its flopwise client: one shared client (kept-alive connections, built once), or a
factory called per use (each use builds an httpx client: a TLS context and a new connection, then closes it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["borrowed"]


@contextmanager
def borrowed(source: Any) -> Iterator[Any]:
    """*source* itself when it is a client (anything with ``call``), left open for the next use; else a client
    from the factory *source*, closed after use."""
    if hasattr(source, "call"):
        yield source
        return
    with source() as fw:
        yield fw
