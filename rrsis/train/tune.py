"""`rrsis tune`: a Ray Tune search (ASHA) over a YAML search space around any family's training loop.

Each trial is the one epoch loop over the family's recipe (`rrsis.train.recipes`: its own `train_one_epoch` /
`evaluate`; water-land, DANet, grounding, SAM decoder) on one CPU/GPU slot, reporting one result per
epoch so ASHA can stop bad trials at its rungs; every epoch is checkpointed (`state.pt`) so an interrupted
search restored with `tune.restore=true` (`Tuner.restore`) continues unfinished trials where they stopped
and never reruns finished ones.

Search-space YAML (`configs/tune/space_*.yaml`): a mapping from a dotted TrainConfig key to one sampler:
    optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
    model.waterland.family: {choice: [senet, munet]}
Spaces for the papers' axes: `space_waterland.yaml`, `space_danet.yaml` (K, lambda_af, alpha, EAAS/RAAM),
`space_sam_decoder.yaml` (lr, data fraction), `space_grounding.yaml` (lr); `tune.metric` is the family's
(`val_iou_mean`, `val_miou`, `val_box_acc@0.5`; the SAM decoder has no validation split: `loss`, mode min).
Samplers: choice, grid, uniform, loguniform, randint (high exclusive), quniform [lo, hi, q].
Outputs in `<output>/<name>/`: Ray's experiment folder, `results.csv`, `results.parquet` (one row per trial:
config, last metrics, epochs run) and `best_train.yaml`, a ready-to-run `rrsis train --config` file.
The console shows one line per trial event (`rrsis.train.tune_progress`), then the table sorted by the
metric, then the best trial's config file and checkpoint.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
from typing import Any

import ray
import torch
import yaml
from omegaconf import OmegaConf
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from rrsis import storage
from rrsis.config.load import to_dict, to_yaml, validate
from rrsis.config.train import TrainConfig
from rrsis.config.tune import TuneConfig
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError, InputError, RrsisError
from rrsis.log import get_logger
from rrsis.report import report_run
from rrsis.session import configure_storage, connect_ray, verbose
from rrsis.train.fit import STATE_FILE, Epoch, fit_recipe
from rrsis.train.preflight import check_fits, check_inputs, check_metric
from rrsis.train.ray_train import checkpoint_uri, for_workers, storage_target
from rrsis.train.recipes import build_recipe, model_file
from rrsis.train.tune_progress import TrialProgress

log = get_logger(__name__)

SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")


def load_space(path: str) -> dict[str, Any]:
    """Parse a search-space YAML into Ray Tune samplers; errors name the file and the key."""
    try:
        raw = yaml.safe_load(storage.get_bytes(path).decode())
    except Exception as exc:
        raise ConfigError(f"tune.space={path}: cannot read search space: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"tune.space={path}: must be a non-empty mapping of dotted train keys to samplers")
    space: dict[str, Any] = {}
    for key, spec in raw.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(f"tune.space={path}: {key} must be one of {{{', '.join(SAMPLERS)}: [...]}}, got {spec}")
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"tune.space={path}: {key}.{kind} needs a non-empty list, got {args!r}")
        if kind == "grid":
            space[key] = tune.grid_search(args)
        elif kind == "choice":
            space[key] = tune.choice(args)
        else:
            space[key] = getattr(tune, kind)(*args)
    apply_overrides(TrainConfig(), {k: _example(v) for k, v in space.items()}, source=path)  # keys exist?
    return space


def _example(sampler: Any) -> Any:
    if isinstance(sampler, dict) and "grid_search" in sampler:
        return sampler["grid_search"][0]
    return sampler.sample()


def apply_overrides(base: TrainConfig, params: dict[str, Any], *, source: str = "trial") -> TrainConfig:
    """`base` with dotted-key values applied and validated (the same rules as a train YAML)."""
    merged = OmegaConf.structured(copy.deepcopy(base))
    for key, value in params.items():
        if OmegaConf.select(merged, key, default="__missing__") == "__missing__":
            raise ConfigError(f"{source}: unknown train key {key!r}")
        try:
            OmegaConf.update(merged, key, value, merge=True)
        except Exception as exc:
            raise ConfigError(f"{source}: {key}={value!r} is not allowed: {exc}") from exc
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, TrainConfig)
    validate(cfg)
    return cfg


def trial(params: dict[str, Any], base: TrainConfig) -> None:
    """One Tune trial: the one epoch loop over the family's recipe, one `tune.report` per epoch with a
    checkpoint (`state.pt` to resume, and the family's model file)."""
    cfg = apply_overrides(base, params)
    configure_storage(cfg.storage)  # this trial process's own S3 settings (the tune job's, see `build_tuner`)
    torch.manual_seed(cfg.seed)
    recipe = build_recipe(cfg, resolve_device(cfg.device))
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)

    def on_epoch(epoch: Epoch) -> None:
        with tempfile.TemporaryDirectory(prefix="rrsis-trial-") as folder:
            epoch.save(folder, cfg)
            tune.report(epoch.record, checkpoint=tune.Checkpoint.from_directory(folder))

    fit_recipe(cfg, recipe, on_epoch, state=state)


def experiment_uri(cfg: TuneConfig) -> str:
    return storage.join(for_workers_output(cfg.output), cfg.name)


def for_workers_output(output: str) -> str:
    return output if storage.is_remote(output) else os.path.abspath(output)


def trial_resources(cfg: TuneConfig) -> dict[str, float]:
    """What one trial asks Ray for: `cpus_per_trial`, and one GPU when `base.train.use_gpu`."""
    return {"cpu": cfg.cpus_per_trial, "gpu": 1.0 if cfg.base.train.use_gpu else 0.0}


def trial_reason(error: BaseException) -> str:
    """The first line of what went wrong inside a trial (Ray wraps it in its own exceptions)."""
    seen = error
    for _ in range(10):
        inner = getattr(seen, "cause", None) or seen.__cause__
        if not isinstance(inner, BaseException):
            break
        seen = inner
    if isinstance(seen, RrsisError):
        return str(seen).splitlines()[0] if str(seen) else type(seen).__name__
    lines = [line for line in str(seen).splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""  # a Ray traceback text ends with "Type: message"
    return last if type(seen).__name__ in last else f"{type(seen).__name__}: {last}"


def preflight(cfg: TuneConfig) -> dict[str, Any]:
    """Everything that can fail before a trial starts, checked on the driver (one line each); returns the space."""
    resolve_device(cfg.base.device, key="base.device")
    check_inputs(cfg.base, "base.")
    space = load_space(cfg.space)
    check_metric(cfg.metric, cfg.base)
    if cfg.scheduler == "asha" and cfg.grace_period > cfg.base.optim.epochs:
        raise ConfigError(
            f"config error: key 'grace_period' = {cfg.grace_period} is more than 'base.optim.epochs' = "
            f"{cfg.base.optim.epochs}: ASHA stops no trial before grace_period epochs; lower grace_period or raise "
            "base.optim.epochs"
        )
    return space


def build_tuner(cfg: TuneConfig, callbacks: list[Any] | None = None) -> Any:
    """A fresh Tuner, or `Tuner.restore` of the same experiment when `restore=true` and it exists (which keeps
    the run config it was started with). The console shows `TrialProgress` lines, not Ray's status table."""
    base = for_workers(cfg.base)
    base.storage = cfg.storage  # trials read and write where the tune job does
    space = load_space(cfg.space)
    trainable = tune.with_resources(tune.with_parameters(trial, base=base), trial_resources(cfg))
    storage_path, filesystem = storage_target(for_workers_output(cfg.output), cfg.storage)
    if cfg.restore:
        path = f"{storage_path}/{cfg.name}"
        if tune.Tuner.can_restore(path, storage_filesystem=filesystem):
            log.info("restoring tune experiment %s", experiment_uri(cfg))
            return tune.Tuner.restore(path, trainable=trainable, resume_errored=True, storage_filesystem=filesystem)
        log.info("tune.restore=true but %s has no experiment yet: starting fresh", experiment_uri(cfg))
    scheduler = (
        ASHAScheduler(
            max_t=cfg.base.optim.epochs,
            grace_period=cfg.grace_period,
            reduction_factor=cfg.reduction_factor,
            time_attr="training_iteration",
        )
        if cfg.scheduler == "asha"
        else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=cfg.metric,
            mode=cfg.mode,
            num_samples=cfg.num_samples,
            scheduler=scheduler,
            max_concurrent_trials=cfg.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[TrialProgress(cfg.metric, cfg.mode, cfg.base.optim.epochs, list(space)), *(callbacks or [])],
            verbose=None if verbose() else 0,  # None: Ray's default (its status table) under `rrsis --verbose`
        ),
    )


def results_table(results: Any, space_keys: list[str], metric: str = "val_iou_mean") -> Any:
    """One row per trial: id, status, epochs run, the searched config values and the last metrics."""
    frame = results.get_dataframe()
    keep = ["trial_id", "training_iteration", "loss", metric, "val_iou_mean", "val_iou_water", "val_f1"]
    keep = list(dict.fromkeys(keep))  # the metric may be one of the water-land columns
    columns = [c for c in keep if c in frame.columns] + [f"config/{k}" for k in space_keys if f"config/{k}" in frame]
    table = frame[columns].rename(columns={f"config/{k}": k for k in space_keys})
    return table.rename(columns={"training_iteration": "epochs_run"})


def _best_result(results: Any, table: Any) -> Any:
    """The trial at the top of the printed table (last reported metric), so the exported config and the
    table always agree, ties included."""
    top = str(table.iloc[0]["trial_id"])
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id == top or (trial_id is None and top in str(result.path)):
            return result
    raise ConfigError(f"tune: trial {top} from the results table has no result")


def run_tune(cfg: TuneConfig) -> int:
    configure_storage(cfg.storage)
    space_keys = list(preflight(cfg))
    resources = trial_resources(cfg)
    if not (ray.is_initialized() or cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        # the embedded Ray about to start: its size is known before starting it
        local = {"CPU": cfg.ray.num_cpus or os.cpu_count() or 1, "GPU": cfg.ray.num_gpus or torch.cuda.device_count()}
        check_fits(resources["cpu"], resources["gpu"], [local])
    mode = connect_ray(cfg.ray)
    try:
        check_fits(resources["cpu"], resources["gpu"], [n["Resources"] for n in ray.nodes() if n.get("Alive")])
    except ConfigError as exc:
        if mode != "cluster":  # a local Ray never grows
            raise
        log.warning("%s (waiting for the cluster to scale up)", exc)  # an autoscaler may still add such a node
    results = build_tuner(cfg).fit()
    if mode == "embedded":
        ray.shutdown()  # this job's own Ray: stopped now, so its exit logs come before the result, not after
    out = experiment_uri(cfg)
    errors = [r for r in results if r.error is not None]
    for r in errors:
        log.error("trial %s failed: %s", (r.metrics or {}).get("trial_id") or r.path, trial_reason(r.error))
    if len(errors) == len(results):
        raise InputError(f"all {len(results)} trials failed; the first: {trial_reason(errors[0].error)}")
    table = results_table(results, space_keys, cfg.metric)
    if cfg.metric not in table.columns:
        raise ConfigError(f"config error: key 'metric': no trial reported {cfg.metric!r}")
    table = table.sort_values(cfg.metric, ascending=cfg.mode == "min")
    storage.put_bytes(storage.join(out, "results.csv"), table.to_csv(index=False).encode())
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    storage.put_bytes(storage.join(out, "results.parquet"), buffer.getvalue())
    best = _best_result(results, table)
    params = {k: best.config[k] for k in space_keys}
    best_cfg = apply_overrides(cfg.base, params)
    best_cfg.run_name = f"{cfg.name}_best"
    storage.put_bytes(storage.join(out, "best_train.yaml"), to_yaml(best_cfg).encode())
    best_score = best.metrics.get(cfg.metric) if best.metrics else None
    where = ""
    if best.checkpoint is not None:
        where = f"; checkpoint: {storage.join(checkpoint_uri(best.checkpoint, cfg.output), model_file(best_cfg))}"
    report_run(out, config=to_dict(cfg), kind="tune")
    # the run ends on the sorted table and the best trial: its config file and checkpoint are the last line
    print(f"{len(table)} trials by {cfg.metric} ({cfg.mode}); all columns in {storage.join(out, 'results.csv')}:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(
        f"best trial {params} ({cfg.metric}={best_score}); train config: {storage.join(out, 'best_train.yaml')}{where}"
    )
    return 0
