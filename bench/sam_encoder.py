"""Benchmark: SAM's image encoder, segment-anything's (reference) vs ours (efficient) vs ours under bf16 autocast.

Each variant embeds the same real image (the Landsat scene in data/samples, resized as SAM's predictor does) in a
fresh process, so its peak RSS (ru_maxrss) is its own; "forward MB" is that peak minus the peak right after the
encoder was built (the memory the forward itself needed). Weights are seeded random vit_b weights with random
relative-position tables (no official weights offline); speed and memory do not depend on the values. The last
column is each variant's max |embedding - reference embedding|. bf16 is honoured even where it is emulated (a CPU
without AMX), which `rrsis.models.precision.resolve_precision("auto", ...)` would not pick.
Run: .venv/bin/python bench/sam_encoder.py [--model-type vit_b] [--threads 2] [--reps 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

LANDSAT = Path(__file__).resolve().parents[1] / "data" / "samples" / "rasterio" / "RGB.byte.tif"
VARIANTS = {
    "reference": ("reference", "fp32"),
    "efficient": ("efficient", "fp32"),
    "efficient+bf16": ("efficient", "bf16"),
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(model_type: str, variant: str, threads: int, reps: int, out: str, queue: Any) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import rasterio
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    from rrsis.models.precision import autocast_for
    from rrsis.models.sam.build import PIXEL_MEAN, PIXEL_STD, build_image_encoder, sam_arch

    torch.set_num_threads(threads)
    encoder_kind, precision = VARIANTS[variant]
    arch = sam_arch(model_type)
    with rasterio.open(LANDSAT) as src:
        rgb = np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))
    resized = torch.as_tensor(ResizeLongestSide(arch.img_size).apply_image(rgb)).permute(2, 0, 1).float()
    pixels = (resized - torch.tensor(PIXEL_MEAN)[:, None, None]) / torch.tensor(PIXEL_STD)[:, None, None]
    h, w = pixels.shape[1:]
    pixels = torch.nn.functional.pad(pixels, (0, arch.img_size - w, 0, arch.img_size - h))[None]
    torch.manual_seed(0)
    encoder = build_image_encoder(arch, encoder_kind).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "rel_pos" in name:  # zero at init: give the bias something to do
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    after_build = _peak_mb()
    walls, cpus = [], []
    with torch.no_grad():
        for _ in range(reps):
            w0, c0 = time.perf_counter(), time.process_time()
            with autocast_for(precision, "cpu"):
                emb = encoder(pixels)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    peak = _peak_mb()
    torch.save(emb.float(), out)
    queue.put({"wall": min(walls), "cpu": min(cpus), "peak_mb": peak, "forward_mb": peak - after_build})


def run(model_type: str, variant: str, threads: int, reps: int, out: str) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(model_type, variant, threads, reps, out, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {}
    result: dict[str, float] = queue.get()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-type", default="vit_b", help="a SAM preset: vit_b (1024 px), vit_b_256, tiny, ...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1, help="forwards per variant, best kept")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    import torch

    from rrsis.models.sam.build import sam_arch

    arch = sam_arch(args.model_type)
    print(f"SAM {args.model_type} image encoder at {arch.img_size} px, {args.threads} thread(s), best of {args.reps}")
    head = ("variant", "wall s", "CPU s", "peak RSS MB", "forward MB", "max |d| vs ref")
    print("{:15} {:>8} {:>8} {:>12} {:>11} {:>15}".format(*head), flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            out = str(Path(tmp) / f"{variant}.pt")
            r = run(args.model_type, variant, args.threads, args.reps, out)
            if not r:
                print(f"{variant:15} failed (out of memory?)", flush=True)
                continue
            ref = Path(tmp) / "reference.pt"
            diff = "-"
            if ref.exists():
                diff = f"{(torch.load(out) - torch.load(ref)).abs().max().item():.2e}"
            results[variant] = r
            print(
                f"{variant:15} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['peak_mb']:>12.0f} {r['forward_mb']:>11.0f} "
                f"{diff:>15}",
                flush=True,
            )
    base = results.get("reference")
    if base:
        parts = [
            f"{v}/reference: peak RSS x{r['peak_mb'] / base['peak_mb']:.2f}, "
            f"forward MB x{r['forward_mb'] / max(base['forward_mb'], 1e-9):.2f}, wall x{r['wall'] / base['wall']:.2f}"
            for v, r in results.items()
            if v != "reference"
        ]
        print("ratios: " + "; ".join(parts))


if __name__ == "__main__":
    main()
