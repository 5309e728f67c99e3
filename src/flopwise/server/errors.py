"""One exception handler for the whole API (the datasette pattern): every error leaves as the same JSON shape.

    {"ok": false, "status": 422, "error": "one line for people", "errors": [{"field": "...", "message": "..."}]}

Domain errors (``flopwise.errors``) become 4xx with their message; validation errors are 422 with field-level
messages; anything unexpected is logged with its traceback and the client gets a generic 500 without details.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from flopwise import errors as fe

__all__ = ["ApiError", "error_body", "install_error_handlers"]

log = logging.getLogger("flopwise.server")


class ApiError(Exception):
    """Raised by routes for an HTTP error with the standard body (404 not found, 409 conflict, 403 forbidden...)."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers


def error_body(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": message, "errors": errors or []}


def _status_for(err: fe.FlopwiseError) -> int:
    if isinstance(err, (fe.InputError, fe.ModelConfigError)):
        return 422
    if isinstance(err, (fe.UnknownAcceleratorError, fe.UnknownModelError, fe.UnknownRegionError)):
        return 422
    if isinstance(err, fe.UnsupportedError):
        return 422
    status = getattr(err, "http_status", None)
    return int(status) if status else 400


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status, exc.message, exc.errors), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(fe.FlopwiseError)
    async def _domain_error(request: Request, exc: fe.FlopwiseError) -> JSONResponse:
        status = _status_for(exc)
        field = getattr(exc, "field", None)
        errs = [{"field": field, "message": str(exc)}] if field else []
        return JSONResponse(error_body(status, str(exc), errs), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errs[:5])
        return JSONResponse(error_body(422, f"invalid request: {summary}", errs), status_code=422)

    # Starlette's HTTPException (FastAPI's subclasses it): unknown paths (404) and wrong methods (405) too.
    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    from sqlalchemy.exc import DataError

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the API let through (e.g. a NUL character in text on PostgreSQL): bad input.
        log.info("database rejected a value on %s %s: %s", request.method, request.url.path, exc.orig)
        message = "a value in the request cannot be stored (control characters such as NUL are not allowed)"
        return JSONResponse(error_body(422, message), status_code=422)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        # a number the API let through that the database cannot hold (SQLite integers are 64-bit): bad input
        log.info("number out of range on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body(422, "a number in the request is out of range"), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(500, "internal server error"), status_code=500)
