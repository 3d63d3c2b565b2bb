"""From `data.*` config to screened sample splits and a torch Dataset of normalised crops.

Screening: a sample with no valid label pixel or no valid image pixel (both occur in the real Sen1Floods11
data: `Ghana_83483` is all -1, `Paraguay_34417` is all NaN) cannot teach or measure anything; it is skipped
with one warning line naming it, never a crash. Splits hold out whole groups (Sen1Floods11 events) so that
validation chips come from floods the model never saw.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rrsis.data import ombria, sen1floods11, snowed
from rrsis.data.augment import random_dihedral
from rrsis.data.normalize import NormStats, sample_stats
from rrsis.data.pairs import SampleRef, find_geotiff_pairs, iter_blocks, read_sample
from rrsis.errors import ConfigError, InputError
from rrsis.geo.tiling import PixelWindow
from rrsis.log import get_logger

log = get_logger(__name__)
WATERLAND_FORMATS = ("sen1floods11", "snowed", "geotiff_pairs", "ombria")
MAX_CROP_TRIES = 10  # random crops redrawn when they hold no valid label pixel
MAX_WATER_POINTS = 65_536  # water pixel positions kept per sample for water-centred crops (a strided subset)


@dataclass
class SplitRefs:
    bands: list[str]
    train: list[SampleRef]
    val: list[SampleRef]

    def get(self, split: str) -> list[SampleRef]:
        """ "train", "val", "test" (= the held-out groups; these formats ship no separate test set) or "all"."""
        if split == "train":
            return self.train
        if split in ("val", "test"):
            return self.val
        if split == "all":
            return sorted(self.train + self.val, key=lambda r: r.sample_id)
        raise ConfigError(f"split={split!r} is not one of train, val, test, all")


def find_refs(data: Any) -> tuple[list[str], list[SampleRef]]:
    """Band names and sample refs of `data.format` under `data.root` (unscreened)."""
    if data.format == "sen1floods11":
        names, _ = sen1floods11.band_indexes(data.sensor, data.bands)
        return names, sen1floods11.find_chips(data.root, data.sensor, data.bands)
    if data.format == "snowed":
        names, _ = snowed.band_indexes(data.bands)
        return names, snowed.find_samples(data.root, data.bands)
    if data.format == "ombria":
        names, _ = ombria.band_indexes(data.bands)
        return names, ombria.find_refs(data.root, data.bands)
    if data.format == "geotiff_pairs":
        refs = find_geotiff_pairs(data.root, list(data.bands))
        return (list(data.bands) or [f"B{i}" for i in refs[0].bands]), refs
    raise ConfigError(f"data.format={data.format!r}: water-land training reads {', '.join(WATERLAND_FORMATS)}")


def screen(refs: Sequence[SampleRef]) -> list[SampleRef]:
    """Keep samples with at least one valid labelled pixel; warn once per skipped sample."""
    kept = []
    for ref in refs:
        has_pixel = has_label = False
        for window in iter_blocks(ref.width, ref.height):
            _, valid, label = read_sample(ref, window)
            has_pixel = has_pixel or bool(valid.any())
            has_label = has_label or bool((label >= 0).any())
            if has_label:
                break
        if not has_pixel:
            log.warning("skipping sample %s: no valid image pixel in %s", ref.sample_id, ref.image_uri)
        elif not has_label:
            log.warning("skipping sample %s: no valid label pixel in %s", ref.sample_id, ref.label_uri)
        else:
            kept.append(ref)
    return kept


def _is_val(group: str, val_groups: set[str], val_fraction: float) -> bool:
    if group in val_groups:
        return True
    return val_fraction > 0 and (zlib.crc32(group.encode()) % 10_000) / 10_000 < val_fraction


def build_splits(data: Any) -> SplitRefs:
    """Screened train/val refs: groups in `data.val_events` (plus a stable hash share `data.val_fraction`)."""
    bands, refs = find_refs(data)
    refs = screen(refs)
    groups = {r.group for r in refs}
    unknown = sorted(set(data.val_events) - groups)
    if unknown:
        raise ConfigError(f"data.val_events={unknown} match no sample group; groups: {', '.join(sorted(groups))}")
    fraction = float(getattr(data, "val_fraction", 0.0))
    val = [r for r in refs if _is_val(r.group, set(data.val_events), fraction)]
    train = [r for r in refs if not _is_val(r.group, set(data.val_events), fraction)]
    return SplitRefs(bands=bands, train=train, val=val)


def eval_windows(ref: SampleRef, tile_px: int) -> list[PixelWindow]:
    """Windows covering a sample for evaluation: the whole sample, or `tile_px` squares for large scenes.

    Tiles all have the same size so they batch; edge tiles reach past the sample and read boundless (the
    outside is invalid and ignored), so every pixel is counted exactly once.
    """
    if tile_px <= 0 or (ref.width <= tile_px and ref.height <= tile_px):
        return [ref.full_window]
    return [
        PixelWindow(col, row, tile_px, tile_px)
        for row in range(0, ref.height, tile_px)
        for col in range(0, ref.width, tile_px)
    ]


def water_points(ref: SampleRef, max_points: int = MAX_WATER_POINTS) -> np.ndarray:
    """(N, 2) int (row, col) of the sample's labelled water pixels, read block by block; an evenly strided
    subset of at most `max_points` keeps memory bounded on a large scene."""
    found = []
    for window in iter_blocks(ref.width, ref.height):
        _, _, label = read_sample(ref, window)
        rows, cols = np.nonzero(label == 1)
        found.append(np.stack([rows + window.row_off, cols + window.col_off], axis=1))
    points = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
    return points[:: max(1, -(-len(points) // max_points))]


def batchable(refs: Sequence[SampleRef], tile_px: int) -> bool:
    """Whether evaluation items of these samples all have one shape (else evaluate one item per batch)."""
    shapes = {w.to_tuple()[2:] for ref in refs for w in eval_windows(ref, tile_px)}
    return len(shapes) <= 1


class WaterLandDataset(Dataset[dict[str, Any]]):
    """Items {"image" float32 (C,H,W) normalised, "label" int64 (H,W) -1 ignore, "valid" bool, "index" int}.

    Training: `crops_per_sample` random windows of `crop_px` per sample and epoch (torch RNG, so a seeded run
    repeats, and DataLoader workers differ), with random flips/rotations. Evaluation: a fixed cover of each
    sample (see `eval_windows`), no augmentation; "index" names the sample for per-chip metrics.
    With `stats.norm` "scene" (or "otsu") each sample is normalised by its own whole-chip statistics (or Otsu
    thresholds; the chip is the scene), computed once here, so every crop of a chip sees the same numbers.
    `water_crop_fraction`: the share of training crops placed to contain a labelled water pixel (drawn
    uniformly from the sample's water pixels, at a uniform position inside the crop). Uniform crops of a chip
    with 1 % water almost never show water, so a model learns "never water" there; the rest stay uniform so
    the land-only context and the class balance of whole scenes are still seen. Samples without water pixels
    always get uniform crops.
    """

    def __init__(
        self,
        refs: Sequence[SampleRef],
        stats: NormStats,
        *,
        train: bool,
        crop_px: int = 0,
        augment: bool = False,
        crops_per_sample: int = 1,
        water_crop_fraction: float = 0.0,
    ) -> None:
        if not refs:
            raise InputError("the dataset split has no usable sample (all were skipped or none were found)")
        self.refs = list(refs)
        self.stats = stats
        self.train = train
        self.crop_px = crop_px
        self.augment = augment and train
        self.water_crop_fraction = water_crop_fraction if train and crop_px > 0 else 0.0
        self.water_points = [water_points(ref) if self.water_crop_fraction > 0 else None for ref in self.refs]
        self.sample_stats = [sample_stats(stats, ref) for ref in self.refs]
        self.items: list[tuple[int, PixelWindow | None]] = []
        if train:
            self.items = [(i, None) for _ in range(crops_per_sample) for i in range(len(self.refs))]
        else:
            self.items = [(i, w) for i, ref in enumerate(self.refs) for w in eval_windows(ref, crop_px)]

    def __len__(self) -> int:
        return len(self.items)

    def _random_window(self, sample: int) -> PixelWindow:
        ref, size = self.refs[sample], self.crop_px
        if size <= 0:
            return ref.full_window
        points = self.water_points[sample]
        if points is not None and len(points) and float(torch.rand(())) < self.water_crop_fraction:
            row, col = (int(v) for v in points[int(torch.randint(0, len(points), ()))])
            col -= int(torch.randint(0, size, ()))  # the water pixel lands anywhere in the crop
            row -= int(torch.randint(0, size, ()))
            return PixelWindow(
                min(max(col, 0), max(ref.width - size, 0)), min(max(row, 0), max(ref.height - size, 0)), size, size
            )
        col = int(torch.randint(0, max(ref.width - size, 0) + 1, ()))
        row = int(torch.randint(0, max(ref.height - size, 0) + 1, ()))
        return PixelWindow(col, row, size, size)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw (unnormalised) image, valid and label of item `index` (training: a fresh random crop)."""
        sample, window = self.items[index]
        ref = self.refs[sample]
        if window is not None:
            return read_sample(ref, window)
        for _ in range(MAX_CROP_TRIES):
            image, valid, label = read_sample(ref, self._random_window(sample))
            if (label >= 0).any():
                break
        return image, valid, label

    def normalize(self, index: int, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Item `index`'s raw image normalised as the model expects (split or its sample's statistics)."""
        return self.sample_stats[self.items[index][0]].apply(image, valid)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, valid, label = self.read(index)
        image = self.normalize(index, image, valid)
        if self.augment:
            image, label, valid = random_dihedral(image, label, valid)
        return {
            "image": torch.from_numpy(image),
            "label": torch.from_numpy(label),
            "valid": torch.from_numpy(valid),
            "index": self.items[index][0],
        }
