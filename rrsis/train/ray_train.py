"""`rrsis train` with `train.enabled=true`: the plain water-land loop inside a Ray Train `TorchTrainer`.

Thin glue only: each worker builds the same datasets, model, loss and optimiser as `rrsis.train.run`, wraps
the model with `prepare_model` (DDP; gloo on CPU, nccl on GPU) and the loader with `prepare_data_loader`
(a DistributedSampler), and calls the same `train_one_epoch` / `evaluate`.

Choices made here (the papers say nothing about distribution):
- `optim.batch_size` is the *global* batch: each of N workers takes `batch_size // N` (at least 1), and DDP
  averages gradients, so N workers take the same optimisation steps as the plain loop on the same data.
- The reported `loss` is the mean over workers; validation runs on every worker over the whole (small)
  validation split with the unwrapped model, so every rank reports identical `val_*` metrics.
- Every `train.checkpoint_every` epochs (and at the last epoch) rank 0 reports a checkpoint folder
  `epoch_NNNNN/` holding `state.pt` (model + optimiser + epoch, loads with weights_only=True) and `model.pt`
  (a self-describing rrsis checkpoint usable by `rrsis map`/`eval`). Ray keeps the best `train.keep_best`
  by `val_<optim.monitor>`.
- After a worker failure Ray restarts the group (up to `train.max_failures` times) and each worker resumes
  from the latest reported checkpoint: the epoch counter continues, it does not restart. `train.resume=true`
  continues a finished or killed run (e.g. with more `optim.epochs`) from its latest `epoch_*` checkpoint.
- Run folder `<output>/<run_name>/` (local or s3://): Ray's checkpoints, `metrics.jsonl` (one line per epoch,
  written by rank 0), `config.yaml`, `workers/rank_<r>.json` (pid/host of each worker, for operators).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import tempfile
import time
from typing import Any
from urllib.parse import urlparse

import torch
from torch.utils.data import DataLoader

from rrsis import storage
from rrsis.checkpoints import save_checkpoint
from rrsis.config.load import to_yaml
from rrsis.config.train import TrainConfig
from rrsis.log import get_logger
from rrsis.losses import build_loss
from rrsis.models.registry import build_model
from rrsis.train.loop import AllHeads, evaluate, train_one_epoch
from rrsis.train.optim import build_optimizer
from rrsis.train.run import make_checkpoint, prepare_waterland

log = get_logger(__name__)

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
CKPT_PREFIX = "epoch_"


def score_attribute(cfg: TrainConfig) -> str:
    """The metric Ray ranks checkpoints by: `val_<monitor>` with a validation split, else the epoch."""
    if cfg.optim.monitor == "last" or not cfg.data.val_events:
        return "epoch"
    return f"val_{cfg.optim.monitor}"


def run_dir(cfg: TrainConfig) -> str:
    return storage.join(cfg.output, cfg.run_name)


def storage_target(uri: str) -> tuple[str, Any]:
    """(storage_path, pyarrow filesystem or None) for Ray: s3:// honours AWS_ENDPOINT_URL explicitly."""
    if storage.is_remote(uri):
        import pyarrow.fs

        parsed = urlparse(uri)
        endpoint = urlparse(os.environ.get("AWS_ENDPOINT_URL", ""))
        kwargs: dict[str, Any] = {}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        if endpoint.netloc:
            kwargs.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")
        return f"{parsed.netloc}{parsed.path}".rstrip("/"), pyarrow.fs.S3FileSystem(**kwargs)
    from rrsis.storage.uri import local_path

    return os.path.abspath(local_path(uri)), None


def latest_checkpoint_uri(cfg: TrainConfig) -> str | None:
    """The newest `epoch_NNNNN` checkpoint folder of this run (names sort by epoch), or None."""
    folders = {
        uri.rsplit("/", 2)[-2]
        for uri in storage.list_prefix(run_dir(cfg))
        if uri.endswith("/" + STATE_FILE) and uri.rsplit("/", 2)[-2].startswith(CKPT_PREFIX)
    }
    return storage.join(run_dir(cfg), max(folders)) if folders else None


def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return dict(torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True))


def _write_worker_note(cfg: TrainConfig, rank: int, start_epoch: int) -> None:
    note = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "start_epoch": start_epoch}
    storage.put_bytes(storage.join(run_dir(cfg), "workers", f"rank_{rank}.json"), json.dumps(note).encode())


def _history_before(cfg: TrainConfig, epoch: int) -> list[str]:
    """metrics.jsonl lines of epochs before `epoch` (a resumed attempt rewrites the epochs it repeats)."""
    uri = storage.join(run_dir(cfg), "metrics.jsonl")
    if not storage.exists(uri):
        return []
    lines = storage.get_bytes(uri).decode().splitlines()
    return [line for line in lines if line and json.loads(line).get("epoch", 0) < epoch]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    cfg: TrainConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    setup = prepare_waterland(cfg)
    model = build_model(cfg.model)
    state = _load_state(ray.train.get_checkpoint())
    start_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        start_epoch = int(state["epoch"]) + 1
    _write_worker_note(cfg, rank, start_epoch)
    device = ray.train.torch.get_device()
    plain_model = model
    # AllHeads before DDP: DDP's own forward must produce the auxiliary heads too, or their grads never sync
    model = ray.train.torch.prepare_model(AllHeads(model) if hasattr(model, "forward_heads") else model)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    loss_fn = build_loss(cfg.loss.name, alpha=cfg.loss.alpha, beta=cfg.loss.beta, lam=cfg.loss.lam, eps=cfg.loss.eps)
    scaler = torch.amp.GradScaler(device.type) if cfg.optim.amp and device.type == "cuda" else None
    batch = max(1, cfg.optim.batch_size // world)
    loader = DataLoader(setup.train_set, batch_size=batch, shuffle=True, num_workers=cfg.data.num_workers)
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    val_loader = (
        DataLoader(setup.val_set, batch_size=cfg.optim.eval_batch_size, num_workers=cfg.data.num_workers)
        if setup.val_set is not None
        else None
    )
    history = _history_before(cfg, start_epoch) if rank == 0 else []
    started = time.monotonic()
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)  # a different shuffle every epoch, the same on every rank
        record: dict[str, Any] = {"epoch": epoch, "restored_from_epoch": start_epoch - 1}
        record.update(
            train_one_epoch(
                model, loader, loss_fn, optimizer, device=device, scaler=scaler, grad_accum=cfg.optim.grad_accum
            )
        )
        if world > 1:
            loss = torch.tensor([record["loss"]], dtype=torch.float64)
            torch.distributed.all_reduce(loss)
            record["loss"] = float(loss.item()) / world
        if val_loader is not None:
            record.update({f"val_{k}": v for k, v in evaluate(plain_model, val_loader, device=device).items()})
        record["elapsed_s"] = round(time.monotonic() - started, 2)
        metrics = {k: float(v) for k, v in record.items()}
        is_ckpt_epoch = epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.optim.epochs
        if rank == 0:
            history.append(json.dumps(record))
            storage.put_bytes(storage.join(run_dir(cfg), "metrics.jsonl"), ("\n".join(history) + "\n").encode())
            log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if rank == 0 and is_ckpt_epoch:
            with tempfile.TemporaryDirectory(prefix="rrsis-ckpt-") as folder:
                state_out = {"model": plain_model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
                torch.save(state_out, os.path.join(folder, STATE_FILE))
                save_checkpoint(
                    make_checkpoint(plain_model, cfg, setup.stats, metrics), os.path.join(folder, MODEL_FILE)
                )
                ray.train.report(
                    metrics,
                    checkpoint=ray.train.Checkpoint.from_directory(folder),
                    checkpoint_dir_name=f"{CKPT_PREFIX}{epoch:05d}",
                )
        else:
            ray.train.report(metrics)


def connect_ray(address: str = "", num_cpus: int = 0) -> None:
    """Reuse a running Ray; else RAY_ADDRESS / `address`; else start one on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, configure_logging=False)
        return
    # address="local": always a new embedded Ray, never another user's cluster found in /tmp/ray
    kwargs: dict[str, Any] = {"address": "local", "_node_ip_address": "127.0.0.1", "include_dashboard": False}
    if num_cpus:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)


def build_trainer(cfg: TrainConfig) -> Any:
    """The TorchTrainer for `cfg` (separate from `fit` so tests and Tune can hold it)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage_path, filesystem = storage_target(cfg.output)
    resume_from = None
    if cfg.train.resume:
        latest = latest_checkpoint_uri(cfg)
        if latest is not None:
            path, fs = storage_target(latest)
            resume_from = ray.train.Checkpoint(path, filesystem=fs)
            log.info("resuming %s from %s", cfg.run_name, latest)
        else:
            log.info("train.resume=true but %s has no checkpoint yet: starting at epoch 1", run_dir(cfg))
    run_config = ray.train.RunConfig(
        name=cfg.run_name,
        storage_path=storage_path,
        storage_filesystem=filesystem,
        failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=cfg.train.keep_best,
            checkpoint_score_attribute=score_attribute(cfg),
            checkpoint_score_order="max",
        ),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg},
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        run_config=run_config,
        resume_from_checkpoint=resume_from,
    )


def for_workers(cfg: TrainConfig) -> TrainConfig:
    """A copy whose local paths are absolute: Ray workers do not share the driver's working directory."""
    out = copy.deepcopy(cfg)
    if not storage.is_remote(out.data.root) and os.path.exists(out.data.root):
        out.data.root = os.path.abspath(out.data.root)
    if not storage.is_remote(out.output):
        out.output = os.path.abspath(out.output)
    return out


def fit(cfg: TrainConfig) -> int:
    """Run the distributed training described by `cfg`; prints where the run folder and best model are."""
    cfg = for_workers(cfg)
    connect_ray(cfg.ray.address, cfg.ray.num_cpus)
    storage.put_bytes(storage.join(run_dir(cfg), "config.yaml"), to_yaml(cfg).encode())
    log.info(
        "Ray Train: %d worker(s), %s, into %s",
        cfg.train.num_workers,
        "GPU" if cfg.train.use_gpu else "CPU",
        run_dir(cfg),
    )
    result = build_trainer(cfg).fit()
    attr = score_attribute(cfg)
    ranked = sorted(result.best_checkpoints or [], key=lambda pair: float(pair[1].get(attr, 0.0)))
    best = ranked[-1][0] if ranked else result.checkpoint
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, float)}
    print(f"run folder {run_dir(cfg)}; final metrics {json.dumps(metrics)}")
    if best is not None:
        where = f"s3://{best.path}" if storage.is_remote(cfg.output) else best.path
        print(f"best checkpoint: {where}/{MODEL_FILE}")
    return 0
