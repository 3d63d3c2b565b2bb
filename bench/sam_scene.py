"""SAM on a big scene: the whole-scene way against `rrsis map` task boxes at native resolution, in one run.

Scene: a generated 20,000 x 20,000 x 3 uint8 GeoTIFF (deflate, 512 px blocks, written block row by block row,
cached under --cache), three boxes of 300-600 px far apart. SAM: ViT-B with random weights (seeded, saved once
as an official-format state dict: the same architecture and size as `sam_vit_b_01ec64.pth`), used by both.

(a) the whole-scene way, in two variants (`--ways`, the first is the goals' basis):
    samgeo: what segment-geospatial 1.4.2 does for `set_image(path)` and `predict(boxes=[3 boxes],
    point_crs=..., output=...)`: the whole raster read (`src.read()`, then a band-last copy), segment-anything's
    `SamPredictor.set_image` (resized to 1024 px inside), the three boxes decoded together by `predict_torch`
    with `multimask_output=True` (it hard-codes it: 9 masks upsampled to the full scene as float32, then
    thresholded), its overlay (float32 sums, `(overlay > 0) * 255`) written as a deflate GeoTIFF;
    lean: the least the whole-scene way can do: one `predict(box, multimask_output=False)` per box, no write.
(b) `rrsis map` with task boxes, as a user runs it (`python -m rrsis.cli map ...`, its embedded Ray): each box
    read and segmented at native resolution in its 1024 px window, CFPG and MBO on, masks + polygons written.

Each runs in its own process; a sampler sums the PSS of that process and all its descendants every 0.25 s
(`bench.map_memory.PeakSampler`); wall is from process start to exit (interpreter, imports and model load
included for both). Goals (issue 25): (b) peak <= 2.5 GB and <= 1/8 of (a)'s; (b) wall <= (a) wall. Far-apart
boxes cost (b) one 1024 px encoder forward each (3) where (a) runs one forward on the shrunken scene. The
load average is printed before and after: on a shared machine both walls move with it. The last line prints
both ratios.

Measured 2026-12-06 17:12 UTC at bba5a3f (SAM without torchvision), idle 2-core AMD EPYC (AVX-512, no AMX:
fp32): (a) samgeo peak PSS 19.96 GB, wall 63.1 s (the issue's samgeo 1.4.2 run: 20.1 GB); (a) lean 4.66 GB,
30.8 s; (b) 2.66 GB (SAM actor 1.37 GB, an idle CPU worker 0.32, driver 0.26, Ray's own processes 0.72), wall
60.5 s (3 windows); ratios against samgeo: peak 0.133 (goal 0.125), wall 0.96 (goal 1.00). At a5d2863 (torchvision
still imported): (b) 2.95 GB, SAM actor 1.66 GB; at 5430dc9 3.03-3.11 GB. Earlier, under a load of 20-40 with
the lean way only: (a) 4.86 GB / 623 s, (b) 2.79 GB / 915 s.

    .venv/bin/python bench/sam_scene.py [--size 20000] [--tile 1024] [--cache /tmp/rrsis-bench-scenes]
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

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.map_memory import PeakSampler

BLOCK_ROWS = 1024
# (x, y) of the top-left corner as a fraction of the scene side, (width, height) in px: 300-600 px, far apart
BOXES = (((0.10, 0.15), (400, 500)), ((0.50, 0.60), (600, 300)), ((0.80, 0.25), (350, 450)))


def generate(path: Path, size: int) -> str:
    """Smooth colour fields plus a little noise, 3 x uint8, tiled 512 deflate; one block row in memory."""
    if path.exists():
        return str(path)
    tmp = path.with_suffix(".partial.tif")
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32630", "transform": from_origin(500000, 4200000, 1, 1),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    xx = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, BLOCK_ROWS):
            height = min(BLOCK_ROWS, size - row)
            yy = np.arange(row, row + height, dtype=np.float32)[:, None]
            bands = [
                np.sin(xx / 173.0 + k) * np.cos(yy / 131.0 - k) * 90 + 120 + rng.integers(0, 12, (height, size))
                for k in range(3)
            ]
            dst.write(np.clip(np.stack(bands), 0, 255).astype(np.uint8), window=Window(0, row, size, height))
    tmp.rename(path)
    return str(path)


def random_vit_b(path: Path) -> str:
    """A seeded random ViT-B SAM saved as an official-format state dict (same keys and shapes)."""
    if path.exists():
        return str(path)
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    tmp = path.with_suffix(".partial")
    torch.save(sam.state_dict(), tmp)
    tmp.rename(path)
    return str(path)


def scene_boxes(size: int) -> list[tuple[str, int, int, int, int]]:
    return [(f"box{i}", int(fx * size), int(fy * size), int(fx * size) + w, int(fy * size) + h)
            for i, ((fx, fy), (w, h)) in enumerate(BOXES)]  # fmt: skip


def whole_scene(scene: str, checkpoint: str, boxes_json: str, way: str, out: str, threads: int) -> None:
    """(a), in its own process: the whole scene through segment-anything's SamPredictor at 1024 px.

    way "samgeo" repeats, step for step, what segment-geospatial 1.4.2 does for `SamGeo(automatic=False)`,
    `set_image(path)` and `predict(boxes=[three boxes], point_crs=..., output=path)`: `src.read()` then a
    band-last C-contiguous uint8 copy; `set_image`; the boxes transformed to the 1024 px frame and decoded
    together by `predict_torch(multimask_output=True)` (3 x 3 masks upsampled to the full scene, as float32
    then thresholded); its `tensor_to_numpy` overlay (mask index 1 of each box, float32 sums, then
    `(overlay > 0) * 255`) written as a deflate float32 GeoTIFF. way "lean" is the least the whole-scene way
    can do: one `predict(box, multimask_output=False)` per box, nothing written.
    """
    import torch
    from segment_anything import SamPredictor, sam_model_registry

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    sam = sam_model_registry["vit_b"](checkpoint=checkpoint).eval()
    t1 = time.perf_counter()
    with rasterio.open(scene) as src:
        image = np.ascontiguousarray(np.moveaxis(src.read(), 0, -1)[..., :3])  # whole scene, band-last copy
        profile = {"crs": src.crs, "transform": src.transform}
    t2 = time.perf_counter()
    predictor = SamPredictor(sam)
    predictor.set_image(image)  # resized to 1024 px long side inside
    t3 = time.perf_counter()
    boxes = [b[1:] for b in json.loads(boxes_json)]
    if way == "lean":
        areas = []
        for box in boxes:
            masks, _, _ = predictor.predict(box=np.array(box), multimask_output=False)
            areas.append(int(masks[0].sum()))
        del masks
        t4 = t5 = time.perf_counter()
    else:
        prompts = predictor.transform.apply_boxes_torch(torch.tensor(boxes), image.shape[:2])
        with torch.no_grad():
            masks, _, _ = predictor.predict_torch(None, None, boxes=prompts, multimask_output=True)
        t4 = time.perf_counter()
        overlay = np.zeros(image.shape[:2], dtype=np.float32)
        for i, mask in enumerate(masks[:, 1]):
            overlay += ((mask.numpy().astype(np.float32) > 0) * (i + 1)).astype(np.float32)
        del masks
        overlay = (overlay > 0) * 255
        areas = [int((overlay > 0).sum())]
        array = overlay.astype(np.float32)
        meta = {"driver": "GTiff", "height": array.shape[0], "width": array.shape[1], "count": 1,
                "dtype": "float32", "compress": "deflate", **profile}  # fmt: skip
        with rasterio.open(out, "w", **meta) as dst:
            dst.write(array, 1)
        t5 = time.perf_counter()
    print(json.dumps({"load_s": t1 - t0, "read_s": t2 - t1, "set_image_s": t3 - t2, "predict_s": t4 - t3,
                      "overlay_write_s": t5 - t4, "mask_px": areas}))  # fmt: skip


def sampled(cmd: list[str], label: str) -> tuple[int, float, int, str]:
    """Run `cmd`, sampling the summed PSS of its process tree: (peak PSS bytes, wall s, exit code, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    top = ", ".join(f"{name} {pss / 1e6:.0f} MB" for pss, name in sampler.at_peak if pss >= 20e6)
    print(f"{label}: peak summed PSS {sampler.peak / 1e9:.2f} GB (RSS {sampler.peak_rss / 1e9:.2f} GB), "
          f"wall {wall:.1f} s, exit {proc.returncode}; at the peak: {top}", flush=True)  # fmt: skip
    return sampler.peak, wall, proc.returncode, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of (a)")
    parser.add_argument("--cache", default="/tmp/rrsis-bench-scenes")
    parser.add_argument(
        "--ways", default="samgeo,lean", help="whole-scene ways to measure; the first is the goals' basis"
    )
    parser.add_argument("--whole", nargs=5, metavar=("SCENE", "CKPT", "BOXES", "WAY", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help="only generate the scene and the weights")
    args = parser.parse_args()
    if args.whole:
        whole_scene(*args.whole, threads=args.threads)
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scene = generate(cache / f"sam_scene_{args.size}x{args.size}x3_u8.tif", args.size)
    checkpoint = random_vit_b(cache / "sam_vit_b_random_seed0.pth")
    print(f"scene {scene} and weights {checkpoint} ready in {time.perf_counter() - start:.0f} s", flush=True)
    if args.prepare:
        return
    boxes = scene_boxes(args.size)
    tmp = Path(tempfile.mkdtemp(prefix="rrsis-sam-scene-"))
    csv = tmp / "boxes.csv"
    csv.write_text("id,x1,y1,x2,y2\n" + "".join(f"{b[0]},{b[1]},{b[2]},{b[3]},{b[4]}\n" for b in boxes))
    print(f"{args.size}^2 x 3 uint8, boxes {[b[1:] for b in boxes]}, ViT-B random weights; "
          f"load average before: {os.getloadavg()}", flush=True)  # fmt: skip

    whole = {}
    for way in args.ways.split(","):
        cmd = [sys.executable, __file__, "--whole", scene, checkpoint, json.dumps(boxes), way,
               str(tmp / f"whole_{way}.tif"), f"--threads={args.threads}"]  # fmt: skip
        whole[way] = sampled(cmd, f"(a) whole scene, SamPredictor at 1024 px, {way} way")
        out_a = whole[way][3].strip()
        print(f"    phases: {out_a.splitlines()[-1] if out_a else '(none: failed)'}", flush=True)
        (tmp / f"whole_{way}.tif").unlink(missing_ok=True)
    overrides = [
        "task=boxes", f"input=[{scene}]", f"output={tmp / 'out'}", "bands=[1,2,3]", f"boxes.path={csv}",
        "boxes.value_max=255", "boxes.sam.model_type=vit_b", f"boxes.sam.checkpoint={checkpoint}",
        f"tiling.tile_px={args.tile}", "infer.device=cpu",
    ]  # fmt: skip
    peak_b, wall_b, code_b, _ = sampled(
        [sys.executable, "-m", "rrsis.cli", "map", *overrides], f"(b) rrsis map task boxes, {args.tile} px windows"
    )
    runs = [p for p in (tmp / "out").iterdir() if p.is_dir()] if (tmp / "out").exists() else []
    if runs:
        summary = json.loads((runs[0] / "summary.json").read_text())
        print(f"    phases (s): {summary.get('timings_s')}")
        names = ("manifest.parquet", "boxes_manifest.parquet")  # box rows: the first, or the older layout
        manifest = next((runs[0] / n for n in names if (runs[0] / n).exists()), None)
        if manifest is not None:
            import pyarrow.parquet as pq

            rows = [r for r in pq.read_table(manifest).to_pylist() if "box_id" in r]
            sam_s = {r["group_id"]: round(r.get("window_sam_s", 0.0), 1) for r in rows}
            print(f"    {len(rows)} boxes in {len(sam_s)} windows (one encoder forward each), "
                  f"statuses {sorted({r['status'] for r in rows})}, SAM s per window {sam_s}")  # fmt: skip
    codes = ", ".join(f"(a) {way} {w[2]}" for way, w in whole.items())
    print(f"load average after: {os.getloadavg()}; exits {codes}, (b) {code_b}")
    for way, (peak_a, wall_a, _, _) in list(whole.items())[1:]:  # the first way has the last line, with goals
        print(f"(b) vs (a) {way}: peak PSS {peak_b / 1e9:.2f}/{peak_a / 1e9:.2f} GB = {peak_b / peak_a:.3f}, "
              f"wall {wall_b:.1f}/{wall_a:.1f} s = {wall_b / wall_a:.2f}")  # fmt: skip
    way, (peak_a, wall_a, _, _) = next(iter(whole.items()))
    print(
        f"(b)/(a {way}) peak PSS {peak_b / 1e9:.2f}/{peak_a / 1e9:.2f} GB = {peak_b / peak_a:.3f} (goal <= 0.125, "
        f"(b) <= 2.5 GB); (b)/(a {way}) wall {wall_b:.1f}/{wall_a:.1f} s = {wall_b / wall_a:.2f} (goal <= 1.00)"
    )


if __name__ == "__main__":
    main()
