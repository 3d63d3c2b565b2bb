"""Benchmark: our window read path vs a plain rasterio loop over the same windows of a big deflate GeoTIFF.

Generates a 10,000 x 10,000 x 3 uint8 deflate GeoTIFF (tiled 512) once, then reads every window of a
plan_tiles(512, overlap 64) plan both ways, alternating the order per round so caches favour neither.
Prints MB/s (decoded bytes) and the ratio ours / plain (goal >= 0.95).

Second row, in the same run: a 2-band float32 Sentinel-1-like scene read by our path from one stacked dB file
vs from the VRT that stacks two per-band COGs in linear power and converts them to dB on read
(`rrsis.geo.raster.stack_bands`), the same windows; ratio vrt / stacked (goal >= 0.85).

    .venv/bin/python bench/read_tiles.py [--size 10000] [--rounds 2] [--dtype uint8|float32] [--stack-size 4096]
"""

from __future__ import annotations

import argparse
import os

# A small GDAL block cache, so neither side reads the (300 MB decoded) scene from the other side's cache.
os.environ.setdefault("GDAL_CACHEMAX", "64")
import tempfile
import time

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from rrsis.geo.raster import open_raster, read_window, stack_bands
from rrsis.geo.tiling import plan_tiles
from rrsis.geo.vrt import BandSource


def make_scene(path: str, size_px: int) -> None:
    profile = dict(
        driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8", crs="EPSG:32618",
        transform=Affine(10, 0, 500000, 0, -10, 4200000), compress="deflate", tiled=True,
        blockxsize=512, blockysize=512,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size_px, 512):
            h = min(512, size_px - row)
            # smooth-ish content so deflate has something to do (pure noise would not compress)
            base = (np.arange(size_px)[None, :] // 7 + row // 7) % 256
            block = (base + rng.integers(0, 8, size=(3, h, size_px))).astype("uint8")
            dst.write(block, window=Window(0, row, size_px, h))


def run_plain(path: str, windows: list[Window], dtype: str) -> int:
    nbytes = 0
    with rasterio.open(path) as src:
        for win in windows:
            arr = src.read(window=win, boundless=False)
            if dtype != "uint8":
                arr = arr.astype(dtype)
            nbytes += arr.nbytes
    return nbytes


def run_ours(path: str, tiles: list, dtype: str) -> int:
    nbytes = 0
    with open_raster(path) as src:
        for tile in tiles:
            arr, _valid = read_window(src, tile.window, out_dtype=dtype)
            nbytes += arr.nbytes
    return nbytes


def make_s1_pair(folder: str, size_px: int) -> tuple[str, str]:
    """One stacked 2-band dB GeoTIFF and the VRT of the same bands as two linear-power COGs (same 512 px
    blocks, deflate, full-precision floats in both)."""
    rng = np.random.default_rng(1)
    base = dict(
        width=size_px, height=size_px, dtype="float32", crs="EPSG:32630", compress="deflate", nodata=float("nan"),
        transform=Affine(10, 0, 500000, 0, -10, 4200000),
    )  # fmt: skip
    stacked = os.path.join(folder, "s1_db.tif")
    cogs = {name: os.path.join(folder, f"{name}.tif") for name in ("VV", "VH")}
    with rasterio.open(
        stacked, "w", driver="GTiff", count=2, tiled=True, blockxsize=512, blockysize=512, **base
    ) as dst:
        dst.descriptions = ("VV", "VH")
        for row in range(0, size_px, 512):
            h = min(512, size_px - row)
            yy = np.arange(row, row + h)[:, None] / 300.0
            xx = np.arange(size_px)[None, :] / 300.0
            smooth = np.sin(xx) * np.cos(yy) * 6.0 - 14.0  # dB, then multiplicative speckle (gamma, 4 looks)
            block = np.stack([smooth + 10.0 * np.log10(rng.gamma(4.0, 0.25, (h, size_px))) for _ in range(2)])
            dst.write(block.astype("float32"), window=Window(0, row, size_px, h))
    with rasterio.open(stacked) as src:
        for i, name in enumerate(("VV", "VH")):
            with rasterio.open(cogs[name], "w", driver="COG", count=1, blocksize=512, **base) as dst:
                dst.write(np.power(10.0, src.read(i + 1) / 10.0).astype("float32"), 1)
    vrt = stack_bands([BandSource(name, uri, convert="power") for name, uri in cogs.items()], "bench")
    return stacked, vrt


def stack_row(folder: str, size_px: int, rounds: int) -> None:
    """Our read path over every window: one stacked dB file vs the VRT of per-band linear COGs."""
    t0 = time.perf_counter()
    sources = dict(zip(("stacked", "vrt"), make_s1_pair(folder, size_px), strict=True))
    print(f"generated {size_px}x{size_px}x2 float32 stacked dB file + 2 linear COGs in {time.perf_counter() - t0:.1f}s")
    tiles = plan_tiles(size_px, size_px, 512, 64)
    times = {"stacked": 0.0, "vrt": 0.0}
    nbytes = {"stacked": 0, "vrt": 0}
    for r in range(rounds):
        for name in ["stacked", "vrt"] if r % 2 == 0 else ["vrt", "stacked"]:
            t = time.perf_counter()
            nbytes[name] += run_ours(sources[name], tiles, "float32")
            times[name] += time.perf_counter() - t
    for name in ("stacked", "vrt"):
        print(f"{name:7s}: {len(tiles)} windows x {rounds} rounds, {nbytes[name] / 1e6:.0f} MB "
              f"in {times[name]:.2f}s = {nbytes[name] / 1e6 / times[name]:.1f} MB/s")  # fmt: skip
    ratio = (nbytes["vrt"] / times["vrt"]) / (nbytes["stacked"] / times["stacked"])
    print(f"ratio vrt(per-band linear COGs -> dB)/stacked dB file throughput = {ratio:.3f} (goal >= 0.85)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dtype", default="uint8")
    parser.add_argument("--stack-size", type=int, default=4096, help="side of the S1 stack row's scene (0 = skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scene.tif")
        t0 = time.perf_counter()
        make_scene(path, args.size)
        print(f"generated {args.size}x{args.size}x3 deflate GeoTIFF ({os.path.getsize(path) / 1e6:.0f} MB on disk) "
              f"in {time.perf_counter() - t0:.1f}s")  # fmt: skip
        tiles = plan_tiles(args.size, args.size, 512, 64)
        # the plain loop reads the same pixels (windows clipped to the scene, as ours reads them)
        windows = [Window(*t.window.to_tuple()) for t in tiles]
        times = {"plain": 0.0, "ours": 0.0}
        nbytes = {"plain": 0, "ours": 0}
        for r in range(args.rounds):
            order = ["plain", "ours"] if r % 2 == 0 else ["ours", "plain"]
            for name in order:
                t = time.perf_counter()
                n = run_plain(path, windows, args.dtype) if name == "plain" else run_ours(path, tiles, args.dtype)
                times[name] += time.perf_counter() - t
                nbytes[name] += n
        for name in ("plain", "ours"):
            print(f"{name:5s}: {len(tiles)} windows x {args.rounds} rounds, {nbytes[name] / 1e6:.0f} MB "
                  f"in {times[name]:.2f}s = {nbytes[name] / 1e6 / times[name]:.1f} MB/s")  # fmt: skip
        ratio = (nbytes["ours"] / times["ours"]) / (nbytes["plain"] / times["plain"])
        print(f"ratio ours/plain throughput = {ratio:.3f} (goal >= 0.95), dtype={args.dtype}")
        if args.stack_size:
            stack_row(tmp, args.stack_size, args.rounds)


if __name__ == "__main__":
    main()
