"""A synchronous httpx transport to an in-process ASGI app, shared by the CLI and enforcement tests: the real
client and CLI commands reach a real flopwise app without a socket."""

from __future__ import annotations

from typing import Any

import anyio.from_thread
import httpx

__all__ = ["AsgiSyncTransport"]


class AsgiSyncTransport(httpx.BaseTransport):
    """A synchronous httpx transport to an ASGI app: each request runs on one event loop kept in a thread.

    ``close()`` is a no-op (every CLI command closes its client); :meth:`shutdown` stops the loop.
    """

    def __init__(self, app: Any) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self._portal.call(send)

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        self._portal_cm.__exit__(None, None, None)
