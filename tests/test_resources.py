"""The stage resource table turns a cluster's resources into Ray options without config changes."""

from __future__ import annotations

import os

import pytest

from rrsis.resources import (
    CPU_POOL_RESOURCE,
    CPU_POOL_SLICE,
    HEAP_REUSE_TUNABLES,
    STAGES,
    heap_free_bytes,
    heap_reuse_env,
    ray_options,
    release_freed_memory,
    stage_options,
    worker_resources,
)

LAPTOP = {"CPU": 4.0, "memory": 8e9}
GPU_AND_CPU_NODES = {"CPU": 48.0, "GPU": 2.0, CPU_POOL_RESOURCE: 32.0, "memory": 2e11}


def test_cpu_only_cluster_runs_everything_on_cpu_anywhere() -> None:
    opts = stage_options(LAPTOP)
    assert set(opts) == {"read", "infer", "refine", "write", "products"}
    assert all("num_gpus" not in o and "resources" not in o for o in opts.values())
    assert opts["infer"] == {"num_cpus": 1.0, "memory": 2048 * 1024 * 1024}


def test_gpu_and_cpu_node_types_are_both_used() -> None:
    opts = stage_options(GPU_AND_CPU_NODES)
    assert opts["infer"]["num_gpus"] == 1.0 and "resources" not in opts["infer"]  # GPU nodes
    for cpu_stage in ("read", "refine", "write", "products"):  # on the CPU node type: a sliver of cpu_pool
        assert opts[cpu_stage]["resources"] == {CPU_POOL_RESOURCE: CPU_POOL_SLICE}
        assert "num_gpus" not in opts[cpu_stage]


def test_config_values_override_the_table() -> None:
    # infer.num_gpus = 0 forces CPU inference even on a GPU cluster; 0.5 shares a GPU by two actors
    assert "num_gpus" not in ray_options("map.infer", GPU_AND_CPU_NODES, num_gpus=0.0)
    assert ray_options("map.infer", LAPTOP, num_gpus=0.5, num_cpus=2, memory_mb=0) == {"num_cpus": 2.0, "num_gpus": 0.5}


def test_train_and_tune_workers() -> None:
    assert worker_resources("train.worker", GPU_AND_CPU_NODES) == {
        "use_gpu": True,
        "resources_per_worker": {"CPU": 1.0, "GPU": 1.0},
    }
    laptop = worker_resources("tune.trial", LAPTOP, num_cpus=2)
    assert laptop == {"use_gpu": False, "resources_per_worker": {"CPU": 2.0}}


def test_unknown_stage_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"map\.infer"):
        ray_options("map.nope", LAPTOP)
    assert all(name == spec.name for name, spec in STAGES.items())


def test_map_pipeline_takes_its_options_from_the_table() -> None:
    from rrsis.config.load import load_config
    from rrsis.config.map import MapConfig
    from rrsis.errors import ConfigError
    from rrsis.pipeline.build import resources_for

    def map_config(*overrides: str) -> MapConfig:
        return load_config(MapConfig, None, list(overrides))

    cfg = map_config("infer.num_cpus=2", "read_num_cpus=0.5")
    res = resources_for(cfg, 2.0, cluster=GPU_AND_CPU_NODES)
    assert res.infer.options == ray_options("map.infer", GPU_AND_CPU_NODES, num_cpus=2) and res.infer.pool_size == 1
    assert res.read.options == ray_options("map.read", GPU_AND_CPU_NODES, num_cpus=0.5)
    assert res.refine.num_cpus == 1.0 and res.refine.pool_size == 1
    cpu_only = resources_for(map_config(), 0.0, cluster=LAPTOP)
    assert "num_gpus" not in cpu_only.infer.options
    # a CPU water-land / DANet inference actor starts with glibc set to reuse its heap; a GPU one does not
    assert "runtime_env" not in cpu_only.infer.options  # the SAM tasks' actors keep the default allocator
    tiles = resources_for(map_config(), 0.0, cluster=LAPTOP, reuse_heap=True)  # the water-land / DANet actor
    assert tiles.infer.options == {**cpu_only.infer.options, "runtime_env": {"env_vars": heap_reuse_env()}}
    assert (
        "runtime_env" not in resources_for(map_config(), 2.0, cluster=GPU_AND_CPU_NODES, reuse_heap=True).infer.options
    )
    # 1 + 1 + 1 + 1 = 4 CPUs fit a 4-CPU cluster; a products task bigger than the cluster never could start
    assert resources_for(map_config("products_num_cpus=4"), 0.0, 4.0, cluster=LAPTOP).batch_size == 4
    with pytest.raises(ConfigError, match=r"^config error: key 'products_num_cpus' = 6 CPUs but the Ray cluster has 4"):
        resources_for(map_config("products_num_cpus=6"), 0.0, 4.0, cluster=LAPTOP)
    # Ray Data fuses a task stage into the next actor stage only when their options are equal: they must
    # differ, or reads would run inside the inference actor instead of beside it.
    assert cpu_only.read.options != cpu_only.infer.options


@pytest.mark.usefixtures("ray_session")
def test_map_dataset_caps_its_own_object_store_use_in_blocks_of_several_tiles() -> None:
    """The object-store cap is the map dataset's own (the process-global DataContext is untouched) and is
    sized for blocks of at least MIN_BLOCK_TILES tiles even with a model batch of 1."""
    import ray

    from rrsis.config.load import load_config
    from rrsis.config.map import MapConfig
    from rrsis.pipeline.build import BLOCKS_IN_FLIGHT, MIN_BLOCK_TILES, map_dataset, resources_for
    from rrsis.pipeline.plan import PlanArgs

    cfg = load_config(MapConfig, None, ["tiling.tile_px=2048", "infer.batch_size=1", "infer.checkpoint=unused.pt"])
    rows = [{"scene_id": "s", "scene_uri": "s.tif", "verify": False}]
    plan = PlanArgs("run", 2048, 0, (), (), 4)
    context = ray.data.DataContext.get_current()
    before = context.execution_options.resource_limits.object_store_memory, context.target_max_block_size
    ds = map_dataset(rows, plan, cfg, resources_for(cfg, 0.0, cluster=LAPTOP), model="m")
    block = MIN_BLOCK_TILES * 2048 * 2048 * (4 * 4 + 1 + 4 + 1)  # image f32 x4, valid, prob f32, mask
    assert ds.context.execution_options.resource_limits.object_store_memory == BLOCKS_IN_FLIGHT * block
    read = MIN_BLOCK_TILES * 2048 * 2048 * (4 * 4 + 1)  # one read batch: image f32 x4, valid
    assert ds.context.target_max_block_size == int(0.9 * read)  # one read batch per block, never two merged
    context = ray.data.DataContext.get_current()
    assert (context.execution_options.resource_limits.object_store_memory, context.target_max_block_size) == before


def test_blocks_aim_at_a_pixel_budget_within_bounds() -> None:
    """Tiles per block: TARGET_BLOCK_BYTES // tile bytes, clamped to [MIN_BLOCK_TILES, MAX_BLOCK_TILES], and
    at least one model batch. Tile bytes = px^2 x (4 per band (f32 image) + 1 valid + 4 prob + 1 mask)."""
    from rrsis.pipeline.build import MAX_BLOCK_TILES, MIN_BLOCK_TILES, TARGET_BLOCK_BYTES, block_tiles_for, tile_bytes

    assert (TARGET_BLOCK_BYTES, MIN_BLOCK_TILES, MAX_BLOCK_TILES) == (16 * 2**20, 4, 16)
    two_bands, four_bands = 2, 4
    assert tile_bytes(two_bands, 512) == 512 * 512 * 14 == 3_670_016
    assert tile_bytes(four_bands, 512) == 512 * 512 * 22 == 5_767_168
    assert block_tiles_for(tile_bytes(four_bands, 512), 1) == 4  # 16_777_216 // 5_767_168 = 2: MIN_BLOCK_TILES
    assert block_tiles_for(tile_bytes(two_bands, 512), 1) == 4  # 16_777_216 // 3_670_016 = 4
    assert block_tiles_for(tile_bytes(two_bands, 32), 4) == 16  # tiny tiles: MAX_BLOCK_TILES
    assert block_tiles_for(tile_bytes(four_bands, 2048), 1) == 4  # one tile is 92 MB: MIN_BLOCK_TILES
    assert block_tiles_for(tile_bytes(two_bands, 512), 32) == 32  # a model batch never splits over blocks


def test_products_tasks_take_the_configured_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import ray

    from rrsis.pipeline import build

    asked: list[dict[str, object]] = []

    def remote(**options: object) -> object:
        asked.append(options)
        return lambda fn: SimpleNamespace(remote=lambda *args: fn.__name__)

    monkeypatch.setattr(ray, "remote", remote)
    monkeypatch.setattr(ray, "cluster_resources", lambda: LAPTOP)
    scene = {"uri": "s.tif", "bands": [1], "width": 8, "height": 8}
    assert build.background_task(scene, 0.25) == "quicklook_background"
    assert build.products_task(scene, [], {}, None, 0.5) == "scene_products_committable"
    assert [a["num_cpus"] for a in asked] == [0.25, 0.5]
    assert build.background_task(scene) and asked[-1]["num_cpus"] == 1.0  # the stage table's default


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(heap_free_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")
def test_trim_only_when_enough_heap_is_free() -> None:
    """`release_freed_memory(min_free_bytes)` (the inference actor's `infer.trim_free_mb`) leaves the freed
    heap resident below the threshold and gives it back at or above it; measured on the process's RSS."""
    import numpy as np

    # 1600 arrays of 64 KB (below glibc's mmap threshold: they live in the heap); keep one in 16, so the
    # freed ~94 MB are holes between live chunks that only malloc_trim returns to the OS
    arrays = [np.ones(8192) for _ in range(1600)]
    keep = arrays[::16]
    del arrays
    free = heap_free_bytes()
    assert free is not None and free > 80 * 2**20
    before = _rss_mb()
    release_freed_memory(min_free_bytes=free + 2**30)  # less free than asked for: no trim
    assert _rss_mb() > before - 10
    release_freed_memory(min_free_bytes=free // 2)  # enough free: trims
    assert _rss_mb() < before - 60
    assert len(keep) == 100


@pytest.mark.usefixtures("ray_session")
def test_map_dataset_gives_the_inference_actor_its_trim_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    from rrsis.config.load import load_config
    from rrsis.config.map import MapConfig
    from rrsis.pipeline import build
    from rrsis.pipeline.plan import PlanArgs
    from rrsis.pipeline.stages import InferStage

    calls: list[tuple[object, dict[str, object]]] = []
    real = build.map_stage

    def spy(ds, fn, res, batch_size, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((fn, kwargs))
        return real(ds, fn, res, batch_size, **kwargs)

    monkeypatch.setattr(build, "map_stage", spy)
    cfg = load_config(MapConfig, None, ["infer.trim_free_mb=512", "infer.checkpoint=unused.pt"])
    rows = [{"scene_id": s, "scene_uri": f"{s}.tif", "verify": False} for s in ("a", "b")]
    plan = PlanArgs("run", 64, 0, (), ("VV", "VH"), 2)
    order = [("a.tif", "1,2"), ("b.tif", "1,2")]
    res = build.resources_for(cfg, 0.0, cluster=LAPTOP)
    build.map_dataset(rows, plan, cfg, res, model="m", scene_order=order)
    (kwargs,) = [kw["fn_constructor_kwargs"] for fn, kw in calls if fn is InferStage]
    assert kwargs["trim_free_mb"] == 512  # type: ignore[index]
    assert kwargs["scenes"] == order  # type: ignore[index]  # the measurer's order


def test_heap_reuse_env_keeps_the_tunables_already_set() -> None:
    assert heap_reuse_env({}) == {"GLIBC_TUNABLES": HEAP_REUSE_TUNABLES}
    assert heap_reuse_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}) == {
        "GLIBC_TUNABLES": f"glibc.malloc.tcache_count=0:{HEAP_REUSE_TUNABLES}"
    }


@pytest.mark.usefixtures("ray_session")
def test_inference_actor_reuses_its_heap_instead_of_faulting_pages_in() -> None:
    """In the map's inference actor (its Ray options as built for a CPU cluster), a 64 MB array allocated
    again after being freed comes back without page faults; in a plain actor it is a fresh mmap, faulted in."""
    import ray

    from rrsis.config.load import load_config
    from rrsis.config.map import MapConfig
    from rrsis.pipeline.tile_run import all_cpus_resources  # the tile tasks' resources, as a map builds them

    @ray.remote
    class Forwards:
        def second_allocation_faults(self) -> tuple[str, int]:
            import ctypes
            import resource

            libc = ctypes.CDLL(None)
            libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
            libc.free.argtypes = [ctypes.c_void_p]
            size = 64 << 20  # as the demo model's activations (torch's CPU allocator is malloc underneath)
            libc.free(ctypes.memset(libc.malloc(size), 1, size))
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            libc.free(ctypes.memset(libc.malloc(size), 1, size))
            return os.environ.get("GLIBC_TUNABLES", ""), resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    options = all_cpus_resources(load_config(MapConfig, None, [])).infer.options
    assert (
        "runtime_env" not in all_cpus_resources(load_config(MapConfig, None, ["infer.reuse_heap=false"])).infer.options
    )
    tuned = Forwards.options(num_cpus=0, runtime_env=options["runtime_env"]).remote()  # type: ignore[attr-defined]
    plain = Forwards.options(num_cpus=0).remote()  # type: ignore[attr-defined]
    (env, reused), (_, fresh) = ray.get(
        [tuned.second_allocation_faults.remote(), plain.second_allocation_faults.remote()]
    )
    assert HEAP_REUSE_TUNABLES in env
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert fresh > pages // 2 and reused < pages // 20, (fresh, reused)
