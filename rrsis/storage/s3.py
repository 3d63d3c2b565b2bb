"""S3 (and S3-compatible) objects through boto3, with our own retry policy.

boto3's built-in retries are limited to one attempt so that every transient failure (throttling, 5xx,
timeouts, dropped connections) goes through `retry.call_with_retry`: one policy, one log line, one error.
Credentials come only from the standard AWS environment / config chain and never appear in messages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
import boto3.exceptions
import botocore.config
import botocore.exceptions

from rrsis.errors import StorageError
from rrsis.storage.retry import RetryPolicy, call_with_retry

T = TypeVar("T")

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "500",
        "502",
        "503",
        "504",
    }
)


@dataclass(frozen=True)
class S3Settings:
    """Where and how hard to try; empty endpoint means AWS_ENDPOINT_URL or the AWS default."""

    endpoint_url: str = ""
    region: str = ""
    policy: RetryPolicy = field(default_factory=RetryPolicy)


_settings = S3Settings()
_clients: dict[tuple[str, str, int], Any] = {}
_lock = threading.Lock()


def configure(endpoint_url: str = "", region: str = "", max_attempts: int = 8, backoff_s: float = 0.1) -> None:
    """Set endpoint/region/retries for this process (jobs call it from their `storage:` config section)."""
    global _settings
    _settings = S3Settings(endpoint_url, region, RetryPolicy(max_attempts=max_attempts, base_s=backoff_s))


def split(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def endpoint_url() -> str:
    return _settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")


def client() -> Any:
    """One boto3 client per (endpoint, region, process); boto3 clients are thread-safe, sessions are not."""
    endpoint = endpoint_url()
    region = _settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    key = (endpoint, region, os.getpid())
    with _lock:
        if key not in _clients:
            config = botocore.config.Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"} if endpoint else None,
            )
            _clients[key] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint or None, region_name=region or None, config=config
            )
        return _clients[key]


def _code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return _code(exc) in TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.ResponseStreamingError
        | boto3.exceptions.S3UploadFailedError
        | ConnectionError
        | TimeoutError,
    )


def describe(exc: BaseException) -> str:
    """One line, no credentials: the error code/class and message only."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{_code(exc)} {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _retry(what: str, fn: Callable[[], T]) -> T:
    return call_with_retry(fn, what=what, is_transient=is_transient, describe=describe, policy=_settings.policy)


def is_not_found(exc: BaseException) -> bool:
    return _code(exc) in {"404", "NoSuchKey", "NotFound"}


def put_bytes(uri: str, data: bytes) -> None:
    bucket, key = split(uri)
    _retry(f"put {uri}", lambda: client().put_object(Bucket=bucket, Key=key, Body=data))


def get_bytes(uri: str) -> bytes:
    bucket, key = split(uri)

    def get() -> bytes:
        try:
            return bytes(client().get_object(Bucket=bucket, Key=key)["Body"].read())
        except botocore.exceptions.ClientError as exc:
            if is_not_found(exc):
                raise StorageError(f"get {uri} failed: no such object") from exc
            raise

    return _retry(f"get {uri}", get)


SINGLE_PUT_MAX_BYTES = 256 * 1024 * 1024


def put_file(local_path: str, uri: str) -> None:
    """One PUT for files up to 256 MiB (atomic on S3); larger files go multipart through boto3's transfer."""
    if os.path.getsize(local_path) <= SINGLE_PUT_MAX_BYTES:
        with open(local_path, "rb") as f:
            put_bytes(uri, f.read())
        return
    bucket, key = split(uri)
    _retry(f"put {uri}", lambda: client().upload_file(local_path, bucket, key))


def get_file(uri: str, local_path: str) -> None:
    bucket, key = split(uri)
    _retry(f"get {uri}", lambda: client().download_file(bucket, key, local_path))


def head(uri: str) -> dict[str, Any] | None:
    bucket, key = split(uri)

    def call() -> dict[str, Any] | None:
        try:
            return dict(client().head_object(Bucket=bucket, Key=key))
        except botocore.exceptions.ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    return _retry(f"head {uri}", call)


def list_prefix(uri: str) -> list[str]:
    bucket, prefix = split(uri)

    def call() -> list[str]:
        keys: list[str] = []
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    return sorted(f"s3://{bucket}/{key}" for key in _retry(f"list {uri}", call))


def delete(uri: str) -> None:
    bucket, key = split(uri)
    _retry(f"delete {uri}", lambda: client().delete_object(Bucket=bucket, Key=key))
