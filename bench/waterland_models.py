"""Forward throughput (tiles/s) and peak memory of the six water-land variants, side by side in one run.

Each variant runs in its own subprocess so its peak resident memory (ru_maxrss) is its own: we report the
process peak and the peak above the baseline taken after the model and the input batch exist (activations
and workspace). Input: batch 8 of 512x512 tiles with 4 bands (the paper's B2, B3, B4, B8), eval mode, no grad.

    .venv/bin/python bench/waterland_models.py [--iters 2] [--warmup 1] [--threads 2] [--batch 8] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = [(f, w) for f in ("senet", "deepunet", "munet") for w in ("full", "half")]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(family: str, width: str, args: argparse.Namespace) -> dict[str, float | str]:
    import torch

    from rrsis.models.waterland.blocks import count_parameters
    from rrsis.models.waterland.config import WaterlandConfig
    from rrsis.models.waterland.net import WaterlandNet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WaterlandNet(WaterlandConfig(family=family, width=width, in_bands=4)).eval()
    x = torch.randn(args.batch, 4, args.size, args.size)
    base = rss_mb()
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x)
        start = time.perf_counter()
        for _ in range(args.iters):
            model(x)
        seconds = (time.perf_counter() - start) / args.iters
    return {
        "variant": f"{family}/{width}",
        "params": count_parameters(model),
        "s_per_batch": seconds,
        "tiles_per_s": args.batch / seconds,
        "peak_rss_mb": rss_mb(),
        "peak_above_base_mb": rss_mb() - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "WIDTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args)))
        return
    forwarded = [f"--{k}={getattr(args, k)}" for k in ("iters", "warmup", "threads", "batch", "size")]
    print(f"batch {args.batch} x 4 x {args.size} x {args.size}, {args.threads} threads, {args.iters} timed forwards")
    rows = {}
    for family, width in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", family, width, *forwarded], check=True, capture_output=True, text=True
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows[row["variant"]] = row
        print(
            f"{row['variant']:>14}  {row['params']:>11,} params  {row['tiles_per_s']:7.2f} tiles/s  "
            f"{row['s_per_batch']:7.2f} s/batch  peak {row['peak_rss_mb']:8.0f} MB  "
            f"(+{row['peak_above_base_mb']:.0f} MB over model+input)",
            flush=True,
        )
    for family in ("senet", "deepunet", "munet"):
        full, half = rows[f"{family}/full"], rows[f"{family}/half"]
        print(
            f"{family}: half/full throughput x{half['tiles_per_s'] / full['tiles_per_s']:.2f}, "
            f"params full/half x{full['params'] / half['params']:.2f}, "
            f"peak memory half/full {half['peak_rss_mb'] / full['peak_rss_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
