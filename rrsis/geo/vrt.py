"""One scene from several single-band rasters: a GDAL VRT (XML text, never a copied raster) that stacks them.

The scene grid is the finest band's grid (smallest pixel area; the first such band on a tie); coarser bands
are resampled on read by GDAL (bilinear). Every band of the stack is Float32 with NaN as nodata, named by
its band name (the band description, so `resolve_bands` finds it by name), and converted on read:

- `native`: `value * scale + offset` (`ComplexSource` `ScaleRatio`/`ScaleOffset`), e.g. Sentinel-2 L2A
  digital numbers -> reflectance (scale 1e-4, offset -0.1 from processing baseline 04.00).
- `power` (linear backscatter, gamma0/sigma0) -> dB as 10·log10(x); `amplitude` -> dB as 20·log10(x); values
  <= 0 and nodata become NaN (nodata). The band reads linear values from GDAL and carries the factor in its
  metadata (`RRSIS_DB_FACTOR`); `rrsis.geo.raster.read_window` / `read_decimated` (every reader of scene
  pixels: tiles, quicklooks, scene statistics) apply it with numpy. GDAL 3.10 (rasterio 1.4's) has a `dB`
  pixel function, but it computes fact·log10(|x|) (a negative value becomes a finite dB, a nodata value a
  number) and a derived band made the windowed read 5-10x slower than the stacked file here (numpy's cost is
  in `bench/read_tiles.py`'s second row).

The XML is the scene's URI: `open_raster`/`read_info`/`read_window` open it like a file on any worker, the
run id hashes it (item id, asset hrefs, grid), and nothing has to be written next to read-only inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr, unescape

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import MaskFlags

from rrsis.errors import InputError
from rrsis.geo.units import CONVERSIONS

VRT_PREFIX = "<VRTDataset"
LABEL_KEY = "RRSIS_SCENE"

DB_FACTOR_KEY = "RRSIS_DB_FACTOR"  # no colon: GDAL splits metadata items at ":" as at "="
DB_FACTORS = {"power": 10, "amplitude": 20}
_SOURCE_RE = re.compile(r"<(SourceFilename|SourceDataset)[^>]*>([^<]*)</\1>")  # stacked and warped VRTs
_LABEL_RE = re.compile(r"<MDI key=\"RRSIS_SCENE\">([^<]*)</MDI>")


@dataclass(frozen=True)
class BandSource:
    """One band of a stack: `uri` (local, s3://, http(s)://, or a GDAL path) band `band`, named `name`.

    `convert` is one of CONVERSIONS; `scale`/`offset` apply to `native` bands; `nodata` overrides the
    file's nodata tag (None = the file's tag, if any).
    """

    name: str
    uri: str
    band: int = 1
    convert: str = "native"
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


def is_vrt_xml(uri: str) -> bool:
    return uri.lstrip().startswith(VRT_PREFIX)


def vrt_sources(xml: str) -> list[str]:
    """The GDAL paths the VRT reads (for the GDAL options remote sources need)."""
    return [unescape(m.group(2)) for m in _SOURCE_RE.finditer(xml)]


def vrt_label(xml: str) -> str:
    """A short name for a VRT scene in messages: "stack"/"warped" and its `RRSIS_SCENE` metadata."""
    found = _LABEL_RE.search(xml)
    kind = "warped" if 'subClass="VRTWarpedDataset"' in xml[:200] else "stack"
    return f"{kind} {unescape(found.group(1))}" if found else f"VRT {kind}"


@dataclass(frozen=True)
class _Grid:
    width: int
    height: int
    transform: tuple[float, ...]
    crs: Any
    dtype: str
    nodata: float | None
    masked: bool  # an internal/sidecar per-dataset mask and no nodata tag


def _read_grid(source: BandSource, gdal_path: str, label: str) -> _Grid:
    try:
        with rasterio.open(gdal_path) as src:
            if not 1 <= source.band <= src.count:
                raise InputError(
                    f"{label}: band {source.name}: {source.uri} has no band {source.band} (1..{src.count})"
                )
            flags = src.mask_flag_enums[source.band - 1]
            nodata = src.nodatavals[source.band - 1]
            return _Grid(
                int(src.width),
                int(src.height),
                tuple(float(v) for v in src.transform[:6]),
                src.crs,
                str(src.dtypes[source.band - 1]),
                None if nodata is None else float(nodata),
                MaskFlags.per_dataset in flags and nodata is None,
            )
    except (rasterio.errors.RasterioError, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise InputError(f"{label}: band {source.name}: cannot open {source.uri}: {text[0] if text else exc}") from exc


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _rect_value(value: float) -> str:
    """An integer when the value is one (GDAL then copies without resampling), else the exact float."""
    return str(round(value)) if abs(value - round(value)) < 1e-9 else repr(value)


def _source_xml(source: BandSource, path: str, grid: _Grid, scene: _Grid) -> str:
    """A source placing `grid`'s pixels on `scene`'s grid (a SrcRect of another size = resampled on read).

    A `SimpleSource` when nothing but placement is needed (GDAL's fast path: a float band's NaN nodata reads
    as the stack's NaN nodata by itself), else a `ComplexSource` with NODATA / mask / scale and offset.
    """
    a, _, c, _, e, f = grid.transform
    sa, _, sc, _, se, sf = scene.transform
    rect = [(sc - c) / a, (sf - f) / e, scene.width * sa / a, scene.height * se / e]
    x_off, y_off, x_size, y_size = (_rect_value(v) for v in rect)
    resampled = (x_size, y_size) != (str(scene.width), str(scene.height))
    nodata = source.nodata if source.nodata is not None else grid.nodata
    extra = []
    if nodata is not None and not math.isnan(nodata):
        extra.append(f"<NODATA>{_fmt(nodata)}</NODATA>")
    elif grid.masked:
        extra.append("<UseMaskBand>true</UseMaskBand>")
    if source.scale != 1.0 or source.offset != 0.0:
        extra.append(f"<ScaleOffset>{_fmt(source.offset)}</ScaleOffset><ScaleRatio>{_fmt(source.scale)}</ScaleRatio>")
    kind = "ComplexSource" if extra else "SimpleSource"
    return "".join(
        [
            f'<{kind} resampling="bilinear">' if resampled else f"<{kind}>",
            f'<SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>',
            f"<SourceBand>{source.band}</SourceBand>",
            f'<SrcRect xOff="{x_off}" yOff="{y_off}" xSize="{x_size}" ySize="{y_size}"/>',
            f'<DstRect xOff="0" yOff="0" xSize="{scene.width}" ySize="{scene.height}"/>',
            *extra,
            f"</{kind}>",
        ]
    )


def _band_xml(index: int, source: BandSource, body: str) -> str:
    desc = f"<Description>{escape(source.name)}</Description><NoDataValue>nan</NoDataValue>"
    meta = ""
    if source.convert in DB_FACTORS:
        meta = f'<Metadata><MDI key="{DB_FACTOR_KEY}">{DB_FACTORS[source.convert]}</MDI></Metadata>'
    return f'<VRTRasterBand dataType="Float32" band="{index}">{desc}{meta}{body}</VRTRasterBand>'


def db_factors(src: Any, bands: Sequence[int]) -> list[float]:
    """Per band of `bands`, the dB factor (10 power, 20 amplitude) its values need, 0 for none."""
    return [float(src.tags(b).get(DB_FACTOR_KEY, 0) or 0) for b in bands]


def to_db(data: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """In place on float `data` (C, ...): band c -> factor·log10(x) where factor > 0; x <= 0 and NaN -> NaN.

    Through the natural log (numpy vectorises float32 `log`, not `log10`: 3.5x faster here), within 1e-5 dB.
    """
    for band, factor in zip(data, factors, strict=True):
        if factor:
            with np.errstate(divide="ignore", invalid="ignore"):
                np.log(band, out=band)
                band *= band.dtype.type(factor / math.log(10.0))
            band[band == -np.inf] = np.nan  # log(0); log(x < 0) is NaN already
    return data


def _crs_name(crs: Any) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else "a custom CRS"


def _gdal_geotransform(affine: Sequence[float]) -> tuple[float, ...]:
    """rasterio's (a, b, c, d, e, f) -> GDAL's (c, a, b, f, d, e)."""
    a, b, c, d, e, f = affine[:6]
    return (c, a, b, f, d, e)


def build_stack_vrt(sources: Sequence[BandSource], label: str, gdal_paths: Sequence[str]) -> str:
    """The VRT XML stacking `sources` (GDAL paths in `gdal_paths`, opened inside the caller's GDAL env).

    InputError (one line, naming `label`) when a band cannot be opened, the bands do not share one CRS, a
    grid is rotated, or a conversion is unknown.
    """
    if not sources:
        raise InputError(f"{label}: no band to stack")
    for source in sources:
        if source.convert not in CONVERSIONS:
            raise InputError(f"{label}: band {source.name}: unknown conversion {source.convert!r} ({CONVERSIONS})")
    grids = [_read_grid(s, p, label) for s, p in zip(sources, gdal_paths, strict=True)]
    for source, grid in zip(sources, grids, strict=True):
        if grid.crs is None:
            raise InputError(
                f"{label}: band {source.name} has no CRS (GCPs only?): only georeferenced bands can be stacked"
            )
    crs_names = {_crs_name(g.crs) for g in grids}
    if len(crs_names) > 1 or any(g.crs != grids[0].crs for g in grids):
        listing = ", ".join(f"{s.name} {_crs_name(g.crs)}" for s, g in zip(sources, grids, strict=True))
        raise InputError(f"{label}: bands in different CRS cannot be stacked ({listing})")
    for source, grid in zip(sources, grids, strict=True):
        if grid.transform[1] != 0.0 or grid.transform[3] != 0.0:
            raise InputError(f"{label}: band {source.name} has a rotated grid; only north-up grids can be stacked")
    finest = min(range(len(grids)), key=lambda i: abs(grids[i].transform[0] * grids[i].transform[4]))
    scene = grids[finest]
    crs = scene.crs.to_wkt() if scene.crs is not None else ""
    bands = [
        _band_xml(i + 1, s, _source_xml(s, p, g, scene))
        for i, (s, p, g) in enumerate(zip(sources, gdal_paths, grids, strict=True))
    ]
    return (
        f'<VRTDataset rasterXSize="{scene.width}" rasterYSize="{scene.height}">'
        f"<SRS>{escape(crs)}</SRS>"
        f"<GeoTransform>{', '.join(repr(v) for v in _gdal_geotransform(scene.transform))}</GeoTransform>"
        f"<Metadata><MDI key={quoteattr(LABEL_KEY)}>{escape(label)}</MDI></Metadata>"
        f"{''.join(bands)}</VRTDataset>"
    )
