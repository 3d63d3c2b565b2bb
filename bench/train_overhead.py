"""Benchmark: step time of a 1-worker Ray Train run vs the plain loop, same model and the same batches.

Both sides run `train_one_epoch` over the same list of fixed batches (a tiny water-land SeNet, 2 bands,
64 px) for the same number of epochs; the Ray side times the epochs inside the worker (startup excluded,
printed separately). Prints ms/step for each and the ratio ray/plain (goal <= 1.05).

    .venv/bin/python bench/train_overhead.py [--epochs 5] [--batches 20] [--batch 8] [--px 64]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

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


def timed_epochs(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], epochs: int) -> float:
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
    model = ray.train.torch.prepare_model(build_model(model_config()))
    seconds = timed_epochs(model, config["batches"], config["epochs"])
    with open(config["out"], "w") as f:  # Ray Train V2 keeps metrics only with checkpoints: use a file
        f.write(str(seconds))
    ray.train.report({"seconds": seconds})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--px", type=int, default=64)
    args = parser.parse_args()
    batches = make_batches(args.batches, args.batch, args.px)
    steps = args.epochs * args.batches
    threads = torch.get_num_threads()

    torch.manual_seed(0)
    plain_s = timed_epochs(build_model(model_config()), batches, args.epochs)

    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
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
    print(f"plain loop : {steps} steps in {plain_s:.2f}s = {1000 * plain_s / steps:.1f} ms/step ({threads} threads)")
    print(f"Ray Train  : {steps} steps in {ray_s:.2f}s = {1000 * ray_s / steps:.1f} ms/step (1 worker, gloo)")
    print(f"Ray Train run wall time incl. startup: {wall_s:.1f}s")
    print(f"ratio ray/plain step time = {ray_s / plain_s:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
