"""`run_map(cfg)`: the one driver of `rrsis map`, for every task.

inputs -> the task's checks and run id (`TASKS`) -> the run's lease (one driver per run folder) -> the
task's execution (`TaskRun.execute`: the tile tasks stream scenes through Ray Data and commit scene by
scene, `rrsis.pipeline.tile_run`) -> failures.parquet, summary.json and the console summary. Everything
here is shared by all tasks: storage set-up, input resolution (an unusable input is a failure row, the
other scenes go on), the lease, the resume/overwrite rule, and the failure and summary conventions.
Returns 0 when every scene was mapped, 1 when any scene or tile failed (the others are complete).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable

from rrsis import storage
from rrsis.checkpoint_header import read_header
from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.geo.raster import Declared
from rrsis.pipeline.context import RunContext
from rrsis.pipeline.inputs import SceneRef, resolve_inputs
from rrsis.pipeline.lease import LEASE, RunLease
from rrsis.pipeline.plan import Failure
from rrsis.pipeline.task_table import TaskRun
from rrsis.session import configure_storage, limit_malloc_arenas

log = logging.getLogger("rrsis.map")

#: Each task's `prepare(cfg, scenes) -> TaskRun`, as "module:function": imported only when that task runs,
#: because the referring tasks import torch and transformers (hundreds of MB a water-land driver never needs).
TASKS = {
    "waterland": "rrsis.pipeline.task_waterland:prepare",
    "boxes": "rrsis.pipeline.run_boxes:prepare",
    "referring/pslg_sam": "rrsis.pipeline.run_referring:prepare",
    "referring/danet": "rrsis.pipeline.task_danet:prepare",
}


def task_name(cfg: MapConfig) -> str:
    return f"referring/{cfg.method}" if cfg.task == "referring" else cfg.task


def task_prepare(cfg: MapConfig) -> Callable[[MapConfig, list[SceneRef]], TaskRun]:
    name = task_name(cfg)
    if name not in TASKS:
        raise ConfigError(f"config error: key 'task': {cfg.task!r} is not a map task; one of {sorted(TASKS)}")
    module, function = TASKS[name].split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def input_bands(cfg: MapConfig) -> list[str] | None:
    """The band names a STAC item must provide: the config's named bands, else the water-land checkpoint's
    (read from its header, without torch); None lets an item offer its own (`sar:polarizations`)."""
    named = [str(b) for b in cfg.bands if not str(b).isdigit()]
    if named or cfg.task != "waterland":
        return named or None
    header = read_header(cfg.infer.checkpoint)
    return [str(b) for b in (header or {}).get("bands") or []] or None


def check_device(cfg: MapConfig) -> None:
    """CUDA asked for a run on this machine's own Ray: checked here, one line before anything starts. (On a
    cluster the driver may have no GPU while the workers do: the inference actors check it there.)"""
    if cfg.infer.device.startswith("cuda") and not (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        # imported here: rrsis.devices imports torch (~400 MB), which a map driver otherwise never loads
        from rrsis.devices import resolve_device

        resolve_device(cfg.infer.device, key="infer.device")


def check_existing(cfg: MapConfig, run_prefix: str) -> None:
    """`resume=false` refuses a run folder that already has outputs (`overwrite=true` recomputes them)."""
    if cfg.resume or cfg.overwrite:
        return
    names = [uri.rsplit("/", 1)[-1] for uri in storage.list_prefix(storage.join(run_prefix, ""))]
    if any(not name.startswith(LEASE) for name in names):
        raise ConfigError(
            f"config error: key 'resume': run {run_prefix} already has outputs; set resume=true to continue it "
            "or overwrite=true to recompute every tile"
        )


def run_map(cfg: MapConfig) -> int:
    """Map every scene of `cfg.input` with the task `cfg.task`; see the module docstring."""
    start = time.perf_counter()
    limit_malloc_arenas()  # the driver's memory stays flat in the run's length (rrsis.session)
    configure_storage(cfg.storage)
    declared = Declared(cfg.units, cfg.input_scale, cfg.input_offset, cfg.gcp_crs, cfg.gcp_warp_crs, cfg.gcp_warp_res)
    scenes, problems = resolve_inputs(list(cfg.input), bands=input_bands(cfg), declared=declared)
    failures = [Failure("", p.item, "", "input", p.reason) for p in problems]
    for f in failures:
        log.warning("input %s skipped: %s", f.scene_uri, f.reason)
    check_device(cfg)
    prepared = task_prepare(cfg)(cfg, scenes)
    run_prefix = storage.join(cfg.output, prepared.run_id)
    with RunLease(run_prefix, cfg.lease_stale_s) as lease:
        check_existing(cfg, run_prefix)
        ctx = RunContext(cfg, scenes, failures, prepared.run_id, run_prefix, lease, start)
        ctx.timings["prepare_s"] = time.perf_counter() - start
        return prepared.execute(ctx)
