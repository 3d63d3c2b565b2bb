"""Benchmark: step time of a 1-worker Ray Train run vs the plain loop, same model and the same batches.

Both sides run `train_one_epoch` over a DataLoader of the same fixed batches (a tiny water-land SeNet, 2 bands,
64 px) for the same number of epochs, with the same torch thread count; the Ray side goes through the same
glue as `rrsis.train.ray_train` (`prepare_model`, `prepare_data_loader`) and times its epochs inside the
worker, so Ray start-up and worker-group set-up are excluded (printed separately). One warm-up epoch is
excluded on both sides. The plain loop runs in its own process and session (as the Ray worker does), timed
before and after the Ray run (A-B-A); the ratio uses their mean, so a load change on a shared machine shows
up as a gap between the two plain figures.
Prints ms/step for each and the ratio ray/plain (goal <= 1.05). Runs in about a minute on 2 cores.

    .venv/bin/python bench/train_overhead.py [--epochs 5] [--batches 20] [--batch 8] [--px 64] [--threads N]
"""

from __future__ import annotations

import argparse
import os
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


def timed_epochs(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], epochs: int) -> float:
    """Seconds for `epochs` passes after one warm-up pass."""
    torch.manual_seed(0)
    loss_fn = build_loss("ce")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, batches, loss_fn, opt, device="cpu")
    start = time.perf_counter()
    for _ in range(epochs):
        train_one_epoch(model, batches, loss_fn, opt, device="cpu")
    return time.perf_counter() - start


def ray_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    model = ray.train.torch.prepare_model(build_model(model_config()))  # as rrsis.train.ray_train does
    loader = ray.train.torch.prepare_data_loader(DataLoader(config["batches"], batch_size=None), move_to_device=False)
    seconds = timed_epochs(model, loader, config["epochs"])
    with open(config["out"], "w") as f:  # Ray Train V2 keeps metrics only with checkpoints: use a file
        f.write(str(seconds))
    ray.train.report({"seconds": seconds})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--px", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads on both sides; 0 = torch's default")
    parser.add_argument("--plain-only", action="store_true", help="internal: time the plain loop, print seconds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = make_batches(args.batches, args.batch, args.px)
    steps = args.epochs * args.batches
    threads = torch.get_num_threads()
    if args.plain_only:
        torch.manual_seed(0)
        print(timed_epochs(build_model(model_config()), DataLoader(batches, batch_size=None), args.epochs))
        return

    def plain() -> float:
        """The plain loop in a fresh process and session: a Ray worker runs in the raylet's session, and with
        the kernel's session autogroups a shared machine would otherwise give the two sides different CPU
        shares. Same seeded batches, same thread count."""
        argv = [sys.executable, __file__, "--plain-only", f"--threads={threads}", f"--epochs={args.epochs}"]
        argv += [f"--batches={args.batches}", f"--batch={args.batch}", f"--px={args.px}"]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, start_new_session=True)
        return float(done.stdout.strip().splitlines()[-1])

    bench_started = time.perf_counter()
    plain_before = plain()
    print(f"plain loop (before Ray) done: {plain_before:.2f}s; starting Ray Train", flush=True)

    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    # Ray sets OMP_NUM_THREADS=1 in workers of 1 CPU; give the worker the driver's thread count instead
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    out_file = f"/tmp/rrsis-bench-ray-{os.getpid()}.txt"
    started = time.perf_counter()
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"batches": batches, "epochs": args.epochs, "threads": threads, "out": out_file},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=False),
        run_config=ray.train.RunConfig(name=f"bench_{int(time.time())}", storage_path="/tmp/rrsis-bench-ray"),
    )
    trainer.fit()
    wall_s = time.perf_counter() - started
    with open(out_file) as f:
        ray_s = float(f.read())
    os.remove(out_file)
    ray.shutdown()
    plain_after = plain()
    plain_s = (plain_before + plain_after) / 2
    print(f"plain loop before/after Ray: {plain_before:.2f}s / {plain_after:.2f}s")
    print(f"plain loop : {steps} steps in {plain_s:.2f}s = {1000 * plain_s / steps:.1f} ms/step ({threads} threads)")
    print(f"Ray Train  : {steps} steps in {ray_s:.2f}s = {1000 * ray_s / steps:.1f} ms/step (1 worker, gloo)")
    print(f"Ray Train run wall time incl. startup: {wall_s:.1f}s")
    print(f"ratio ray/plain step time = {ray_s / plain_s:.3f} (goal <= 1.05)")
    print(f"bench run time {time.perf_counter() - bench_started:.0f}s")


if __name__ == "__main__":
    main()
