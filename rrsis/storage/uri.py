"""One URI layer over local folders, file:// and s3://: the only way rrsis code touches stored bytes.

Local writes are atomic (temp file in the same folder + rename) and S3 writes are single PUTs, so a reader
never sees half an object and a rerun can overwrite safely.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from rrsis.errors import StorageError
from rrsis.storage import s3

REMOTE_SCHEMES = ("s3",)


def scheme(uri: str) -> str:
    parsed = urlparse(str(uri))
    return parsed.scheme if len(parsed.scheme) > 1 else ""  # "C:\\x" is a path, not a scheme


def is_remote(uri: str) -> bool:
    return scheme(uri) in REMOTE_SCHEMES


def local_path(uri: str) -> str:
    """file:///a/b or /a/b -> /a/b; anything else is an error."""
    sch = scheme(uri)
    if sch == "file":
        return urlparse(str(uri)).path
    if sch:
        raise StorageError(f"unsupported URI scheme {sch!r} in {uri!r}; use a local path, file:// or s3://")
    return str(uri)


def join(base: str, *parts: str) -> str:
    """Join with '/' whatever the scheme; empty parts are skipped, no doubled slashes."""
    out = str(base)
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out.rstrip('/')}/{part}" if out else part
    return out


def put_bytes(uri: str, data: bytes) -> None:
    if is_remote(uri):
        s3.put_bytes(uri, data)
        return
    path = Path(local_path(uri))
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> str:
    """A new empty hidden temp file beside `path`, mode 0666 minus the umask, as a plain write would give.

    `tempfile.mkstemp` creates 0600 files, and the rename would carry that mode to the output, so nobody else
    (a teammate, a map server) could read it. Creating with 0666 lets the kernel apply the umask (and a
    folder's default ACL) exactly as it does for `open(path, "w")`, without reading or changing the umask.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return str(tmp)
    raise StorageError(f"cannot create a temp file beside {path}: 100 names taken")


def get_bytes(uri: str) -> bytes:
    if is_remote(uri):
        return s3.get_bytes(uri)
    try:
        return Path(local_path(uri)).read_bytes()
    except OSError as exc:
        raise StorageError(f"get {uri} failed: {exc.strerror or exc}") from exc


def put_file(local_file: str | os.PathLike[str], uri: str) -> None:
    if is_remote(uri):
        s3.put_file(str(local_file), uri)
        return
    _atomic_write(Path(local_path(uri)), lambda tmp: shutil.copyfile(local_file, tmp))


def get_file(uri: str, local_file: str | os.PathLike[str]) -> None:
    target = Path(local_file)
    if is_remote(uri):
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.get_file(uri, str(target))
        return
    src = local_path(uri)
    if not os.path.isfile(src):
        raise StorageError(f"get {uri} failed: no such file")
    _atomic_write(target, lambda tmp: shutil.copyfile(src, tmp))


def exists(uri: str) -> bool:
    if is_remote(uri):
        return s3.head(uri) is not None
    return os.path.exists(local_path(uri))


def size(uri: str) -> int:
    if is_remote(uri):
        meta = s3.head(uri)
        if meta is None:
            raise StorageError(f"size {uri} failed: no such object")
        return int(meta["ContentLength"])
    try:
        return os.path.getsize(local_path(uri))
    except OSError as exc:
        raise StorageError(f"size {uri} failed: {exc.strerror or exc}") from exc


def list_prefix(uri: str) -> list[str]:
    """Every object under a prefix, recursively, as full URIs in the input's form, sorted.

    Local: a folder lists its files; otherwise the files of the parent folder whose path starts with `uri`.
    Hidden temp files of in-flight atomic writes are skipped.
    """
    if is_remote(uri):
        return s3.list_prefix(uri)
    prefix = "file://" if scheme(uri) == "file" else ""
    path = local_path(uri)
    root = path if os.path.isdir(path) else os.path.dirname(path) or "."
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            if os.path.isdir(path) or full.startswith(path):
                out.append(prefix + full)
    return sorted(out)


def delete(uri: str) -> None:
    """Delete one object/file; deleting something absent is not an error (idempotent cleanup)."""
    if is_remote(uri):
        s3.delete(uri)
        return
    try:
        Path(local_path(uri)).unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"delete {uri} failed: {exc.strerror or exc}") from exc
