"""segment-anything's model classes, imported without running its package `__init__` first.

`import segment_anything` runs the package init, which imports its predictor and automatic mask generator
and, through them, torchvision; with torch's CUDA build torchvision in turn imports torch._dynamo, sympy and
triton: ~0.16 GB in every SAM process (measured: 0.60 GB for torch alone, 0.76 GB with torchvision), for
nothing the model classes use. Here the package is registered lazily: its submodules (`.modeling`) import as
usual, and the package's own init runs the first time one of its attributes is asked for
(`from segment_anything import SamPredictor`), so code that wants the whole package still gets it.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def register_lazy_package(name: str) -> None:
    """Put package `name` in `sys.modules` without running its `__init__`; the first attribute lookup on
    it (other than what the import system sets) runs the `__init__` then. A package already imported is left
    as it is."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def init_on_first_use(attr: str) -> Any:
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, attr)

    package.__getattr__ = init_on_first_use  # type: ignore[method-assign]
    sys.modules[name] = package


register_lazy_package("segment_anything")

from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d, MLPBlock  # noqa: E402

__all__ = [
    "ImageEncoderViT",
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TwoWayTransformer",
    "register_lazy_package",
]
