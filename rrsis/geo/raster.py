"""Raster I/O through rasterio/GDAL: open any URI, read one window with validity, write a mask tile.

Scenes are never read whole: the read path is `open_raster` once per scene/worker, then `read_window` per
tile. Remote rasters are read by GDAL itself (/vsis3/, /vsicurl/) with range requests, so only the blocks a
window touches cross the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.io import MemoryFile
from rasterio.windows import Window

from rrsis import storage
from rrsis.errors import InputError
from rrsis.geo.tiling import PixelWindow
from rrsis.geo.units import conversion_for_unit
from rrsis.geo.vrt import BandSource, build_stack_vrt, db_factors, is_vrt_xml, to_db, vrt_label, vrt_sources
from rrsis.geo.warp import has_gcps_only, warped_vrt_xml

# GDAL options for remote opens: no directory LIST and no sidecar probing on open (one GET per open instead
# of a LIST/HEAD storm; a remote scene must carry its mask internally, e.g. a COG, not in a .msk sidecar),
# and retries of transient HTTP errors. Local opens keep GDAL's defaults, so local .msk sidecars work.
_REMOTE_GDAL_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.vrt,.msk,.ovr,.jp2,.img",
}


@dataclass(frozen=True)
class RasterInfo:
    """What a planner needs to know about a scene, without reading pixels."""

    uri: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str
    transform: tuple[float, ...]
    nodata: float | None
    band_names: tuple[str, ...]
    res: tuple[float, float]


def gdal_path(uri: str) -> str:
    """The GDAL path for a URI: s3://b/k -> /vsis3/b/k, http(s):// -> /vsicurl/..., file:// -> path."""
    if is_vrt_xml(uri):
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return f"/vsis3/{parsed.netloc}{parsed.path}"
    if parsed.scheme in ("http", "https"):
        return f"/vsicurl/{uri}"
    if parsed.scheme in ("gs", "gcs"):
        return f"/vsigs/{parsed.netloc}{parsed.path}"
    if parsed.scheme == "file":
        return parsed.path
    return uri


def gdal_options(uri: str) -> dict[str, Any]:
    """GDAL config options for a URI; an S3-compatible endpoint comes from AWS_ENDPOINT_URL.

    A VRT given as XML text (a stack of per-band rasters) gets the options of every source it reads.
    """
    if is_vrt_xml(uri):
        options: dict[str, Any] = {}
        for path in vrt_sources(uri):
            options.update(_path_options(path))
        return options
    return _scheme_options(urlparse(uri).scheme)


def _path_options(path: str) -> dict[str, Any]:
    """Options for a GDAL path inside a VRT (/vsis3/..., /vsicurl/..., /vsigs/..., or a local path)."""
    for prefix, scheme in (("/vsis3/", "s3"), ("/vsicurl/", "https"), ("/vsigs/", "gs")):
        if path.startswith(prefix):
            return _scheme_options(scheme)
    return {}


def _scheme_options(scheme: str) -> dict[str, Any]:
    options: dict[str, Any] = dict(_REMOTE_GDAL_OPTIONS) if scheme not in ("", "file") else {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if scheme == "s3" and endpoint:
        parsed = urlparse(endpoint)
        options["AWS_S3_ENDPOINT"] = parsed.netloc or parsed.path
        options["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return options


def scene_label(uri: str) -> str:
    """How messages name a scene: its URI, or a short name for a VRT given as XML text."""
    return vrt_label(uri) if is_vrt_xml(uri) else uri


def stack_bands(sources: Sequence[BandSource], label: str) -> str:
    """A VRT (XML text, usable as a scene URI) stacking single-band rasters; see `rrsis.geo.vrt`."""
    paths = [gdal_path(s.uri) for s in sources]
    options: dict[str, Any] = {}
    for source in sources:
        options.update(gdal_options(source.uri))
    with rasterio.Env(**options):
        return build_stack_vrt(sources, label, paths)


@dataclass(frozen=True)
class Declared:
    """What a map config declares for plain rasters that do not say it themselves: the unit of their bands
    (`units`, "" = already the model's), a scale/offset for digital numbers, the CRS of GCPs that carry none
    (`gcp_crs`), and the grid GCP-only rasters are warped to (`gcp_warp_crs`, "" = UTM of the scene centre;
    `gcp_warp_res` in its units, 0 = native). STAC items use `units`, `scale` and `offset` where an asset
    declares none."""

    units: str = ""
    scale: float = 1.0
    offset: float = 0.0
    gcp_crs: str = ""
    gcp_warp_crs: str = ""
    gcp_warp_res: float = 0.0

    def conversion(self) -> str:
        return conversion_for_unit(self.units, "units") if self.units else "native"

    def rescales(self) -> bool:
        return self.scale != 1.0 or self.offset != 0.0

    def warps(self) -> bool:
        return bool(self.gcp_crs or self.gcp_warp_crs or self.gcp_warp_res)


def declared_scene(uri: str, declared: Declared) -> str:
    """The scene URI of a plain raster: `uri` itself when nothing is declared, else a VRT (XML text) that
    applies the declaration on read: a stack of the file's bands converted to the model's units (linear ->
    dB, value * scale + offset; `rrsis.geo.vrt`), or for a raster georeferenced only by GCPs a warped VRT
    (`rrsis.geo.warp`) on the declared grid, with `gcp_crs` for GCPs that carry no CRS. Opens the file once
    (header only); InputError, one line naming the file, when it cannot be opened or the declaration cannot
    apply."""
    convert = declared.conversion()
    if convert == "native" and not declared.rescales() and not declared.warps():
        return uri
    path = gdal_path(uri)
    with raster_env(uri):
        try:
            src = rasterio.open(path)
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise InputError(f"cannot open raster {uri}: {_first_line(exc)}") from exc
        with src:
            if has_gcps_only(src):
                if declared.rescales():
                    raise InputError(
                        f"raster {uri} is georeferenced by GCPs only: input_scale/input_offset cannot be applied "
                        "through its warped view; scale it first (e.g. gdal_translate -scale)"
                    )
                dst_crs = _crs_or_none(declared.gcp_warp_crs, "gcp_warp_crs")
                gcp_crs = _crs_or_none(declared.gcp_crs, "gcp_crs")
                res = declared.gcp_warp_res or None
                return warped_vrt_xml(src, path, dst_crs, res=res, gcp_crs=gcp_crs, convert=convert, label=uri)
            if convert == "native" and not declared.rescales():
                return uri
            names = [desc or "" for desc in src.descriptions]
    sources = [
        BandSource(name, uri, band=i + 1, convert=convert, scale=declared.scale, offset=declared.offset)
        for i, name in enumerate(names)
    ]
    return stack_bands(sources, uri)


def _crs_or_none(text: str, key: str) -> CRS | None:
    try:
        return CRS.from_user_input(text) if text else None
    except rasterio.errors.CRSError as exc:
        raise InputError(f"{key}: {text!r} is not a CRS: {_first_line(exc)}") from exc


def raster_env(uri: str) -> contextlib.AbstractContextManager[Any]:
    """A rasterio.Env carrying the GDAL options `uri` needs."""
    return rasterio.Env(**gdal_options(uri))


@contextlib.contextmanager
def open_raster(uri: str) -> Iterator[Any]:
    """Open a raster for reading; any failure becomes one InputError line naming the URI.

    A raster georeferenced only by GCPs is returned as a warped view on a north-up grid (`rrsis.geo.warp`).
    """
    with raster_env(uri):
        try:
            src = rasterio.open(gdal_path(uri))
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise InputError(f"cannot open raster {scene_label(uri)}: {_first_line(exc)}") from exc
        with src:
            if not has_gcps_only(src):
                yield src
                return
            try:
                view = rasterio.open(warped_vrt_xml(src, gdal_path(uri)))
            except (rasterio.errors.RasterioError, OSError) as exc:
                raise InputError(f"cannot warp GCP raster {scene_label(uri)}: {_first_line(exc)}") from exc
            with view:
                yield view


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _crs_text(crs: Any) -> str:
    if crs is None:
        return ""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def read_info(uri: str) -> RasterInfo:
    """Metadata only (plus one corner pixel, so a truncated file fails here rather than mid-run)."""
    with open_raster(uri) as src:
        try:
            src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise InputError(f"raster {scene_label(uri)} is corrupt or truncated: {_first_line(exc)}") from exc
        names = tuple(desc or "" for desc in src.descriptions)
        return RasterInfo(
            uri=uri,
            width=int(src.width),
            height=int(src.height),
            count=int(src.count),
            dtype=str(src.dtypes[0]),
            crs=_crs_text(src.crs),
            transform=tuple(float(v) for v in src.transform[:6]),
            nodata=None if src.nodata is None else float(src.nodata),
            band_names=names,
            res=(float(src.res[0]), float(src.res[1])),
        )


def resolve_bands(info: RasterInfo, bands: Sequence[str | int]) -> list[int]:
    """1-based band indexes from names (band descriptions, case-insensitive) or numbers; empty = all."""
    if not bands:
        return list(range(1, info.count + 1))
    by_name = {name.lower(): i + 1 for i, name in enumerate(info.band_names) if name}
    out = []
    for band in bands:
        key = str(band).strip()
        if key.lower() in by_name:
            out.append(by_name[key.lower()])
        elif key.isdigit() and 1 <= int(key) <= info.count:
            out.append(int(key))
        else:
            named = ", ".join(n for n in info.band_names if n) or "none"
            raise InputError(
                f"band {band!r} not in {scene_label(info.uri)}: it has bands 1..{info.count} (names: {named})"
            )
    return out


def _valid_mask(src: Any, data: np.ndarray, bands: Sequence[int], window: Window) -> np.ndarray:
    """Valid where every selected band is valid: dataset mask (.msk/alpha), nodata tag, and not NaN."""
    flags = [src.mask_flag_enums[b - 1] for b in bands]
    valid = np.ones(data.shape[1:], dtype=bool)
    if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
        valid &= src.read_masks(bands[0], window=window) > 0
    for i, band in enumerate(bands):
        nodata = src.nodatavals[band - 1]
        if nodata is not None and not np.isnan(nodata):
            valid &= data[i] != np.asarray(nodata).astype(data.dtype)
    if data.dtype.kind == "f":
        valid &= ~np.isnan(data).any(axis=0)
    return valid


def read_window(
    src: Any,
    window: PixelWindow,
    bands: Sequence[int] | None = None,
    out_dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Read one window (boundless) -> (array (C,H,W) in out_dtype, valid (H,W) bool).

    Pixels outside the scene are 0 and invalid. Only the part inside the scene is read from the file (no VRT
    for boundless reads), which keeps this as fast as a plain `src.read`. Bands of a stack VRT in linear power
    or amplitude become dB here (`rrsis.geo.vrt.to_db`; <= 0 becomes nodata). NaN values become 0 (and
    invalid) so a model never sees NaN; other nodata values are kept as they are and flagged invalid.
    """
    band_list = list(bands) if bands else list(range(1, src.count + 1))
    out = np.zeros((len(band_list), window.height, window.width), dtype=out_dtype)
    valid = np.zeros((window.height, window.width), dtype=bool)
    inside = window.intersection(PixelWindow(0, 0, src.width, src.height))
    if inside is None:
        return out, valid
    rio_window = Window(*inside.to_tuple())
    try:
        data = to_db(src.read(band_list, window=rio_window), db_factors(src, band_list))
        inner_valid = _valid_mask(src, data, band_list, rio_window)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise InputError(
            f"cannot read window {inside.to_tuple()} of {scene_label(src.name)}: {_first_line(exc)}"
        ) from exc
    if data.dtype.kind == "f":
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0, copy=False)
    rows, cols = inside.relative_to(window).slices()
    out[:, rows, cols] = data
    valid[rows, cols] = inner_valid
    return out, valid


def _block_px(height: int, width: int, preferred_px: int = 256) -> int:
    """Largest multiple of 16 (GeoTIFF rule) up to `preferred_px` that fits both sides; 0 = use strips."""
    return min(preferred_px, (min(height, width) // 16) * 16)


def encode_geotiff(
    array: np.ndarray,
    transform: Sequence[float],
    crs: str,
    *,
    nodata: float | None = None,
    block_px: int = 256,
) -> bytes:
    """A deflate GeoTIFF as bytes; same input gives the same bytes (GDAL writes no timestamp by default)."""
    data = array[None] if array.ndim == 2 else array
    if data.ndim != 3:
        raise InputError(f"mask tile must be (H,W) or (C,H,W), got shape {array.shape}")
    if data.dtype == bool:
        data = data.astype("uint8")
    count, height, width = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": str(data.dtype),
        "transform": Affine(*[float(v) for v in transform[:6]]),
        "compress": "deflate",
        "interleave": "band" if count > 1 else "pixel",
    }
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    block = _block_px(height, width, block_px)
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        return bytes(mem.read())


def write_mask_tile(
    uri: str,
    array: np.ndarray,
    transform: Sequence[float],
    crs: str,
    *,
    nodata: float | None = None,
) -> str:
    """Write a georeferenced (H,W) or (C,H,W) tile to `uri` atomically (local rename / one S3 PUT)."""
    storage.put_bytes(uri, encode_geotiff(array, transform, crs, nodata=nodata))
    return uri


def read_decimated(src: Any, bands: Sequence[int], out_shape: tuple[int, int], masks: bool = False) -> np.ndarray:
    """`bands` of the whole of `src` at `out_shape` (rows, cols), nearest, read one block at a time.

    One `src.read(out_shape=...)` of a file without overviews goes output row by output row, each touching a
    whole block row; when a block row does not fit GDAL's block cache (16 blocks of 2 MB already fill the
    32 MB rrsis sets: a scene of 8192 px in 512 px blocks) every block is decoded once per output row, i.e.
    dozens of times (86 s instead of ~2 s for that scene). Reading block by block decodes each block once,
    whatever the cache. `masks`: the GDAL validity mask of `bands[0]` instead (uint8, 0 = invalid).
    """
    from rasterio.enums import Resampling

    rows, cols = out_shape
    block_h, block_w = (max(1, int(v)) for v in src.block_shapes[0])
    # whole blocks per read, and at least one output pixel per read on each axis
    step_h = block_h * -(-max(block_h, -(-src.height // rows)) // block_h)
    step_w = block_w * -(-max(block_w, -(-src.width // cols)) // block_w)
    out = np.zeros((1 if masks else len(bands), rows, cols), dtype="uint8" if masks else src.dtypes[bands[0] - 1])
    for top in range(0, src.height, step_h):
        height = min(step_h, src.height - top)
        r0, r1 = round(top * rows / src.height), round((top + height) * rows / src.height)
        for left in range(0, src.width, step_w):
            width = min(step_w, src.width - left)
            c0, c1 = round(left * cols / src.width), round((left + width) * cols / src.width)
            if r1 <= r0 or c1 <= c0:
                continue
            window, shape = Window(left, top, width, height), (r1 - r0, c1 - c0)
            if masks:
                part = src.read_masks(bands[0], window=window, out_shape=shape, resampling=Resampling.nearest)[None]
            else:
                part = src.read(
                    list(bands), window=window, out_shape=(len(bands), *shape), resampling=Resampling.nearest
                )
            out[:, r0:r1, c0:c1] = part
    return out if masks else to_db(out, db_factors(src, bands))
