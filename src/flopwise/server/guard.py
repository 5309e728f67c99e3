"""Input guard in front of every route (pure ASGI): a request body limit enforced while reading, and NUL refusal.

* **Body limit.** ``Content-Length`` above ``max_body_bytes`` is answered 413 before anything is read; a body
  without a length (chunked) is read chunk by chunk and answered 413 as soon as it passes the limit, so a
  100 MB body never sits in memory whole. Default 1 MiB (``FLOPWISE_MAX_BODY_BYTES``).
* **NUL characters.** PostgreSQL text cannot hold ``\\x00`` while SQLite can, so the same input would be a 201
  on one and a 422 on the other. A NUL anywhere in a JSON body's strings or keys, in the query string or in
  the path is a 422 naming where it is, on every database. Bodies are only parsed for this when their bytes
  hold the JSON escape ``\\u0000`` (raw NUL bytes make the JSON invalid anyway), so the common path costs one
  ``bytes.find``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from flopwise.server.errors import error_body

__all__ = ["DEFAULT_MAX_BODY_BYTES", "InputGuard", "nul_path"]

#: 1 MiB: a push of 1,000 usage records (what ``flopwise agent`` sends) is about 0.5 MB
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def nul_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in *value* holding a NUL character, else None."""
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = nul_path(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


class InputGuard:
    """The ASGI middleware (see the module docstring); wraps the FastAPI app in ``create_app``."""

    def __init__(self, app: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = self._nul_in_url(scope)
        if where is not None:
            await self._reply(send, 422, f"{where} contains a NUL (\\x00) character; remove it", where)
            return
        length = self._content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"\\u0000" in body:
            try:
                where = nul_path(json.loads(body))
            except ValueError:
                where = None  # not JSON: the route's own parsing answers
            if where is not None:
                await self._reply(send, 422, f"{where} contains a NUL (\\u0000) character; remove it", where)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    @staticmethod
    def _nul_in_url(scope: Scope) -> str | None:
        if "\x00" in scope.get("path", ""):
            return "path"
        query = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if "\x00" in key or "\x00" in value:
                    return f"query.{key.replace(chr(0), '')}"
        return None

    async def _too_large(self, send: Send) -> None:
        limit = self.max_body_bytes
        await self._reply(
            send,
            413,
            f"the request body is larger than {limit} bytes; send less per request (split the batch)",
        )

    @staticmethod
    async def _reply(send: Send, status: int, message: str, field: str | None = None) -> None:
        errors = [{"field": field, "message": message}] if field else []
        payload = json.dumps(error_body(status, message, errors)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if status == 413:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
