"""A small typed client for the flopwise governance server (``flopwise serve``), over ``httpx.Client``.

Where the server is and who you are come from, first match wins:

1. arguments (``FlopwiseClient(url=..., token=...)``, the CLI's ``--url`` / ``--token``);
2. the environment, ``FLOPWISE_URL`` and ``FLOPWISE_TOKEN``;
3. a TOML config file, ``$XDG_CONFIG_HOME/flopwise/config.toml`` (``~/.config/flopwise/config.toml`` when
   ``XDG_CONFIG_HOME`` is unset), or the file named by ``FLOPWISE_CONFIG``::

       url = "http://127.0.0.1:8000"
       token = "fw_0123456789ab_..."

4. the URL default ``http://127.0.0.1:8000`` (no default token).

Every non-2xx answer carries the server's one error shape (``{"ok": false, "status", "error", "errors":
[{"field", "message"}]}``) and is raised as a :class:`ServerError` subclass with the server's message::

    ServerError(FlopwiseError)            any error answer of the server (status, message, field errors)
    ├── ServerValidationError(InputError) 422: a field the server rejected (field-level messages kept)
    ├── AuthenticationError               401: no token, an unknown, revoked or expired token
    ├── PermissionDeniedError             403: the token's role is too weak for the scope
    ├── NotFoundError                     404: no such object (or one in another organization)
    ├── ConflictError                     409: a duplicate name, a state that forbids the action
    └── ServerUnreachableError            no answer at all (connection refused, timeout, bad URL)

I/O sits behind an httpx transport: pass ``transport=`` (an ``httpx.MockTransport`` or a transport to an
in-process ASGI app) to test without a network. Money stays exact: the client sends ``Decimal`` values as decimal
strings, and the server's answers keep money as decimal strings (``"1234.50"``) that callers read with
``Decimal(...)``; other JSON numbers (FLOPs, kWh) arrive as Python ints and floats, as the API types them.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from flopwise.errors import FlopwiseError, InputError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_URL",
    "TOKEN_ENV",
    "URL_ENV",
    "AuthenticationError",
    "ConflictError",
    "Connection",
    "FlopwiseClient",
    "NotFoundError",
    "PermissionDeniedError",
    "ServerError",
    "ServerUnreachableError",
    "ServerValidationError",
    "default_config_path",
    "load_config",
    "resolve_connection",
]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "FLOPWISE_URL"
TOKEN_ENV = "FLOPWISE_TOKEN"
CONFIG_ENV = "FLOPWISE_CONFIG"
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT_S = 30.0


# --- errors -------------------------------------------------------------------------------------------------


class ServerError(FlopwiseError):
    """An error answer of the server: its HTTP ``status``, its one-line ``message`` and its field ``errors``."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.message = message
        self.errors = list(errors or [])
        self.method = method
        self.path = path
        where = f" ({method} {path} -> {status})" if method and status else ""
        Exception.__init__(self, f"{message}{where}")


class ServerValidationError(ServerError, InputError):
    """422: the server rejected a value. ``field`` is the first rejected field (dotted path), ``errors`` all."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(status, message, errors, method, path)
        first = self.errors[0] if self.errors else {}
        self.field = str(first.get("field") or "")
        self.value = None
        self.accepted = str(first.get("message") or message)


class AuthenticationError(ServerError):
    """401: the token is missing, unknown, revoked or expired. Get one with ``flopwise token create``."""


class PermissionDeniedError(ServerError):
    """403: the token's user lacks the role the action needs on that scope."""


class NotFoundError(ServerError, LookupError):
    """404: no such object, or one in another organization (the server does not say which)."""


class ConflictError(ServerError):
    """409: a duplicate, or an object whose state forbids the action (e.g. approving a denied request)."""


class ServerUnreachableError(ServerError):
    """No answer from the server at all: refused connection, timeout, DNS failure or a malformed URL."""


_BY_STATUS: dict[int, type[ServerError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ServerValidationError,
}


def error_from_response(response: httpx.Response) -> ServerError:
    """The :class:`ServerError` for a non-2xx *response*, with the server's message and field errors.

    A body that is not the server's error shape (a proxy's HTML page, say) still gives a useful message.
    """
    status = response.status_code
    message = ""
    errors: list[dict[str, Any]] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("detail") or "")
        raw = body.get("errors")
        if isinstance(raw, list):
            errors = [e for e in raw if isinstance(e, dict)]
    if not message:
        text = response.text.strip().splitlines()
        message = f"HTTP {status} {response.reason_phrase}" + (f": {text[0][:200]}" if text else "")
    cls = _BY_STATUS.get(status, ServerError)
    if status == 401:
        message += f'; pass --token, set {TOKEN_ENV}, or put token = "..." in {default_config_path()}'
    return cls(status, message, errors, response.request.method, response.request.url.path)


# --- configuration ------------------------------------------------------------------------------------------


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$FLOPWISE_CONFIG``, else ``$XDG_CONFIG_HOME/flopwise/config.toml``, else ``~/.config/flopwise/config.toml``."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base).expanduser() if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "flopwise" / "config.toml"


def load_config(path: Path) -> dict[str, str]:
    """The ``url`` and ``token`` keys of the TOML file at *path*; ``{}`` when it does not exist.

    Raises :class:`InputError` for a file that is not TOML or whose values are not strings.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InputError("config", str(path), f"the file cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError("config", str(path), f'write TOML such as url = "{DEFAULT_URL}" ({exc})') from None
    out: dict[str, str] = {}
    for key in ("url", "token"):
        if key in data:
            if not isinstance(data[key], str):
                raise InputError(f"{path}: {key}", data[key], "give a string in quotes")
            out[key] = data[key]
    return out


@dataclass(frozen=True)
class Connection:
    """Where the server is (``url``, without the ``/api/v1`` prefix), the bearer ``token``, and where each came from."""

    url: str
    token: str | None
    url_source: str
    token_source: str


def resolve_connection(
    url: str | None = None,
    token: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Connection:
    """URL and token from the arguments, else the environment, else the config file, else the URL default."""
    env = os.environ if env is None else env
    path = config_path or default_config_path(env)
    config: dict[str, str] | None = None

    def from_config() -> dict[str, str]:
        nonlocal config
        if config is None:
            config = load_config(path)
        return config

    def pick(arg: str | None, env_name: str, key: str) -> tuple[str | None, str]:
        if arg:
            return arg, "argument"
        if env.get(env_name):
            return env[env_name], env_name
        if from_config().get(key):
            return from_config()[key], str(path)
        return None, "unset"

    resolved_url, url_source = pick(url, URL_ENV, "url")
    if resolved_url is None:
        resolved_url, url_source = DEFAULT_URL, "default"
    resolved_token, token_source = pick(token, TOKEN_ENV, "token")
    resolved_url = resolved_url.strip().rstrip("/")
    if resolved_url.endswith(API_PREFIX):
        resolved_url = resolved_url[: -len(API_PREFIX)]
    if not resolved_url.startswith(("http://", "https://")):
        raise InputError(
            f"url (from {url_source})", resolved_url, "give an http:// or https:// URL such as " + DEFAULT_URL
        )
    resolved_token = resolved_token.strip() if resolved_token else None
    if resolved_token is not None and not (resolved_token.isascii() and resolved_token.isprintable()):
        raise InputError(
            f"token (from {token_source})",
            resolved_token,
            "a token is printable ASCII (fw_...); copy it again",
        )
    return Connection(resolved_url, resolved_token, url_source, token_source)


# --- the client ---------------------------------------------------------------------------------------------


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    return json.loads(response.content)


class FlopwiseClient:
    """The governance API as Python methods; each returns the decoded JSON (money as decimal strings).

    >>> with FlopwiseClient(url="http://127.0.0.1:8000", token="fw_...") as fw:  # doctest: +SKIP
    ...     fw.me()["user_name"]
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.connection = resolve_connection(url, token, env=env, config_path=config_path)
        headers = {"Accept": "application/json", "User-Agent": "flopwise-client"}
        if self.connection.token:
            headers["Authorization"] = f"Bearer {self.connection.token}"
        self._http = httpx.Client(
            base_url=self.connection.url + API_PREFIX,
            headers=headers,
            transport=transport,
            timeout=timeout_s,
        )

    # lifecycle
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FlopwiseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the one path every call takes
    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request to ``/api/v1`` + *path*; the decoded JSON body, or a :class:`ServerError`."""
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        content = None
        send_headers = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body, default=_json_default).encode()
            send_headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method, path, content=content, params=clean_params, headers=send_headers
            )
        except httpx.TransportError as exc:
            raise ServerUnreachableError(
                0,
                f"cannot reach the flopwise server at {self.connection.url} (url from {self.connection.url_source}): "
                f"{exc.__class__.__name__}: {exc}; start it with `flopwise serve` or pass --url / set {URL_ENV}",
                method=method,
                path=path,
            ) from None
        if not response.is_success:
            raise error_from_response(response)
        return _decode(response)

    # identity
    def health(self) -> dict[str, Any]:
        return self.call("GET", "/health")

    def me(self) -> dict[str, Any]:
        return self.call("GET", "/me")

    def openapi(self) -> dict[str, Any]:
        return self.call("GET", "/openapi.json")

    # compute requests
    def create_request(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Create a compute request; the server estimates it and returns the decision with its trace."""
        if idempotency_key and not (idempotency_key.isascii() and idempotency_key.isprintable()):
            raise InputError(
                "idempotency key", idempotency_key, "use printable ASCII (letters, digits, - and _)"
            )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.call("POST", "/requests", json_body=dict(body), headers=headers)

    def list_requests(self, **filters: Any) -> Any:
        return self.call("GET", "/requests", params=filters)

    def get_request(self, request_id: int) -> dict[str, Any]:
        return self.call("GET", f"/requests/{int(request_id)}")

    def approve_request(self, request_id: int, comment: str = "") -> dict[str, Any]:
        """Vote to approve; the answer's ``state`` turns ``approved`` at the last required approval."""
        return self.call("POST", f"/requests/{int(request_id)}/approve", json_body={"comment": comment or ""})

    def deny_request(self, request_id: int, comment: str) -> dict[str, Any]:
        """Deny with a reason (the server requires one); the request's reservations are released."""
        return self.call("POST", f"/requests/{int(request_id)}/deny", json_body={"comment": comment})

    def cancel_request(self, request_id: int) -> dict[str, Any]:
        return self.call("POST", f"/requests/{int(request_id)}/cancel")

    def comment_request(self, request_id: int, body: str) -> dict[str, Any]:
        return self.call("POST", f"/requests/{int(request_id)}/comments", json_body={"body": body})

    # budgets
    def create_budget(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/budgets", json_body=dict(body))

    def list_budgets(self, **filters: Any) -> Any:
        return self.call("GET", "/budgets", params=filters)

    def get_budget(self, budget_id: int) -> dict[str, Any]:
        return self.call("GET", f"/budgets/{int(budget_id)}")

    # admission jobs (the schedulers' decisions)
    def list_admission(self, **filters: Any) -> Any:
        """Admission jobs, newest first (filters: ``state``, ``engine``, ``project_id``, ``overdue``, ``limit``,
        ``before_id``)."""
        return self.call("GET", "/admission", params=filters)

    def get_admission(self, engine: str, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/admission/{_segment(engine)}/{_segment(job_id)}")

    def release_admission(self, engine: str, job_id: str) -> dict[str, Any]:
        """The job never ran: its reservation stops counting (repeating it is harmless)."""
        return self.call("POST", f"/admission/{_segment(engine)}/{_segment(job_id)}/release")

    def settle_admission(self, engine: str, job_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The job ended: its reservation is replaced by what it used (``actual_duration_h``, optional amounts)."""
        return self.call("POST", f"/admission/{_segment(engine)}/{_segment(job_id)}/settle", json_body=dict(body))

    # policies
    def apply_policy(self, yaml_text: str, *, is_enabled: bool = True) -> dict[str, Any]:
        """Store a policy document (its ``name:`` key names it) as that policy's next version."""
        return self.call("POST", "/policies", json_body={"yaml": yaml_text, "is_enabled": is_enabled})

    def list_policies(self) -> Any:
        return self.call("GET", "/policies")

    # tokens
    def create_token(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A new API token; the secret is in the answer once and never again."""
        return self.call("POST", "/tokens", json_body=dict(body))

    def list_tokens(self, **filters: Any) -> Any:
        return self.call("GET", "/tokens", params=filters)

    def revoke_token(self, token_id: int) -> Any:
        return self.call("DELETE", f"/tokens/{int(token_id)}")


def _segment(value: str) -> str:
    """*value* as one path segment (a job id may hold characters a URL path gives a meaning to)."""
    from urllib.parse import quote

    return quote(str(value), safe="")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"cannot send {type(obj).__name__} as JSON")
