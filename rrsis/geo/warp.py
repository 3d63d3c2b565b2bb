"""Rasters georeferenced only by GCPs (e.g. Sentinel-1 GRD measurement TIFFs): read through a warped VRT.

A scene with GCPs and no geotransform cannot be tiled in pixel space with georeferenced outputs, so it is
seen through GDAL's warper (a VRTWarpedDataset with GDAL's GCP polynomial transformer) on a north-up grid: in the
UTM zone of the scene centre, at the pixel size GDAL suggests for the source (GDALSuggestedWarpOutput2, i.e.
the native pixel size), bilinear. The grid is a pure function of the GCPs, so every worker that opens the
scene computes the same grid and the outputs are georeferenced in that CRS.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform, transform

from rrsis.errors import InputError
from rrsis.geo.units import CONVERSIONS
from rrsis.geo.vrt import DB_FACTOR_KEY, DB_FACTORS, LABEL_KEY


def has_gcps_only(src: Any) -> bool:
    """True for a dataset with GCPs and no geotransform (GDAL reports the identity transform)."""
    gcps, _ = src.gcps
    return bool(gcps) and src.transform.is_identity and src.crs is None


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 UTM zone of a point (EPSG:326zz north, 327zz south)."""
    zone = min(60, max(1, int(np.floor((lon + 180.0) / 6.0)) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def gcp_centre(src: Any, gcp_crs: CRS | None = None) -> tuple[float, float]:
    """Longitude, latitude of the mean of the GCPs (their own CRS, else `gcp_crs`, else WGS 84)."""
    gcps, own_crs = src.gcps
    xs, ys = [g.x for g in gcps], [g.y for g in gcps]
    crs = own_crs or gcp_crs or CRS.from_epsg(4326)
    lon, lat = transform(crs, CRS.from_epsg(4326), [float(np.mean(xs))], [float(np.mean(ys))])
    return float(lon[0]), float(lat[0])


def _gdal_order(affine: Affine) -> str:
    return ",".join(repr(float(v)) for v in affine.to_gdal())


def warped_vrt_xml(
    src: Any,
    source_path: str,
    dst_crs: CRS | None = None,
    *,
    res: float | None = None,
    gcp_crs: CRS | None = None,
    convert: str = "native",
    label: str = "",
) -> str:
    """A GDAL VRTWarpedDataset (XML text) of `src` (GCPs only) on `dst_crs` (default: UTM of the GCP centre)
    at pixel size `res` in its units (default: the native pixel size); band descriptions and nodata carried
    over, float bands get NaN as nodata.

    `gcp_crs` is the CRS of GCPs that do not carry one (the file's own wins); without either, InputError.
    `convert` (`rrsis.geo.units.CONVERSIONS`): `power`/`amplitude` bands become Float32 and carry the dB
    factor that `rrsis.geo.raster.read_window` applies, as the bands of a stack VRT do. `label` names the
    scene in messages (`rrsis.geo.vrt.vrt_label`).

    rasterio's WarpedVRT cannot be used: it gives the warper the source's identity geotransform instead of
    its GCPs (rasterio 1.4), so the XML names GDAL's GCP transformer itself.
    """
    gcps, own_crs = src.gcps
    gcp_crs = own_crs or gcp_crs
    if gcp_crs is None:
        raise InputError(
            f"raster {label or source_path} has GCPs without a CRS: set gcp_crs (e.g. gcp_crs=EPSG:4326) to "
            "georeference it"
        )
    if convert not in CONVERSIONS:
        raise InputError(f"raster {label or source_path}: unknown conversion {convert!r} ({CONVERSIONS})")
    crs = dst_crs or utm_crs(*gcp_centre(src, gcp_crs))
    dst, width, height = calculate_default_transform(gcp_crs, crs, src.width, src.height, gcps=gcps, resolution=res)
    gcp_xml = "".join(
        f'<GCP Id={quoteattr(str(g.id or ""))} Pixel="{g.col!r}" Line="{g.row!r}" X="{g.x!r}" Y="{g.y!r}" '
        f'Z="{float(g.z or 0.0)!r}"/>'
        for g in gcps
    )
    bands, mapping = [], []
    for i in range(1, src.count + 1):
        nodata = src.nodatavals[i - 1]
        dtype = "float32" if convert in DB_FACTORS else src.dtypes[i - 1]
        floats = np.dtype(dtype).kind == "f"
        dst_nodata = float("nan") if floats and nodata is None else nodata
        desc = src.descriptions[i - 1]
        nd_xml = "" if dst_nodata is None else f"<NoDataValue>{dst_nodata!r}</NoDataValue>"
        name = f"<Description>{escape(desc)}</Description>" if desc else ""
        meta = ""
        if convert in DB_FACTORS:
            meta = f'<Metadata><MDI key="{DB_FACTOR_KEY}">{DB_FACTORS[convert]}</MDI></Metadata>'
        bands.append(
            f'<VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{i}" subClass="VRTWarpedRasterBand">'
            f"{name}{nd_xml}{meta}</VRTRasterBand>"
        )
        src_nd = "" if nodata is None else f"<SrcNoDataReal>{float(nodata)!r}</SrcNoDataReal>"
        dst_nd = "" if dst_nodata is None else f"<DstNoDataReal>{float(dst_nodata)!r}</DstNoDataReal>"
        mapping.append(f'<BandMapping src="{i}" dst="{i}">{src_nd}{dst_nd}</BandMapping>')
    label_xml = f"<Metadata><MDI key={quoteattr(LABEL_KEY)}>{escape(label)}</MDI></Metadata>" if label else ""
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}" subClass="VRTWarpedDataset">'
        f"<SRS>{escape(crs.to_wkt())}</SRS><GeoTransform>{_gdal_order(dst)}</GeoTransform>{label_xml}{''.join(bands)}"
        "<BlockXSize>512</BlockXSize><BlockYSize>128</BlockYSize><GDALWarpOptions>"
        "<WarpMemoryLimit>67108864</WarpMemoryLimit><ResampleAlg>Bilinear</ResampleAlg>"
        f'<WorkingDataType>Float64</WorkingDataType><Option name="INIT_DEST">NO_DATA</Option>'
        f'<SourceDataset relativeToVRT="0">{escape(source_path)}</SourceDataset>'
        "<Transformer><ApproxTransformer><MaxError>0.125</MaxError><BaseTransformer><GenImgProjTransformer>"
        "<SrcGCPTransformer><GCPTransformer><Order>0</Order><Reversed>0</Reversed>"
        f"<GCPList Projection={quoteattr(gcp_crs.to_wkt())}>{gcp_xml}</GCPList></GCPTransformer></SrcGCPTransformer>"
        f"<DstGeoTransform>{_gdal_order(dst)}</DstGeoTransform>"
        f"<DstInvGeoTransform>{_gdal_order(~dst)}</DstInvGeoTransform>"
        "<ReprojectTransformer><ReprojectionTransformer>"
        f"<SourceSRS>{escape(gcp_crs.to_wkt())}</SourceSRS><TargetSRS>{escape(crs.to_wkt())}</TargetSRS>"
        "</ReprojectionTransformer></ReprojectTransformer>"
        "</GenImgProjTransformer></BaseTransformer></ApproxTransformer></Transformer>"
        f"<BandList>{''.join(mapping)}</BandList></GDALWarpOptions></VRTDataset>"
    )


_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}
