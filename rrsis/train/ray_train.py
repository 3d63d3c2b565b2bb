"""`rrsis train` with `train.enabled=true`: a family's plain training functions inside a Ray Train `TorchTrainer`.

Thin glue only, the same for every family: each worker builds the family's `Recipe` (`rrsis.train.recipes`:
datasets, model, its own `train_one_epoch` / `evaluate`, its checkpoint), wraps `recipe.ddp_module` with
`prepare_model` (DDP; gloo on CPU, nccl on GPU) and the training loader with `prepare_data_loader` (a
DistributedSampler), and runs the epochs. Only the trained part goes under DDP (SAM: the mask decoder);
frozen parameters (`requires_grad=False`, e.g. a frozen text encoder) are skipped by DDP.

Choices made here (the papers say nothing about distribution):
- `optim.batch_size` is the *global* batch: each of N workers takes `batch_size // N` (at least 1), and DDP
  averages gradients, so N workers take the same optimisation steps as the plain loop on the same data.
- Reported training terms (`loss`, ...) are means over workers; validation runs on every worker over the whole
  (small) validation split with the unwrapped model, so every rank reports identical `val_*` metrics.
- Every `train.checkpoint_every` epochs (and at the last epoch) rank 0 reports a checkpoint folder
  `epoch_NNNNN/` holding `state.pt` (trained weights + optimiser + scheduler + epoch, loads with
  weights_only=True) and the family's self-describing checkpoint (`model.pt`; SAM: `decoder.pt`) usable by
  `rrsis map`/`eval`. Ray keeps the best `train.keep_best` by the family's metric (`recipes.score_attribute`).
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
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs
import torch

from rrsis import storage
from rrsis.config.common import StorageConfig
from rrsis.config.load import to_yaml
from rrsis.config.train import TrainConfig
from rrsis.log import get_logger
from rrsis.session import configure_storage, connect_ray
from rrsis.storage import s3
from rrsis.storage.uri import local_path
from rrsis.train.fit import STATE_FILE, Distribution, Epoch, best_index, fit_recipe, format_record
from rrsis.train.preflight import check_inputs
from rrsis.train.recipes import build_recipe, check_family, model_file, score_attribute

log = get_logger(__name__)

CKPT_PREFIX = "epoch_"


def run_dir(cfg: TrainConfig) -> str:
    return storage.join(cfg.output, cfg.run_name)


def storage_target(uri: str, settings: StorageConfig | None = None) -> tuple[str, Any]:
    """(storage_path, pyarrow filesystem or None) for Ray: s3:// goes to the job's endpoint (`storage:`,
    else AWS_ENDPOINT_URL) and region, the same ones `rrsis.storage` uses."""
    if storage.is_remote(uri):
        parsed = urlparse(uri)
        endpoint = urlparse((settings.endpoint_url if settings else "") or s3.endpoint_url())
        kwargs: dict[str, Any] = {}
        region = (
            (settings.region if settings else "")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if region:
            kwargs["region"] = region
        if endpoint.netloc:
            kwargs.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")
        return f"{parsed.netloc}{parsed.path}".rstrip("/"), pyarrow.fs.S3FileSystem(**kwargs)
    return os.path.abspath(local_path(uri)), None


def checkpoint_uri(checkpoint: Any, output: str) -> str:
    """A Ray checkpoint's folder as an rrsis URI (Ray gives S3 paths without their scheme)."""
    return f"s3://{checkpoint.path}" if storage.is_remote(output) else str(checkpoint.path)


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


def _mean_over_workers(terms: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return terms
    keys = sorted(terms)
    values = torch.tensor([terms[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(values)
    return {k: float(v) / world for k, v in zip(keys, values.tolist(), strict=True)}


def _any_rank(flag: bool, world: int) -> bool:
    if world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker, whatever the model family: the one epoch loop, distributed."""
    import ray.train  # Ray loads only inside the worker: `rrsis train` without Ray never pays for it
    import ray.train.torch

    cfg: TrainConfig = config["cfg"]
    configure_storage(cfg.storage)  # this worker process's own S3 settings
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    recipe = build_recipe(cfg, ray.train.torch.get_device())
    state = _load_state(ray.train.get_checkpoint())
    start_epoch = int(state["epoch"]) + 1 if state is not None else 1
    _write_worker_note(cfg, rank, start_epoch)
    history = _history_before(cfg, start_epoch) if rank == 0 else []

    def on_epoch(epoch: Epoch) -> None:
        number, metrics = int(epoch.record["epoch"]), epoch.record
        if rank == 0:
            history.append(json.dumps(metrics))
            storage.put_bytes(storage.join(run_dir(cfg), "metrics.jsonl"), ("\n".join(history) + "\n").encode())
            log.info("epoch %d: %s", number, format_record(metrics))
        if rank == 0 and (number % cfg.train.checkpoint_every == 0 or number == cfg.optim.epochs):
            with tempfile.TemporaryDirectory(prefix="rrsis-ckpt-") as folder:
                epoch.save(folder, cfg)
                ray.train.report(
                    metrics,
                    checkpoint=ray.train.Checkpoint.from_directory(folder),
                    checkpoint_dir_name=f"{CKPT_PREFIX}{number:05d}",
                )
        else:
            ray.train.report(metrics)

    dist = Distribution(
        world=world,
        wrap=lambda module, unused: ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"find_unused_parameters": unused}
        ),
        prepare_loader=lambda loader: ray.train.torch.prepare_data_loader(loader, move_to_device=False),
        mean=lambda terms: _mean_over_workers(terms, world),
        any_rank=lambda flag: _any_rank(flag, world),
        extra={"restored_from_epoch": start_epoch - 1},
    )
    fit_recipe(cfg, recipe, on_epoch, state=state, dist=dist)


def build_trainer(cfg: TrainConfig) -> Any:
    """The TorchTrainer for `cfg` (separate from `fit` so tests and Tune can hold it)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage_path, filesystem = storage_target(cfg.output, cfg.storage)
    resume_from = None
    if cfg.train.resume:
        latest = latest_checkpoint_uri(cfg)
        if latest is not None:
            path, fs = storage_target(latest, cfg.storage)
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
    configure_storage(cfg.storage)
    check_family(cfg)
    check_inputs(cfg)  # on the driver: one line before Ray starts, not once per worker
    connect_ray(cfg.ray)
    storage.put_bytes(storage.join(run_dir(cfg), "config.yaml"), to_yaml(cfg).encode())
    log.info(
        "Ray Train: %d worker(s), %s, into %s",
        cfg.train.num_workers,
        "GPU" if cfg.train.use_gpu else "CPU",
        run_dir(cfg),
    )
    result = build_trainer(cfg).fit()
    kept = result.best_checkpoints or []
    index = best_index([metrics for _, metrics in kept], score_attribute(cfg))
    best = sorted(kept, key=lambda pair: pair[1].get("epoch", 0))[index][0] if kept else result.checkpoint
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, float)}
    print(f"run folder {run_dir(cfg)}; final metrics {json.dumps(metrics)}")
    if best is not None:
        print(f"best checkpoint: {storage.join(checkpoint_uri(best, cfg.output), model_file(cfg))}")
    return 0
