"""Raster I/O: window reads equal numpy slices (local and /vsis3/ on moto), validity, bands, errors, writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from rrsis import storage
from rrsis.errors import InputError
from rrsis.geo.raster import gdal_path, open_raster, read_info, read_window, resolve_bands, write_mask_tile
from rrsis.geo.tiling import PixelWindow

TF = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 4100000.0)
H, W = 150, 170
WINDOWS = {
    "interior": PixelWindow(40, 30, 64, 64),
    "right_edge": PixelWindow(W - 20, 50, 64, 64),  # 20 columns inside, 44 padded
    "bottom_right_corner": PixelWindow(W - 10, H - 5, 32, 32),
    "top_left_negative": PixelWindow(-8, -4, 32, 32),
    "outside": PixelWindow(W + 5, 0, 16, 16),
}


def make_scene(path: Path, *, nodata: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(7)
    data = rng.integers(1, 60000, size=(3, H, W), dtype=np.uint16)
    profile = dict(
        driver="GTiff", width=W, height=H, count=3, dtype="uint16", crs="EPSG:32618", transform=TF,
        compress="deflate", tiled=True, blockxsize=64, blockysize=64, nodata=nodata,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("red", "green", "nir")
    return data


def expected_window(data: np.ndarray, win: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
    """Reference by padding the numpy array: pad, then slice (a different code path from ours)."""
    pad = 100
    padded = np.pad(data.astype("float32"), ((0, 0), (pad, pad), (pad, pad)))
    inside = np.pad(np.ones(data.shape[1:], bool), pad)
    rows = slice(win.row_off + pad, win.row_off + pad + win.height)
    cols = slice(win.col_off + pad, win.col_off + pad + win.width)
    return padded[:, rows, cols], inside[rows, cols]


def check_windows(uri: str, data: np.ndarray) -> None:
    with open_raster(uri) as src:
        for name, win in WINDOWS.items():
            arr, valid = read_window(src, win)
            want, want_valid = expected_window(data, win)
            assert arr.dtype == np.float32 and arr.shape == (3, win.height, win.width), name
            assert np.array_equal(arr, want), name
            assert np.array_equal(valid, want_valid), name


def test_window_reads_equal_numpy_slices_local(tmp_path: Path) -> None:
    path = tmp_path / "scene.tif"
    check_windows(str(path), make_scene(path))


def test_window_reads_equal_numpy_slices_through_s3(tmp_path: Path, s3_bucket: str) -> None:
    path = tmp_path / "scene.tif"
    data = make_scene(path)
    uri = f"s3://{s3_bucket}/scenes/scene.tif"
    storage.put_file(path, uri)
    assert gdal_path(uri) == f"/vsis3/{s3_bucket}/scenes/scene.tif"
    check_windows(uri, data)
    info = read_info(uri)
    assert (info.width, info.height, info.count, info.crs) == (W, H, 3, "EPSG:32618")


def test_band_selection_by_name_and_index(tmp_path: Path) -> None:
    path = tmp_path / "scene.tif"
    data = make_scene(path)
    info = read_info(str(path))
    assert info.band_names == ("red", "green", "nir")
    assert resolve_bands(info, ["NIR", "1"]) == [3, 1]
    assert resolve_bands(info, [2]) == [2]
    assert resolve_bands(info, []) == [1, 2, 3]
    with pytest.raises(InputError, match=r"'swir'.*bands 1\.\.3 \(names: red, green, nir\)"):
        resolve_bands(info, ["swir"])
    with open_raster(str(path)) as src:
        arr, _ = read_window(src, WINDOWS["interior"], bands=[3, 1], out_dtype="uint16")
    win = WINDOWS["interior"]
    assert np.array_equal(arr, data[[2, 0]][:, win.row_slice, win.col_slice])


def test_nodata_tag_marks_invalid(tmp_path: Path) -> None:
    path = tmp_path / "nd.tif"
    data = make_scene(path, nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.write(np.zeros((5, 5), np.uint16), 2, window=rasterio.windows.Window(40, 30, 5, 5))
    with open_raster(str(path)) as src:
        arr, valid = read_window(src, WINDOWS["interior"])
    # band 2 nodata on 5x5 at the window's corner -> exactly 25 invalid pixels, the rest valid
    assert (~valid).sum() == 25 and not valid[:5, :5].any()
    assert arr[0, 0, 0] == data[0, 30, 40]


def test_real_samples_mask_sidecar_and_nan(samples: Path) -> None:
    with open_raster(str(samples / "rasterio" / "RGB2.byte.tif")) as src:
        arr, valid = read_window(src, PixelWindow(0, 0, src.width, src.height), out_dtype="uint8")
        msk = src.read_masks(1) > 0
    assert np.array_equal(valid, msk) and 0.6 < valid.mean() < 0.7  # README: 67.4% valid
    s1 = next((samples / "sen1floods11" / "S1Hand").glob("Paraguay_34417*"))
    with open_raster(str(s1)) as src:
        arr, valid = read_window(src, PixelWindow(0, 0, 64, 64))
    assert not valid.any() and np.isfinite(arr).all()  # all-NaN chip: nothing valid, no NaN leaks


def test_missing_and_truncated_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.tif"):
        read_info(str(tmp_path / "nope.tif"))
    path = tmp_path / "scene.tif"
    make_scene(path)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.tif"):
        read_info(str(cut))


def test_write_mask_tile_georeferenced_deterministic(tmp_path: Path, s3_bucket: str) -> None:
    mask = (np.arange(48 * 40).reshape(48, 40) % 3).astype(np.uint8)
    tf = (10.0, 0.0, 600480.0, 0.0, -10.0, 4099700.0)
    a = write_mask_tile(str(tmp_path / "a" / "t.tif"), mask, tf, "EPSG:32618", nodata=255)
    b = write_mask_tile(f"s3://{s3_bucket}/m/t.tif", mask, tf, "EPSG:32618", nodata=255)
    assert storage.get_bytes(a) == storage.get_bytes(b)
    with rasterio.open(a) as src:
        assert src.read(1).tolist() == mask.tolist()
        assert tuple(src.transform)[:6] == tf and src.crs.to_epsg() == 32618 and src.nodata == 255
        assert src.compression.value == "DEFLATE" and src.block_shapes[0] == (32, 32)
    assert list(tmp_path.joinpath("a").iterdir()) == [tmp_path / "a" / "t.tif"]  # no temp file left behind
