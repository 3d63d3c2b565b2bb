"""Per-band normalisation statistics: of the training split (stored in the checkpoint) or of the scene.

Statistics belong to the model, never to a tile: computing them per tile makes seams and shifts with scene
content. They are streamed block by block (float64 sums over valid pixels only), so any split size works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import rasterio
from rasterio.enums import MaskFlags

from rrsis.data.otsu import NO_GATE, otsu_threshold
from rrsis.data.pairs import SampleRef, iter_blocks, read_sample
from rrsis.errors import CheckpointError, InputError
from rrsis.geo.raster import open_raster, read_decimated

MIN_STD = 1e-6  # a constant band would divide by zero; keep it finite


@dataclass
class NormStats:
    bands: list[str]
    norm_mean: list[float]
    norm_std: list[float]
    nodata_fill: float = 0.0  # after normalisation 0 is the band mean: invalid pixels look "average"
    # "split": every scene uses norm_mean/std; "scene": each scene its own `scene_stats` (norm_mean/std then
    # only record the training split, for reference); "otsu": norm_mean/std, and beside each band a second
    # channel anchored on the scene's own Otsu threshold of it (`scene_thresholds`, see `apply_stats`)
    norm: str = "split"
    # per band, the scene's Otsu threshold: set on the statistics of one scene of an "otsu" model
    anchor: list[float] | None = None

    def for_scene(self, mean: Sequence[float], std: Sequence[float]) -> NormStats:
        """These statistics with one scene's location and scale (what a "scene" model applies to it)."""
        return NormStats(list(self.bands), list(mean), list(std), self.nodata_fill, "split")

    def anchored(self, thresholds: Sequence[float]) -> NormStats:
        """These statistics with one scene's Otsu thresholds (what an "otsu" model applies to it)."""
        return NormStats(list(self.bands), list(self.norm_mean), list(self.norm_std), self.nodata_fill, "split",
                         [float(t) for t in thresholds])  # fmt: skip

    def apply(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """`apply_stats` with these statistics (and anchor)."""
        return apply_stats(self.norm_mean, self.norm_std, self.nodata_fill, image, valid, self.anchor)


#: Normalisation rules that need statistics of the whole scene (never of a tile) before any tile runs.
SCENE_RULES = ("scene", "otsu")


def input_channels(bands: int, norm: str) -> int:
    """Model input channels for `bands` raw bands: an "otsu" model sees each band twice (absolute, anchored)."""
    return 2 * bands if norm == "otsu" else bands


def apply_stats(
    norm_mean: Sequence[float],
    norm_std: Sequence[float],
    nodata_fill: float,
    image: np.ndarray,
    valid: np.ndarray,
    anchor: Sequence[float] | None = None,
) -> np.ndarray:
    """(C,H,W) raw values -> float32 (x - mean) / std per band; a pixel invalid, or NaN in any band, gets
    `nodata_fill` in every band (a half-valid pixel is not a measurement).

    With `anchor` (one scene's per-band Otsu thresholds) the output has 2C channels: the C above, then
    (x - anchor) / std per band, i.e. how far each pixel sits below or above its scene's own threshold."""
    if image.ndim != 3 or image.shape[0] != len(norm_mean):
        raise InputError(f"image has shape {image.shape}, the normalisation expects ({len(norm_mean)}, H, W)")
    mean = np.asarray(norm_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(norm_std, dtype=np.float32)[:, None, None]
    if anchor is not None:
        if len(anchor) != len(norm_mean):
            raise InputError(f"{len(anchor)} Otsu anchor(s) for {len(norm_mean)} band(s)")
        mean = np.concatenate([mean, np.asarray(anchor, dtype=np.float32)[:, None, None]])
        std = np.concatenate([std, std])
        image = np.concatenate([image, image])
    with np.errstate(invalid="ignore", over="ignore"):
        out = (image.astype(np.float32, copy=False) - mean) / std
    bad = ~np.asarray(valid, dtype=bool)[None] | ~np.isfinite(out).all(axis=0, keepdims=True)
    return np.where(bad, np.float32(nodata_fill), out).astype(np.float32, copy=False)


def compute_stats(refs: Sequence[SampleRef], bands: Sequence[str], norm: str = "split") -> NormStats:
    """Mean and standard deviation of every band over the valid pixels of `refs` (`norm` is recorded)."""
    total = np.zeros(len(bands), dtype=np.float64)
    total_sq = np.zeros(len(bands), dtype=np.float64)
    count = 0
    for ref in refs:
        for window in iter_blocks(ref.width, ref.height):
            image, valid, _ = read_sample(ref, window)
            pixels = image[:, valid].astype(np.float64)
            total += pixels.sum(axis=1)
            total_sq += (pixels**2).sum(axis=1)
            count += pixels.shape[1]
    if count == 0:
        raise InputError("no valid pixel in the training split: cannot compute normalisation statistics")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return NormStats(list(bands), mean.tolist(), np.maximum(std, MIN_STD).tolist(), norm=norm)


# Per-scene statistics (`data.norm=scene`): robust location and scale of each band over the whole scene.
# SAR backscatter levels shift between acquisitions (incidence angle, calibration, season) while a global
# Otsu threshold adapts to each scene; statistics of the scene keep that adaptation without the seams of
# per-tile statistics, because every tile of a scene gets the same numbers. Median and IQR/1.349 (the
# Gaussian-equivalent sigma) are robust to speckle outliers and to NaN/nodata borders.
SCENE_STATS_MAX_PX = 1024  # longest side of the decimated read: cost independent of scene size
IQR_TO_SIGMA = 1.349


def robust_stats(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """(C, N) valid pixel values -> per-band median and IQR/1.349 (at least MIN_STD)."""
    if pixels.ndim != 2 or pixels.shape[1] == 0:
        raise InputError("no valid pixel in the scene: cannot compute scene normalisation statistics")
    p25, p50, p75 = np.percentile(pixels.astype(np.float64), [25, 50, 75], axis=1)
    scale = np.maximum((p75 - p25) / IQR_TO_SIGMA, MIN_STD)
    return p50.tolist(), scale.tolist()


def _valid_pixels(pixels: np.ndarray, uri: str) -> np.ndarray:
    """`pixels` (C, N), or an InputError naming `uri` when N is 0 (nothing to take statistics of)."""
    if pixels.shape[1] == 0:
        raise InputError(f"{uri}: no valid pixel in the scene: cannot compute its statistics")
    return pixels


def decimated_pixels(uri: str, bands: Sequence[int], max_px: int = SCENE_STATS_MAX_PX) -> np.ndarray:
    """(C, N) float64 valid pixels of a GeoTIFF scene from one decimated read (overviews when the file has
    them), never a full-resolution read of a large scene. Valid = finite, not the nodata tag, inside the mask.
    No valid pixel is an InputError naming the scene."""
    with open_raster(uri) as src:
        step = max(1, -(-max(src.width, src.height) // max_px))
        shape = (max(1, src.height // step), max(1, src.width // step))
        try:
            data = read_decimated(src, list(bands), shape)
            valid = np.ones(shape, dtype=bool)
            if any(MaskFlags.per_dataset in src.mask_flag_enums[b - 1] for b in bands):
                valid &= read_decimated(src, list(bands), shape, masks=True)[0] > 0
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise InputError(f"cannot read scene statistics of {uri}: {exc}") from exc
        for i, band in enumerate(bands):
            nodata = src.nodatavals[band - 1]
            if nodata is not None and not np.isnan(nodata):
                valid &= data[i] != np.asarray(nodata).astype(data.dtype)
    data = data.astype(np.float64)
    valid &= np.isfinite(data).all(axis=0)
    return _valid_pixels(data[:, valid], uri)


def scene_stats(uri: str, bands: Sequence[int], max_px: int = SCENE_STATS_MAX_PX) -> tuple[list[float], list[float]]:
    """Robust per-band statistics (median, IQR/1.349) of a GeoTIFF scene (`decimated_pixels`)."""
    return robust_stats(decimated_pixels(uri, bands, max_px))


def otsu_thresholds(pixels: np.ndarray) -> list[float]:
    """(C, N) valid pixel values -> per-band global Otsu threshold (the `norm=otsu` anchor)."""
    if pixels.ndim != 2 or pixels.shape[1] == 0:
        raise InputError("no valid pixel in the scene: cannot compute its Otsu thresholds")
    return [otsu_threshold(band) for band in pixels]


def scene_thresholds(uri: str, bands: Sequence[int], max_px: int = SCENE_STATS_MAX_PX) -> list[float]:
    """Per-band Otsu thresholds of a GeoTIFF scene (`decimated_pixels`): the same for every tile."""
    return otsu_thresholds(decimated_pixels(uri, bands, max_px))


@dataclass(frozen=True)
class SceneMeasures:
    """What the per-scene rules use of one scene, from one decimated read (`measure_scene`): the robust
    statistics (`norm=scene`) and the per-band Otsu thresholds (`norm=otsu`, the Otsu gate), each `None` when
    not asked for or when the scene has no valid pixel (`error` then says why)."""

    stats: tuple[list[float], list[float]] | None = None
    thresholds: list[float] | None = None
    error: str = ""


def scene_measures_needed(norm: str, gate: str) -> tuple[bool, bool]:
    """(robust statistics, Otsu thresholds): what a checkpoint with `norm` and `gate` needs of each scene."""
    return norm == "scene", norm == "otsu" or gate not in NO_GATE


def measure_scene(
    uri: str, bands: Sequence[int], *, stats: bool, thresholds: bool, max_px: int = SCENE_STATS_MAX_PX
) -> SceneMeasures:
    """`SceneMeasures` of a GeoTIFF scene: one `decimated_pixels` read serves both, and none is made when
    neither is asked for. A scene without a valid pixel, or whose decimated read fails, gives an empty
    result with its `error` (the caller decides the fallback; such a scene's tiles fail or are nodata)."""
    if not (stats or thresholds):
        return SceneMeasures()
    try:
        pixels = decimated_pixels(uri, bands, max_px)
    except InputError as exc:
        return SceneMeasures(error=str(exc))
    return SceneMeasures(robust_stats(pixels) if stats else None, otsu_thresholds(pixels) if thresholds else None)


def sample_pixels(ref: SampleRef, max_px: int = SCENE_STATS_MAX_PX) -> np.ndarray:
    """`decimated_pixels` of a training/evaluation sample: the chip is the scene (SNOWED arrays by strided
    view, PNG chips whole: they are small)."""
    if ref.kind == "png":
        image, valid, _ = read_sample(ref)
        return _valid_pixels(image[:, valid].astype(np.float64), ref.image_uri)
    if ref.kind != "npy":
        return decimated_pixels(ref.image_uri, ref.bands, max_px)
    step = max(1, -(-max(ref.width, ref.height) // max_px))
    arr = np.load(ref.image_uri, mmap_mode="r", allow_pickle=False)
    data = np.asarray(arr[::step, ::step][:, :, [b - 1 for b in ref.bands]], dtype=np.float64)
    pixels = np.moveaxis(data, -1, 0).reshape(len(ref.bands), -1)
    return _valid_pixels(pixels[:, np.isfinite(pixels).all(axis=0)], ref.image_uri)


def sample_scene_stats(ref: SampleRef, max_px: int = SCENE_STATS_MAX_PX) -> tuple[list[float], list[float]]:
    """`scene_stats` of a training/evaluation sample."""
    return robust_stats(sample_pixels(ref, max_px))


def sample_stats(stats: NormStats, ref: SampleRef) -> NormStats:
    """The statistics one sample is normalised with under `stats.norm` (the sample is its own scene)."""
    if stats.norm == "scene":
        return stats.for_scene(*sample_scene_stats(ref))
    if stats.norm == "otsu":
        return stats.anchored(otsu_thresholds(sample_pixels(ref)))
    return stats


class NormSource(Protocol):
    """Anything carrying per-band statistics: a checkpoint (`rrsis.checkpoints.Checkpoint`) or `NormStats`."""

    norm_mean: list[float]
    norm_std: list[float]
    nodata_fill: float


class StatsSource(NormSource, Protocol):
    """A model's normalisation as stored with it (`rrsis.checkpoints.Checkpoint`): bands, split statistics, rule."""

    bands: list[str]
    norm: str


def normalize_image(stats: NormSource, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(C,H,W) raw values -> float32 (x - mean) / std per band; invalid or NaN pixels get `nodata_fill`.

    A scene-normalised checkpoint cannot normalise a tile by itself: pass `scene_norm(ckpt, uri, bands)`."""
    norm = getattr(stats, "norm", "split")
    if norm in SCENE_RULES:
        raise CheckpointError(f"this checkpoint normalises per scene (norm={norm}): use scene_norm(ckpt, uri, bands)")
    try:
        return apply_stats(
            stats.norm_mean, stats.norm_std, stats.nodata_fill, image, valid, getattr(stats, "anchor", None)
        )
    except InputError as exc:
        raise CheckpointError(str(exc)) from exc


def scene_norm(ckpt: StatsSource, uri: str, bands: list[int]) -> NormStats:
    """The statistics to normalise scene `uri` (1-based `bands`) with: the checkpoint's own for a "split"
    model, the scene's robust statistics (one decimated read, the same for every tile) for a "scene" one,
    the checkpoint's own anchored on the scene's Otsu thresholds (one decimated read) for an "otsu" one.
    A scene without statistics is an InputError naming it."""
    stats, thresholds = scene_measures_needed(ckpt.norm, "")
    measures = measure_scene(uri, bands, stats=stats, thresholds=thresholds)
    if measures.error:
        raise InputError(measures.error)
    return norm_for_scene(ckpt, measures)


def norm_for_scene(ckpt: StatsSource, measures: SceneMeasures) -> NormStats:
    """`scene_norm` from the scene's `measure_scene`; the training split's statistics when the scene has
    none (no valid pixel), or the checkpoint normalises by its split."""
    if ckpt.norm == "otsu" and measures.thresholds is not None:
        return split_norm(ckpt).anchored(measures.thresholds)
    if ckpt.norm == "scene" and measures.stats is not None:
        return NormStats(list(ckpt.bands), *measures.stats, float(ckpt.nodata_fill))
    return split_norm(ckpt)


def split_norm(ckpt: StatsSource) -> NormStats:
    """The training split's statistics stored in the checkpoint (every checkpoint has them, `norm=scene` too)."""
    return NormStats(list(ckpt.bands), list(ckpt.norm_mean), list(ckpt.norm_std), float(ckpt.nodata_fill))
