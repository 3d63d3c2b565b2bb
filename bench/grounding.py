"""Expressions per second of the grounding model and of the full PSLG-SAM predict, batch 1 vs 8.

Run: .venv/bin/python bench/grounding.py [--expressions 16] [--threads N]
Models are random-initialised (the speed does not depend on the weights): the grounding model at the tiny
test preset and at the paper's widths (ResNet-50, 256-wide, 6 decoder layers) on 256 px inputs, and
PSLG-SAM = tiny grounding + tiny SAM + CFPG + MBO. The real offline MiniLM is the text encoder throughout.
Each configuration runs the same expressions once as warm-up, then timed; ratios are printed side by side.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rrsis.models.grounding.config import GroundingConfig, tiny_grounding_config
from rrsis.models.grounding.model import GroundingModel
from rrsis.models.pslg_sam import PslgSam
from rrsis.models.sam.config import SamConfig

TINY = tiny_grounding_config()
PAPER_WIDTHS_256 = GroundingConfig(image_encoder="resnet50", image_size_px=256, dropout=0.0)
TEXTS = ["the storage tank near the harbour", "a white ship", "the bridge over the river", "the golf field"]


def scenes(n: int, size_px: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = rng.integers(30, 90, (size_px, size_px, 3), dtype=np.uint8)
        y, x = rng.integers(0, size_px // 2, 2)
        img[y : y + size_px // 4, x : x + size_px // 4] = (220, 210, 60)
        out.append(img)
    return out


def rate(fn: Callable[[list[np.ndarray], list[str]], object], images: list[np.ndarray], batch: int) -> float:
    """Expressions per second over all images, `batch` at a time (after one warm-up batch)."""
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(images))]
    fn(images[:batch], texts[:batch])
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        fn(images[i : i + batch], texts[i : i + batch])
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--expressions", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, {args.expressions} expressions per run")
    rows = []
    for name, cfg, size in (
        ("grounding tiny (64 px)", TINY, 128),
        ("grounding R50 paper widths (256 px)", PAPER_WIDTHS_256, 256),
    ):
        model = GroundingModel(cfg).eval()
        images = scenes(args.expressions, size)
        rows.append((name, rate(model.predict, images, 1), rate(model.predict, images, 8)))
    pslg = PslgSam(TINY, SamConfig(model_type="tiny")).eval()
    images = scenes(args.expressions, 128)
    rows.append(
        ("PSLG-SAM tiny (128 px scenes)", rate(pslg.predict_batch, images, 1), rate(pslg.predict_batch, images, 8))
    )
    print(f"{'model':40s} {'batch 1 expr/s':>15s} {'batch 8 expr/s':>15s} {'8 / 1':>7s}")
    for name, r1, r8 in rows:
        print(f"{name:40s} {r1:15.2f} {r8:15.2f} {r8 / r1:7.2f}")


if __name__ == "__main__":
    main()
