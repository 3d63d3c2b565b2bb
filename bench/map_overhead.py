"""Overhead of `rrsis map` over a plain loop of the same model forward on the same tiles, held in memory.

Workload (default): the committed water-land demo model (a trained SeNet) on four generated 8192 x 8192
SAR-like scenes (VV/VH in dB: smooth water bodies at -20/-27 dB, land at -9/-16 dB, 1.5 dB noise; written by
windows; a different seed each), 512 px tiles with 64 px overlap: 4 x 361 tiles. Several scenes, because that
is what the tool is for: a scene's products (mosaic, vectors, quicklook) run beside the next scene's inference,
and only the last scene's products are a tail (`--scenes 1` measures the single-scene case, tail included).
A trained model matters: a random-initialised one gives a
salt-and-pepper mask whose millions of polygons would make the benchmark time GeoJSON writing, not mapping
(`--checkpoint random --family senet --width full` measures that case anyway).

Both sides forward one tile at a time on one torch thread (the pipeline's batch-invariant mode and its
1-CPU inference actor; the loop runs on the lowest CPU, the one `infer.dedicated_cores` gives the actor);
the loop's tiles are read and normalised before its clock starts. The map side is
`run_map` from call to return on an already running local Ray (Ray start-up is reported apart): planning,
reads, inference, refinement, writes, manifest and every per-scene product (COG mosaic, GeoJSON vectors,
quicklook, stats). The plain loop runs in a fresh process each time (`fresh_plain_loop`), before and after
the map, and the ratio is taken against the mean of the two: on this VM the same 4-scene loop took 221-304 s
in different runs, even 240 s before a map and 280 s after it, so a single loop measured before the map
mixes the machine's drift into the ratio.
`--repeats N` runs loop, map, loop, ..., map, loop (N maps, each between two loops) and reports the sum of
the maps over the sum of their bracketing loop means: more phases average more of the drift out.
Goal: ratio <= 1.10. Run time about (2N + 1) x 4 x 361 x 0.19 s + N x 2 min ~ 15 min for N = 1 on an
idle machine, 25 min for N = 2. Also printed: where the inference actor's time went (head: Ray Data and
actor start-up to its first batch; busy; idle between batches; tail: last batch to return).

    .venv/bin/python bench/map_overhead.py [--scenes 4] [--size 8192] [--tile 512] [--checkpoint ...model.pt]
        [--repeats 1] [--set key=value ...]   # extra `rrsis map` overrides, e.g. --set ray.num_cpus=2
        [--ab key=value ...]   # A/B: alternate maps without (A) and with (B) these overrides, loops between
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import CpuSampler, infer_timeline
from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, normalize_image, scene_norm
from rrsis.geo.raster import open_raster, read_window
from rrsis.geo.tiling import plan_tiles
from rrsis.resources import heap_reuse_env
from tests.pipeline_data import map_config, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STRIP = 1024
ALL_CPUS = os.sched_getaffinity(0)


def write_sar_scene(path: Path, size: int, seed: int = 5) -> str:
    """VV/VH dB scene with smooth water bodies, float32, tiled deflate, written strip by strip."""
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 2, "dtype": "float32",
        "crs": "EPSG:32630", "transform": from_origin(500000, 4200000, 10, 10), "nodata": float("nan"),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, STRIP):
            height = min(STRIP, size - row)
            yy, xx = np.mgrid[row : row + height, 0:size].astype(np.float32)
            field = np.sin(xx / 211.0) * np.cos(yy / 157.0) + 0.5 * np.sin((xx + yy) / 61.0)
            water = field < -0.4
            vv = np.where(water, -20.0, -9.0) + rng.normal(0, 1.5, water.shape)
            vh = np.where(water, -27.0, -16.0) + rng.normal(0, 1.5, water.shape)
            dst.write(np.stack([vv, vh]).astype(np.float32), window=Window(0, row, size, height))
        dst.descriptions = ("VV", "VH")
    return str(path)


def plain_loop(ckpt_uri: str, scenes: list[str], size: int, tile: int, overlap: int) -> tuple[float, int]:
    """Forward time of every tile of every scene; each scene's tiles are read before the clock runs."""
    ckpt = load_checkpoint(ckpt_uri)
    model = build_from_checkpoint(ckpt).eval()
    tiles = plan_tiles(size, size, tile, overlap)
    torch.set_num_threads(1)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(ALL_CPUS)})  # every loop on the core a reserved inference actor gets
    elapsed = 0.0
    for scene in scenes:  # one scene in memory at a time
        with open_raster(scene) as src:
            stats = scene_norm(ckpt, scene, [1, 2])  # the checkpoint's stats, or the scene's (norm=scene)
            inputs = [normalize_image(stats, *read_window(src, t.window, [1, 2])) for t in tiles]
        start = time.perf_counter()
        with torch.inference_mode():
            for x in inputs:  # the same forward as InferStage._forward
                logits = model(torch.from_numpy(x)[None])
                if isinstance(logits, (tuple, list)):
                    logits = logits[0]
                torch.softmax(logits.float(), dim=1)[:, 1].numpy()
        elapsed += time.perf_counter() - start
    os.sched_setaffinity(0, before)
    return elapsed, len(tiles) * len(scenes)


def fresh_plain_loop(ckpt_uri: str, scenes: list[str], size: int, tile: int, overlap: int, heap: bool) -> float:
    """`plain_loop` in a new Python process. After a map, this process has hosted a Ray driver, and the same
    loop ran slower in it than in a fresh process (4096^2 scene, alternating: 36.3 vs 28.7 s, 36.1 vs 33.0 s),
    which would flatter the map; a fresh process per loop keeps the baseline clean. `heap`: the loop's
    process gets the malloc settings the map's inference actor gets (`infer.reuse_heap`), so both sides run
    the same forwards on the same allocator (they make the loop's forwards about 8 % faster too)."""
    job = json.dumps({"ckpt": ckpt_uri, "scenes": scenes, "size": size, "tile": tile, "overlap": overlap})
    env = {**os.environ, **(heap_reuse_env() if heap else {})}
    cmd = [sys.executable, __file__, "--plain-loop", job]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return float(done.stdout.split()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--plain-loop"]:  # one loop in this (fresh) process; prints its forward time
        job = json.loads(sys.argv[2])
        print(plain_loop(job["ckpt"], job["scenes"], job["size"], job["tile"], job["overlap"])[0])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--checkpoint", default=str(ROOT / "models/waterland_demo/model.pt"))
    parser.add_argument("--family", default="senet", help="with --checkpoint random")
    parser.add_argument("--width", default="full", help="with --checkpoint random")
    parser.add_argument("--repeats", type=int, default=1, help="maps, each between two plain loops")
    parser.add_argument("--set", nargs="*", default=[], help="extra map config overrides, key=value")
    parser.add_argument(
        "--ab", nargs="*", default=[],
        help="A/B: each repeat runs a map as configured (A) and one with these overrides too (B), alternating",
    )  # fmt: skip
    args = parser.parse_args()
    bench_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="rrsis-bench-"))
    scenes = [write_sar_scene(tmp / f"scene_{i}.tif", args.size, seed=5 + i) for i in range(args.scenes)]
    ckpt = args.checkpoint
    if ckpt == "random":
        ckpt = tiny_checkpoint(tmp / "model.pt", family=args.family, width=args.width)
    heap = map_config(*args.set).infer.reuse_heap  # the loop on the allocator the inference actor has
    loops = [fresh_plain_loop(ckpt, scenes, args.size, args.tile, args.overlap, heap)]
    maps: list[tuple[str, float]] = []
    arms = {"A": args.set, "B": [*args.set, *args.ab]} if args.ab else {"": args.set}
    for repeat in range(args.repeats):  # loop, map, loop[, map, loop ...]: each map between two loops
        for arm, overrides in arms.items():
            out = tmp / f"out{repeat}{arm}"
            cfg = map_config(
                f"input=[{','.join(scenes)}]",
                f"output={out}",
                f"infer.checkpoint={ckpt}",
                f"tiling.tile_px={args.tile}",
                f"tiling.overlap_px={args.overlap}",
                "refine.min_mapping_unit_px=16",  # as the demo config
                "ray.num_cpus=4",
                *overrides,
            )
            print(f"map {len(maps) + 1} {arm} {' '.join(overrides)}".rstrip(), flush=True)
            maps.append((arm, map_once(cfg, out, args, ckpt)))
            loops.append(fresh_plain_loop(ckpt, scenes, args.size, args.tile, args.overlap, heap))
    print(f"plain loops (forward only, tiles in memory), in order (s): {[round(v, 1) for v in loops]}")
    bracket = [(loops[i] + loops[i + 1]) / 2 for i in range(len(maps))]
    for i, (arm, map_s) in enumerate(maps):
        print(
            f"map {i + 1}{' ' + arm if arm else ''}: {map_s:.1f} s; mean of the loops either side "
            f"{bracket[i]:.1f} s; ratio {map_s / bracket[i]:.3f}"
        )
    for arm, overrides in arms.items():
        mine = [i for i, (a, _) in enumerate(maps) if a == arm]
        ratio = sum(maps[i][1] for i in mine) / sum(bracket[i] for i in mine)
        label = f" {arm} ({' '.join(overrides) or 'as configured'})" if arm else ""
        print(
            f"ratio map / loop{label}: {ratio:.3f}   (goal <= 1.10; {len(mine)} map(s), each against the mean "
            "of the loops before and after it)"
        )
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"benchmark run time {time.perf_counter() - bench_start:.0f} s"
    )


def map_once(cfg: Any, out: Path, args: argparse.Namespace, ckpt: str) -> float:
    """One `run_map` on a freshly started embedded Ray; prints where its time went; returns its wall time."""
    import ray

    from rrsis.pipeline.run import run_map

    sampler = CpuSampler(os.getpid())
    sampler.start()
    driver_cpu = time.process_time()
    start, wall_start = time.perf_counter(), time.time()
    code = run_map(cfg)  # starts the embedded Ray exactly as `rrsis map` does; its start-up is taken out below
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    ray_start_s = summary["timings_s"].get("ray_start_s", 0.0)
    map_s = time.perf_counter() - start - ray_start_s
    # the actor's head counts from the map's start without Ray's start-up (which comes after the checks)
    timeline = infer_timeline(ray.timeline(), wall_start + ray_start_s, wall_start + ray_start_s + map_s)
    driver_cpu = time.process_time() - driver_cpu
    sampler.stop.set()
    sampler.join()
    ray.shutdown()
    manifest = pq.read_table(run / "manifest.parquet")
    stages = {k: sum(manifest.column(f"{k}_s").to_pylist()) for k in ("read", "infer", "refine", "write")}
    products = summary["products"][-1]  # the last scene's: the tail
    print("run_map phases (s):", {k: round(v, 2) for k, v in summary["timings_s"].items()})
    print("per-tile stage sums (s):", {k: round(v, 2) for k, v in stages.items()})
    print(
        "last scene's products (s):",
        {k: round(v, 2) for k, v in products.items() if k.endswith("_s")},
        f"polygons {products.get('polygons')}",
    )
    print(
        f"{args.scenes} scene(s) {args.size}x{args.size}x2, {summary['tiles']} tiles of {args.tile} px "
        f"(overlap {args.overlap}), "
        f"checkpoint {Path(ckpt).name} ({args.checkpoint}), torch threads 1 on both sides, exit {code}"
    )
    print("inference actor during the map (s):", {k: round(v, 2) for k, v in timeline.items()})
    cpu = {"driver (rrsis map)": driver_cpu, **sampler.by_role()}
    print("CPU seconds during the map, by process role:", {k: round(v, 1) for k, v in cpu.items()})
    on_cpu, waiting, cpus = sampler.actor_cpu_wait()
    print(
        f"inference actor's model thread: {on_cpu:.1f} s on a CPU, {waiting:.1f} s runnable but waiting for one; "
        f"it may run on CPUs {cpus}, the raylet and its workers on {sampler.system_cpus} "
        f"(infer.dedicated_cores: {summary.get('inference_cores')})"
    )
    print(
        f"rrsis map (run_map without its Ray start-up): {map_s:.1f} s   (Ray start-up {ray_start_s:.1f} s apart); "
        f"tiles/s {summary['tiles_per_s']:.2f}"
    )
    return map_s


if __name__ == "__main__":
    main()
