"""Image/label sample references and windowed reads, shared by every water-land dataset format.

A `SampleRef` is plain data (paths, band indexes, size, group): datasets, samplers and splits pass these
around and only `read_sample(ref, window)` touches pixels, one window at a time, so a large scene is never
read whole. Two storage kinds are supported: GeoTIFF pairs (read by rasterio windows, any URI GDAL reads) and
SNOWED's `.npy` arrays (memory-mapped, bands last), and 8-bit single-band PNG pairs (OMBRIA, small chips without
georeferencing: decoded whole by Pillow, then windowed like the others).

Label convention everywhere after reading: int64, 1 = water, 0 = land, -1 = ignore. A label pixel is also
set to -1 where the image is invalid (nodata tag, NaN, dataset mask), so losses and metrics see one mask.
The generic GeoTIFF pair format (`data.format=geotiff_pairs`) is `<root>/images/<name>.tif` with
`<root>/labels/<name>.tif`: label 0 land, 1 water, its nodata tag (if any) or -1 ignore.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis.errors import InputError
from rrsis.geo.raster import open_raster, read_info, read_window, resolve_bands
from rrsis.geo.tiling import PixelWindow


@dataclass(frozen=True)
class SampleRef:
    """One image/label pair: where it is, which bands to read (1-based), its size and split group."""

    sample_id: str
    group: str  # Sen1Floods11 event, SNOWED sample folder, pair stem: what splits hold out together
    image_uri: str
    label_uri: str
    bands: tuple[int, ...]
    width: int
    height: int
    kind: str = "geotiff"  # "geotiff", "npy" (SNOWED: (H, W, bands) + (H, W) arrays) or "png" (8-bit, 1 band)
    water_value: int = 1  # label value meaning water in the file (0 is land, anything else ignored if -1)

    @property
    def full_window(self) -> PixelWindow:
        return PixelWindow(0, 0, self.width, self.height)


def _check_label(label: np.ndarray, nodata: float | None, uri: str, water_value: int) -> np.ndarray:
    """File label values -> -1/0/1; any value that is not land, water, -1 or the nodata tag is an error."""
    out = np.full(label.shape, -1, dtype=np.int64)
    out[label == 0] = 0
    out[label == water_value] = 1
    known = (label == 0) | (label == water_value) | (label == -1)
    if nodata is not None and not np.isnan(nodata):
        known |= label == nodata
    if not known.all():
        bad = [int(v) if float(v).is_integer() else float(v) for v in np.unique(label[~known])[:5]]
        raise InputError(f"label {uri} has values {bad} besides 0 (land), {water_value} (water), -1 / nodata")
    return out


def _read_geotiff(ref: SampleRef, window: PixelWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with open_raster(ref.image_uri) as src:
        image, valid = read_window(src, window, ref.bands)
    with open_raster(ref.label_uri) as src:
        if (src.width, src.height) != (ref.width, ref.height):
            raise InputError(
                f"label {ref.label_uri} is {src.width}x{src.height} px but its image {ref.image_uri} is "
                f"{ref.width}x{ref.height}"
            )
        raw, label_valid = read_window(src, window, [1], out_dtype="float64")
        label = _check_label(raw[0], src.nodata, ref.label_uri, ref.water_value)
    label[~label_valid] = -1
    return image, valid, label


def _load_npy(uri: str) -> np.ndarray:
    try:
        return np.load(uri, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {uri}: {exc}") from exc


def _blank(bands: int, window: PixelWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A boundless read's start: image 0, nothing valid, label -1 (ignored) over the whole window."""
    image = np.zeros((bands, window.height, window.width), dtype=np.float32)
    valid = np.zeros((window.height, window.width), dtype=bool)
    label = np.full((window.height, window.width), -1, dtype=np.int64)
    return image, valid, label


def _overlap(ref: SampleRef, window: PixelWindow) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """(slices in the window, slices in the array) of the part of `window` inside the sample; None outside."""
    inside = window.intersection(ref.full_window)
    if inside is None:
        return None
    return inside.relative_to(window).slices(), inside.slices()


def _read_npy(ref: SampleRef, window: PixelWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SNOWED arrays, boundless like the GeoTIFF path: outside the array is invalid and 0."""
    arr, lab = _load_npy(ref.image_uri), _load_npy(ref.label_uri)
    image, valid, label = _blank(len(ref.bands), window)
    overlap = _overlap(ref, window)
    if overlap is None:
        return image, valid, label
    (rows, cols), (src_rows, src_cols) = overlap
    data = np.asarray(arr[src_rows, src_cols][:, :, [b - 1 for b in ref.bands]], dtype=np.float32)
    image[:, rows, cols] = np.moveaxis(data, -1, 0)
    finite = np.isfinite(image[:, rows, cols]).all(axis=0)
    valid[rows, cols] = finite
    image[~np.isfinite(image)] = 0.0
    label[rows, cols] = _check_label(np.asarray(lab[src_rows, src_cols]), None, ref.label_uri, ref.water_value)
    return image, valid, label


def load_png(uri: str) -> np.ndarray:
    """(H, W) uint8 of a single-band 8-bit PNG; unreadable, truncated or not 1-band 8-bit names the file."""
    try:
        with Image.open(uri) as img:
            img.load()
            if img.mode != "L":
                raise InputError(f"{uri}: expected a 1-band 8-bit PNG (mode L), got mode {img.mode}")
            return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow: OSError truncated/unknown, SyntaxError bad chunk
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot read PNG {uri}: {first}") from exc


def _read_png(ref: SampleRef, window: PixelWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit PNG pair, boundless like the GeoTIFF path. The image's digital numbers are returned as float32
    unchanged: what they mean (OMBRIA: a per-image stretch of dB) is the reader's and the normalisation's
    business (`rrsis.data.ombria`). Every decoded pixel is valid; the label's `water_value` is water."""
    arr, lab = load_png(ref.image_uri), load_png(ref.label_uri)
    for uri, shape in ((ref.image_uri, arr.shape), (ref.label_uri, lab.shape)):
        if shape != (ref.height, ref.width):
            raise InputError(f"{uri} is {shape[1]}x{shape[0]} px, expected {ref.width}x{ref.height}")
    image, valid, label = _blank(1, window)
    overlap = _overlap(ref, window)
    if overlap is None:
        return image, valid, label
    (rows, cols), (src_rows, src_cols) = overlap
    image[0, rows, cols] = arr[src_rows, src_cols]
    valid[rows, cols] = True
    label[rows, cols] = _check_label(lab[src_rows, src_cols].astype(np.int64), None, ref.label_uri, ref.water_value)
    return image, valid, label


_READERS = {"geotiff": _read_geotiff, "npy": _read_npy, "png": _read_png}


def read_sample(ref: SampleRef, window: PixelWindow | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one window -> (image float32 (C,H,W) with invalid pixels 0, valid bool (H,W), label int64 (H,W))."""
    win = window or ref.full_window
    image, valid, label = _READERS[ref.kind](ref, win)
    label[~valid] = -1
    return image, valid, label


def iter_blocks(width: int, height: int, block_px: int = 1024) -> Iterator[PixelWindow]:
    """Non-overlapping windows covering a raster, so whole-sample passes never hold a whole scene."""
    for row in range(0, height, block_px):
        for col in range(0, width, block_px):
            yield PixelWindow(col, row, min(block_px, width - col), min(block_px, height - row))


def geotiff_ref(sample_id: str, group: str, image_uri: str, label_uri: str, bands: Sequence[str | int]) -> SampleRef:
    """A GeoTIFF pair, checked for readability, band names and matching size (one line naming the file)."""
    info = read_info(image_uri)
    label_info = read_info(label_uri)
    if (label_info.width, label_info.height) != (info.width, info.height):
        raise InputError(
            f"label {label_uri} is {label_info.width}x{label_info.height} px but its image {image_uri} is "
            f"{info.width}x{info.height}"
        )
    return SampleRef(
        sample_id=sample_id,
        group=group,
        image_uri=image_uri,
        label_uri=label_uri,
        bands=tuple(resolve_bands(info, bands)),
        width=info.width,
        height=info.height,
    )


def find_geotiff_pairs(root: str, bands: Sequence[str | int]) -> list[SampleRef]:
    """`<root>/images/*.tif` with same-named `<root>/labels/*.tif`; a missing label names the image."""
    images_dir, labels_dir = Path(root) / "images", Path(root) / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise InputError(f"data.root={root}: geotiff_pairs expects {images_dir} and {labels_dir} folders")
    refs = []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff")):
        label = labels_dir / image.name
        if not label.is_file():
            raise InputError(f"image {image} has no label {label}")
        refs.append(geotiff_ref(image.stem, image.stem, str(image), str(label), bands))
    if not refs:
        raise InputError(f"data.root={root}: no .tif images in {images_dir}")
    return refs
