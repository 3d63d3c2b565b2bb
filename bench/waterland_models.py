"""Forward throughput (tiles/s) and peak memory of the six water-land variants, side by side in one run.

Every variant runs at each precision of --precisions (default fp32 and bf16, through autocast with fp32
weights, as `infer.precision` does in `rrsis map`); tiles/s per precision are printed side by side with the
bf16/fp32 ratio. On a CPU without AMX bf16 is emulated and slower than fp32 (a line before the table says
whether this CPU has AMX). Each (variant, precision) runs in its own subprocess so its peak resident memory
(ru_maxrss) is its own: we report the process peak and the peak above the baseline taken after the model and
the input batch exist (activations and workspace). Input: batch 8 of 512x512 tiles with 4 bands (the paper's
B2, B3, B4, B8), eval mode, no grad.

    .venv/bin/python bench/waterland_models.py [--iters 2] [--warmup 1] [--threads 2] [--batch 8] [--size 512]
        [--precisions fp32,bf16]
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
    # imported in the child process only: the parent process stays without torch
    import torch

    from rrsis.models.precision import autocast_for
    from rrsis.models.waterland.blocks import count_parameters
    from rrsis.models.waterland.config import WaterlandConfig
    from rrsis.models.waterland.net import WaterlandNet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WaterlandNet(WaterlandConfig(family=family, width=width, in_bands=4)).eval()
    x = torch.randn(args.batch, 4, args.size, args.size)
    base = rss_mb()
    with torch.inference_mode(), autocast_for(args.precision, "cpu"):
        for _ in range(args.warmup):
            model(x)
        start = time.perf_counter()
        for _ in range(args.iters):
            model(x)
        seconds = (time.perf_counter() - start) / args.iters
    return {
        "variant": f"{family}/{width}",
        "precision": args.precision,
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
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "WIDTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args)))
        return
    forwarded = [f"--{k}={getattr(args, k)}" for k in ("iters", "warmup", "threads", "batch", "size")]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    print(f"batch {args.batch} x 4 x {args.size} x {args.size}, {args.threads} threads, {args.iters} timed forwards")
    print(f"CPU: {cpu_note()}")
    rows: dict[tuple[str, str], dict] = {}
    for family, width in VARIANTS:
        for precision in precisions:
            out = subprocess.run(
                [sys.executable, __file__, "--one", family, width, f"--precision={precision}", *forwarded],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows[row["variant"], precision] = row
            print(
                f"{row['variant']:>14} {precision:>5}  {row['params']:>11,} params  {row['tiles_per_s']:7.2f} tiles/s  "
                f"{row['s_per_batch']:7.2f} s/batch  peak {row['peak_rss_mb']:8.0f} MB  "
                f"(+{row['peak_above_base_mb']:.0f} MB over model+input)",
                flush=True,
            )
    print(f"{'variant':>14}  " + "  ".join(f"{p + ' tiles/s':>14}" for p in precisions) + "  ratio to fp32")
    for family, width in VARIANTS:
        v = f"{family}/{width}"
        speeds = [rows[v, p]["tiles_per_s"] for p in precisions]
        ratios = ""
        if "fp32" in precisions:
            base = rows[v, "fp32"]["tiles_per_s"]
            ratios = "  ".join(f"{p} x{rows[v, p]['tiles_per_s'] / base:.2f}" for p in precisions if p != "fp32")
        print(f"{v:>14}  " + "  ".join(f"{t:>14.2f}" for t in speeds) + f"  {ratios}")
    first = precisions[0]
    for family in ("senet", "deepunet", "munet"):
        full, half = rows[f"{family}/full", first], rows[f"{family}/half", first]
        print(
            f"{family} ({first}): half/full throughput x{half['tiles_per_s'] / full['tiles_per_s']:.2f}, "
            f"params full/half x{full['params'] / half['params']:.2f}, "
            f"peak memory half/full {half['peak_rss_mb'] / full['peak_rss_mb']:.2f}"
        )


def cpu_note() -> str:
    """Whether this CPU multiplies bf16 natively (AMX), from /proc/cpuinfo, without importing torch."""
    try:
        flags = next((ln.split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    except OSError:
        flags = []
    if "amx_bf16" in flags:
        return "AMX bf16 present: bf16 runs natively"
    return "no AMX (amx_bf16 absent): bf16 is emulated, expect it slower than fp32"


if __name__ == "__main__":
    main()
