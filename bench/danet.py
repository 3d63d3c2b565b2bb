"""Benchmark: forward+backward time and peak memory of LAVT vs +EAAS vs +RAAM vs full DANet, side by side.

Each (size, variant) runs in a fresh process so its peak RSS (ru_maxrss) is its own; "act+grad MB" is that peak
minus the RSS right after building the model (activations, gradients, optimiser-free). Time is the process's
CPU time per iteration (best of N, one intra-op thread by default), which stays comparable when other jobs
share the machine; wall time is printed beside it. Sizes:
  tiny  - the `tiny` Swin preset, 64x64, batch 4 (the test/demo model);
  paper - Swin-B, 480x480, batch 1, decoder 256, K 32 (the paper's setting; text encoder = offline MiniLM since
          no BERT-base weights are available offline). Forward+backward if memory allows, else forward only.
Run: .venv/bin/python bench/danet.py [--sizes tiny,paper] [--reps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from typing import Any

VARIANTS = {
    "LAVT": {"eaas": False, "raam": False},
    "+EAAS": {"eaas": True, "raam": False},
    "+RAAM": {"eaas": False, "raam": True},
    "full": {"eaas": True, "raam": True},
}
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "cfg": dict(
            backbone="tiny", window_size=4, input_px=64, decoder_dim=32, key_dim=16, num_heads=4, ffn_dim=48, k=8
        ),
        "batch": 4,
    },
    "paper": {"cfg": dict(backbone="swin_b", window_size=12, input_px=480), "batch": 1},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(size: str, variant: str, reps: int, threads: int, backward: bool, queue: Any) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from rrsis.losses.danet import danet_loss
    from rrsis.models.danet.config import DanetConfig
    from rrsis.models.danet.model import build_danet
    from rrsis.models.danet.text import load_tokenizer, tokenize

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = SIZES[size]
    cfg = DanetConfig(**spec["cfg"], **VARIANTS[variant])
    model = build_danet(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    b, px = spec["batch"], cfg.input_px
    ids, mask = tokenize(load_tokenizer(), ["the large lake on the left of the river"] * b, cfg.max_tokens)
    image, target = torch.randn(b, 3, px, px), (torch.rand(b, px, px) > 0.5).float()
    model.train()
    after_build = _rss_mb()
    times, walls = [], []
    for i in range(reps + 1):  # first run is warm-up
        t0, w0 = time.process_time(), time.perf_counter()
        if backward:
            out = model(image, ids, mask)
            loss = danet_loss(out.logits, target, out.affinity_features, out.affinity_labels, cfg.lambda_af)
            loss.total.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(image, ids, mask)
        if i:
            times.append(time.process_time() - t0)
            walls.append(time.perf_counter() - w0)
    peak = _rss_mb()
    queue.put({"params": n_params, "s": min(times), "wall": min(walls), "peak_mb": peak, "act_mb": peak - after_build})


def run(size: str, variant: str, reps: int, threads: int, backward: bool) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(size, variant, reps, threads, backward, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {}
    result: dict[str, float] = queue.get()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,paper")
    ap.add_argument("--reps", type=int, default=9, help="timed runs at tiny size (a third of it at paper size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper-forward-only", action="store_true", help="skip backward at paper size")
    args = ap.parse_args()
    for size in args.sizes.split(","):
        backward = not (size == "paper" and args.paper_forward_only)
        reps = args.reps if size == "tiny" else max(1, args.reps // 3)
        mode = "forward+backward" if backward else "forward only"
        print(f"\n== {size}: batch {SIZES[size]['batch']}, {mode}, best of {reps}, {args.threads} thread(s)")
        head = ("variant", "params", "CPU s", "x LAVT", "wall s", "peak RSS MB", "act+grad MB", "x LAVT")
        print("{:8} {:>12} {:>9} {:>7} {:>8} {:>12} {:>12} {:>7}".format(*head), flush=True)
        base: dict[str, float] = {}
        for variant in VARIANTS:
            r = run(size, variant, reps, args.threads, backward)
            if not r:
                print(f"{variant:8} failed (out of memory?)")
                continue
            base = base or r
            print(
                f"{variant:8} {int(r['params']):>12,d} {r['s']:>9.3f} {r['s'] / base['s']:>7.2f} {r['wall']:>8.2f} "
                f"{r['peak_mb']:>12.0f} {r['act_mb']:>12.0f} {r['act_mb'] / max(base['act_mb'], 1e-9):>7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
