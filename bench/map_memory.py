"""Peak memory of `rrsis map` on a big generated scene vs a small one: it must not grow with the scene.

Generates (once, cached under --cache) a B x N x N uint16 GeoTIFF per size, written block by block (never
whole in memory), and maps each with a small real water-land model (random SeNet, half width: memory is
about the pipeline, not the model) by running `rrsis map` in its own process, as a user does, with its
embedded Ray and every product on (COG mosaic, GeoJSON vectors, quicklook, stats). A sampler sums the PSS
(and RSS) of that process and all its descendants (driver, GCS, raylet, workers) every 0.25 s; the peaks
of those sums are reported, with the biggest processes at the peak. This bench process (torch imported to
make the checkpoint) is not counted. Goals: big-scene peak <= 2.5 GB and big / small <= 1.15.

Run time on this 2-core machine: generation ~10 s (5k) + ~11 min (20k, once, cached); mapping measured
beside a running test suite: 78 s (5k, 144 tiles) + 888 s (20k, 2025 tiles).

    .venv/bin/python bench/map_memory.py [--big 20000] [--small 5000] [--bands 4] [--tile 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import descendants, mem_bytes, process_name
from tests.pipeline_data import tiny_checkpoint

BLOCK = 1024


def generate(path: Path, size: int, bands: int) -> str:
    """Smooth stripes plus noise, uint16, tiled deflate; never more than one block row in memory."""
    if path.exists():
        return str(path)
    tmp = path.with_suffix(".partial.tif")
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "uint16",
        "crs": "EPSG:32630", "transform": from_origin(500000, 4200000, 10, 10), "nodata": 0,
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, BLOCK):
            height = min(BLOCK, size - row)
            yy, xx = np.mgrid[row : row + height, 0:size].astype(np.float32)
            base = 1000 + 400 * np.sin(xx / 97.0) * np.cos(yy / 71.0)
            block = np.stack([base + rng.integers(1, 50, base.shape) for _ in range(bands)]).astype("uint16")
            dst.write(block, window=Window(0, row, size, height))
    tmp.rename(path)
    return str(path)


class PeakSampler(threading.Thread):
    """Peaks of the summed RSS and summed PSS of `root` and all its descendants, and who held the PSS peak."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak_rss = 0
        self.peak = 0  # PSS
        self.at_peak: list[tuple[int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            pids = [self.root, *descendants(self.root)]
            mems = [mem_bytes(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(m[0] for m in mems))
            pss = sum(m[1] for m in mems)
            if pss > self.peak:
                self.peak = pss
                self.at_peak = sorted(((m[1], process_name(p)) for p, m in zip(pids, mems, strict=True)), reverse=True)
            time.sleep(0.25)


def map_once(scene: str, ckpt: str, out: Path, tile: int, top: int = 8) -> tuple[int, int, float, int]:
    """`rrsis map` as a user runs it: its own process (which starts the embedded Ray), sampled with all its
    descendants. This bench process (which imported torch to make the checkpoint) is not counted."""
    overrides = [
        f"input=[{scene}]", f"output={out}", f"infer.checkpoint={ckpt}", "ray.num_cpus=4",
        f"tiling.tile_px={tile}", "tiling.overlap_px=64", "infer.batch_size=1",
        "refine.min_mapping_unit_px=16",  # as the demo: keeps a random model's mask from becoming ~1M polygons
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rrsis.cli", "map", *overrides], stdout=subprocess.DEVNULL)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    code = proc.wait()
    sampler.stop.set()
    sampler.join()
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    products = {k: v for k, v in summary["products"][0].items() if k.endswith("_s") or k == "polygons"}
    print(f"  phases (s): {summary['timings_s']}; products: {products}")
    top = ", ".join(f"{name} {pss / 1e6:.0f} MB" for pss, name in sampler.at_peak[:top])
    print(f"  at the PSS peak ({len(sampler.at_peak)} processes): {top}")
    return sampler.peak, sampler.peak_rss, time.perf_counter() - start, code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=20000)
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--tile", type=int, default=512)  # the config default
    parser.add_argument("--family", default="senet")
    parser.add_argument("--top", type=int, default=8, help="processes listed at the peak")
    parser.add_argument("--cache", default="/tmp/rrsis-bench-scenes")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rrsis-mem-"))
    ckpt = tiny_checkpoint(tmp / "model.pt", family=args.family, in_bands=args.bands)
    results = {}
    for size in (args.small, args.big):
        start = time.perf_counter()
        scene = generate(cache / f"scene_{size}x{size}x{args.bands}.tif", size, args.bands)
        gen_s = time.perf_counter() - start
        peak, peak_rss, wall, code = map_once(scene, ckpt, tmp / f"out{size}", args.tile, args.top)
        results[size] = peak
        print(
            f"{size}x{size}x{args.bands}: peak summed over Ray processes: PSS {peak / 1e9:.2f} GB "
            f"(RSS {peak_rss / 1e9:.2f} GB, shared pages counted per process), "
            f"map {wall:.0f} s (exit {code}), scene generation {gen_s:.0f} s"
        )
    ratio = results[args.big] / results[args.small]
    print(f"big peak PSS {results[args.big] / 1e9:.3f} GB (goal <= 2.5); big / small {ratio:.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
