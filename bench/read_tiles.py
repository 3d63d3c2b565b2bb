"""Benchmark: our window read path vs a plain rasterio loop over the same windows of a big deflate GeoTIFF.

Generates a 10,000 x 10,000 x 3 uint8 deflate GeoTIFF (tiled 512) once, then reads every window of a
plan_tiles(512, overlap 64) plan both ways, alternating the order per round so caches favour neither.
Prints MB/s (decoded bytes) and the ratio ours / plain (goal >= 0.95).

    .venv/bin/python bench/read_tiles.py [--size 10000] [--rounds 2] [--dtype uint8|float32]
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

from rrsis.geo.raster import open_raster, read_window
from rrsis.geo.tiling import plan_tiles


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dtype", default="uint8")
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


if __name__ == "__main__":
    main()
