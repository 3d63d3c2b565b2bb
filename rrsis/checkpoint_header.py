"""A checkpoint's description (model name, config, bands, norm) read without importing torch.

The map driver needs only the header of a checkpoint (to plan band selection and name the run), yet
`import torch` costs every process that does it about 400 MB of private memory (the CUDA build). Inference
actors pay that anyway; the driver should not. A `torch.save` file is a zip whose `*/data.pkl` pickles the
containers, with tensors as persistent ids into separate storage entries. This module unpickles only that
pickle, under an allow-list as strict as `weights_only=True`: plain containers pass, every tensor becomes
`None` (its bytes are never read), and any other global refuses to load. Anything unexpected returns
`None`, and the caller falls back to `rrsis.checkpoints.load_checkpoint`, whose errors are the reference.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

from rrsis import storage
from rrsis.storage.uri import local_path

KIND = "rrsis-checkpoint"  # the `kind` entry of every rrsis checkpoint
FORMAT_VERSION = 1
# Globals a torch.save pickle of plain containers may name; each is replaced, never imported.
_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
}
_STORAGE_MODULE = "torch"


def _no_tensor(*_args: Any, **_kwargs: Any) -> None:
    return None


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TENSOR_GLOBALS:
            return _no_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == _STORAGE_MODULE and name.endswith("Storage"):
            return name  # a storage type tag inside a persistent id; never called
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint header")

    def persistent_load(self, pid: Any) -> None:
        return None  # a tensor storage: its bytes stay in the zip, unread


def read_header(uri: str) -> dict[str, Any] | None:
    """The checkpoint's entries with every tensor as `None`; `None` when the file is not a readable rrsis
    checkpoint of the zip format (the caller then loads it with torch, which names the problem)."""
    try:
        # a local zip is opened in place: only its directory and the pickle are read, never the tensors
        source = io.BytesIO(storage.get_bytes(uri)) if storage.is_remote(uri) else local_path(uri)
        with zipfile.ZipFile(source) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            data = _HeaderUnpickler(io.BytesIO(archive.read(name))).load()
    except Exception:  # any damage or foreign format: the torch loader reports it properly
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("format") != FORMAT_VERSION:
        return None
    return data
