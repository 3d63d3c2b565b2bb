"""Benchmark: step time of a 1-worker Ray Train run vs the plain loop, same model and the same batches.

Both sides run `train_one_epoch` over a DataLoader of the same fixed batches (a tiny water-land SeNet, 2 bands,
64 px) with the same torch thread count; the Ray side goes through the same glue as `rrsis.train.ray_train`
(`prepare_model`, `prepare_data_loader`) and times its epochs inside the worker. Each side runs in blocks of
at least `--block-s` seconds (whole epochs, after one warm-up epoch), alternating plain / Ray Train /
plain / ... / plain (`--rounds` Ray blocks, one more plain block). A plain block runs in its own process and
session (as the Ray worker does). Each Ray block is compared with the mean of the plain blocks on either side
of it, so a load change on a shared machine shows in the spread rather than in one figure. Ray Train's
start-up (wall time of a fit minus its timed block) is reported apart.
Prints every block, the median ratio ray/plain step time with its min-max spread (goal <= 1.05).

    .venv/bin/python bench/train_overhead.py [--block-s 30] [--rounds 3] [--batches 20] [--batch 8] [--px 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader

from rrsis.losses import build_loss
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model
from rrsis.train.loop import train_one_epoch


def make_batches(n: int, batch: int, px: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        image = torch.randn(batch, 2, px, px, generator=gen)
        label = (image[:, 0] > 0.3).long()
        out.append({"image": image, "label": label, "valid": torch.ones(batch, px, px, dtype=torch.bool)})
    return out


def model_config() -> ModelConfig:
    cfg = ModelConfig(name="waterland")
    cfg.waterland.family = "senet"
    cfg.waterland.width = "half"
    cfg.waterland.in_bands = 2
    cfg.waterland.aux_heads = 0
    return cfg


def timed_block(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], block_s: float
) -> tuple[int, float]:
    """(epochs, seconds) of whole epochs run until at least `block_s` passed, after one warm-up epoch."""
    torch.manual_seed(0)
    loss_fn = build_loss("ce")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, batches, loss_fn, opt, device="cpu")
    start = time.perf_counter()
    epochs = 0
    while time.perf_counter() - start < block_s:
        train_one_epoch(model, batches, loss_fn, opt, device="cpu")
        epochs += 1
    return epochs, time.perf_counter() - start


def ray_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    model = ray.train.torch.prepare_model(build_model(model_config()))  # as rrsis.train.ray_train does
    loader = ray.train.torch.prepare_data_loader(DataLoader(config["batches"], batch_size=None), move_to_device=False)
    epochs, seconds = timed_block(model, loader, config["block_s"])
    with open(config["out"], "w") as f:  # Ray Train V2 keeps metrics only with checkpoints: use a file
        f.write(f"{epochs} {seconds}")
    ray.train.report({"seconds": seconds})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--block-s", type=float, default=30.0, help="minimum timed seconds per block")
    parser.add_argument("--rounds", type=int, default=3, help="Ray Train blocks (plain blocks: one more)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--px", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads on both sides; 0 = torch's default")
    parser.add_argument("--plain-only", action="store_true", help="internal: time one plain block, print it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = make_batches(args.batches, args.batch, args.px)
    threads = torch.get_num_threads()
    if args.plain_only:
        torch.manual_seed(0)
        epochs, seconds = timed_block(build_model(model_config()), DataLoader(batches, batch_size=None), args.block_s)
        print(epochs, seconds)
        return

    def ms_per_step(epochs: int, seconds: float) -> float:
        return 1000 * seconds / (epochs * args.batches)

    def plain() -> float:
        """One plain block in a fresh process and session: a Ray worker runs in the raylet's session, and with
        the kernel's session autogroups a shared machine would otherwise give the two sides different CPU
        shares. Same seeded batches, same thread count."""
        argv = [sys.executable, __file__, "--plain-only", f"--threads={threads}", f"--block-s={args.block_s}"]
        argv += [f"--batches={args.batches}", f"--batch={args.batch}", f"--px={args.px}"]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, start_new_session=True)
        epochs, seconds = done.stdout.strip().splitlines()[-1].split()
        ms = ms_per_step(int(epochs), float(seconds))
        print(f"plain block: {epochs} epochs in {float(seconds):.1f}s = {ms:.2f} ms/step", flush=True)
        return ms

    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    def ray_block() -> tuple[float, float]:
        """(ms/step, start-up seconds) of one Ray Train fit timing one block in its worker."""
        out_file = f"/tmp/rrsis-bench-ray-{os.getpid()}.txt"
        started = time.perf_counter()
        trainer = TorchTrainer(
            ray_worker,
            train_loop_config={"batches": batches, "block_s": args.block_s, "threads": threads, "out": out_file},
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=False),
            run_config=ray.train.RunConfig(name=f"bench_{time.time_ns()}", storage_path="/tmp/rrsis-bench-ray"),
        )
        trainer.fit()
        wall_s = time.perf_counter() - started
        with open(out_file) as f:
            epochs, seconds = f.read().split()
        os.remove(out_file)
        ms = ms_per_step(int(epochs), float(seconds))
        startup = wall_s - float(seconds)
        print(f"Ray block  : {epochs} epochs in {float(seconds):.1f}s = {ms:.2f} ms/step; start-up {startup:.1f}s")
        return ms, startup

    bench_started = time.perf_counter()
    # Ray sets OMP_NUM_THREADS=1 in workers of 1 CPU; give the worker the driver's thread count instead
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    plains = [plain()]
    rays: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        rays.append(ray_block())
        plains.append(plain())
    ray.shutdown()
    ratios = sorted(r / ((plains[i] + plains[i + 1]) / 2) for i, (r, _) in enumerate(rays))
    startups = sorted(s for _, s in rays)
    print(f"plain ms/step per block: {', '.join(f'{p:.2f}' for p in plains)} ({threads} threads)")
    print(f"Ray Train ms/step per block: {', '.join(f'{r:.2f}' for r, _ in rays)} (1 worker, gloo)")
    print(
        f"Ray Train start-up per fit: median {statistics.median(startups):.1f}s ({startups[0]:.1f}-{startups[-1]:.1f})"
    )
    median = statistics.median(ratios)
    print(f"ratio ray/plain step time: median {median:.3f}, spread {ratios[0]:.3f}-{ratios[-1]:.3f} (goal <= 1.05)")
    print(f"bench run time {time.perf_counter() - bench_started:.0f}s")


if __name__ == "__main__":
    main()
