"""Overhead of `rrsis map` over a plain loop of the same model forward on the same tiles, held in memory.

Both sides run the model on one CPU thread, one tile at a time (the pipeline's batch-invariant mode), on the
same generated scene and tile plan. The map side is timed from `run_map` call to return on an already
running local Ray (Ray start-up is reported apart): planning, reads, inference, refinement, writes, manifest
and per-scene products. Goal: ratio <= 1.10.

    .venv/bin/python bench/map_overhead.py [--size 2048] [--tile 512] [--family munet]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, normalize_image
from rrsis.geo.raster import open_raster, read_window
from rrsis.geo.tiling import plan_tiles
from tests.pipeline_data import map_config, tiny_checkpoint, write_scene


def plain_loop(ckpt_uri: str, scene: str, size: int, tile: int, overlap: int) -> tuple[float, int]:
    ckpt = load_checkpoint(ckpt_uri)
    model = build_from_checkpoint(ckpt).eval()
    tiles = plan_tiles(size, size, tile, overlap)
    with open_raster(scene) as src:
        inputs = [normalize_image(ckpt, *read_window(src, t.window, [1, 2])) for t in tiles]
    torch.set_num_threads(1)
    start = time.perf_counter()
    with torch.inference_mode():
        for x in inputs:
            torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[:, 1].numpy()
    return time.perf_counter() - start, len(tiles)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--family", default="munet")
    args = parser.parse_args()
    import ray

    from rrsis.pipeline.run import run_map

    tmp = Path(tempfile.mkdtemp(prefix="rrsis-bench-"))
    scene = write_scene(tmp / "scene.tif", args.size, args.size, seed=5)
    ckpt = tiny_checkpoint(tmp / "model.pt", family=args.family)
    loop_s, n_tiles = plain_loop(ckpt, scene, args.size, args.tile, args.overlap)
    start = time.perf_counter()
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - start
    cfg = map_config(
        f"input=[{scene}]",
        f"output={tmp / 'out'}",
        f"infer.checkpoint={ckpt}",
        f"tiling.tile_px={args.tile}",
        f"tiling.overlap_px={args.overlap}",
        "infer.batch_size=1",
        # the demo's clean-up: a random model's salt-and-pepper mask would otherwise make ~300k polygons per
        # 1536^2 scene and the benchmark would time GeoJSON writing, not the pipeline
        "refine.min_mapping_unit_px=16",
    )
    start = time.perf_counter()
    code = run_map(cfg)
    map_s = time.perf_counter() - start
    (run,) = [p for p in (tmp / "out").iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    ray.shutdown()
    print(
        f"scene {args.size}x{args.size}x2, {n_tiles} tiles of {args.tile} px (overlap {args.overlap}), "
        f"model {args.family}, cpu threads 1, exit {code}"
    )
    print(f"plain loop (forward only, tiles in memory): {loop_s:.1f} s")
    print(f"rrsis map (run_map, Ray already up):        {map_s:.1f} s   (Ray start-up {ray_start_s:.1f} s apart)")
    print(f"ratio map / loop: {map_s / loop_s:.3f}   (goal <= 1.10); tiles/s {summary['tiles_per_s']:.2f}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
