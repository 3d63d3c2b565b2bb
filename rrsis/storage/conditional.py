"""Compare-and-swap writes of small objects: the primitive a run lease needs.

`create(uri, data)` writes only when nothing is there; `swap(uri, expected, data)` replaces the object only
while it still holds `expected`. On S3 both are single conditional PUTs (`If-None-Match: *`, `If-Match:
<etag>`), so two writers racing from different machines can never both succeed. Locally an exclusive create
(`O_EXCL`) and a read-compare-rename under an `flock` of the folder do the same for writers sharing the file system.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import botocore.exceptions

from rrsis.errors import StorageError
from rrsis.storage import s3
from rrsis.storage.uri import is_remote, local_path, put_bytes

PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


def _precondition_failed(exc: BaseException) -> bool:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    err = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return str(err.get("Code", "")) in PRECONDITION_CODES or status in ("412", "409")


@contextlib.contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on the object's folder: local compare-and-swaps of one folder never interleave
    (the object itself is replaced by rename, so it cannot carry the lock), and no lock file is left."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _local_swap(path: Path, expected: bytes, action: Callable[[Path], object]) -> bool:
    """`action(path)` (replace or delete) under the folder's lock, only if the file still holds `expected`."""
    with _folder_lock(path):
        try:
            if path.read_bytes() != expected:
                return False
        except FileNotFoundError:
            return False
        action(path)
        return True


def create(uri: str, data: bytes) -> bool:
    """Write `data` at `uri` if no object is there; False (nothing written) if one is."""
    if is_remote(uri):
        bucket, key = s3.split(uri)
        try:
            s3.client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            if _precondition_failed(exc):
                return False
            raise StorageError(f"put {uri} failed: {s3.describe(exc)}") from exc
        return True
    path = Path(local_path(uri))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    except OSError as exc:  # read-only, no permission, full: one line naming the cause and the place
        raise StorageError(f"cannot write to {path.parent}: [Errno {exc.errno}] {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def swap(uri: str, expected: bytes, data: bytes) -> bool:
    """Replace the object at `uri` by `data` only if it still holds `expected`; False otherwise."""
    if is_remote(uri):
        bucket, key = s3.split(uri)
        try:
            current = s3.client().get_object(Bucket=bucket, Key=key)
            if current["Body"].read() != expected:
                return False
            s3.client().put_object(Bucket=bucket, Key=key, Body=data, IfMatch=current["ETag"])
        except botocore.exceptions.ClientError as exc:
            if _precondition_failed(exc) or s3.is_not_found(exc):
                return False
            raise StorageError(f"put {uri} failed: {s3.describe(exc)}") from exc
        return True
    return _local_swap(Path(local_path(uri)), expected, lambda path: put_bytes(str(path), data))


def remove(uri: str, expected: bytes) -> bool:
    """Delete the object at `uri` only if it still holds `expected` (best effort on S3: read, compare,
    delete; a writer swapping in between is the only race, and a lease it took is then re-created by it)."""
    if is_remote(uri):
        bucket, key = s3.split(uri)
        try:
            if s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() != expected:
                return False
            s3.client().delete_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if s3.is_not_found(exc):
                return False
            raise StorageError(f"delete {uri} failed: {s3.describe(exc)}") from exc
        return True
    return _local_swap(Path(local_path(uri)), expected, Path.unlink)
