"""Time CFPG and MBO per box at three ROI sizes on the real Landsat sample, side by side in one run.

Boxes are square, centred on the valid part of data/samples/rasterio/RGB.byte.tif; the "SAM mask" MBO
refines is the box's bright pixels (mean RGB above the box median) dilated by 3 px, i.e. a coarse mask.
Prints ms per box, the cost ratio between sizes, and CFPG with vs without the KMeans subsample.
With --pipeline it also runs `task: boxes` on Ray (tiny SAM, CPU) over a grid of boxes with CFPG+MBO off
and on, and prints the wall-time ratio (an embedded Ray on 127.0.0.1; a warm-up run goes first).
Run: .venv/bin/python bench/refine.py [--pipeline]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rasterio
import torch

from rrsis.refine.cfpg import cfpg_point
from rrsis.refine.config import CfpgConfig, MboConfig
from rrsis.refine.mbo import mbo_refine

SCENE = Path(__file__).resolve().parents[1] / "data" / "samples" / "rasterio" / "RGB.byte.tif"
SIZES_PX = (32, 128, 512)
CENTRES = ((400, 360), (300, 300), (450, 420), (380, 250))  # (x, y) inside the valid data


def per_box_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (imports, OpenCV/sklearn first-call costs)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000.0


def coarse_mask(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    grey = image[y1:y2, x1:x2].mean(axis=2)
    mask = np.zeros(image.shape[:2], bool)
    mask[y1:y2, x1:x2] = grey > np.median(grey)
    return cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with rasterio.open(SCENE) as src:
        image = src.read().transpose(1, 2, 0).copy()
    cfpg_cfg, mbo_cfg = CfpgConfig(), MboConfig()
    full_fit = CfpgConfig(kmeans_max_pixels=10**9)
    rows = []
    for size in SIZES_PX:
        half = size // 2
        boxes = [(max(cx - half, 0), max(cy - half, 0), cx - half + size, cy - half + size) for cx, cy in CENTRES]
        masks = [coarse_mask(image, b) for b in boxes]
        repeats = 3 if size >= 512 else 10
        cfpg_ms = np.mean([per_box_ms(lambda b=b: cfpg_point(image, b, cfpg_cfg), repeats) for b in boxes])
        full_ms = np.mean([per_box_ms(lambda b=b: cfpg_point(image, b, full_fit), repeats) for b in boxes])
        mbo_ms = np.mean(
            [
                per_box_ms(lambda b=b, m=m: mbo_refine(image, m, b, mbo_cfg), repeats)
                for b, m in zip(boxes, masks, strict=True)
            ]
        )
        found = sum(cfpg_point(image, b, cfpg_cfg).point is not None for b in boxes)
        iters = [mbo_refine(image, m, b, mbo_cfg).iterations for b, m in zip(boxes, masks, strict=True)]
        rows.append((size, cfpg_ms, full_ms, mbo_ms, found, iters))
    print(f"scene {SCENE.name} {image.shape[1]}x{image.shape[0]}, {len(CENTRES)} boxes per size, 1 thread")
    print(f"{'roi_px':>7} {'cfpg_ms':>9} {'cfpg_fullfit_ms':>16} {'mbo_ms':>8} {'points':>7} mbo_rounds")
    for size, c, f, m, found, iters in rows:
        print(f"{size:>7} {c:>9.1f} {f:>16.1f} {m:>8.1f} {found:>5}/{len(CENTRES)} {iters}")
    base = rows[0]
    for size, c, f, m, *_ in rows[1:]:
        px_ratio = (size / base[0]) ** 2
        print(
            f"{size} vs {base[0]} px: pixels x{px_ratio:.0f}, CFPG time x{c / base[1]:.1f}, "
            f"MBO time x{m / base[3]:.1f}, full KMeans fit / subsample x{f / c:.2f}"
        )


def pipeline_on_off(n_side: int = 8) -> None:
    """Wall time of the boxes pipeline with refinement (CFPG + MBO) off vs on, same boxes, same Ray."""
    import ray

    from rrsis.config.boxes import BoxesConfig
    from rrsis.config.map import MapConfig
    from rrsis.models.sam.config import SamConfig
    from rrsis.pipeline.run_boxes import run_boxes

    for attempt in range(3):  # a loaded machine can miss Ray's start-up deadline: retry
        try:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    with tempfile.TemporaryDirectory() as tmp:
        lines = ["id,x1,y1,x2,y2"]
        for i in range(n_side):
            for j in range(n_side):
                x, y = 180 + 55 * i, 150 + 55 * j
                lines.append(f"b{i}_{j},{x},{y},{x + 48},{y + 48}")
        Path(tmp, "boxes.csv").write_text("\n".join(lines) + "\n")
        walls = {}
        for label, refine in (("warm-up", False), ("off", False), ("on", True)):
            sam = SamConfig(model_type="tiny")
            sam.cfpg.enabled = sam.mbo.enabled = refine
            cfg = MapConfig(task="boxes", input=[str(SCENE)], output=str(Path(tmp, label)))
            cfg.tiling.tile_px, cfg.tiling.overlap_px = 256, 32
            cfg.infer.device = "cpu"
            start = time.perf_counter()
            run_boxes(cfg, BoxesConfig(path=str(Path(tmp, "boxes.csv")), sam=sam))
            walls[label] = time.perf_counter() - start
    ray.shutdown()
    print(f"pipeline, {n_side * n_side} boxes of 48 px, tiny SAM on CPU, 256 px tiles:")
    print(
        f"  refinement off {walls['off']:.1f} s, on {walls['on']:.1f} s, "
        f"wall ratio on/off {walls['on'] / walls['off']:.2f}"
    )


if __name__ == "__main__":
    main()
    if "--pipeline" in sys.argv:
        pipeline_on_off()
