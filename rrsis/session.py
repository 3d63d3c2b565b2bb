"""The connection every job shares: object-storage settings and the Ray session.

`configure_storage` applies a job's `storage:` section in this process (and, through the environment, in
GDAL and in the Ray workers started afterwards). `connect_ray` reuses a running Ray, joins RAY_ADDRESS /
`address`, or starts an embedded Ray on 127.0.0.1, and says which of the three it did, so a caller can
decide what only an embedded Ray allows (e.g. reserving cores). No module-level state is set here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from typing import Any

from rrsis.config.common import RayConfig, StorageConfig
from rrsis.resources import RAY_PROCESS_ENV
from rrsis.storage import s3

log = logging.getLogger("rrsis")

#: Logical CPUs of an embedded Ray when the config leaves it open: the map's two actor pools plus one read
#: and one write task must fit even on a 2-core laptop.
EMBEDDED_MIN_CPUS = 4


def configure_storage(cfg: StorageConfig) -> None:
    """Endpoint, region and retries of S3-compatible storage for this process and its Ray workers."""
    s3.configure(cfg.endpoint_url, cfg.region, cfg.max_attempts, cfg.backoff_s)
    if cfg.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = cfg.endpoint_url  # GDAL's /vsis3/ and Ray workers read it


#: glibc's mallopt parameter for the most malloc arenas (malloc.h M_ARENA_MAX).
M_ARENA_MAX = -8
#: Malloc arenas of a map driver: its threads (Ray Data's executor of each wave, the prefetchers) only
#: coordinate; glibc's default (8 per core) spread freed memory over arenas that each kept some of it.
DRIVER_ARENAS = 2


def _libc() -> Any:
    """glibc, or None elsewhere (musl, macOS): the allocator settings below are then no-ops."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = DRIVER_ARENAS) -> None:
    """Bound this process's malloc arenas (MALLOC_ARENA_MAX, which a user's environment may set instead and
    then wins). Measured on the map driver (60 scenes, 6 waves): RSS grew 2.7-4.3 MB a wave with glibc's
    default, 0.4-0.9 MB with 2 arenas. Call early, before threads start."""
    libc = _libc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Give memory that is free inside malloc's heaps back to the system (glibc malloc_trim): after a wave,
    whose per-block statistics were just freed, the driver's resident size returns to its floor."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


#: Environment of a normal (not `--verbose`) run, for this process and every process it starts (a user's own
#: values win): OpenCV's TIFF reader warns once per GeoTIFF tag it does not know (`TIFF_Warning ... Unknown
#: field with tag 33550`), 50-60 lines per training run on GeoTIFF images.
QUIET_ENV = {"OPENCV_LOG_LEVEL": "ERROR"}


def verbose() -> bool:
    """`rrsis --verbose` (env RRSIS_VERBOSE=1): Ray's own warnings and log lines are shown too."""
    return os.environ.get("RRSIS_VERBOSE", "") not in ("", "0")


def quiet_libraries() -> None:
    """Keep Ray's and OpenCV's own warnings off a normal run's console (`QUIET_ENV`); no-op with --verbose.
    Call before Ray starts: its processes inherit the environment."""
    if verbose():
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def connect_ray(cfg: RayConfig, *, min_cpus: int = 0) -> str:
    """Connect and return how: "running" (this process already had Ray), "cluster" (RAY_ADDRESS or
    `cfg.address`) or "embedded" (a new local Ray on 127.0.0.1 with `cfg.num_cpus`, else at least
    `min_cpus` logical CPUs)."""
    import ray

    if ray.is_initialized():
        return "running"
    quiet_libraries()
    quiet = not verbose()  # Ray's own log lines and warnings (token auth) are noise to a user; --verbose
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, configure_logging=False)
        if quiet:
            spend_actor_argument_warning()
        return "cluster"
    # Ray's processes inherit this environment (why each setting: `rrsis.resources.RAY_PROCESS_ENV`); a
    # user's own values win. Cluster images set the same in cluster/Dockerfile.
    for name, value in RAY_PROCESS_ENV.items():
        os.environ.setdefault(name, value)
    # address="local": always a new instance, even when /tmp/ray/ray_current_cluster names another Ray.
    kwargs: dict[str, Any] = {"address": "local", "_node_ip_address": "127.0.0.1", "include_dashboard": False}
    if quiet:
        kwargs["logging_level"] = logging.ERROR
    num_cpus = cfg.num_cpus or (max(min_cpus, os.cpu_count() or 1) if min_cpus else 0)
    if num_cpus:
        kwargs["num_cpus"] = num_cpus
    if cfg.num_gpus:
        kwargs["num_gpus"] = cfg.num_gpus
    for attempt in range(1, 4):  # a loaded machine can miss Ray's 15 s agent start-up deadline: retry
        try:
            ray.init(**kwargs)
            logging.getLogger("ray.data").setLevel(logging.INFO)  # Ray Data's progress stays
            if quiet:
                spend_actor_argument_warning()
            return "embedded"
        except Exception as exc:
            if attempt == 3 or "timed out during startup" not in str(exc):
                raise
            log.warning("embedded Ray did not start (attempt %d of 3): %s; retrying", attempt, exc)
            ray.shutdown()
    raise AssertionError("unreachable")


#: A custom resource no node declares (`spend_actor_argument_warning`'s probe is never scheduled).
PROBE_RESOURCE = "rrsis_never_scheduled"


class _ArgumentProbe:
    """An actor that takes one argument and does nothing (`spend_actor_argument_warning`)."""

    def __init__(self, arg: Any) -> None:
        self.arg = arg


def spend_actor_argument_warning() -> None:
    """Spend Ray's once-per-process "constructor arguments in the object store" line where no one sees it.

    Ray's C++ core worker logs at ERROR, on the driver's stderr and once per process, that an actor "has
    constructor arguments in the object store and max_restarts > 0" (ray-project/ray#53727). Ray Data passes
    its map transformer and data context to every actor of a pool as ObjectRefs (ray-project/ray#57733), so
    the first actor pool of every map prints it, whatever our constructor kwargs are; dropping restarts
    (`max_restarts=0`) would silence it and lose the actors' recovery. Instead, the first such actor of this
    process is a probe created while the driver's stderr (fd 2) points at /dev/null, never scheduled and
    killed at once; the line still goes to Ray's driver log file. Ray's log level is left alone:
    `RAY_BACKEND_LOG_LEVEL` makes every Ray process print a line of its own.
    """
    import ray  # here like in connect_ray: importing ray costs every command that never connects

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        # a resource no node has: the probe is never scheduled, so killing it touches no worker (killed while
        # a worker was being leased for it, the GCS logged a KillActor error of its own)
        remote = ray.remote(num_cpus=0, max_restarts=1, resources={PROBE_RESOURCE: 1})(_ArgumentProbe)
        probe: Any = remote.remote(ray.put(0))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    ray.kill(probe)
