"""Which Ray job server to talk to, with which auth headers, and whether it answers: before anything is sent.

Address order: `--address`, then the submit config's `address`, then `RAY_API_SERVER_ADDRESS`, then
`RAY_ADDRESS`. Auth (Ray token authentication, Ray >= 2.52): `RAY_AUTH_TOKEN`, else the file named by
`RAY_AUTH_TOKEN_PATH`, else Ray's default token file `~/.ray/auth_token` (the order Ray's own clients use)
becomes an `Authorization: Bearer` header; `RAY_JOB_HEADERS` (a JSON object, the
Ray jobs CLI convention) adds headers, e.g. for a proxy in front of the dashboard. Header values are never
logged or put in error messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rrsis.errors import JobError

_ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def resolve_address(cli_address: str | None, config_address: str = "") -> str:
    """The job server's HTTP URL (`http://host:port`); one-line JobError when none is given or usable."""
    address = cli_address or config_address
    source = "--address" if cli_address else "submit.address"
    if not address:
        for var in _ADDRESS_VARS:
            if os.environ.get(var):
                address, source = os.environ[var], var
                break
    if not address:
        raise JobError("no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise JobError(f"{source}={address!r} is a Ray Client address; jobs go to the dashboard: http://HEAD:8265")
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise JobError(f"{source}={address!r} is not a job server address like http://HEAD:8265")
    try:
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise JobError(f"{source}={address!r} has a malformed port") from exc
    return address


def default_token_path() -> Path:
    """Ray's default token file, `~/.ray/auth_token` (what `ray get-auth-token --generate` writes)."""
    return Path.home() / ".ray" / "auth_token"


def _sent_token_source(headers: dict[str, str]) -> str:
    """Where the Authorization header came from, for messages (never the token itself); "" when none was sent."""
    if not any(k.lower() == "authorization" for k in headers):
        return ""
    if "authorization" in os.environ.get("RAY_JOB_HEADERS", "").lower():
        return "RAY_JOB_HEADERS"
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH", ""):
        return "RAY_AUTH_TOKEN_PATH"
    return str(default_token_path())


def auth_token() -> str:
    """The cluster token, found as Ray finds it: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names (which
    must be readable and non-empty), else `~/.ray/auth_token` if it exists; "" when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    if path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise JobError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the token file ({exc.strerror})") from exc
        if not token:
            raise JobError(f"RAY_AUTH_TOKEN_PATH={path}: the token file is empty")
        return token
    default = default_token_path()
    try:
        return default.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise JobError(f"{default} (Ray's default token file): cannot read it ({exc.strerror})") from exc


def auth_headers() -> dict[str, str]:
    """HTTP headers for the job server: the token of `auth_token` as a bearer header, plus RAY_JOB_HEADERS."""
    headers: dict[str, str] = {}
    raw = os.environ.get("RAY_JOB_HEADERS", "")
    if raw:
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise JobError("RAY_JOB_HEADERS is not a JSON object of header names to values") from exc
        if not isinstance(extra, dict):
            raise JobError("RAY_JOB_HEADERS is not a JSON object of header names to values")
        headers.update({str(k): str(v) for k, v in extra.items()})
    token = auth_token()
    if token and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = f"Bearer {token}"
    return headers


def check_reachable(address: str, headers: dict[str, str], timeout_s: float) -> str:
    """GET /api/version; returns the cluster's Ray version or raises one JobError line (nothing is sent)."""
    request = urllib.request.Request(f"{address}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: Any = json.loads(response.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            source = _sent_token_source(headers)
            sent = f"the token from {source} was not accepted; " if source else "no token was sent; "
            hint = f"{sent}set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or {default_token_path()} to the cluster's token"
            raise JobError(f"job server at {address} refused the request (HTTP {exc.code}): {hint}") from None
        raise JobError(f"job server at {address} answered HTTP {exc.code} on /api/version") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JobError(f"cannot reach the Ray job server at {address}: {reason}{_port_hint(address)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JobError(f"{address} is not a Ray dashboard (no JSON on /api/version){_port_hint(address)}") from None
    version = body.get("ray_version") if isinstance(body, dict) else None
    if not version:
        raise JobError(f"{address} does not look like a Ray dashboard (no ray_version in /api/version)")
    return str(version)


def _port_hint(address: str) -> str:
    """RAY_ADDRESS often holds the GCS address (port 6379): jobs go to the dashboard port instead."""
    if urlparse(address).port not in (6379, 10001):
        return ""
    return " (that is the GCS/Ray Client port; the job server is the dashboard, default port 8265)"


@contextlib.contextmanager
def _without_address_env() -> Iterator[None]:
    """Ray's client lets RAY_ADDRESS override its `address` argument; we already resolved it, so hide it."""
    saved = {k: os.environ.pop(k) for k in _ADDRESS_VARS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(cli_address: str | None, config_address: str = "", *, timeout_s: float = 5.0, verify: bool = True) -> Any:
    """A `JobSubmissionClient` for a reachable job server (checked first, one-line errors otherwise)."""
    address = resolve_address(cli_address, config_address)
    headers = auth_headers()
    check_reachable(address, headers, timeout_s)
    from ray.job_submission import JobSubmissionClient

    with _without_address_env():
        try:
            return JobSubmissionClient(address, headers=headers or None, verify=verify)
        except (ConnectionError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise JobError(f"job server at {address}: {first}") from None
