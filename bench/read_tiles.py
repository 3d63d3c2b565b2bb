"""Benchmark: our window read path vs a plain rasterio loop over the same windows of a big deflate GeoTIFF.

Generates a 10,000 x 10,000 x 3 uint8 deflate GeoTIFF (tiled 512) once, then reads every window of a
plan_tiles(512, overlap 64) plan both ways, alternating the order per round so caches favour neither.
Prints MB/s (decoded bytes) and the ratio ours / plain (goal >= 0.95).

Second row, in the same run: a 2-band float32 Sentinel-1-like scene read by our path (`read_window`, the same
windows) from one stacked dB file vs from the VRTs (`rrsis.geo.raster.stack_bands`) of two per-band COGs, once
in dB (the VRT's own cost) and once in linear power converted to dB on read (what STAC RTC items need).
Alternating blocks of at least --block-s seconds; each VRT block against the mean of the stacked blocks
around it; every block printed (wall and CPU time), then the median ratio with its min-max spread, wall and
CPU, and the load average (goal >= 0.85). `--size 0` runs the second row only.

    .venv/bin/python bench/read_tiles.py [--size 10000] [--rounds 2] [--dtype uint8|float32] [--stack-size 4096]
        [--stack-rounds 5] [--block-s 10]
"""

from __future__ import annotations

import argparse
import os
import statistics

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


def make_s1_sources(folder: str, size_px: int) -> dict[str, str]:
    """One stacked 2-band dB GeoTIFF, and the same bands as per-band COGs twice: in dB and in linear power
    (same 512 px blocks, deflate, full-precision floats everywhere) -> {"stacked", "vrt_db", "vrt_linear"}.
    `vrt_db` is the VRT's own cost; `vrt_linear` adds the linear -> dB conversion (numpy, in read_window)."""
    rng = np.random.default_rng(1)
    base = dict(
        width=size_px, height=size_px, dtype="float32", crs="EPSG:32630", compress="deflate", nodata=float("nan"),
        transform=Affine(10, 0, 500000, 0, -10, 4200000),
    )  # fmt: skip
    stacked = os.path.join(folder, "s1_db.tif")
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
    out = {"stacked": stacked}
    with rasterio.open(stacked) as src:
        for kind, convert in (("db", "native"), ("linear", "power")):
            sources = []
            for i, name in enumerate(("VV", "VH")):
                path = os.path.join(folder, f"{name}_{kind}.tif")
                data = src.read(i + 1)
                with rasterio.open(path, "w", driver="COG", count=1, blocksize=512, **base) as dst:
                    dst.write(np.power(10.0, data / 10.0).astype("float32") if kind == "linear" else data, 1)
                sources.append(BandSource(name, path, convert=convert))
            out[f"vrt_{kind}"] = stack_bands(sources, f"bench-{kind}")
    return out


def timed_block(uri: str, tiles: list, block_s: float) -> tuple[float, float, float]:
    """(MB decoded, wall s, CPU s) of whole passes of our read path over `tiles` for at least `block_s`."""
    nbytes, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        nbytes += run_ours(uri, tiles, "float32")
        if time.perf_counter() - wall0 >= block_s:
            return nbytes / 1e6, time.perf_counter() - wall0, time.process_time() - cpu0


def stack_row(folder: str, size_px: int, rounds: int, block_s: float) -> None:
    """Our read path over every window: one stacked dB file vs the VRTs of per-band COGs (dB; linear -> dB).

    Alternating blocks: stacked, the two VRTs (their order swapped each round), stacked, ... (`rounds` VRT
    blocks each, rounds + 1 stacked blocks); each VRT block's throughput is divided by the mean of the two
    stacked blocks around it, so a load change on a shared machine shows in the spread, not in one figure.
    """
    t0 = time.perf_counter()
    sources = make_s1_sources(folder, size_px)
    seconds = time.perf_counter() - t0
    print(f"generated {size_px}x{size_px}x2 float32 stacked dB file + 2x2 per-band COGs in {seconds:.1f}s")
    tiles = plan_tiles(size_px, size_px, 512, 64)
    for uri in sources.values():  # warm the OS page cache and GDAL's open path once per source
        run_ours(uri, tiles, "float32")
    load = os.getloadavg()[0]
    stacked_blocks = [timed_block(sources["stacked"], tiles, block_s)]
    vrt_blocks: dict[str, list[tuple[float, float, float]]] = {"vrt_db": [], "vrt_linear": []}
    print(f"block  {'source':10s} {'MB':>7s} {'wall s':>7s} {'MB/s':>7s} {'cpu s':>7s} {'MB/cpu-s':>8s}")
    show = [("stacked", stacked_blocks[0])]
    for r in range(rounds):
        for name in ("vrt_db", "vrt_linear") if r % 2 == 0 else ("vrt_linear", "vrt_db"):
            vrt_blocks[name].append(timed_block(sources[name], tiles, block_s))
            show.append((name, vrt_blocks[name][-1]))
        stacked_blocks.append(timed_block(sources["stacked"], tiles, block_s))
        show.append(("stacked", stacked_blocks[-1]))
    for i, (name, (mb, wall, cpu)) in enumerate(show):
        print(f"{i:5d}  {name:10s} {mb:7.0f} {wall:7.2f} {mb / wall:7.1f} {cpu:7.2f} {mb / cpu:8.1f}")
    print(f"{len(tiles)} windows per pass, blocks of >= {block_s:.0f} s; load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)")  # fmt: skip
    for name, blocks in vrt_blocks.items():
        for label, col in (("wall", 1), ("cpu", 2)):
            ratios = []
            for r, block in enumerate(blocks):
                around = (stacked_blocks[r], stacked_blocks[r + 1])
                ratios.append((block[0] / block[col]) / statistics.mean(b[0] / b[col] for b in around))
            print(f"ratio {name}/stacked throughput ({label:4s}): median {statistics.median(ratios):.3f} "
                  f"[{min(ratios):.3f}-{max(ratios):.3f}] over {len(ratios)} blocks (goal >= 0.85)")  # fmt: skip


def plain_row(folder: str, size_px: int, rounds: int, dtype: str) -> None:
    """Our read path vs a plain rasterio loop over the same windows of a big deflate GeoTIFF."""
    path = os.path.join(folder, "scene.tif")
    t0 = time.perf_counter()
    make_scene(path, size_px)
    print(f"generated {size_px}x{size_px}x3 deflate GeoTIFF ({os.path.getsize(path) / 1e6:.0f} MB on disk) "
          f"in {time.perf_counter() - t0:.1f}s")  # fmt: skip
    tiles = plan_tiles(size_px, size_px, 512, 64)
    # the plain loop reads the same pixels (windows clipped to the scene, as ours reads them)
    windows = [Window(*t.window.to_tuple()) for t in tiles]
    times = {"plain": 0.0, "ours": 0.0}
    nbytes = {"plain": 0, "ours": 0}
    for r in range(rounds):
        for name in ["plain", "ours"] if r % 2 == 0 else ["ours", "plain"]:
            t = time.perf_counter()
            n = run_plain(path, windows, dtype) if name == "plain" else run_ours(path, tiles, dtype)
            times[name] += time.perf_counter() - t
            nbytes[name] += n
    for name in ("plain", "ours"):
        print(f"{name:5s}: {len(tiles)} windows x {rounds} rounds, {nbytes[name] / 1e6:.0f} MB "
              f"in {times[name]:.2f}s = {nbytes[name] / 1e6 / times[name]:.1f} MB/s")  # fmt: skip
    ratio = (nbytes["ours"] / times["ours"]) / (nbytes["plain"] / times["plain"])
    print(f"ratio ours/plain throughput = {ratio:.3f} (goal >= 0.95), dtype={dtype}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10000, help="side of the first row's scene (0 = skip)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dtype", default="uint8")
    parser.add_argument("--stack-size", type=int, default=4096, help="side of the S1 stack row's scene (0 = skip)")
    parser.add_argument("--stack-rounds", type=int, default=5, help="VRT blocks of each kind in the stack row")
    parser.add_argument("--block-s", type=float, default=10.0, help="least seconds of one block of the stack row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.size:
            plain_row(tmp, args.size, args.rounds, args.dtype)
        if args.stack_size:
            stack_row(tmp, args.stack_size, args.stack_rounds, args.block_s)


if __name__ == "__main__":
    main()
