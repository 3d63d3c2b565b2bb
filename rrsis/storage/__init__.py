"""Object storage: local paths, file:// and s3:// behind one small set of functions."""

from rrsis.storage.uri import (
    delete,
    exists,
    get_bytes,
    get_file,
    is_remote,
    join,
    list_prefix,
    put_bytes,
    put_file,
    size,
)

__all__ = [
    "delete",
    "exists",
    "get_bytes",
    "get_file",
    "is_remote",
    "join",
    "list_prefix",
    "put_bytes",
    "put_file",
    "size",
]
