"""The one table of what each rrsis stage needs from a Ray cluster, and the Ray options it turns into.

A map, train or tune job runs unchanged on a laptop, on a CPU-only cluster, and on a cluster with GPU and
CPU node types: stages that can use an accelerator (`infer`, train/tune workers) take one GPU per actor
when the cluster has GPUs and fall back to CPU otherwise; CPU-side stages (`read`, `refine`, `write`) ask
for a sliver of the custom resource `cpu_pool` when the cluster declares it, so they land on the CPU node
type and leave the GPU nodes' cores to feed the GPUs. The KubeRay manifests and the cluster launcher YAML
in `cluster/` declare `cpu_pool` on the CPU node type (checked by tests/test_cluster_manifests.py).

Pure Python: no Ray import here, the caller passes `ray.cluster_resources()` in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Custom resource that CPU-only node types declare; CPU stages request `CPU_POOL_SLICE` of it.
CPU_POOL_RESOURCE = "cpu_pool"
#: Tiny request: enough to pin a stage to CPU nodes, small enough never to limit how many actors fit.
CPU_POOL_SLICE = 0.001
#: Sentinel for `num_gpus`: decide from the cluster (one per actor when it has GPUs, else none).
AUTO = -1.0

_MIB = 1024 * 1024
#: Environment of every Ray process of a map run (the embedded Ray inherits it from `rrsis map`; the
#: cluster image sets it):
#: - `MALLOC_ARENA_MAX=2`: glibc gives each thread that allocates its own arena (up to 8 per core), and a
#:   Ray worker has dozens of threads; freed tile arrays then stay spread over many arenas. (A fixed 1 MB
#:   `MALLOC_MMAP_THRESHOLD_`, which returns every tile array to the OS at once, saved a further ~10 % of
#:   memory but made each torch forward 1.6x slower, mmapping and faulting in every activation: the map
#:   stages call `release_freed_memory()` before each batch instead.)
RAY_PROCESS_ENV = {"MALLOC_ARENA_MAX": "2"}


@dataclass(frozen=True)
class StageResources:
    """What one task or actor of a stage asks Ray for.

    `accelerated` stages take `gpus_per_actor` GPUs when the cluster has any; `cpu_pool` stages prefer the
    CPU node type when one exists. `memory_mb` is a scheduling reservation (Ray's `memory`), 0 = none.
    """

    name: str
    num_cpus: float
    memory_mb: int = 0
    accelerated: bool = False
    gpus_per_actor: float = 1.0
    cpu_pool: bool = False


#: Defaults per stage. Config values (e.g. `infer.num_cpus`, `infer.num_gpus`) override them per job.
STAGES: dict[str, StageResources] = {
    # map: a scene's metadata and tiling (`plan.expand_scene`), then its windowed GDAL reads, batch by batch
    "map.read": StageResources("map.read", num_cpus=1.0, memory_mb=512, cpu_pool=True),
    # map: the model; one GPU per actor when there are GPUs (the actor batches tiles)
    "map.infer": StageResources("map.infer", num_cpus=1.0, memory_mb=2048, accelerated=True),
    # map: CPU refinement (morphology, CFPG/MBO GrabCut) on the CPU node type
    "map.refine": StageResources("map.refine", num_cpus=1.0, memory_mb=1024, cpu_pool=True),
    # map: encode + PUT one mask tile per row
    "map.write": StageResources("map.write", num_cpus=1.0, memory_mb=512, cpu_pool=True),
    # map: per-scene products (COG mosaic, vectors, quicklook, stats), one task per scene, streamed by window
    "map.products": StageResources("map.products", num_cpus=1.0, memory_mb=1024, cpu_pool=True),
    # Ray Train worker (DDP rank): one GPU each when there are GPUs
    "train.worker": StageResources("train.worker", num_cpus=1.0, memory_mb=2048, accelerated=True),
    # Ray Tune trial (each trial is a small Train run or a function trainable)
    "tune.trial": StageResources("tune.trial", num_cpus=1.0, memory_mb=1024, accelerated=True),
}


def stage(name: str) -> StageResources:
    """The declared resources of `name`; an unknown stage names the known ones."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}")
    return STAGES[name]


def cluster_gpus(cluster: Mapping[str, float]) -> float:
    """GPUs in `ray.cluster_resources()` (0.0 on a CPU-only cluster)."""
    return float(cluster.get("GPU", 0.0))


def has_cpu_pool(cluster: Mapping[str, float]) -> bool:
    """Whether the cluster has a CPU node type (it declares the `cpu_pool` custom resource)."""
    return float(cluster.get(CPU_POOL_RESOURCE, 0.0)) > 0.0


def ray_options(
    name: str,
    cluster: Mapping[str, float],
    *,
    num_cpus: float | None = None,
    num_gpus: float = AUTO,
    memory_mb: int | None = None,
) -> dict[str, Any]:
    """Ray options (`num_cpus`, `num_gpus`, `memory`, `resources`) for one task/actor of stage `name`.

    The dict goes straight into `Dataset.map_batches(**options)`, `ray.remote(**options)` or
    `.options(**options)`. `num_gpus=AUTO` (-1) means: `gpus_per_actor` if the stage is accelerated and the
    cluster has GPUs, else 0; an explicit value >= 0 is used as given (e.g. 0 forces CPU inference).
    """
    spec = stage(name)
    gpus = num_gpus
    if gpus < 0:
        gpus = spec.gpus_per_actor if spec.accelerated and cluster_gpus(cluster) > 0 else 0.0
    out: dict[str, Any] = {"num_cpus": spec.num_cpus if num_cpus is None else float(num_cpus)}
    if gpus > 0:
        out["num_gpus"] = float(gpus)
    mem = spec.memory_mb if memory_mb is None else memory_mb
    if mem > 0:
        out["memory"] = int(mem) * _MIB
    if spec.cpu_pool and has_cpu_pool(cluster):
        out["resources"] = {CPU_POOL_RESOURCE: CPU_POOL_SLICE}
    return out


def stage_options(cluster: Mapping[str, float], prefix: str = "map.") -> dict[str, dict[str, Any]]:
    """Default options of every stage whose name starts with `prefix`, keyed by the short name."""
    return {n[len(prefix) :]: ray_options(n, cluster) for n in STAGES if n.startswith(prefix)}


def cpu_scale(held_cpus: float, cluster_cpus: float) -> float:
    """The factor (at most 1) by which every map stage's CPU request is scaled so that the CPUs the stages
    hold at once (`held_cpus`: the actor pools plus one read and one write task) fit in `cluster_cpus`.

    An embedded Ray gives itself at least 4 logical CPUs, so the default stages fit on a 2-core laptop; a
    cluster's CPUs are fixed (a 2-CPU head), and stages that do not fit would wait forever. Scaling them all
    alike oversubscribes the cluster's cores the same way. Rounded down to Ray's CPU grain (1e-4), so the
    scaled requests never add up to more than the cluster has; 1.0 when they already fit. A cluster
    without CPUs (0) gives 0: nothing can be scaled to fit it, the caller says so.
    """
    if held_cpus <= cluster_cpus or held_cpus <= 0:
        return 1.0
    return max(0.0, math.floor(cluster_cpus / held_cpus * 1e4) / 1e4)


def worker_resources(name: str, cluster: Mapping[str, float], *, num_cpus: float | None = None) -> dict[str, Any]:
    """`ScalingConfig` arguments for Ray Train/Tune workers: `use_gpu` and `resources_per_worker`."""
    opts = ray_options(name, cluster, num_cpus=num_cpus)
    per_worker: dict[str, float] = {"CPU": float(opts["num_cpus"])}
    if opts.get("num_gpus"):
        per_worker["GPU"] = float(opts["num_gpus"])
    return {"use_gpu": "GPU" in per_worker, "resources_per_worker": per_worker}


def release_freed_memory(min_free_bytes: int = 0) -> None:
    """Give the heap pages freed by the previous batch back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    glibc keeps freed memory for reuse and, once a big array has been freed, serves later ones from the heap
    too, so a stage process holds its high-water mark of tile arrays. Trimming once per batch costs a heap
    walk (well under a millisecond here) and the page faults of the next batch's first touch. That is cheap
    for the CPU stages but not for the inference actor, whose forwards refill 150-200 MB after each trim:
    it passes `min_free_bytes` (`infer.trim_free_mb`) and trims only when glibc holds at least that much
    free (`heap_free_bytes`; always trims where mallinfo2 is missing).
    """
    trim = _malloc_trim()
    if trim is None:
        return
    if min_free_bytes > 0:
        free = heap_free_bytes()
        if free is not None and free < min_free_bytes:
            return
    trim(0)


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc >= 2.33): byte counts summed over all arenas."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")
    ]  # fmt: skip


#: glibc malloc settings (GLIBC_TUNABLES, read at process start) for a process whose big arrays come and go
#: at the same sizes, forward after forward: one arena, no mmap for large blocks, freed top of heap kept up to
#: 1 GB. A forward then reuses the heap pages the previous one freed instead of faulting in fresh zeroed
#: pages. By default each of the demo model's 64 MB activations is an mmap of its own, and the actor's
#: forwards run in a Ray thread whose arena cannot hold them. Measured here, 60 forwards of the demo SeNet on
#: 512 px tiles, one torch thread, pinned core, in a thread as in a Ray actor: 22.3 k page faults and 15.0 s
#: by default, 0.5 k and 12.8 s with these (in the main thread: 20.7 k / 14.6 s against 0.6 k / 13.5 s).
#: What stays free in the heap is still given back by `release_freed_memory(min_free_bytes)`.
HEAP_REUSE_TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824"


def heap_reuse_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment variables that give a new process `HEAP_REUSE_TUNABLES` (after any GLIBC_TUNABLES already
    in `environ`); empty where the C library has no `mallinfo2` (not glibc >= 2.33)."""
    if _mallinfo2() is None:
        return {}
    before = environ.get("GLIBC_TUNABLES", "")
    return {"GLIBC_TUNABLES": f"{before}:{HEAP_REUSE_TUNABLES}" if before else HEAP_REUSE_TUNABLES}


def heap_free_bytes() -> int | None:
    """Bytes glibc holds free in its arenas (`mallinfo2().fordblks`): what a trim could give back; None
    without glibc >= 2.33."""
    info = _mallinfo2()
    return None if info is None else int(info().fordblks)


@functools.cache
def _mallinfo2() -> Any:
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is not None:
        fn.restype = _MallInfo2
    return fn


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


@functools.cache
def _malloc_trim() -> Any:
    libc = _libc()
    return getattr(libc, "malloc_trim", None) if libc is not None else None
