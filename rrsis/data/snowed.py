"""SNOWED (Andria et al., Sensors 2023): Sentinel-2 water-edge samples, the dataset of the water/land paper.

Published layout: one folder per sample, `<root>/<sample>/sample_2A.npy` (Sentinel-2 L2A, 256 x 256 x 12,
bands last in the order B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B11, B12), `<root>/<sample>/label.npy`
(256 x 256 binary mask, 1 = water, 0 = land) and a `metadata.pkl` we never unpickle. Arrays are
memory-mapped, so a window read touches only its rows. Each sample folder is its own split group.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrsis.data.pairs import SampleRef
from rrsis.errors import InputError

IMAGE_FILE = "sample_2A.npy"
LABEL_FILE = "label.npy"
BAND_NAMES = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
DEFAULT_BANDS = ("B2", "B3", "B4", "B8")  # the paper's four 10 m bands


def band_indexes(bands: Sequence[str]) -> tuple[list[str], list[int]]:
    names = [b.upper() for b in (list(bands) or list(DEFAULT_BANDS))]
    missing = [b for b in names if b not in BAND_NAMES]
    if missing:
        raise InputError(f"data.bands={missing} not in SNOWED: {', '.join(BAND_NAMES)}")
    return names, [BAND_NAMES.index(b) + 1 for b in names]


def _shape(path: Path) -> tuple[int, ...]:
    try:
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except (OSError, ValueError) as exc:
        raise InputError(f"SNOWED sample {path} cannot be read: {exc}") from exc


def find_samples(root: str, bands: Sequence[str] = ()) -> list[SampleRef]:
    """Every sample folder under `root`; a folder missing a file or with wrong shapes names that file."""
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"data.root={root}: SNOWED folder not found")
    _, indexes = band_indexes(bands)
    refs = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        image, label = folder / IMAGE_FILE, folder / LABEL_FILE
        for needed in (image, label):
            if not needed.is_file():
                raise InputError(
                    f"SNOWED sample {folder} lacks {needed.name} (layout <sample>/{IMAGE_FILE}, {LABEL_FILE})"
                )
        image_shape, label_shape = _shape(image), _shape(label)
        if len(image_shape) != 3 or image_shape[2] != len(BAND_NAMES):
            raise InputError(f"{image}: expected (H, W, {len(BAND_NAMES)}) bands last, got shape {image_shape}")
        if label_shape != image_shape[:2]:
            raise InputError(f"{label}: shape {label_shape} does not match image (H, W) {image_shape[:2]}")
        refs.append(
            SampleRef(
                sample_id=folder.name,
                group=folder.name,
                image_uri=str(image),
                label_uri=str(label),
                bands=tuple(indexes),
                width=image_shape[1],
                height=image_shape[0],
                kind="npy",
            )
        )
    if not refs:
        raise InputError(f"data.root={root}: no SNOWED sample folders (<sample>/{IMAGE_FILE})")
    return refs
